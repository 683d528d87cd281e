//! The validation engine (DESIGN §4): a pure function from a verified key, a request and a
//! status snapshot to exactly one code. The order of checks is the contract:
//! size and shape, checksum, signature and claims, state, then deployment and entitlements.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::key_ring::KeyRing;
use crate::license_token::{KeyRejection, VerifiedLicense, verify_license_key};
use crate::lifecycle::LicenseStatus;
use crate::model::{License, Timestamp, UsagePeriod, days_after};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationCode {
    Valid,
    Malformed,
    ChecksumMismatch,
    BadSignature,
    NotYetValid,
    Expired,
    InGrace,
    Suspended,
    Revoked,
    TooManyDeployments,
    FeatureNotEntitled,
    UsageLimitExceeded,
}

impl ValidationCode {
    pub const ALL: [ValidationCode; 12] = [
        Self::Valid,
        Self::Malformed,
        Self::ChecksumMismatch,
        Self::BadSignature,
        Self::NotYetValid,
        Self::Expired,
        Self::InGrace,
        Self::Suspended,
        Self::Revoked,
        Self::TooManyDeployments,
        Self::FeatureNotEntitled,
        Self::UsageLimitExceeded,
    ];

    /// `IN_GRACE` is valid, with a warning.
    pub fn is_valid(self) -> bool {
        matches!(self, Self::Valid | Self::InGrace)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::Malformed => "MALFORMED",
            Self::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::Expired => "EXPIRED",
            Self::InGrace => "IN_GRACE",
            Self::Suspended => "SUSPENDED",
            Self::Revoked => "REVOKED",
            Self::TooManyDeployments => "TOO_MANY_DEPLOYMENTS",
            Self::FeatureNotEntitled => "FEATURE_NOT_ENTITLED",
            Self::UsageLimitExceeded => "USAGE_LIMIT_EXCEEDED",
        }
    }
}

impl From<KeyRejection> for ValidationCode {
    fn from(r: KeyRejection) -> Self {
        match r {
            KeyRejection::Malformed => Self::Malformed,
            KeyRejection::ChecksumMismatch => Self::ChecksumMismatch,
            KeyRejection::BadSignature => Self::BadSignature,
        }
    }
}

/// What the caller asks beyond "is this key good".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationRequest {
    pub deployment_id: Option<String>,
    pub features: Vec<String>,
    /// metric → amount the caller is about to use; checked against this month's counter.
    pub metrics: BTreeMap<String, u64>,
}

/// What the store (or an edge cache) knows about a license at `as_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub license: License,
    /// Deployment ids whose lease has not run out at `as_of`.
    pub live_deployments: Vec<String>,
    /// This month's counters (metric → total).
    pub month_usage: BTreeMap<String, u64>,
    pub as_of: Timestamp,
}

/// The license as a validation answer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseSummary {
    pub id: String,
    pub customer_id: String,
    pub tier: String,
    pub status: Option<LicenseStatus>,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub max_deployments: Option<u32>,
    pub expires_at: Option<Timestamp>,
    pub grace_ends_at: Option<Timestamp>,
    pub offline_days: u32,
    pub grace_days: u32,
}

/// One limited metric's fleet-wide use in its counter period, as a snapshot knows it: every
/// deployment's reports that reached the store, through any edge or the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricUsage {
    pub used: u64,
    pub limit: u64,
    /// The counter period, a UTC month: `2026-12`.
    pub period: String,
}

/// The fleet-wide usage of every limited metric of a license, read from a status snapshot
/// (so it costs no store read when the snapshot is cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetUsage {
    /// When the snapshot was read from the store: reports recorded before it are counted.
    pub as_of: Timestamp,
    pub metrics: BTreeMap<String, MetricUsage>,
}

