//! Cloud access tokens (`typ: nls-access+jwt`, DESIGN §10, docs/cloud-access.md): short-lived
//! JWS that tell one of Nectar's cloud services, offline, which license is calling, what its
//! tier allows there and how fast it may call.
//!
//! Issued by every host of `POST /v1/access-tokens` from the license's `cloud` grant (audience
//! → limits), verified by the services with [`AccessVerifier`] against the public JWKS. The
//! `typ` header keeps them apart from license keys, receipts and offline files: none of those
//! is ever accepted here, and an access token is never accepted as one of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use chrono::Duration;
use jwt_compact::UntrustedToken;
use serde::{Deserialize, Serialize};

use crate::issuing::new_id;
use crate::key_ring::KeyRing;
use crate::license_token::{DEFAULT_ISSUER, KeyRejection, SigningError, TokenTimes, sign_jws, verify_jws};
use crate::model::{Timestamp, saturating_add};
use crate::validation::{Decision, ValidationCode};

pub const ACCESS_TYP: &str = "nls-access+jwt";
/// How long an access token lives unless the host is configured otherwise.
pub const DEFAULT_ACCESS_TTL_SECS: i64 = 15 * 60;
/// The shortest configurable token life: below it, apps would ask NLS for a token on almost
/// every call (a token is refreshed in its last 60 s).
pub const MIN_ACCESS_TTL_SECS: i64 = 60;
/// The longest configurable token life: the bound on how long a suspended license keeps its
/// cloud access.
pub const MAX_ACCESS_TTL_SECS: i64 = 60 * 60;

/// A configured token life in seconds, checked against [`MIN_ACCESS_TTL_SECS`] and
/// [`MAX_ACCESS_TTL_SECS`].
pub fn access_ttl(seconds: i64) -> Result<chrono::Duration, AccessTtlOutOfRange> {
    if (MIN_ACCESS_TTL_SECS..=MAX_ACCESS_TTL_SECS).contains(&seconds) {
        Ok(chrono::Duration::seconds(seconds))
    } else {
        Err(AccessTtlOutOfRange(seconds))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an access token lifetime of {0} s is outside {MIN_ACCESS_TTL_SECS} to {MAX_ACCESS_TTL_SECS} s")]
pub struct AccessTtlOutOfRange(pub i64);
/// A token minted by a host whose clock runs slightly ahead is still accepted this much before
/// its `nbf`; `exp` gets no leeway, so a suspended license's last token dies on time.
pub const NOT_BEFORE_LEEWAY_SECS: i64 = 30;
/// The most audiences one grant may hold.
pub const MAX_AUDIENCES: usize = 32;
pub const MAX_AUDIENCE_LEN: usize = 64;

/// What a license may do at one cloud service (the `cloud` object of plans and licenses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudLimits {
    /// The token bucket's refill rate.
    pub requests_per_minute: u32,
    /// The token bucket's size: how many calls may come at once.
    pub burst: u32,
    /// Calls per UTC month (usage metric `cloud.<audience>.calls`); absent: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_quota: Option<u64>,
}

/// Audience (the cloud service's name) → its limits.
pub type CloudGrant = BTreeMap<String, CloudLimits>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudGrantError {
    #[error("at most {MAX_AUDIENCES} audiences")]
    TooManyAudiences,
    #[error(
        "audience {0:?}: 1 to {MAX_AUDIENCE_LEN} characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
    )]
    BadAudience(String),
    #[error("audience {0:?}: requests_per_minute and burst must be at least 1")]
    ZeroRate(String),
}

/// Checks a grant where it enters (admin API, plan catalogue).
pub fn check_cloud_grant(grant: &CloudGrant) -> Result<(), CloudGrantError> {
    if grant.len() > MAX_AUDIENCES {
        return Err(CloudGrantError::TooManyAudiences);
    }
    for (audience, limits) in grant {
        if !is_audience_name(audience) {
            return Err(CloudGrantError::BadAudience(audience.clone()));
        }
        if limits.requests_per_minute == 0 || limits.burst == 0 {
            return Err(CloudGrantError::ZeroRate(audience.clone()));
        }
    }
    Ok(())
}

