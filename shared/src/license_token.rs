//! Signing and verifying the JWS inside a license key, and the claim names that are a
//! compatibility promise (docs/key-format.md).
//!
//! Every JWS NLS signs carries a `typ` header so that one kind of token (a receipt, say) can
//! never be presented as another (a license key).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt, Claims, Header, UntrustedToken};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key_format::{self, KeyFormatError};
use crate::key_ring::KeyRing;

pub const DEFAULT_OFFLINE_DAYS: u32 = 30;
pub const DEFAULT_GRACE_DAYS: u32 = 7;
pub const LICENSE_TYP: &str = "nls-license+jwt";
pub const DEFAULT_ISSUER: &str = "nls";
pub const DEFAULT_AUDIENCE: &str = "nectar";

/// The custom claims of a license key. Field names are the wire names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseClaims {
    pub iss: String,
    /// The license id.
    pub sub: String,
    pub aud: String,
    pub jti: String,
    pub customer_id: String,
    pub tier: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// Absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deployments: Option<u32>,
    #[serde(default = "default_offline_days")]
    pub offline_days: u32,
    #[serde(default = "default_grace_days")]
    pub grace_days: u32,
}

fn default_offline_days() -> u32 {
    DEFAULT_OFFLINE_DAYS
}
fn default_grace_days() -> u32 {
    DEFAULT_GRACE_DAYS
}

/// A license key whose checksum and signature have been checked. Time claims are not judged
/// here: that is the validation engine's job, at the time it is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLicense {
    pub kid: String,
    pub issued_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    /// `None` means perpetual.
    pub expires_at: Option<DateTime<Utc>>,
    pub claims: LicenseClaims,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("not an NLS key")]
    Malformed,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("signature, algorithm or kid rejected")]
    BadSignature,
}

impl From<KeyFormatError> for KeyRejection {
    fn from(e: KeyFormatError) -> Self {
        match e {
            KeyFormatError::TooLong | KeyFormatError::Malformed => KeyRejection::Malformed,
            KeyFormatError::ChecksumMismatch => KeyRejection::ChecksumMismatch,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("this key ring has no signing key")]
    NoSigner,
    #[error("could not serialize token: {0}")]
    Serialize(String),
}

/// The times of a token, kept apart from its custom claims.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenTimes {
    pub issued_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Signs `custom` as a compact JWS with the ring's signer and the given `typ`.
pub fn sign_jws<T: Serialize>(
    ring: &KeyRing,
    typ: &str,
    times: TokenTimes,
    custom: &T,
) -> Result<String, SigningError> {
    let signer = ring.signer().ok_or(SigningError::NoSigner)?;
    let header = Header::empty().with_key_id(signer.kid.clone()).with_token_type(typ);
    let mut claims = Claims::new(custom);
    claims.issued_at = times.issued_at.map(trunc_secs);
    claims.not_before = times.not_before.map(trunc_secs);
    claims.expiration = times.expires_at.map(trunc_secs);
    Ed25519.token(&header, &claims, &signer.pair.sk).map_err(|e| SigningError::Serialize(e.to_string()))
}

/// Verifies a compact JWS of the expected `typ` against the ring. Only `EdDSA` and a known
/// `kid` are accepted.
pub fn verify_jws<T: DeserializeOwned>(
    ring: &KeyRing,
    typ: &str,
    jws: &str,
) -> Result<(String, TokenTimes, T), KeyRejection> {
    let untrusted = UntrustedToken::new(jws).map_err(|_| KeyRejection::Malformed)?;
    let header = untrusted.header();
    if header.token_type.as_deref() != Some(typ) {
        return Err(KeyRejection::BadSignature);
    }
    let kid = header.key_id.as_deref().ok_or(KeyRejection::BadSignature)?;
    let key = ring.verifier(kid).ok_or(KeyRejection::BadSignature)?;
    // jwt-compact may parse the claims before checking the signature, so a tampered payload can
    // surface as malformed claims: either way the token is not one we signed.
    let token =
        Ed25519.validator::<T>(&key.key).validate(&untrusted).map_err(|_| KeyRejection::BadSignature)?;
    let (_, claims) = token.into_parts();
    let times = TokenTimes {
        issued_at: claims.issued_at,
        not_before: claims.not_before,
        expires_at: claims.expiration,
    };
    Ok((kid.to_owned(), times, claims.custom))
}

/// Issues a complete `NLS-<JWS>-<checksum>` key.
pub fn issue_license_key(
    ring: &KeyRing,
    claims: &LicenseClaims,
    times: TokenTimes,
) -> Result<String, SigningError> {
    let jws = sign_jws(ring, LICENSE_TYP, times, claims)?;
    Ok(key_format::format_key(&jws))
}

/// Checks shape, checksum and signature, in that order.
pub fn verify_license_key(ring: &KeyRing, key: &str) -> Result<VerifiedLicense, KeyRejection> {
    let jws = key_format::parse_key(key)?;
    let (kid, times, claims) = verify_jws::<LicenseClaims>(ring, LICENSE_TYP, jws)?;
    Ok(VerifiedLicense {
        kid,
        issued_at: times.issued_at,
        not_before: times.not_before,
        expires_at: times.expires_at,
        claims,
    })
}

/// Reads a key's header and claims without verifying anything (for `nls license inspect`).
pub fn inspect_license_key(key: &str) -> Result<(serde_json::Value, serde_json::Value, bool), KeyRejection> {
    let (jws, sum) = key_format::split_key(key)?;
    let checksum_ok = key_format::checksum(jws) == sum;
    let untrusted = UntrustedToken::new(jws).map_err(|_| KeyRejection::Malformed)?;
    let header = decode_segment(jws.split('.').next().unwrap_or_default())?;
    let claims =
        untrusted.deserialize_claims_unchecked::<serde_json::Value>().map_err(|_| KeyRejection::Malformed)?;
    let mut claims_json = claims.custom;
    if let serde_json::Value::Object(map) = &mut claims_json {
        for (name, at) in [("iat", claims.issued_at), ("nbf", claims.not_before), ("exp", claims.expiration)]
        {
            if let Some(at) = at {
                map.insert(name.into(), at.timestamp().into());
            }
        }
    }
    Ok((header, claims_json, checksum_ok))
}

fn decode_segment(segment: &str) -> Result<serde_json::Value, KeyRejection> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| KeyRejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| KeyRejection::Malformed)
}

fn trunc_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}
