//! What the app sees: one small typed state with its reasons and deadlines.
//!
//! The JSON form (`{"state": "grace", ...}`) is what the Node package returns, so the field
//! names are a compatibility promise for both clients (docs/client.md).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nls_core::validation::ValidationCode;
use serde::{Deserialize, Serialize};

pub type Timestamp = DateTime<Utc>;

/// The license as the client knows it, from the signed receipt (or, for an air-gapped install,
/// from the license key inside the offline file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseInfo {
    pub id: String,
    pub customer_id: String,
    pub tier: String,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub offline_days: u32,
    pub grace_days: u32,
    /// `None`: perpetual.
    pub expires_at: Option<Timestamp>,
}

/// Where the proof of the current state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofSource {
    /// A signed receipt from a validation (fresh, or cached on disk).
    Receipt,
    /// A signed offline license file (air-gapped install).
    OfflineFile,
}

/// Why the app is in grace: working, with loud warnings, until `ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraceReason {
    /// No good validation for longer than the license's `offline_days`.
    OfflineTooLong,
    /// The system clock moved backwards past the last time seen (or the clock record does not
    /// add up). Cleared by the next good online validation.
    ClockRollback,
    /// The license itself expired; its `grace_days` are running.
    LicenseExpired,
    /// The server answered `IN_GRACE` (payment past due or expiry grace).
    ServerGrace,
}

/// Why the app must stop (fail closed). The string forms are the JSON error codes the
/// middlewares answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvalidCode {
    // The server's (or the local key check's) definite answers, DESIGN §4.
    Malformed,
    ChecksumMismatch,
    BadSignature,
    NotYetValid,
    Expired,
    Suspended,
    Revoked,
    TooManyDeployments,
    ActivationRateLimited,
    /// The server refused with a code this client does not know.
    Refused,
    // The client's own verdicts.
    /// No good validation was ever cached and the server cannot be reached.
    NotValidated,
    /// Offline for longer than `offline_days + grace_days` since the last good receipt.
    OfflineTooLong,
    /// The clock-rollback grace ran out without a good online validation.
    ClockRollback,
    /// The offline license file is outside its TTL, for another machine or not signed by NLS.
    OfflineFileInvalid,
}

impl InvalidCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED",
            Self::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Self::BadSignature => "BAD_SIGNATURE",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::Expired => "EXPIRED",
            Self::Suspended => "SUSPENDED",
            Self::Revoked => "REVOKED",
            Self::TooManyDeployments => "TOO_MANY_DEPLOYMENTS",
            Self::ActivationRateLimited => "ACTIVATION_RATE_LIMITED",
            Self::Refused => "REFUSED",
            Self::NotValidated => "NOT_VALIDATED",
            Self::OfflineTooLong => "OFFLINE_TOO_LONG",
            Self::ClockRollback => "CLOCK_ROLLBACK",
            Self::OfflineFileInvalid => "OFFLINE_FILE_INVALID",
        }
    }

    /// The server's code for a definite "no", or `None` when the code is a "yes"
    /// (`VALID`, `IN_GRACE`) or concerns only one request (features, usage).
    pub fn from_server_code(code: &str) -> Option<Self> {
        Some(match code {
            "VALID" | "IN_GRACE" | "FEATURE_NOT_ENTITLED" | "USAGE_LIMIT_EXCEEDED" => return None,
            "MALFORMED" => Self::Malformed,
            "CHECKSUM_MISMATCH" => Self::ChecksumMismatch,
            "BAD_SIGNATURE" => Self::BadSignature,
            "NOT_YET_VALID" => Self::NotYetValid,
            "EXPIRED" => Self::Expired,
            "SUSPENDED" => Self::Suspended,
            "REVOKED" => Self::Revoked,
            "TOO_MANY_DEPLOYMENTS" => Self::TooManyDeployments,
            "ACTIVATION_RATE_LIMITED" => Self::ActivationRateLimited,
            _ => Self::Refused,
        })
    }

    pub fn from_validation_code(code: ValidationCode) -> Option<Self> {
        Self::from_server_code(code.as_str())
    }
}

impl std::fmt::Display for InvalidCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the license, for the app to act on and show. Deadlines are wall-clock times
/// as this machine reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LicenseState {
    /// The last contact with NLS (or the offline file) says the license is good.
    Valid {
        license: LicenseInfo,
        source: ProofSource,
        /// When the proof stops being enough on its own: for a receipt, the start of grace if
        /// no later validation succeeds; for an offline file, its expiry (fail closed).
        valid_until: Timestamp,
    },
    /// NLS cannot be reached (or answered 5xx / degraded). The app keeps working until
    /// `offline_until`, then grace until `grace_until`, then stops.
    Offline {
        license: LicenseInfo,
        /// When the last good receipt was issued.
        last_validated_at: Timestamp,
        offline_until: Timestamp,
        grace_until: Timestamp,
        /// The last failure, as text for logs and status pages.
        why: String,
    },
    /// Still working, but it must be fixed before `ends_at`: warn loudly.
    Grace { license: LicenseInfo, reason: GraceReason, ends_at: Timestamp, warning: String },
    /// Fail closed.
    Invalid { code: InvalidCode, reason: String },
}

impl LicenseState {
    /// True while the app may run (valid, offline or in grace).
    pub fn is_usable(&self) -> bool {
        !matches!(self, Self::Invalid { .. })
    }

    pub fn license(&self) -> Option<&LicenseInfo> {
        match self {
            Self::Valid { license, .. } | Self::Offline { license, .. } | Self::Grace { license, .. } => {
                Some(license)
            }
            Self::Invalid { .. } => None,
        }
    }

    /// The text an app should log or show as a banner, if any.
    pub fn warning(&self) -> Option<String> {
        match self {
            Self::Valid { .. } => None,
            Self::Offline { offline_until, why, .. } => Some(format!(
                "license server unreachable ({why}); working offline until {}",
                offline_until.to_rfc3339()
            )),
            Self::Grace { warning, .. } => Some(warning.clone()),
            Self::Invalid { code, reason } => Some(format!("license invalid ({code}): {reason}")),
        }
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.license().is_some_and(|l| l.features.iter().any(|f| f == feature))
    }

    /// Whether using `amount` more of `metric` stays within the license's limit, given what is
    /// known to be used this month. A metric without a limit is unlimited.
    pub fn check_limit(&self, metric: &str, amount: u64, used: u64) -> LimitCheck {
        let Some(license) = self.license() else {
            return LimitCheck { allowed: false, limit: None, used, remaining: Some(0) };
        };
        match license.limits.get(metric).copied() {
            None => LimitCheck { allowed: true, limit: None, used, remaining: None },
            Some(limit) => LimitCheck {
                allowed: used.saturating_add(amount) <= limit,
                limit: Some(limit),
                used,
                remaining: Some(limit.saturating_sub(used)),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCheck {
    pub allowed: bool,
    /// `None`: no limit on this metric.
    pub limit: Option<u64>,
    pub used: u64,
    pub remaining: Option<u64>,
}