/// `^[a-z0-9][a-z0-9._-]{0,63}$`, the pattern the OpenAPI document states.
pub fn is_audience_name(audience: &str) -> bool {
    let bytes = audience.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_AUDIENCE_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

/// The usage metric that counts calls to `audience` (and holds its monthly quota).
pub fn usage_metric(audience: &str) -> String {
    format!("cloud.{audience}.calls")
}

/// The claims of an access token. Field names are the wire names (docs/cloud-access.md);
/// `iat`, `nbf` and `exp` travel beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    pub customer_id: String,
    pub deployment_id: String,
    /// The cloud service this token is for.
    pub aud: String,
    pub tier: String,
    #[serde(default)]
    pub features: Vec<String>,
    /// The license's limits at this audience.
    pub rate: CloudLimits,
    pub jti: String,
}

/// A token whose signature, `typ`, `kid`, audience and times were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub kid: String,
    pub issued_at: Timestamp,
    pub not_before: Timestamp,
    pub expires_at: Timestamp,
    pub claims: AccessClaims,
}

/// Why a service refuses a presented token (all are 401 to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessRejection {
    #[error("not a compact JWS")]
    Malformed,
    #[error("not an access token (typ)")]
    WrongType,
    #[error("signed by a key this service does not know (kid)")]
    UnknownKid,
    #[error("signature or algorithm rejected")]
    BadSignature,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has expired")]
    Expired,
    #[error("the token lacks iat, nbf or exp")]
    MissingTimes,
}

impl AccessRejection {
    /// The stable code a service answers with (`WWW-Authenticate` error description).
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_token",
            Self::WrongType => "wrong_token_type",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::WrongAudience => "wrong_audience",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Expired => "token_expired",
            Self::MissingTimes => "malformed_token",
        }
    }
}

/// Why no token is issued: a validation code (`SUSPENDED`, `FEATURE_NOT_ENTITLED`,
/// `USAGE_LIMIT_EXCEEDED`, ...) and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRefused {
    pub code: ValidationCode,
    pub message: String,
}

/// What to sign, once the license is known to be usable at `audience`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub limits: CloudLimits,
    /// `IN_GRACE`'s warning, passed on to the caller.
    pub warning: Option<String>,
}

/// Decides whether a license may have a token for `audience`, written once for the origin and
/// the edges: the license's state as `decide` judged it, the audience in its cloud grant, and
/// this month's calls under the quota.
pub fn decide_access(
    decision: &Decision,
    cloud: Option<&CloudGrant>,
    month_usage: &BTreeMap<String, u64>,
    audience: &str,
) -> Result<AccessGrant, AccessRefused> {
    if !decision.code.is_valid() {
        let message = decision
            .warning
            .clone()
            .unwrap_or_else(|| format!("the license is not valid: {}", decision.code.as_str()));
        return Err(AccessRefused { code: decision.code, message });
    }
    let Some(limits) = cloud.and_then(|c| c.get(audience)).copied() else {
        return Err(AccessRefused {
            code: ValidationCode::FeatureNotEntitled,
            message: format!("the license has no access to the cloud service {audience:?}"),
        });
    };
    if let Some(quota) = limits.monthly_quota {
        let metric = usage_metric(audience);
        let used = month_usage.get(&metric).copied().unwrap_or(0);
        if used >= quota {
            return Err(AccessRefused {
                code: ValidationCode::UsageLimitExceeded,
                message: format!("{metric}: {used} used of {quota} this month"),
            });
        }
    }
    Ok(AccessGrant { limits, warning: decision.warning.clone() })
}

/// A signed token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedAccess {
    pub token: String,
    pub expires_at: Timestamp,
    pub claims: AccessClaims,
}

/// Signs an access token for a granted decision with the ring's signer.
pub fn sign_access_token(
    ring: &KeyRing,
    decision: &Decision,
    grant: &AccessGrant,
    deployment_id: &str,
    audience: &str,
    now: Timestamp,
    ttl: Duration,
) -> Result<IssuedAccess, SigningError> {
    let lic = &decision.license;
    let claims = AccessClaims {
        iss: DEFAULT_ISSUER.to_owned(),
        sub: lic.id.clone(),
        customer_id: lic.customer_id.clone(),
        deployment_id: deployment_id.to_owned(),
        aud: audience.to_owned(),
        tier: lic.tier.clone(),
        features: lic.features.clone(),
        rate: grant.limits,
        jti: new_id("at"),
    };
    let expires_at = saturating_add(now, ttl);
    let times = TokenTimes { issued_at: Some(now), not_before: Some(now), expires_at: Some(expires_at) };
    let token = sign_jws(ring, ACCESS_TYP, times, &claims)?;
    // The signed times are whole seconds; report the same instant the token carries.
    let expires_at = chrono::DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
    Ok(IssuedAccess { token, expires_at, claims })
}

