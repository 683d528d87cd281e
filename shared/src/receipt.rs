//! Signed proofs a customer app can keep and check offline (docs/key-format.md):
//! - a validation receipt, returned by every successful validation;
//! - an offline license file, issued for air-gapped sites.
//!
//! Both are JWS by the same key ring as license keys, with their own `typ`, and both are bound
//! to one license key by the SHA-256 of its JWS, so a receipt for another key proves nothing.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::key_format::{self, hex_lower};
use crate::key_ring::KeyRing;
use crate::license_token::{KeyRejection, SigningError, TokenTimes, sign_jws, verify_jws};
use crate::model::{Timestamp, days_after, saturating_add};
use crate::validation::{Decision, MetricUsage, ValidationCode};

pub const RECEIPT_TYP: &str = "nls-receipt+jwt";
pub const OFFLINE_FILE_TYP: &str = "nls-offline+jwt";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    /// License id.
    pub sub: String,
    pub customer_id: String,
    /// Hex SHA-256 of the license key's JWS: binds the receipt to one key.
    pub key_sha256: String,
    #[serde(default)]
    pub deployment_id: Option<String>,
    pub code: ValidationCode,
    pub tier: String,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub offline_days: u32,
    pub grace_days: u32,
    /// Unix seconds; absent means perpetual.
    #[serde(default)]
    pub license_expires_at: Option<i64>,
    /// Fleet-wide usage of every limited metric when the receipt was signed (metric →
    /// `{used, limit, period}`). Absent in receipts from before it existed, and when the
    /// decision had no snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<BTreeMap<String, MetricUsage>>,
    /// Unix seconds: when the snapshot behind `usage` was read from the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_as_of: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub claims: ReceiptClaims,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt's signature, typ or kid is rejected")]
    BadSignature,
    #[error("the receipt is for another license key")]
    WrongKey,
    #[error("the receipt has no issue or expiry time")]
    MissingTimes,
    #[error("the license key itself is not well formed")]
    BadLicenseKey,
}

/// Hex SHA-256 of the JWS inside a license key.
pub fn key_fingerprint(license_key: &str) -> Result<String, KeyRejection> {
    let jws = key_format::parse_key(license_key)?;
    Ok(hex_lower(&Sha256::digest(jws.as_bytes())))
}

/// Signs a receipt for a valid decision. It stays useful for offline + grace days.
pub fn sign_receipt(
    ring: &KeyRing,
    license_key: &str,
    decision: &Decision,
    deployment_id: Option<&str>,
    now: Timestamp,
) -> Result<String, SigningError> {
    let lic = &decision.license;
    let key_sha256 = key_fingerprint(license_key).map_err(|e| SigningError::Serialize(e.to_string()))?;
    let claims = ReceiptClaims {
        sub: lic.id.clone(),
        customer_id: lic.customer_id.clone(),
        key_sha256,
        deployment_id: deployment_id.map(str::to_owned),
        code: decision.code,
        tier: lic.tier.clone(),
        features: lic.features.clone(),
        limits: lic.limits.clone(),
        offline_days: lic.offline_days,
        grace_days: lic.grace_days,
        license_expires_at: lic.expires_at.map(|t| t.timestamp()),
        usage: decision.usage.as_ref().map(|u| u.metrics.clone()),
        usage_as_of: decision.usage.as_ref().map(|u| u.as_of.timestamp()),
    };
    let expires_at = days_after(days_after(now, lic.offline_days), lic.grace_days);
    let times = TokenTimes { issued_at: Some(now), not_before: None, expires_at: Some(expires_at) };
    sign_jws(ring, RECEIPT_TYP, times, &claims)
}

/// Checks a receipt's signature and that it belongs to `license_key`. Time is the caller's
/// business: the offline state machine compares `issued_at` with its own clock.
pub fn verify_receipt(ring: &KeyRing, receipt: &str, license_key: &str) -> Result<Receipt, ReceiptError> {
    let (_, times, claims) = verify_jws::<ReceiptClaims>(ring, RECEIPT_TYP, receipt.trim())
        .map_err(|_| ReceiptError::BadSignature)?;
    let expected = key_fingerprint(license_key).map_err(|_| ReceiptError::BadLicenseKey)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), claims.key_sha256.as_bytes())) {
        return Err(ReceiptError::WrongKey);
    }
    let (Some(issued_at), Some(expires_at)) = (times.issued_at, times.expires_at) else {
        return Err(ReceiptError::MissingTimes);
    };
    Ok(Receipt { issued_at, expires_at, claims })
}

/// The content of an offline license file for an air-gapped site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineFileClaims {
    pub sub: String,
    pub license_key: String,
    /// When set, the file is valid only on the machine with this fingerprint.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The file on disk: a small JSON envelope around the JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineLicenseFile {
    pub format: String,
    pub token: String,
}

pub const OFFLINE_FILE_FORMAT: &str = "nls-offline-license/1";

pub fn issue_offline_file(
    ring: &KeyRing,
    claims: &OfflineFileClaims,
    now: Timestamp,
    ttl: Duration,
) -> Result<OfflineLicenseFile, SigningError> {
    let times = TokenTimes {
        issued_at: Some(now),
        not_before: Some(now),
        expires_at: Some(saturating_add(now, ttl)),
    };
    let token = sign_jws(ring, OFFLINE_FILE_TYP, times, claims)?;
    Ok(OfflineLicenseFile { format: OFFLINE_FILE_FORMAT.to_owned(), token })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfflineFileError {
    #[error("not an NLS offline license file")]
    Malformed,
    #[error("the file's signature is rejected")]
    BadSignature,
    #[error("the file is not valid yet or has expired")]
    OutsideTtl,
    #[error("the file is bound to another machine")]
    WrongMachine,
}

/// Verifies an offline file and its TTL at `now`; the embedded license key must then be
/// validated as usual.
pub fn verify_offline_file(
    ring: &KeyRing,
    file: &OfflineLicenseFile,
    fingerprint: Option<&str>,
    now: Timestamp,
) -> Result<OfflineFileClaims, OfflineFileError> {
    if file.format != OFFLINE_FILE_FORMAT {
        return Err(OfflineFileError::Malformed);
    }
    let (_, times, claims) = verify_jws::<OfflineFileClaims>(ring, OFFLINE_FILE_TYP, &file.token)
        .map_err(|_| OfflineFileError::BadSignature)?;
    let inside =
        times.not_before.is_none_or(|nbf| now >= nbf) && times.expires_at.is_some_and(|exp| now < exp);
    if !inside {
        return Err(OfflineFileError::OutsideTtl);
    }
    if claims.fingerprint.is_some() && claims.fingerprint.as_deref() != fingerprint {
        return Err(OfflineFileError::WrongMachine);
    }
    Ok(claims)
}
