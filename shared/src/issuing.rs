//! Creating licenses and the keys that carry them. Used by the admin API, the Stripe webhook
//! and the CLI, so a license is built the same way wherever it comes from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::key_ring::KeyRing;
use crate::license_token::{
    DEFAULT_AUDIENCE, DEFAULT_GRACE_DAYS, DEFAULT_ISSUER, DEFAULT_OFFLINE_DAYS, LicenseClaims, SigningError,
    TokenTimes, issue_license_key,
};
use crate::lifecycle::{LicenseStatus, LifecycleEvent, TransitionRefused, transition};
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

/// Builds a new `active` license record (version 1) for `customer_id`.
pub fn new_license(customer_id: &str, terms: LicenseTerms, now: Timestamp) -> License {
    License {
        id: new_id("lic"),
        customer_id: customer_id.to_owned(),
        status: LicenseStatus::Active,
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
    let status = transition(license.status, event)?;
    let mut next = license.clone();
    next.status = status;
    if status != LicenseStatus::PastDue {
        next.grace_ends_at = None;
    }
    next.version += 1;
    next.updated_at = now;
    Ok(next)
}