/// Verifies one token for `audience` at `now`: `typ`, a known `kid`, EdDSA signature, `aud`,
/// `nbf` and `exp`. Nothing in the token chooses the algorithm or the key set.
pub fn verify_access_token(
    ring: &KeyRing,
    token: &str,
    audience: &str,
    now: Timestamp,
) -> Result<VerifiedAccess, AccessRejection> {
    let token = token.trim();
    let untrusted = UntrustedToken::new(token).map_err(|_| AccessRejection::Malformed)?;
    let header = untrusted.header();
    if header.token_type.as_deref() != Some(ACCESS_TYP) {
        return Err(AccessRejection::WrongType);
    }
    if header.key_id.as_deref().is_none_or(|kid| ring.verifier(kid).is_none()) {
        return Err(AccessRejection::UnknownKid);
    }
    let (kid, times, claims) =
        verify_jws::<AccessClaims>(ring, ACCESS_TYP, token).map_err(|rejection| match rejection {
            KeyRejection::Malformed | KeyRejection::ChecksumMismatch => AccessRejection::Malformed,
            KeyRejection::BadSignature => AccessRejection::BadSignature,
        })?;
    let (Some(issued_at), Some(not_before), Some(expires_at)) =
        (times.issued_at, times.not_before, times.expires_at)
    else {
        return Err(AccessRejection::MissingTimes);
    };
    let verified = VerifiedAccess { kid, issued_at, not_before, expires_at, claims };
    check_current(&verified, audience, now)?;
    Ok(verified)
}

/// The checks that depend on the caller and the clock, repeated on every cached hit.
fn check_current(token: &VerifiedAccess, audience: &str, now: Timestamp) -> Result<(), AccessRejection> {
    // The audience is not secret; a plain compare is enough.
    if token.claims.aud != audience {
        return Err(AccessRejection::WrongAudience);
    }
    if now + Duration::seconds(NOT_BEFORE_LEEWAY_SECS) < token.not_before {
        return Err(AccessRejection::NotYetValid);
    }
    if now >= token.expires_at {
        return Err(AccessRejection::Expired);
    }
    Ok(())
}

/// A cloud service's verifier for its own audience: the JWKS it trusts (replaceable when a
/// refresh finds a new `kid`) and a cache of tokens that verified, so a token presented again
/// costs a map lookup instead of an Ed25519 check. The cache is keyed on the exact token text
/// and holds only successes; audience and times are checked again on every hit.
pub struct AccessVerifier {
    audience: String,
    ring: RwLock<Arc<KeyRing>>,
    verified: Mutex<HashMap<Box<str>, Arc<VerifiedAccess>>>,
    capacity: usize,
}

impl AccessVerifier {
    pub const DEFAULT_CAPACITY: usize = 10_000;

    pub fn new(ring: KeyRing, audience: &str) -> Self {
        Self::with_capacity(ring, audience, Self::DEFAULT_CAPACITY)
    }

    pub fn with_capacity(ring: KeyRing, audience: &str, capacity: usize) -> Self {
        Self {
            audience: audience.to_owned(),
            ring: RwLock::new(Arc::new(ring)),
            verified: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Trusts a freshly fetched JWKS from now on. The cache is dropped with the old ring, so
    /// a retired key's tokens stop working at once rather than at their expiry.
    pub fn replace_ring(&self, ring: KeyRing) {
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        self.cache().clear();
    }

    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Arc<VerifiedAccess>, AccessRejection> {
        let token = token.trim();
        if let Some(hit) = self.cache().get(token).cloned() {
            check_current(&hit, &self.audience, now)?;
            return Ok(hit);
        }
        let ring = Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()));
        let verified = Arc::new(verify_access_token(&ring, token, &self.audience, now)?);
        let mut cache = self.cache();
        if cache.len() >= self.capacity {
            cache.retain(|_, t| now < t.expires_at);
            if cache.len() >= self.capacity {
                // Bounded whatever is presented: the hot set refills with one check each.
                cache.clear();
            }
        }
        cache.insert(token.into(), Arc::clone(&verified));
        Ok(verified)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<VerifiedAccess>>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
