//! The domain model. These are the records the stores keep; their JSON form is also what the
//! admin API returns (docs/api.md), so renaming a field is a compatibility change.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::{LicenseStatus, SuspensionReason};
pub use crate::registry_token::RegistryGrant;

pub type Timestamp = DateTime<Utc>;

/// `at` plus `days` days, saturating at the latest representable instant. License terms are
/// bounded where they enter (`issuing::check_term_bounds`), but keys and records made before
/// the bounds may hold anything, and a term too long to represent simply never ends: date
/// arithmetic on terms must never panic.
pub fn days_after(at: Timestamp, days: u32) -> Timestamp {
    at.checked_add_signed(Duration::days(i64::from(days))).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at` minus `days` days, saturating at the earliest representable instant.
pub fn days_before(at: Timestamp, days: u32) -> Timestamp {
    at.checked_sub_signed(Duration::days(i64::from(days))).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `at` plus `by`, saturating at either end of the representable range.
pub fn saturating_add(at: Timestamp, by: Duration) -> Timestamp {
    at.checked_add_signed(by).unwrap_or(if by < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub stripe_customer_id: Option<String>,
    /// Opted out of renewal reminders; suspension notices are still sent.
    #[serde(default)]
    pub reminders_opt_out: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub id: String,
    pub customer_id: String,
    pub status: LicenseStatus,
    /// While `suspended`: who suspended it, which decides what may lift it (the lifecycle
    /// table). Absent on records stored before reasons were kept, read as `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension_reason: Option<SuspensionReason>,
    pub tier: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// `None` means unlimited.
    #[serde(default)]
    pub max_deployments: Option<u32>,
    pub offline_days: u32,
    pub grace_days: u32,
    /// `None` means perpetual. This stored expiry wins over the key's `exp` (renewals).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// Set while `past_due`: the end of the payment grace period.
    #[serde(default)]
    pub grace_ends_at: Option<Timestamp>,
    /// `jti` of the most recently issued key.
    pub key_id: String,
    #[serde(default)]
    pub stripe_subscription_id: Option<String>,
    #[serde(default)]
    pub stripe_price_id: Option<String>,
    /// Stripe's own timestamp of the last billing event applied, so older events never roll
    /// state back.
    #[serde(default)]
    pub billing_event_at: Option<i64>,
    /// Which container images the license may pull (docs/distribution.md); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryGrant>,
    /// Which cloud services the license may call, and how much (audience → limits,
    /// docs/cloud-access.md); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<crate::access_token::CloudGrant>,
    /// Optimistic concurrency: bumped by every update.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub license_id: String,
    pub deployment_id: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub app_version: Option<String>,
    pub activated_at: Timestamp,
    pub last_heartbeat_at: Timestamp,
    /// The seat is free again once this passes without a heartbeat.
    pub lease_expires_at: Timestamp,
}

impl Deployment {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.lease_expires_at > now
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub metric: String,
    pub value: u64,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    pub license_id: String,
    pub deployment_id: String,
    pub batch_id: String,
    pub records: Vec<UsageRecord>,
    pub received_at: Timestamp,
}

/// A counter period: a UTC day or a UTC month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsagePeriod {
    Day { year: i32, month: u32, day: u32 },
    Month { year: i32, month: u32 },
}

impl UsagePeriod {
    pub fn day_of(at: Timestamp) -> Self {
        Self::Day { year: at.year(), month: at.month(), day: at.day() }
    }
    pub fn month_of(at: Timestamp) -> Self {
        Self::Month { year: at.year(), month: at.month() }
    }
    /// The stored form: `2026-11-30` for a day, `2026-11` for a month.
    pub fn key(&self) -> String {
        match self {
            Self::Day { year, month, day } => format!("{year:04}-{month:02}-{day:02}"),
            Self::Month { year, month } => format!("{year:04}-{month:02}"),
        }
    }
}

/// The largest `value` one usage record may carry: 2^53 − 1, the largest integer every JSON
/// client (JavaScript included) holds exactly. 1000 records of it sum to less than 2^63, so a
/// batch's own sums never overflow.
pub const MAX_USAGE_VALUE: u64 = (1 << 53) - 1;