impl FleetUsage {
    /// Every metric of `limits`, with the snapshot's counter for its month (0 when none).
    pub fn from_snapshot(snapshot: &StatusSnapshot, limits: &BTreeMap<String, u64>) -> Self {
        let period = UsagePeriod::month_of(snapshot.as_of).key();
        let metrics = limits
            .iter()
            .map(|(metric, limit)| {
                let used = snapshot.month_usage.get(metric).copied().unwrap_or(0);
                (metric.clone(), MetricUsage { used, limit: *limit, period: period.clone() })
            })
            .collect();
        Self { as_of: snapshot.as_of, metrics }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub code: ValidationCode,
    pub warning: Option<String>,
    pub license: LicenseSummary,
    /// Fleet-wide usage of the limited metrics; `None` without a snapshot (decided from the
    /// key alone), when it is not known.
    pub usage: Option<FleetUsage>,
    /// The request names a deployment the snapshot does not hold and the limit has room: the
    /// caller must activate it with the store's conditional write before answering `VALID`.
    pub needs_activation: bool,
}

/// Decides a verified key. With no snapshot (offline, or an edge that has none yet) only the
/// key's own claims are judged.
pub fn decide(
    key: &VerifiedLicense,
    request: &ValidationRequest,
    snapshot: Option<&StatusSnapshot>,
    now: Timestamp,
) -> Decision {
    let claims = &key.claims;
    let stored = snapshot.map(|s| &s.license).filter(|l| l.id == claims.sub);
    let expires_at = stored.map_or(key.expires_at, |l| l.expires_at);
    let grace_days = stored.map_or(claims.grace_days, |l| l.grace_days);
    let expiry_grace_end = expires_at.map(|e| days_after(e, grace_days));
    let status = stored.map(|l| l.status);
    let payment_grace_end = stored.and_then(|l| l.grace_ends_at);
    let mut license = LicenseSummary {
        id: claims.sub.clone(),
        customer_id: claims.customer_id.clone(),
        tier: stored.map_or(&claims.tier, |l| &l.tier).clone(),
        status,
        features: stored.map_or(&claims.features, |l| &l.features).clone(),
        limits: stored.map_or(&claims.limits, |l| &l.limits).clone(),
        max_deployments: stored.map_or(claims.max_deployments, |l| l.max_deployments),
        expires_at,
        grace_ends_at: expiry_grace_end,
        offline_days: stored.map_or(claims.offline_days, |l| l.offline_days),
        grace_days,
    };
    let usage = snapshot.filter(|_| stored.is_some()).map(|s| FleetUsage::from_snapshot(s, &license.limits));
    let verdict = |code, warning: Option<String>, license: LicenseSummary| Decision {
        code,
        warning,
        license,
        usage: usage.clone(),
        needs_activation: false,
    };

    if key.not_before.is_some_and(|nbf| now < nbf) {
        return verdict(ValidationCode::NotYetValid, None, license);
    }
    let mut warning = None;
    match status {
        Some(LicenseStatus::Revoked) => return verdict(ValidationCode::Revoked, None, license),
        Some(LicenseStatus::Suspended) => return verdict(ValidationCode::Suspended, None, license),
        Some(LicenseStatus::Expired) => return verdict(ValidationCode::Expired, None, license),
        Some(LicenseStatus::PastDue) => {
            let grace_end = payment_grace_end.or(expiry_grace_end);
            license.grace_ends_at = grace_end;
            if grace_end.is_some_and(|end| now >= end) {
                return verdict(ValidationCode::Suspended, None, license);
            }
            warning = Some("payment is past due; the license is in its grace period".to_owned());
        }
        Some(LicenseStatus::Active) | None => {}
    }
    if let (Some(exp), Some(grace_end)) = (expires_at, expiry_grace_end) {
        if now >= grace_end {
            return verdict(ValidationCode::Expired, None, license);
        }
        if now >= exp {
            warning = Some("the license has expired and is in its grace period".to_owned());
        }
    }
    let state_code = if warning.is_some() { ValidationCode::InGrace } else { ValidationCode::Valid };

    let mut needs_activation = false;
    if let (Some(deployment), Some(snapshot)) = (&request.deployment_id, snapshot) {
        if !snapshot.live_deployments.iter().any(|d| d == deployment) {
            let full =
                license.max_deployments.is_some_and(|max| snapshot.live_deployments.len() >= max as usize);
            if full {
                return verdict(ValidationCode::TooManyDeployments, warning, license);
            }
            needs_activation = true;
        }
    }
    if let Some(missing) = request.features.iter().find(|f| !license.features.contains(f)) {
        let why = Some(format!("feature {missing:?} is not in this license"));
        return verdict(ValidationCode::FeatureNotEntitled, why, license);
    }
    for (metric, amount) in &request.metrics {
        let Some(limit) = license.limits.get(metric) else { continue };
        let used = snapshot.and_then(|s| s.month_usage.get(metric)).copied().unwrap_or(0);
        if used.saturating_add(*amount) > *limit {
            let why = Some(format!("{metric}: {used} used of {limit} this month"));
            return verdict(ValidationCode::UsageLimitExceeded, why, license);
        }
    }
    Decision { code: state_code, warning, license, usage, needs_activation }
}

/// Verifies keys, remembering the ones that verified so a warm validation skips the Ed25519
/// check. The cache is keyed on the exact key text and holds only successes, so a forged key
/// can never be served from it; the state checks in [`decide`] run on every call regardless.
pub struct Verifier {
    ring: Arc<KeyRing>,
    verified: Mutex<HashMap<Box<str>, Arc<VerifiedLicense>>>,
    capacity: usize,
}

impl Verifier {
    pub const DEFAULT_CAPACITY: usize = 10_000;

    pub fn new(ring: Arc<KeyRing>) -> Self {
        Self::with_capacity(ring, Self::DEFAULT_CAPACITY)
    }

    pub fn with_capacity(ring: Arc<KeyRing>, capacity: usize) -> Self {
        Self { ring, verified: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    pub fn verify(&self, key: &str) -> Result<Arc<VerifiedLicense>, KeyRejection> {
        let key = key.trim();
        if let Some(hit) = self.lock().get(key) {
            return Ok(Arc::clone(hit));
        }
        let verified = Arc::new(verify_license_key(&self.ring, key)?);
        let mut cache = self.lock();
        if cache.len() >= self.capacity {
            // Crude but bounded: an attacker cannot grow it, and the hot set refills quickly.
            cache.clear();
        }
        cache.insert(key.into(), Arc::clone(&verified));
        Ok(verified)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<VerifiedLicense>>> {
        // A panic while holding the lock cannot leave the map half-written, so poisoning is moot.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}
