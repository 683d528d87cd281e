//! The JSON on the network: request bodies, query strings and answers of the HTTP API.
//!
//! These types are a compatibility promise (docs/api.md) and are kept apart from the domain
//! types in `model`, which may change shape freely. Conversions live next to the views.
//! Unknown request fields are ignored, so older servers accept newer clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;

use crate::model::{
    ApiKeyRecord, AuditEntry, Customer, Deployment, License, NotificationRecord, NotificationState,
    ValidationLogEntry,
};
use crate::validation::LicenseSummary;

// ---------------------------------------------------------------------------------------------
// Public routes (authenticated by the license key)

// The ~600-byte key is borrowed from the body (unless it holds escapes), not copied: a
// validation only compares and hashes it. (A plain comment: a doc comment would be the
// schema's description in the OpenAPI document.)
#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateRequest<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub key: std::borrow::Cow<'a, str>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Features the caller needs; each must be in the license.
    #[serde(default)]
    pub features: Vec<String>,
    /// metric → amount about to be used; checked against this month's counter and the limit.
    #[serde(default, deserialize_with = "whole_number_map")]
    #[schema(schema_with = counter_map)]
    pub metrics: BTreeMap<String, u64>,
}

/// The validation answer (DESIGN §4). Always HTTP 200 for a well-formed request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationAnswer {
    /// A validation code (docs/api.md), e.g. `VALID`, `TOO_MANY_DEPLOYMENTS`.
    pub code: &'static str,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Absent when the key itself was rejected (`MALFORMED`, `CHECKSUM_MISMATCH`, `BAD_SIGNATURE`).
    pub license: Option<LicenseSummaryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentRef>,
    pub next_check_in: DateTime<Utc>,
    /// A signed receipt (JWS, `typ: nls-receipt+jwt`) for valid answers; keep it for offline mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// True when the answer was decided from the key alone because the store was unreachable.
    pub degraded: bool,
    /// Fleet-wide usage this month of every limited metric of the license, from the status
    /// snapshot the answer was decided from (every deployment's reports that reached the
    /// store, through any edge or the origin). Absent when the key was rejected or the answer
    /// was decided from the key alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<BTreeMap<String, MetricUsageView>>,
}

/// One limited metric's fleet-wide use in its counter period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MetricUsageView {
    pub used: u64,
    pub limit: u64,
    /// The counter period, a UTC month (`2026-12`).
    pub period: String,
    /// When the snapshot behind `used` was read from the store: reports recorded before it
    /// are counted.
    pub as_of: DateTime<Utc>,
}

