//! Creating licenses and the keys that carry them. Used by the admin API, the Stripe webhook
//! and the CLI, so a license is built the same way wherever it comes from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::key_ring::KeyRing;
use crate::license_token::{
    DEFAULT_AUDIENCE, DEFAULT_GRACE_DAYS, DEFAULT_ISSUER, DEFAULT_OFFLINE_DAYS, LicenseClaims, SigningError,
    TokenTimes, issue_license_key,
};
use crate::lifecycle::{LicenseStatus, LifecycleEvent, LifecycleState, TransitionRefused, transition};
use crate::model::{License, Timestamp};

/// A new random id: `prefix` + `_` + 26 base32 characters (130 bits).
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 17];
    getrandom::fill(&mut bytes).expect("the platform random source is unavailable");
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    // 26 characters × 5 bits = 130 bits, taken from the 136 random bits.
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut written = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && written < 26 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
            written += 1;
        }
    }
    out
}

/// What an admin or the billing flow asks for when creating a license.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseTerms {
    pub tier: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    pub max_deployments: Option<u32>,
    pub expires_at: Option<Timestamp>,
    pub offline_days: Option<u32>,
    pub grace_days: Option<u32>,
    /// The container images the license may pull (docs/distribution.md).
    #[serde(default)]
    pub registry: Option<crate::registry_token::RegistryGrant>,
}

pub const DEFAULT_TIER: &str = "standard";

/// The longest `offline_days` or `grace_days` a license may have: about ten years, which is
/// "forever" for a license and keeps every date computed from a term representable.
pub const MAX_TERM_DAYS: u32 = 3650;
/// `expires_at` must fall in [1970-01-01, 2200-01-01) UTC (Unix seconds below).
pub const EARLIEST_EXPIRY_SECS: i64 = 0;
pub const LATEST_EXPIRY_SECS: i64 = 7_258_118_400;

/// A license term outside the bounds above. Every place terms enter (admin create and
/// update, renew, the plans file, the Stripe mapping) refuses these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TermsOutOfRange {
    #[error("`offline_days` must be at most {MAX_TERM_DAYS} (got {0})")]
    OfflineDays(u32),
    #[error("`grace_days` must be at most {MAX_TERM_DAYS} (got {0})")]
    GraceDays(u32),
    #[error("`expires_at` must be from 1970-01-01 and before 2200-01-01 UTC (got {0})")]
    ExpiresAt(Timestamp),
}

/// Checks the terms that feed date arithmetic; `None` means "unchanged" or "the default".
pub fn check_term_bounds(
    offline_days: Option<u32>,
    grace_days: Option<u32>,
    expires_at: Option<Timestamp>,
) -> Result<(), TermsOutOfRange> {
    if let Some(days) = offline_days.filter(|d| *d > MAX_TERM_DAYS) {
        return Err(TermsOutOfRange::OfflineDays(days));
    }
    if let Some(days) = grace_days.filter(|d| *d > MAX_TERM_DAYS) {
        return Err(TermsOutOfRange::GraceDays(days));
    }
    check_expiry(expires_at)
}

/// Checks an expiry alone (renewals, Stripe's paid-through dates).
pub fn check_expiry(expires_at: Option<Timestamp>) -> Result<(), TermsOutOfRange> {
    match expires_at {
        Some(at) if !(EARLIEST_EXPIRY_SECS..LATEST_EXPIRY_SECS).contains(&at.timestamp()) => {
            Err(TermsOutOfRange::ExpiresAt(at))
        }
        _ => Ok(()),
    }
}

impl LicenseTerms {
    pub fn check_bounds(&self) -> Result<(), TermsOutOfRange> {
        check_term_bounds(self.offline_days, self.grace_days, self.expires_at)
    }
}

/// Builds a new `active` license record (version 1) for `customer_id`.
pub fn new_license(customer_id: &str, terms: LicenseTerms, now: Timestamp) -> License {
    License {
        id: new_id("lic"),
        customer_id: customer_id.to_owned(),
        status: LicenseStatus::Active,
        suspension_reason: None,
        tier: terms.tier.unwrap_or_else(|| DEFAULT_TIER.to_owned()),
        features: terms.features,
        limits: terms.limits,
        max_deployments: terms.max_deployments,
        offline_days: terms.offline_days.unwrap_or(DEFAULT_OFFLINE_DAYS),
        grace_days: terms.grace_days.unwrap_or(DEFAULT_GRACE_DAYS),
        expires_at: terms.expires_at,
        grace_ends_at: None,
        key_id: new_id("key"),
        stripe_subscription_id: None,
        stripe_price_id: None,
        billing_event_at: None,
        registry: terms.registry,
        cloud: None,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// The claims a key for `license` carries.
pub fn license_claims(license: &License) -> LicenseClaims {
    LicenseClaims {
        iss: DEFAULT_ISSUER.to_owned(),
        sub: license.id.clone(),
        aud: DEFAULT_AUDIENCE.to_owned(),
        jti: license.key_id.clone(),
        customer_id: license.customer_id.clone(),
        tier: license.tier.clone(),
        features: license.features.clone(),
        limits: license.limits.clone(),
        max_deployments: license.max_deployments,
        offline_days: license.offline_days,
        grace_days: license.grace_days,
    }
}

/// Signs a key for `license` as it is now. Its `exp` is the license's expiry; the store's
/// expiry still wins at validation, so a renewal works without a new key.
pub fn issue_key(ring: &KeyRing, license: &License, now: Timestamp) -> Result<String, SigningError> {
    let times = TokenTimes {
        issued_at: Some(now),
        not_before: Some(license.created_at),
        expires_at: license.expires_at,
    };
    issue_license_key(ring, &license_claims(license), times)
}

/// The next version of `license` after `event`, with status from the transition table.
pub fn apply_event(
    license: &License,
    event: LifecycleEvent,
    now: Timestamp,
) -> Result<License, TransitionRefused> {
    let state = transition(LifecycleState::of(license.status, license.suspension_reason), event)?;
    let status = state.status();
    let mut next = license.clone();
    next.status = status;
    next.suspension_reason = state.suspension_reason();
    if status != LicenseStatus::PastDue {
        next.grace_ends_at = None;
    }
    next.version += 1;
    next.updated_at = now;
    Ok(next)
}
