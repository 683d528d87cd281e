//! The JSON the edge reads and writes. Same shapes as the origin's wire types
//! (`nls_core::http::wire`, docs/api.md): a client cannot tell which one answered, except for
//! the additive fields `degraded`, `queued` and `deployment.provisional`. Kept here rather than
//! reusing the origin's types because those live behind the core's `http` feature (axum,
//! utoipa), which the Worker bundle does not need; the end-to-end tests read both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nls_core::validation::{FleetUsage, LicenseSummary, StatusSnapshot};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateBody {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatBody {
    pub key: String,
    pub deployment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBody {
    pub key: String,
    pub deployment_id: String,
    pub batch_id: String,
    pub records: Vec<UsageRecordBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecordBody {
    pub metric: String,
    pub value: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReleaseBody {
    pub key: String,
}

/// The validation answer (DESIGN §4), as the origin shapes it.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationAnswer {
    pub code: &'static str,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub license: Option<LicenseSummaryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentRef>,
    pub next_check_in: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    pub degraded: bool,
    /// Fleet-wide usage of the limited metrics, from the snapshot this edge decided with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<BTreeMap<String, MetricUsageView>>,
}

/// One limited metric's fleet-wide use, as the origin's `MetricUsageView` shapes it.
#[derive(Debug, Clone, Serialize)]
pub struct MetricUsageView {
    pub used: u64,
    pub limit: u64,
    pub period: String,
    pub as_of: DateTime<Utc>,
}

/// The answer's `usage` for a decision's fleet usage.
pub fn usage_view(usage: Option<&FleetUsage>) -> Option<BTreeMap<String, MetricUsageView>> {
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

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRef {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Admitted at the edge while the origin was unreachable; confirmed later.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
}

/// A heartbeat acknowledged at the edge because the origin could not be reached: the edge
/// knows the license's state, not the lease the origin will grant.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeHeartbeatAnswer {
    pub code: &'static str,
    pub valid: bool,
    pub deployment: EdgeDeploymentView,
    pub next_heartbeat_at: DateTime<Utc>,
    pub degraded: bool,
    pub queued: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeDeploymentView {
    pub deployment_id: String,
    pub license_id: String,
    /// Whether the last snapshot holds a live lease for it.
    pub live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageAccepted {
    pub batch_id: String,
    /// Only the origin knows; a queued batch says `false` and is counted once on delivery.
    pub duplicate: bool,
    pub queued: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentReleased {
    pub deployment_id: String,
    pub released: bool,
    pub queued: bool,
}

/// A snapshot as the edge keeps it in KV (`snap/<license_id>`), and as the origin pushes it
/// (`PUT /v1/internal/snapshots/{license_id}` on the edge). A compatibility promise between
/// origin and edge: fields are only ever added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSnapshotRecord {
    pub snapshot: StatusSnapshot,
    /// When the origin produced it. The age that bounds staleness is measured from here.
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: String,
}

/// A receipt the origin signed, cached in KV (`rcpt/<sha256(key)>/<sha256(deployment)>`) so
/// isolates and per-request instances (Spin) can hand it out without asking the origin again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReceiptRecord {
    pub code: nls_core::validation::ValidationCode,
    pub license_version: u64,
    pub cached_at: DateTime<Utc>,
    pub receipt: String,
}