/// The answer's `usage` for a decision's fleet usage.
pub fn usage_view(
    usage: Option<&crate::validation::FleetUsage>,
) -> Option<BTreeMap<String, MetricUsageView>> {
    usage.map(|u| {
        u.metrics
            .iter()
            .map(|(metric, m)| {
                let view = MetricUsageView {
                    used: m.used,
                    limit: m.limit,
                    period: m.period.clone(),
                    as_of: u.as_of,
                };
                (metric.clone(), view)
            })
            .collect()
    })
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LicenseSummaryView {
    pub id: String,
    pub customer_id: String,
    pub tier: String,
    pub status: Option<&'static str>,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub max_deployments: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub offline_days: u32,
    pub grace_days: u32,
}

impl From<LicenseSummary> for LicenseSummaryView {
    fn from(s: LicenseSummary) -> Self {
        Self {
            id: s.id,
            customer_id: s.customer_id,
            tier: s.tier,
            status: s.status.map(|st| st.as_str()),
            features: s.features,
            limits: s.limits,
            max_deployments: s.max_deployments,
            expires_at: s.expires_at,
            grace_ends_at: s.grace_ends_at,
            offline_days: s.offline_days,
            grace_days: s.grace_days,
        }
    }
}

/// The deployment a validation speaks for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeploymentRef {
    pub id: String,
    /// Known when this validation activated or renewed the seat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HeartbeatRequest {
    pub key: String,
    #[schema(min_length = 1, max_length = 256)]
    pub deployment_id: String,
    #[serde(default)]
    pub app_version: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The license's validation code at this moment (no deployment or entitlement checks).
    pub code: &'static str,
    pub valid: bool,
    pub deployment: DeploymentView,
    pub next_heartbeat_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageRequest {
    pub key: String,
    #[schema(min_length = 1, max_length = 256)]
    pub deployment_id: String,
    /// Chosen by the client; a batch is counted once however often it is sent.
    #[schema(min_length = 1, max_length = 256)]
    pub batch_id: String,
    /// At most 99 distinct counter periods (UTC days plus months) in all; more is 400
    /// `usage_out_of_bounds`.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<UsageRecordBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageRecordBody {
    #[schema(min_length = 1, max_length = 256)]
    pub metric: String,
    /// At most 2^53 − 1; a batch that would overflow a counter is 400 `usage_out_of_bounds`.
    #[serde(deserialize_with = "whole_number")]
    #[schema(format = "uint64", maximum = 9_007_199_254_740_991_u64)]
    pub value: u64,
    /// Within 35 days before and 5 minutes after the server's clock (configurable); outside
    /// it, 400 `usage_out_of_bounds`.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageAccepted {
    pub batch_id: String,
    /// True when this batch had already been counted; nothing changed.
    pub duplicate: bool,
}

/// The key may instead be sent in the `X-License-Key` header.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReleaseDeploymentRequest {
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentReleased {
    pub deployment_id: String,
    pub released: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthAnswer {
    pub status: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable error code (docs/api.md), e.g. `invalid_request`.
    pub code: &'static str,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Admin: customers

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateCustomerRequest {
    #[schema(schema_with = customer_text)]
    pub name: String,
    #[schema(schema_with = email)]
    pub email: String,
    #[serde(default)]
    #[schema(schema_with = nullable_customer_text)]
    pub stripe_customer_id: Option<String>,
    #[serde(default)]
    pub reminders_opt_out: bool,
}

/// Absent fields are left as they are; `null` clears a nullable one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateCustomerRequest {
    #[serde(default)]
    #[schema(schema_with = nullable_customer_text)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = nullable_email)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = nullable_customer_text)]
    pub stripe_customer_id: Option<Option<String>>,
    #[serde(default)]
    pub reminders_opt_out: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub stripe_customer_id: Option<String>,
    pub reminders_opt_out: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Customer> for CustomerView {
    fn from(c: &Customer) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            stripe_customer_id: c.stripe_customer_id.clone(),
            reminders_opt_out: c.reminders_opt_out,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerEnvelope {
    pub customer: CustomerView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub items: Vec<CustomerView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 50); anything else is `invalid_query`.
    #[serde(default, deserialize_with = "page_limit")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; any other value is 400 `invalid_query`.
    #[serde(default)]
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Admin: licenses

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLicenseRequest {
    pub customer_id: String,
    #[serde(default)]
    #[schema(schema_with = nullable_tier)]
    pub tier: Option<String>,
    #[serde(default)]
    #[schema(schema_with = feature_list)]
    pub features: Vec<String>,
    #[serde(default, deserialize_with = "whole_number_map")]
    #[schema(schema_with = limit_map)]
    pub limits: BTreeMap<String, u64>,
    /// Absent or `null`: unlimited.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(format = "uint32", maximum = 4_294_967_295_u32)]
    pub max_deployments: Option<u32>,
    /// Absent or `null`: perpetual. Otherwise after the server's clock, as for a renewal: an
    /// expiry not in the future is 400 `invalid_request`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Default 30; at most 3650.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(maximum = 3650)]
    pub offline_days: Option<u32>,
    /// Default 7; at most 3650.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(maximum = 3650)]
    pub grace_days: Option<u32>,
    /// The container images this license may pull (docs/distribution.md).
    #[serde(default)]
    pub registry: Option<RegistryGrantBody>,
    /// The cloud services this license may call: audience → limits (docs/cloud-access.md).
    #[serde(default)]
    #[schema(schema_with = crate::http::access_token_routes::nullable_cloud_grant_schema)]
    pub cloud: Option<Value>,
}

/// A license's registry entitlement: repository names or globs (`*` within one path
/// component) and the actions, of which customers only ever get `pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryGrantBody {
    #[serde(default)]
    #[schema(schema_with = registry_repositories)]
    pub repositories: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = registry_actions)]
    pub actions: Vec<String>,
}

/// What `RegistryGrant::check` accepts, item by item.
fn registry_repositories() -> Schema {
    use crate::registry_token::{REPOSITORY_GLOB_MAX_LEN, REPOSITORY_GLOB_PATTERN};
    from_json(json!({
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": REPOSITORY_GLOB_MAX_LEN, "pattern": REPOSITORY_GLOB_PATTERN}
    }))
}
fn registry_actions() -> Schema {
    from_json(
        json!({"type": "array", "items": {"type": "string", "enum": crate::registry_token::CUSTOMER_ACTIONS}}),
    )
}

impl RegistryGrantBody {
    /// The domain grant, checked: 400 when a repository or an action is not allowed.
    pub fn into_grant(self) -> Result<crate::model::RegistryGrant, crate::http::app_error::AppError> {
        let grant = crate::model::RegistryGrant { repositories: self.repositories, actions: self.actions };
        grant.check().map_err(|e| crate::http::app_error::AppError::invalid(e.to_string()))?;
        Ok(grant)
    }
}

impl From<&crate::model::RegistryGrant> for RegistryGrantBody {
    fn from(g: &crate::model::RegistryGrant) -> Self {
        Self { repositories: g.repositories.clone(), actions: g.actions.clone() }
    }
}

/// Absent fields are left as they are; `null` clears a nullable one (unlimited, perpetual).
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateLicenseRequest {
    #[serde(default)]
    #[schema(schema_with = nullable_tier)]
    pub tier: Option<String>,
    #[serde(default)]
    #[schema(schema_with = nullable_feature_list)]
    pub features: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_whole_number_map")]
    #[schema(schema_with = nullable_limit_map)]
    pub limits: Option<BTreeMap<String, u64>>,
    #[serde(default, deserialize_with = "present_whole_number")]
    #[schema(value_type = Option<u32>, format = "uint32", maximum = 4_294_967_295_u32)]
    pub max_deployments: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(maximum = 3650)]
    pub offline_days: Option<u32>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(maximum = 3650)]
    pub grace_days: Option<u32>,
    /// `null` removes the license's registry access.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RegistryGrantBody>)]
    pub registry: Option<Option<RegistryGrantBody>>,
    /// Replaces the whole cloud grant; `null` removes all cloud access.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = crate::http::access_token_routes::nullable_cloud_grant_schema)]
    pub cloud: Option<Option<Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RenewLicenseRequest {
    /// After the server's clock: an expiry not in the future is 400 `invalid_request`.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LicenseView {
    pub id: String,
    pub customer_id: String,
    #[schema(schema_with = license_status)]
    pub status: &'static str,
    /// While suspended: `admin` (lifted only by staff) or `billing` (lifted by payment too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspension_reason: Option<&'static str>,
    pub tier: String,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub max_deployments: Option<u32>,
    pub offline_days: u32,
    pub grace_days: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// `jti` of the most recently issued key.
    pub key_id: String,
    pub stripe_subscription_id: Option<String>,
    /// Absent: no registry access.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryGrantBody>,
    /// Absent: no cloud access.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::http::access_token_routes::cloud_grant_schema)]
    pub cloud: Option<crate::access_token::CloudGrant>,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&License> for LicenseView {
    fn from(l: &License) -> Self {
        Self {
            id: l.id.clone(),
            customer_id: l.customer_id.clone(),
            status: l.status.as_str(),
            suspension_reason: crate::lifecycle::LifecycleState::of(l.status, l.suspension_reason)
                .suspension_reason()
                .map(|r| r.as_str()),
            tier: l.tier.clone(),
            features: l.features.clone(),
            limits: l.limits.clone(),
            max_deployments: l.max_deployments,
            offline_days: l.offline_days,
            grace_days: l.grace_days,
            expires_at: l.expires_at,
            grace_ends_at: l.grace_ends_at,
            key_id: l.key_id.clone(),
            stripe_subscription_id: l.stripe_subscription_id.clone(),
            registry: l.registry.as_ref().map(RegistryGrantBody::from),
            cloud: l.cloud.clone(),
            version: l.version,
            created_at: l.created_at,
            updated_at: l.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseEnvelope {
    pub license: LicenseView,
    /// The license key (`NLS-...`): returned on creation and when an update re-issued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LicensePage {
    pub items: Vec<LicenseView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LicenseListQuery {
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = license_status)]
    pub status: Option<String>,
    #[serde(default)]
    pub expires_before: Option<DateTime<Utc>>,
    /// Items per page, 1 to 100 (default 50).
    #[serde(default, deserialize_with = "page_limit")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; any other value is 400 `invalid_query`.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeploymentView {
    pub deployment_id: String,
    pub license_id: String,
    pub fingerprint: Option<String>,
    pub app_version: Option<String>,
    pub activated_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// False once the lease ran out: the seat is free.
    pub live: bool,
}

impl DeploymentView {
    pub fn new(d: &Deployment, now: DateTime<Utc>) -> Self {
        Self {
            deployment_id: d.deployment_id.clone(),
            license_id: d.license_id.clone(),
            fingerprint: d.fingerprint.clone(),
            app_version: d.app_version.clone(),
            activated_at: d.activated_at,
            last_heartbeat_at: d.last_heartbeat_at,
            lease_expires_at: d.lease_expires_at,
            live: d.is_live(now),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentList {
    pub items: Vec<DeploymentView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageQuery {
    /// `2026-11` (a month) or `2026-11-30` (a day); default: the current month.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}(-[0-9]{2})?$")]
    pub period: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    pub license_id: String,
    pub period: String,
    /// metric → total
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct HistoryQuery {
    /// Newest entries to return, 1 to 1000 (default 100).
    #[serde(default, deserialize_with = "history_limit")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationLogView {
    pub at: DateTime<Utc>,
    pub code: String,
    pub deployment_id: Option<String>,
    pub fingerprint: Option<String>,
    pub client_ip: Option<String>,
    /// A registry token request (codes `REGISTRY_GRANTED`, `REGISTRY_DENIED`): the repository,
    /// the actions asked for and those granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAccessView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegistryAccessView {
    pub repository: String,
    pub requested: Vec<String>,
    pub granted: Vec<String>,
}

impl From<&ValidationLogEntry> for ValidationLogView {
    fn from(e: &ValidationLogEntry) -> Self {
        Self {
            at: e.at,
            code: e.code.clone(),
            deployment_id: e.deployment_id.clone(),
            fingerprint: e.fingerprint.clone(),
            client_ip: e.client_ip.clone(),
            registry: e.registry.as_ref().map(|r| RegistryAccessView {
                repository: r.repository.clone(),
                requested: r.requested.clone(),
                granted: r.granted.clone(),
            }),
        }
    }
}

/// `GET /v1/registry/token`: the answer of the Docker Registry token protocol (token.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryTokenAnswer {
    pub token: String,
    /// The same token (OAuth 2 clients read this name).
    pub access_token: String,
    pub expires_in: i64,
    pub issued_at: DateTime<Utc>,
}

/// `GET /v1/registry/token` query: `scope` may repeat.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegistryTokenQuery {
    /// The registry's name; must be the one this server was configured with.
    pub service: String,
    /// `repository:<name>:<actions>`, repeatable.
    #[serde(default)]
    pub scope: Option<String>,
    /// The user name (ignored: the password decides).
    #[serde(default)]
    pub account: Option<String>,
}

/// One email in a license's communication log.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    /// e.g. `renewal_reminder_7d`, `payment_failed`, `key_delivery`.
    pub notice: String,
    /// What the notice is about: an expiry date, an invoice id.
    pub window: String,
    pub recipient: String,
    pub subject: String,
    /// `pending` (claimed, send not confirmed) or `sent`.
    pub state: &'static str,
    pub sent_at: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
}

impl From<&NotificationRecord> for NotificationView {
    fn from(n: &NotificationRecord) -> Self {
        let (state, sent_at, message_id) = match &n.state {
            NotificationState::Pending { .. } => ("pending", None, None),
            NotificationState::Sent { sent_at, message_id } => {
                ("sent", Some(*sent_at), Some(message_id.clone()))
            }
        };
        Self {
            notice: n.key.notice.clone(),
            window: n.key.window.clone(),
            recipient: n.recipient.clone(),
            subject: n.subject.clone(),
            state,
            sent_at,
            message_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub license_id: String,
    pub items: Vec<NotificationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationHistory {
    pub license_id: String,
    /// Newest first.
    pub items: Vec<ValidationLogView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OfflineFileRequest {
    /// How long the file stays valid; default 30, at most 3650.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 1, maximum = 3650)]
    pub ttl_days: Option<u32>,
    /// Binds the file to one machine.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The offline license file (docs/offline-license-file.md): save `file` as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfflineFileIssued {
    pub file: OfflineFileView,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfflineFileView {
    /// `nls-offline-license/1`
    pub format: String,
    pub token: String,
}

// ---------------------------------------------------------------------------------------------
// Admin: API keys, audit log, stats

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateApiKeyRequest {
    #[schema(schema_with = api_key_name)]
    pub name: String,
    /// Any of `read`, `write`, `admin` (each implies the ones before it), or `edge` alone: the
    /// edges' service token, which reaches only the internal routes.
    #[schema(schema_with = scope_list)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<&'static str>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            scopes: k.scopes.iter().map(|s| crate::http::admin_auth::scope_name(*s)).collect(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    pub api_key: ApiKeyView,
    /// `nls_<id>_<secret>`: shown once, never stored.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyEnvelope {
    pub api_key: ApiKeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Items per page, 1 to 100 (default 50).
    #[serde(default, deserialize_with = "page_limit")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; any other value is 400 `invalid_query`.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id.clone(),
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// status → number of licenses.
    pub licenses_by_status: BTreeMap<String, u64>,
    /// Validations answered by this instance per UTC hour (last 24 hours), oldest first.
    pub validations_per_hour: Vec<HourlyCount>,
    /// Validations answered by this instance since it started, by code, plus those the
    /// edges answered and reported to this instance (each counted once).
    pub validations_by_code: BTreeMap<String, u64>,
    /// Of `validations_by_code`, those answered at the edges, by code.
    pub edge_validations_by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HourlyCount {
    pub hour: DateTime<Utc>,
    pub count: u64,
}

/// Tells "absent" (outer `None`, via `#[serde(default)]`) from `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The most items a page holds (`limit` of the paged lists).
pub const MAX_PAGE_LIMIT: u32 = 100;
/// The most entries `GET /v1/licenses/{id}/validations` returns.
pub const MAX_HISTORY_LIMIT: u32 = 1000;

fn limit_in<'de, D: Deserializer<'de>>(deserializer: D, max: u32) -> Result<Option<u32>, D::Error> {
    let WholeNumber(limit) = deserializer.deserialize_any(WholeNumberVisitor { from_text: true })?;
    if !(1..=u64::from(max)).contains(&limit) {
        return Err(serde::de::Error::custom(format!("`limit` must be 1 to {max}")));
    }
    Ok(u32::try_from(limit).ok())
}

/// A non-negative integer as JSON Schema counts integers: `3` and `3.0` alike. Anything
/// fractional, negative or over `u64::MAX` is refused, and so is a JSON string.
struct WholeNumber(u64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WholeNumberVisitor { from_text: false })
    }
}

/// `from_text`: the number may be spelled as text (a query string has nothing else).
struct WholeNumberVisitor {
    from_text: bool,
}

impl serde::de::Visitor<'_> for WholeNumberVisitor {
    type Value = WholeNumber;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WholeNumber, E> {
        Ok(WholeNumber(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WholeNumber, E> {
        u64::try_from(v).map(WholeNumber).map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<WholeNumber, E> {
        // 2^64 is the first float above u64::MAX.
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(WholeNumber(v as u64))
        } else {
            Err(E::custom(format!("{v} is not a non-negative integer")))
        }
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WholeNumber, E> {
        if !self.from_text {
            return Err(E::invalid_type(serde::de::Unexpected::Str(v), &self));
        }
        match v.parse::<u64>() {
            Ok(n) => Ok(WholeNumber(n)),
            Err(_) => v
                .parse::<f64>()
                .map_err(|_| E::custom(format!("{v:?} is not a number")))
                .and_then(|f| self.visit_f64(f)),
        }
    }
}

fn narrow<T: TryFrom<u64>, E: serde::de::Error>(WholeNumber(n): WholeNumber) -> Result<T, E> {
    T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
}

pub(crate) fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    WholeNumber::deserialize(deserializer).map(|n| n.0)
}

fn optional_whole_number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<WholeNumber>::deserialize(deserializer)?.map(narrow).transpose()
}

/// Absent (outer `None`, via `#[serde(default)]`) versus `null` (`Some(None)`), as [`present`].
fn present_whole_number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    optional_whole_number(deserializer).map(Some)
}

fn whole_number_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, u64>, D::Error> {
    let map = BTreeMap::<String, WholeNumber>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn optional_whole_number_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, u64>>, D::Error> {
    let map = Option::<BTreeMap<String, WholeNumber>>::deserialize(deserializer)?;
    Ok(map.map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

fn page_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    limit_in(deserializer, MAX_PAGE_LIMIT)
}

fn history_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    limit_in(deserializer, MAX_HISTORY_LIMIT)
}

// ---------------------------------------------------------------------------------------------
// Schemas the derive cannot say: what the handlers check beyond the Rust types.

/// A string that is not only white space, as `str::trim` sees it (Unicode `White_Space`).
pub const NOT_BLANK_PATTERN: &str = r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// The shape the API checks an email against: something, `@`, then a domain with a dot.
pub const EMAIL_PATTERN: &str = r"^[^@]+@[\s\S]*\.";
/// Lengths are counted in characters (Unicode scalar values), as JSON Schema counts them.
pub const MAX_CUSTOMER_TEXT: usize = 512;
pub const MAX_TERM_NAME: usize = 128;
pub const MAX_TERM_ITEMS: usize = 100;
pub const MAX_API_KEY_NAME: usize = 256;
/// The scopes an API key may carry together; `edge` stands alone.
pub const STAFF_SCOPE_NAMES: &[&str] = &["read", "write", "admin"];
pub const EDGE_SCOPE_NAME: &str = "edge";
/// A cloud service's metering key (`POST /v1/cloud-usage` only); stands alone like `edge`.
pub const METER_SCOPE_NAME: &str = "meter";
pub const LICENSE_STATUSES: &[&str] = &["active", "past_due", "suspended", "expired", "revoked"];

/// The key under which a literal schema travels through utoipa's types (which cannot hold
/// every JSON Schema keyword); `route_table` puts the literal in its place.
pub const LITERAL_SCHEMA_EXTENSION: &str = "x-nls-literal-schema";

fn from_json(value: Value) -> Schema {
    let extensions =
        utoipa::openapi::extensions::ExtensionsBuilder::new().add(LITERAL_SCHEMA_EXTENSION, value).build();
    Schema::Object(utoipa::openapi::ObjectBuilder::new().extensions(Some(extensions)).build())
}

fn nullable(mut value: Value) -> Value {
    value["type"] = json!([value["type"].clone(), "null"]);
    value
}

fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": NOT_BLANK_PATTERN})
}

fn customer_text() -> Schema {
    from_json(text(MAX_CUSTOMER_TEXT))
}
fn nullable_customer_text() -> Schema {
    from_json(nullable(text(MAX_CUSTOMER_TEXT)))
}
fn email_value() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_CUSTOMER_TEXT, "pattern": EMAIL_PATTERN})
}
fn email() -> Schema {
    from_json(email_value())
}
fn nullable_email() -> Schema {
    from_json(nullable(email_value()))
}
fn nullable_tier() -> Schema {
    from_json(nullable(text(MAX_TERM_NAME)))
}
fn api_key_name() -> Schema {
    from_json(text(MAX_API_KEY_NAME))
}
fn features_value() -> Value {
    json!({
        "type": "array",
        "maxItems": MAX_TERM_ITEMS,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_TERM_NAME}
    })
}
fn feature_list() -> Schema {
    from_json(features_value())
}
fn nullable_feature_list() -> Schema {
    from_json(nullable(features_value()))
}
fn counter() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}
fn limits_value() -> Value {
    json!({
        "type": "object",
        "maxProperties": MAX_TERM_ITEMS,
        "propertyNames": {"minLength": 1, "maxLength": MAX_TERM_NAME},
        "additionalProperties": counter()
    })
}
fn limit_map() -> Schema {
    from_json(limits_value())
}
fn nullable_limit_map() -> Schema {
    from_json(nullable(limits_value()))
}
fn counter_map() -> Schema {
    from_json(json!({"type": "object", "additionalProperties": counter()}))
}
fn scope_list() -> Schema {
    let list_of = |names: &[&str]| json!({"type": "array", "minItems": 1, "items": {"enum": names}});
    from_json(
        json!({"anyOf": [list_of(STAFF_SCOPE_NAMES), list_of(&[EDGE_SCOPE_NAME]), list_of(&[METER_SCOPE_NAME])]}),
    )
}
fn license_status() -> Schema {
    from_json(json!({"type": "string", "enum": LICENSE_STATUSES}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_counted_as_json_schema_counts_them() {
        let parse = |json: &str| serde_json::from_str::<UsageRecordBody>(json).map(|r| r.value);
        let record = |value: &str| format!(r#"{{"metric":"m","at":"2026-01-01T00:00:00Z","value":{value}}}"#);
        assert_eq!(parse(&record("7")).ok(), Some(7));
        assert_eq!(parse(&record("7.0")).ok(), Some(7));
        assert_eq!(parse(&record("18446744073709551615")).ok(), Some(u64::MAX));
        for refused in ["7.5", "-1", "-1.0", "1.8446744073709552e19", "\"7\"", "null"] {
            assert!(parse(&record(refused)).is_err(), "{refused} must be refused");
        }
        let query = |q: &str| {
            let uri: axum::http::Uri = format!("/v1/customers?{q}").parse().unwrap();
            axum::extract::Query::<PageQuery>::try_from_uri(&uri).map(|p| p.0.limit)
        };
        assert_eq!(query("limit=10").ok(), Some(Some(10)));
        assert_eq!(query("limit=10.0").ok(), Some(Some(10)));
        assert_eq!(query("").ok(), Some(None));
        for refused in ["limit=0", "limit=101", "limit=1.5", "limit=x", "limit="] {
            assert!(query(refused).is_err(), "{refused} must be refused");
        }
        let create = |json: &str| serde_json::from_str::<CreateLicenseRequest>(json);
        let terms = create(r#"{"customer_id":"c","max_deployments":3.0,"limits":{"runs":5.0}}"#).unwrap();
        assert_eq!((terms.max_deployments, terms.limits["runs"]), (Some(3), 5));
        assert!(create(r#"{"customer_id":"c","max_deployments":4294967296}"#).is_err());
        let update = |json: &str| serde_json::from_str::<UpdateLicenseRequest>(json).unwrap().max_deployments;
        assert_eq!(update("{}"), None);
        assert_eq!(update(r#"{"max_deployments":null}"#), Some(None));
        assert_eq!(update(r#"{"max_deployments":2.0}"#), Some(Some(2)));
    }
}
