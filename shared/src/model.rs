//! The domain model. These are the records the stores keep; their JSON form is also what the
//! admin API returns (docs/api.md), so renaming a field is a compatibility change.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::LicenseStatus;

pub type Timestamp = DateTime<Utc>;

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

impl UsageBatch {
    /// Sums the batch into (metric, period key) → amount, for a day and a month per record.
    pub fn counter_increments(&self) -> BTreeMap<(String, String), u64> {
        let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &self.records {
            for period in [UsagePeriod::day_of(r.at), UsagePeriod::month_of(r.at)] {
                let slot = out.entry((r.metric.clone(), period.key())).or_default();
                *slot = slot.saturating_add(r.value);
            }
        }
        out
    }
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
    /// The edges' service token: only the internal routes the edges call, nothing else. Not
    /// part of the `read` < `write` < `admin` order, and never granted by it.
    Edge,
}

impl Scope {
    /// `admin` implies `write`, which implies `read`; `edge` implies only itself.
    pub fn grants(self, needed: Scope) -> bool {
        match (self, needed) {
            (Self::Edge, Self::Edge) => true,
            (Self::Edge, _) | (_, Self::Edge) => false,
            _ => self >= needed,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            "edge" => Some(Self::Edge),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Edge => "edge",
        }
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