/// The most distinct counter periods (days plus months) one batch may touch. The DynamoDB store
/// writes a batch as one transaction of a marker item plus one item per period, and a
/// transaction holds at most 100 items.
pub const MAX_USAGE_PERIODS_PER_BATCH: usize = 99;

/// How far from the server's clock a usage record's `at` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    /// The oldest accepted `at` is `now - max_age`.
    pub max_age: chrono::Duration,
    /// The newest accepted `at` is `now + max_ahead` (client clock skew).
    pub max_ahead: chrono::Duration,
}

impl Default for UsageWindow {
    fn default() -> Self {
        Self { max_age: chrono::Duration::days(35), max_ahead: chrono::Duration::minutes(5) }
    }
}

/// Why a usage batch was refused before reaching a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageRefused {
    #[error("record {index}: `value` {value} is above the maximum {MAX_USAGE_VALUE}")]
    ValueTooLarge { index: usize, value: u64 },
    #[error("record {index}: `at` {at} is outside the accepted window {oldest} to {newest}")]
    OutsideWindow { index: usize, at: Timestamp, oldest: Timestamp, newest: Timestamp },
    #[error(
        "the batch touches {periods} counter periods (days plus months); at most {MAX_USAGE_PERIODS_PER_BATCH}"
    )]
    TooManyPeriods { periods: usize },
}

/// A counter addition that would pass `u64::MAX`: refused, never wrapped or saturated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage counter {metric}/{period} would overflow")]
pub struct CounterOverflow {
    pub metric: String,
    pub period: String,
}

impl UsageBatch {
    /// Sums the batch into (metric, period key) → amount, for a day and a month per record.
    pub fn counter_increments(&self) -> Result<BTreeMap<(String, String), u64>, CounterOverflow> {
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &self.records {
            for period in [UsagePeriod::day_of(r.at), UsagePeriod::month_of(r.at)] {
                let key = (r.metric.clone(), period.key());
                let slot = out.entry(key).or_default();
                *slot = slot
                    .checked_add(r.value)
                    .ok_or_else(|| CounterOverflow { metric: r.metric.clone(), period: period.key() })?;
            }
        }
        Ok(out)
    }

    /// Checks every record against the per-record maximum and the `at` window around `now`,
    /// and the batch against the period limit.
    pub fn check_bounds(&self, now: Timestamp, window: &UsageWindow) -> Result<(), UsageRefused> {
        let oldest = now.checked_sub_signed(window.max_age).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let newest = now.checked_add_signed(window.max_ahead).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut periods = std::collections::BTreeSet::new();
        for (index, r) in self.records.iter().enumerate() {
            if r.value > MAX_USAGE_VALUE {
                return Err(UsageRefused::ValueTooLarge { index, value: r.value });
            }
            if r.at < oldest || r.at > newest {
                return Err(UsageRefused::OutsideWindow { index, at: r.at, oldest, newest });
            }
            periods.insert(UsagePeriod::day_of(r.at));
            periods.insert(UsagePeriod::month_of(r.at));
        }
        if periods.len() > MAX_USAGE_PERIODS_PER_BATCH {
            return Err(UsageRefused::TooManyPeriods { periods: periods.len() });
        }
        Ok(())
    }
}

