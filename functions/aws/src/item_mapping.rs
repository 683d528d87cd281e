//! Explicit mapping between domain records and DynamoDB items. Items are a wire format (a
//! compatibility promise), so every attribute is named and typed here; reading never panics:
//! a missing or mistyped attribute is `StoreError::Corrupt` naming the item.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use nls_core::license_search::{LicenseSort, LicenseSortField, SortDirection};
use nls_core::lifecycle::{LicenseStatus, SuspensionReason};
use nls_core::model::*;
use nls_core::ports::{StoreError, StoreResult};

use crate::table_keys::*;

pub type Item = HashMap<String, AttributeValue>;

/// Prefix of the per-metric attributes of a counter item (`metric:requests`).
pub const METRIC_ATTRIBUTE_PREFIX: &str = "metric:";

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn ts(at: Timestamp) -> AttributeValue {
    AttributeValue::S(timestamp_key(at))
}

/// Builds an item attribute by attribute; `None` leaves the attribute out.
#[derive(Default)]
pub struct ItemBuilder(Item);

impl ItemBuilder {
    pub fn keyed(pk: String, sk: &str) -> Self {
        Self::default().set(PK, s(pk)).set(SK, s(sk))
    }
    pub fn set(mut self, name: &str, value: AttributeValue) -> Self {
        self.0.insert(name.to_owned(), value);
        self
    }
    pub fn set_opt(self, name: &str, value: Option<AttributeValue>) -> Self {
        match value {
            Some(v) => self.set(name, v),
            None => self,
        }
    }
    pub fn build(self) -> Item {
        self.0
    }
}

pub fn string_list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.clone())).collect())
}

pub fn number_map(values: &BTreeMap<String, u64>) -> AttributeValue {
    AttributeValue::M(values.iter().map(|(k, v)| (k.clone(), n(v))).collect())
}

/// Reads attributes of one item (or one nested map), naming it in every error.
pub struct ItemReader<'a> {
    item: &'a Item,
    label: String,
}

impl<'a> ItemReader<'a> {
    pub fn new(item: &'a Item) -> Self {
        let key_part = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => v.as_str(),
            _ => "?",
        };
        let label = format!("{}/{}", key_part(PK), key_part(SK));
        Self { item, label }
    }

    pub fn nested(item: &'a Item, label: String) -> Self {
        Self { item, label }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt { item: self.label.clone(), reason: reason.into() }
    }

    fn present(&self, name: &str) -> Option<&'a AttributeValue> {
        self.item.get(name).filter(|v| !matches!(v, AttributeValue::Null(true)))
    }

    fn required(&self, name: &str) -> StoreResult<&'a AttributeValue> {
        self.present(name).ok_or_else(|| self.corrupt(format!("missing attribute `{name}`")))
    }

    fn mistyped(&self, name: &str, expected: &str) -> StoreError {
        self.corrupt(format!("attribute `{name}` is not {expected}"))
    }

    pub fn string(&self, name: &str) -> StoreResult<String> {
        match self.required(name)? {
            AttributeValue::S(v) => Ok(v.clone()),
            _ => Err(self.mistyped(name, "a string")),
        }
    }

    pub fn opt_string(&self, name: &str) -> StoreResult<Option<String>> {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.mistyped(name, "a string")),
        }
    }

    fn parse_number<T: std::str::FromStr>(&self, name: &str, text: &str) -> StoreResult<T> {
        text.parse::<T>().map_err(|_| self.corrupt(format!("attribute `{name}` = {text} is out of range")))
    }

    pub fn number<T: std::str::FromStr>(&self, name: &str) -> StoreResult<T> {
        match self.required(name)? {
            AttributeValue::N(v) => self.parse_number(name, v),
            _ => Err(self.mistyped(name, "a number")),
        }
    }

    pub fn opt_number<T: std::str::FromStr>(&self, name: &str) -> StoreResult<Option<T>> {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => self.parse_number(name, v).map(Some),
            Some(_) => Err(self.mistyped(name, "a number")),
        }
    }

    pub fn bool_or_false(&self, name: &str) -> StoreResult<bool> {
        match self.present(name) {
            None => Ok(false),
            Some(AttributeValue::Bool(v)) => Ok(*v),
            Some(_) => Err(self.mistyped(name, "a boolean")),
        }
    }

    pub fn timestamp(&self, name: &str) -> StoreResult<Timestamp> {
        let text = self.string(name)?;
        parse_timestamp_key(&text)
            .ok_or_else(|| self.corrupt(format!("attribute `{name}` = {text:?} is not a timestamp")))
    }

    pub fn opt_timestamp(&self, name: &str) -> StoreResult<Option<Timestamp>> {
        match self.opt_string(name)? {
            None => Ok(None),
            Some(text) => parse_timestamp_key(&text)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("attribute `{name}` = {text:?} is not a timestamp"))),
        }
    }

    pub fn string_list(&self, name: &str) -> StoreResult<Vec<String>> {
        match self.present(name) {
            None => Ok(Vec::new()),
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| match v {
                    AttributeValue::S(text) => Ok(text.clone()),
                    _ => Err(self.mistyped(name, "a list of strings")),
                })
                .collect(),
            Some(_) => Err(self.mistyped(name, "a list")),
        }
    }

    pub fn number_map(&self, name: &str) -> StoreResult<BTreeMap<String, u64>> {
        match self.present(name) {
            None => Ok(BTreeMap::new()),
            Some(AttributeValue::M(values)) => values
                .iter()
                .map(|(k, v)| match v {
                    AttributeValue::N(text) => Ok((k.clone(), self.parse_number(name, text)?)),
                    _ => Err(self.mistyped(name, "a map of numbers")),
                })
                .collect(),
            Some(_) => Err(self.mistyped(name, "a map")),
        }
    }

    pub fn map(&self, name: &str) -> StoreResult<Option<&'a Item>> {
        match self.present(name) {
            None => Ok(None),
            Some(AttributeValue::M(values)) => Ok(Some(values)),
            Some(_) => Err(self.mistyped(name, "a map")),
        }
    }

    pub fn opt_json(&self, name: &str) -> StoreResult<Option<serde_json::Value>> {
        match self.opt_string(name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| self.corrupt(format!("attribute `{name}` is not JSON: {e}"))),
        }
    }
}

// ---- customers ----

pub fn customer_item(c: &Customer) -> Item {
    ItemBuilder::keyed(customer_pk(&c.id), CUSTOMER_ITEM_SK)
        .set(KIND_PK, s(KIND_CUSTOMER))
        .set(KIND_SK, s(&c.id))
        .set_opt(STRIPE_PK, c.stripe_customer_id.as_deref().map(|id| s(stripe_customer_gsi_pk(id))))
        .set_opt(STRIPE_SK, c.stripe_customer_id.as_ref().map(|_| s(CUSTOMER_ITEM_SK)))
        .set("id", s(&c.id))
        .set("name", s(&c.name))
        .set("email", s(&c.email))
        .set_opt("stripe_customer_id", c.stripe_customer_id.as_deref().map(s))
        .set("reminders_opt_out", AttributeValue::Bool(c.reminders_opt_out))
        .set("created_at", ts(c.created_at))
        .set("updated_at", ts(c.updated_at))
        .build()
}

pub fn customer_from_item(item: &Item) -> StoreResult<Customer> {
    let r = ItemReader::new(item);
    Ok(Customer {
        id: r.string("id")?,
        name: r.string("name")?,
        email: r.string("email")?,
        stripe_customer_id: r.opt_string("stripe_customer_id")?,
        reminders_opt_out: r.bool_or_false("reminders_opt_out")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

// ---- licenses ----

/// The key `l` has in the sort index of `field` (the core's sort key, direction aside).
pub fn license_sort_key(field: LicenseSortField, l: &License) -> String {
    LicenseSort { field, direction: SortDirection::Ascending }.key(l)
}

pub fn license_item(l: &License) -> Item {
    ItemBuilder::keyed(license_pk(&l.id), LICENSE_ITEM_SK)
        .set(KIND_PK, s(KIND_LICENSE))
        .set(KIND_SK, s(&l.id))
        .set(CUSTOMER_PK, s(customer_pk(&l.customer_id)))
        .set(CUSTOMER_SK, s(&l.id))
        .set_opt(STRIPE_PK, l.stripe_subscription_id.as_deref().map(|id| s(stripe_subscription_gsi_pk(id))))
        .set_opt(STRIPE_SK, l.stripe_subscription_id.as_ref().map(|_| s(license_pk(&l.id))))
        .set_opt(EXPIRY_PK, l.expires_at.map(|at| s(expiry_day_pk(at.date_naive()))))
        .set_opt(EXPIRY_SK, l.expires_at.map(|at| s(expiry_sk(at, &l.id))))
        .set(LICENSE_CREATED_SK, s(license_sort_key(LicenseSortField::Created, l)))
        .set(LICENSE_EXPIRY_SK, s(license_sort_key(LicenseSortField::ExpiresAt, l)))
        .set(LICENSE_CUSTOMER_SK, s(license_sort_key(LicenseSortField::Customer, l)))
        .set("id", s(&l.id))
        .set("customer_id", s(&l.customer_id))
        .set("status", s(l.status.as_str()))
        .set_opt("suspension_reason", l.suspension_reason.map(|r| s(r.as_str())))
        .set("tier", s(&l.tier))
        .set("features", string_list(&l.features))
        .set("limits", number_map(&l.limits))
        .set_opt("max_deployments", l.max_deployments.map(n))
        .set("offline_days", n(l.offline_days))
        .set("grace_days", n(l.grace_days))
        .set_opt("expires_at", l.expires_at.map(ts))
        .set_opt("grace_ends_at", l.grace_ends_at.map(ts))
        .set("key_id", s(&l.key_id))
        .set_opt("stripe_subscription_id", l.stripe_subscription_id.as_deref().map(s))
        .set_opt("stripe_price_id", l.stripe_price_id.as_deref().map(s))
        .set_opt("billing_event_at", l.billing_event_at.map(n))
        // The registry grant as JSON text, like audit values: it is read and written whole.
        .set_opt("registry", l.registry.as_ref().and_then(|g| serde_json::to_string(g).ok()).map(s))
        // The cloud grant likewise (docs/cloud-access.md).
        .set_opt("cloud", l.cloud.as_ref().and_then(|g| serde_json::to_string(g).ok()).map(s))
        .set("version", n(l.version))
        .set("created_at", ts(l.created_at))
        .set("updated_at", ts(l.updated_at))
        .build()
}

pub fn license_from_item(item: &Item) -> StoreResult<License> {
    let r = ItemReader::new(item);
    let status_text = r.string("status")?;
    let status = LicenseStatus::parse(&status_text)
        .ok_or_else(|| r.corrupt(format!("unknown license status {status_text:?}")))?;
    let suspension_reason = match r.opt_string("suspension_reason")? {
        None => None,
        Some(text) => Some(
            SuspensionReason::parse(&text)
                .ok_or_else(|| r.corrupt(format!("unknown suspension reason {text:?}")))?,
        ),
    };
    Ok(License {
        id: r.string("id")?,
        customer_id: r.string("customer_id")?,
        status,
        suspension_reason,
        tier: r.string("tier")?,
        features: r.string_list("features")?,
        limits: r.number_map("limits")?,
        max_deployments: r.opt_number("max_deployments")?,
        offline_days: r.number("offline_days")?,
        grace_days: r.number("grace_days")?,
        expires_at: r.opt_timestamp("expires_at")?,
        grace_ends_at: r.opt_timestamp("grace_ends_at")?,
        key_id: r.string("key_id")?,
        stripe_subscription_id: r.opt_string("stripe_subscription_id")?,
        stripe_price_id: r.opt_string("stripe_price_id")?,
        billing_event_at: r.opt_number("billing_event_at")?,
        registry: r
            .opt_json("registry")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| r.corrupt(format!("attribute `registry` is not a registry grant: {e}")))?,
        cloud: r
            .opt_json("cloud")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| r.corrupt(format!("attribute `cloud` is not a cloud grant: {e}")))?,
        version: r.number("version")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

// ---- seats (deployment leases) ----

/// The per-license seats item: `leases` maps deployment id → lease, `recent_activations`
/// holds the times of new activations (churn window), `version` guards every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seats {
    pub leases: BTreeMap<String, Deployment>,
    pub recent_activations: Vec<Timestamp>,
    /// 0 when the item does not exist yet.
    pub version: u64,
}

pub fn lease_value(d: &Deployment) -> AttributeValue {
    AttributeValue::M(
        ItemBuilder::default()
            .set_opt("fingerprint", d.fingerprint.as_deref().map(s))
            .set_opt("app_version", d.app_version.as_deref().map(s))
            .set("activated_at", ts(d.activated_at))
            .set("last_heartbeat_at", ts(d.last_heartbeat_at))
            .set("lease_expires_at", ts(d.lease_expires_at))
            .build(),
    )
}

pub fn seats_item(license_id: &str, seats: &Seats) -> Item {
    ItemBuilder::keyed(license_pk(license_id), SEATS_ITEM_SK)
        .set("license_id", s(license_id))
        .set(
            "leases",
            AttributeValue::M(seats.leases.iter().map(|(id, d)| (id.clone(), lease_value(d))).collect()),
        )
        .set(
            "recent_activations",
            AttributeValue::L(seats.recent_activations.iter().map(|t| ts(*t)).collect()),
        )
        .set("version", n(seats.version))
        .build()
}

pub fn seats_from_item(license_id: &str, item: &Item) -> StoreResult<Seats> {
    let r = ItemReader::new(item);
    let mut leases = BTreeMap::new();
    for (deployment_id, value) in r.map("leases")?.into_iter().flatten() {
        let AttributeValue::M(lease) = value else {
            return Err(r.corrupt(format!("lease {deployment_id:?} is not a map")));
        };
        let lr = ItemReader::nested(lease, format!("{} leases.{deployment_id}", r.label()));
        leases.insert(
            deployment_id.clone(),
            Deployment {
                license_id: license_id.to_owned(),
                deployment_id: deployment_id.clone(),
                fingerprint: lr.opt_string("fingerprint")?,
                app_version: lr.opt_string("app_version")?,
                activated_at: lr.timestamp("activated_at")?,
                last_heartbeat_at: lr.timestamp("last_heartbeat_at")?,
                lease_expires_at: lr.timestamp("lease_expires_at")?,
            },
        );
    }
    let recent_activations = r
        .string_list("recent_activations")?
        .iter()
        .map(|text| parse_timestamp_key(text).ok_or_else(|| r.corrupt(format!("activation time {text:?}"))))
        .collect::<StoreResult<_>>()?;
    Ok(Seats { leases, recent_activations, version: r.number("version")? })
}

// ---- usage counters ----

/// Reads a counter item's `metric:<name>` attributes into metric → total.
pub fn counter_totals_from_item(item: &Item) -> StoreResult<BTreeMap<String, u64>> {
    let r = ItemReader::new(item);
    let mut totals = BTreeMap::new();
    for name in item.keys() {
        if let Some(metric) = name.strip_prefix(METRIC_ATTRIBUTE_PREFIX) {
            totals.insert(metric.to_owned(), r.number::<u64>(name)?);
        }
    }
    Ok(totals)
}

// ---- API keys ----

pub fn api_key_item(k: &ApiKeyRecord) -> Item {
    let scopes: Vec<String> = k.scopes.iter().map(|sc| sc.as_str().to_owned()).collect();
    ItemBuilder::keyed(api_key_pk(&k.id), API_KEY_ITEM_SK)
        .set(KIND_PK, s(KIND_API_KEY))
        .set(KIND_SK, s(&k.id))
        .set("id", s(&k.id))
        .set("name", s(&k.name))
        .set("secret_sha256", s(&k.secret_sha256))
        .set("scopes", string_list(&scopes))
        .set("created_at", ts(k.created_at))
        .set_opt("revoked_at", k.revoked_at.map(ts))
        .build()
}

pub fn api_key_from_item(item: &Item) -> StoreResult<ApiKeyRecord> {
    let r = ItemReader::new(item);
    let scopes = r
        .string_list("scopes")?
        .iter()
        .map(|text| Scope::parse(text).ok_or_else(|| r.corrupt(format!("unknown scope {text:?}"))))
        .collect::<StoreResult<_>>()?;
    Ok(ApiKeyRecord {
        id: r.string("id")?,
        name: r.string("name")?,
        secret_sha256: r.string("secret_sha256")?,
        scopes,
        created_at: r.timestamp("created_at")?,
        revoked_at: r.opt_timestamp("revoked_at")?,
    })
}

// ---- audit ----

pub fn audit_item(e: &AuditEntry) -> Item {
    ItemBuilder::keyed(audit_pk(&e.id), AUDIT_ITEM_SK)
        .set(KIND_PK, s(KIND_AUDIT))
        .set(KIND_SK, s(audit_kind_sk(e.at, &e.id)))
        .set("id", s(&e.id))
        .set("at", ts(e.at))
        .set("actor", s(&e.actor))
        .set("action", s(&e.action))
        .set("target", s(&e.target))
        .set_opt("before", e.before.as_ref().map(|v| s(v.to_string())))
        .set_opt("after", e.after.as_ref().map(|v| s(v.to_string())))
        .build()
}

pub fn audit_from_item(item: &Item) -> StoreResult<AuditEntry> {
    let r = ItemReader::new(item);
    Ok(AuditEntry {
        id: r.string("id")?,
        at: r.timestamp("at")?,
        actor: r.string("actor")?,
        action: r.string("action")?,
        target: r.string("target")?,
        before: r.opt_json("before")?,
        after: r.opt_json("after")?,
    })
}

// ---- staff users and sessions ----

pub fn staff_user_item(u: &StaffUser) -> Item {
    ItemBuilder::keyed(staff_user_pk(&u.id), STAFF_USER_ITEM_SK)
        .set(KIND_PK, s(KIND_STAFF_USER))
        .set(KIND_SK, s(&u.email))
        .set("id", s(&u.id))
        .set("email", s(&u.email))
        .set("name", s(&u.name))
        .set("role", s(u.role.as_str()))
        .set("password_hash", s(&u.password_hash))
        .set_opt("totp_secret", u.totp_secret.as_deref().map(s))
        .set_opt("totp_last_step", u.totp_last_step.map(n))
        .set("disabled", AttributeValue::Bool(u.disabled))
        .set("sessions_valid_after", ts(u.sessions_valid_after))
        .set("version", n(u.version))
        .set("created_at", ts(u.created_at))
        .set("updated_at", ts(u.updated_at))
        .build()
}

pub fn staff_user_from_item(item: &Item) -> StoreResult<StaffUser> {
    let r = ItemReader::new(item);
    let role_text = r.string("role")?;
    let role =
        StaffRole::parse(&role_text).ok_or_else(|| r.corrupt(format!("unknown staff role {role_text:?}")))?;
    Ok(StaffUser {
        id: r.string("id")?,
        email: r.string("email")?,
        name: r.string("name")?,
        role,
        password_hash: r.string("password_hash")?,
        totp_secret: r.opt_string("totp_secret")?,
        totp_last_step: r.opt_number("totp_last_step")?,
        disabled: r.bool_or_false("disabled")?,
        sessions_valid_after: r.timestamp("sessions_valid_after")?,
        version: r.number("version")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

pub fn staff_email_claim_item(email: &str, user_id: &str) -> Item {
    ItemBuilder::keyed(staff_email_claim_pk(email), STAFF_EMAIL_CLAIM_ITEM_SK)
        .set("user_id", s(user_id))
        .build()
}

pub fn staff_email_claim_user_id(item: &Item) -> StoreResult<String> {
    ItemReader::new(item).string("user_id")
}

/// `ttl` is `expires_at` rounded up to whole seconds, so DynamoDB never deletes a session
/// before its absolute timeout (it deletes expired items within days, not at once: readers
/// check `expires_at` themselves).
pub fn staff_session_item(session: &StaffSession) -> Item {
    let expires = session.expires_at;
    let ttl = expires.timestamp() + i64::from(expires.timestamp_subsec_nanos() > 0);
    ItemBuilder::keyed(staff_session_pk(&session.token_sha256), STAFF_SESSION_ITEM_SK)
        .set("token_sha256", s(&session.token_sha256))
        .set("user_id", s(&session.user_id))
        .set("csrf_token", s(&session.csrf_token))
        .set("created_at", ts(session.created_at))
        .set("last_seen_at", ts(session.last_seen_at))
        .set("expires_at", ts(expires))
        .set(TTL_ATTRIBUTE, n(ttl))
        .build()
}

pub fn staff_session_from_item(item: &Item) -> StoreResult<StaffSession> {
    let r = ItemReader::new(item);
    Ok(StaffSession {
        token_sha256: r.string("token_sha256")?,
        user_id: r.string("user_id")?,
        csrf_token: r.string("csrf_token")?,
        created_at: r.timestamp("created_at")?,
        last_seen_at: r.timestamp("last_seen_at")?,
        expires_at: r.timestamp("expires_at")?,
    })
}

// ---- webhook events ----

pub fn webhook_event_item(e: &WebhookEventRecord, expires_epoch_seconds: i64) -> Item {
    ItemBuilder::keyed(webhook_event_pk(&e.event_id), WEBHOOK_EVENT_ITEM_SK)
        .set("event_id", s(&e.event_id))
        .set("event_type", s(&e.event_type))
        .set("received_at", ts(e.received_at))
        .set(TTL_ATTRIBUTE, n(expires_epoch_seconds))
        .build()
}

// ---- notifications ----

pub const NOTICE_STATE_PENDING: &str = "pending";
pub const NOTICE_STATE_SENT: &str = "sent";

pub fn notification_item(record: &NotificationRecord) -> Item {
    let key = &record.key;
    let builder = ItemBuilder::keyed(notices_pk(&key.license_id), &notice_sk(&key.notice, &key.window))
        .set("license_id", s(&key.license_id))
        .set("notice", s(&key.notice))
        .set("window", s(&key.window))
        .set("recipient", s(&record.recipient))
        .set("subject", s(&record.subject));
    match &record.state {
        NotificationState::Pending { claimed_by, claimed_at } => builder
            .set("state", s(NOTICE_STATE_PENDING))
            .set("claimed_by", s(claimed_by))
            .set("claimed_at", ts(*claimed_at)),
        NotificationState::Sent { sent_at, message_id } => builder
            .set("state", s(NOTICE_STATE_SENT))
            .set("sent_at", ts(*sent_at))
            .set("message_id", s(message_id)),
    }
    .build()
}

pub fn notification_from_item(item: &Item) -> StoreResult<NotificationRecord> {
    let r = ItemReader::new(item);
    let state = match r.string("state")?.as_str() {
        NOTICE_STATE_PENDING => NotificationState::Pending {
            claimed_by: r.string("claimed_by")?,
            claimed_at: r.timestamp("claimed_at")?,
        },
        NOTICE_STATE_SENT => {
            NotificationState::Sent { sent_at: r.timestamp("sent_at")?, message_id: r.string("message_id")? }
        }
        other => return Err(r.corrupt(format!("unknown notification state {other:?}"))),
    };
    Ok(NotificationRecord {
        key: NotificationKey {
            license_id: r.string("license_id")?,
            notice: r.string("notice")?,
            window: r.string("window")?,
        },
        recipient: r.string("recipient")?,
        subject: r.string("subject")?,
        state,
    })
}

// ---- validation logs ----

pub fn validation_log_item(e: &ValidationLogEntry, sk: String, expires_epoch_seconds: i64) -> Item {
    ItemBuilder::keyed(license_pk(&e.license_id), &sk)
        .set("license_id", s(&e.license_id))
        .set("at", ts(e.at))
        .set("code", s(&e.code))
        .set_opt("deployment_id", e.deployment_id.as_deref().map(s))
        .set_opt("fingerprint", e.fingerprint.as_deref().map(s))
        .set_opt("client_ip", e.client_ip.as_deref().map(s))
        .set_opt("registry", e.registry.as_ref().and_then(|r| serde_json::to_string(r).ok()).map(s))
        .set(TTL_ATTRIBUTE, n(expires_epoch_seconds))
        .build()
}

pub fn validation_log_from_item(item: &Item) -> StoreResult<ValidationLogEntry> {
    let r = ItemReader::new(item);
    Ok(ValidationLogEntry {
        license_id: r.string("license_id")?,
        at: r.timestamp("at")?,
        code: r.string("code")?,
        deployment_id: r.opt_string("deployment_id")?,
        fingerprint: r.opt_string("fingerprint")?,
        client_ip: r.opt_string("client_ip")?,
        registry: r
            .opt_json("registry")?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| r.corrupt(format!("attribute `registry` is not a registry access record: {e}")))?,
    })
}