/// Adds `amount` to a stored counter, refusing an overflow.
pub fn add_to_counter(stored: u64, amount: u64, metric: &str, period: &str) -> Result<u64, CounterOverflow> {
    stored
        .checked_add(amount)
        .ok_or_else(|| CounterOverflow { metric: metric.to_owned(), period: period.to_owned() })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounter {
    pub license_id: String,
    pub metric: String,
    pub period: String,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: Timestamp,
    /// API key id, `bootstrap`, `stripe` or `scheduler`.
    pub actor: String,
    pub action: String,
    /// `license:<id>`, `customer:<id>`, `api_key:<id>`.
    pub target: String,
    #[serde(default)]
    pub before: Option<serde_json::Value>,
    #[serde(default)]
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
    Admin,
    /// Push images through the registry token service; grants nothing in the admin API, and no
    /// admin scope grants it (docs/distribution.md).
    #[serde(rename = "registry:push")]
    RegistryPush,
    /// The edges' service token: only the internal routes the edges call, nothing else. Not
    /// part of the `read` < `write` < `admin` order, and never granted by it.
    Edge,
    /// A cloud service's metering key: only `POST /v1/cloud-usage` (calls it allowed, counted
    /// as `cloud.<audience>.calls`). Reads nothing; stands apart like `edge`.
    Meter,
}

impl Scope {
    pub const ALL: [Scope; 6] =
        [Self::Read, Self::Write, Self::Admin, Self::RegistryPush, Self::Edge, Self::Meter];

    /// `admin` implies `write`, which implies `read`; `registry:push`, `edge` and `meter` stand
    /// apart: each grants only itself and is granted by nothing else.
    pub fn grants(self, needed: Scope) -> bool {
        match (self, needed) {
            (Self::RegistryPush | Self::Edge | Self::Meter, _)
            | (_, Self::RegistryPush | Self::Edge | Self::Meter) => self == needed,
            _ => self >= needed,
        }
    }
    /// One of `read`, `write`, `admin`: the scopes of the admin API.
    pub fn is_admin_api(self) -> bool {
        matches!(self, Self::Read | Self::Write | Self::Admin)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::RegistryPush => "registry:push",
            Self::Edge => "edge",
            Self::Meter => "meter",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// An API key as stored: only the SHA-256 of the secret is kept. This is the stored form;
/// API responses and audit entries use `http::wire::ApiKeyView`, which leaves the hash out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the full secret.
    pub secret_sha256: String,
    pub scopes: Vec<Scope>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

impl ApiKeyRecord {
    pub fn grants(&self, needed: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.iter().any(|s| s.grants(needed))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEventRecord {
    pub event_id: String,
    pub event_type: String,
    pub received_at: Timestamp,
}

/// Identifies one notice: sent at most once per (license, notice, window).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotificationKey {
    pub license_id: String,
    /// e.g. `renewal_reminder_30d`, `expiry_warning`, `payment_failed`.
    pub notice: String,
    /// e.g. the expiry date or invoice id the notice is about.
    pub window: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NotificationState {
    /// Intent recorded by `claimed_by`; the send may or may not have happened.
    Pending {
        claimed_by: String,
        claimed_at: Timestamp,
    },
    Sent {
        sent_at: Timestamp,
        message_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub key: NotificationKey,
    pub recipient: String,
    pub subject: String,
    #[serde(flatten)]
    pub state: NotificationState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationLogEntry {
    pub license_id: String,
    pub at: Timestamp,
    pub code: String,
    #[serde(default)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    /// Set for a registry token request (codes `REGISTRY_GRANTED`, `REGISTRY_DENIED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAccessRecord>,
}

/// What a registry token request asked for one repository and what it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAccessRecord {
    pub repository: String,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
}

/// A staff user's role in the admin portal. Ordered: each role can do what the ones before it
/// can (`viewer` < `support` < `billing` < `admin`); the role → action table is
/// `http::portal` (one place, enforced server-side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    Viewer,
    Support,
    Billing,
    Admin,
}

impl StaffRole {
    pub const ALL: [StaffRole; 4] = [Self::Viewer, Self::Support, Self::Billing, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Support => "support",
            Self::Billing => "billing",
            Self::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A person who signs in to the admin portal. The password is kept only as an argon2id PHC
/// string; the audit log names the user by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffUser {
    /// `stf_...`
    pub id: String,
    /// Lower case; unique across staff users.
    pub email: String,
    pub name: String,
    pub role: StaffRole,
    /// argon2id, PHC string format (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// Base32 secret of the RFC 6238 second factor, when the user enrolled one.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// The TOTP step of the last code accepted at sign-in: a code for this step or an earlier
    /// one is refused (no replay within the code's window). Written with a version check.
    #[serde(default)]
    pub totp_last_step: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    /// Sessions created before this instant are void: set on password change and on disable,
    /// so revocation needs no scan of the session table.
    pub sessions_valid_after: Timestamp,
    /// Optimistic concurrency: bumped by every update.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A signed-in portal session. The cookie holds a random token; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffSession {
    /// Hex SHA-256 of the cookie token.
    pub token_sha256: String,
    pub user_id: String,
    /// The token every form of this session must carry (CSRF); random, per session.
    pub csrf_token: String,
    pub created_at: Timestamp,
    /// Idle timeout: the session ends when this is older than the idle limit.
    pub last_seen_at: Timestamp,
    /// Absolute timeout.
    pub expires_at: Timestamp,
}
