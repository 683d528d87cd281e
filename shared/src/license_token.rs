//! Signing and verifying the JWS inside a license key, and the claim names that are a
//! compatibility promise (docs/key-format.md).
//!
//! Every JWS NLS signs carries a `typ` header so that one kind of token (a receipt, say) can
//! never be presented as another (a license key).

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt, Claims, Header, UntrustedToken};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::key_format::{self, KeyFormatError};
use crate::key_ring::{KeyRing, VerifyingKey};

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
    verify_decoded(ring, typ, jws, |decoded| decoded.claims::<T>())
}

/// [`verify_jws`] for claims that are a plain struct (no map, `Value` or flattened field): the
/// claims are read in two typed passes, not through a flattened wrapper (see
/// [`DecodedJws::plain_claims`]). License keys, the hot path, go this way.
pub(crate) fn verify_jws_plain<T: DeserializeOwned>(
    ring: &KeyRing,
    typ: &str,
    jws: &str,
) -> Result<(String, TokenTimes, T), KeyRejection> {
    verify_decoded(ring, typ, jws, |decoded| decoded.plain_claims::<T>())
}

fn verify_decoded<T>(
    ring: &KeyRing,
    typ: &str,
    jws: &str,
    read_claims: impl FnOnce(&DecodedJws<'_>) -> Result<(TokenTimes, T), KeyRejection>,
) -> Result<(String, TokenTimes, T), KeyRejection> {
    let decoded = decode_jws(jws)?;
    let key = decoded.trusted_key(ring, typ)?;
    let (times, claims) = read_claims(&decoded)?;
    if !key.public_key().verify_with(ring.backend(), decoded.signing_input.as_bytes(), &decoded.signature) {
        return Err(KeyRejection::BadSignature);
    }
    Ok((key.kid.clone(), times, claims))
}

/// A compact JWS split and base64-decoded, its header parsed; nothing is verified yet. Decoding
/// fails (`Malformed`) exactly where jwt-compact's `UntrustedToken` does.
pub struct DecodedJws<'a> {
    /// `<header>.<payload>`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub header: JwsHeader,
    /// The payload's JSON.
    pub claims_json: Vec<u8>,
    /// Any length: a wrong one is a bad signature, not a malformed token.
    pub signature: Vec<u8>,
}

/// The JOSE header fields jwt-compact reads (RFC 7515 §4.1), with the same types, so a header
/// it refuses as malformed is refused here too.
#[derive(Debug, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default)]
    pub cty: Option<String>,
    #[serde(default)]
    pub jku: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub x5u: Option<String>,
    #[serde(default)]
    pub x5t: Option<jwt_compact::Thumbprint<20>>,
    #[serde(default, rename = "x5t#S256")]
    pub x5t_s256: Option<jwt_compact::Thumbprint<32>>,
    #[serde(default)]
    pub typ: Option<String>,
}

/// Splits and decodes a compact JWS (three base64url segments; a JSON object header with an
/// `alg` and, if any, a JSON content type).
pub fn decode_jws(jws: &str) -> Result<DecodedJws<'_>, KeyRejection> {
    use base64::Engine as _;
    let mut parts = jws.splitn(4, '.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyRejection::Malformed);
    };
    // Strict unpadded base64url, as jwt-compact's base64ct decodes it (no `=`, no stray
    // trailing bits): `parity_tests` compares the two decoders.
    let decode = |segment: &str| B64.decode(segment).map_err(|_| KeyRejection::Malformed);
    let header_json = decode(header_b64)?;
    let claims_json = decode(claims_b64)?;
    let signature = decode(signature_b64)?;
    let header: JwsHeader = from_json_object(&header_json).ok_or(KeyRejection::Malformed)?;
    if header.cty.as_deref().is_some_and(|cty| !cty.eq_ignore_ascii_case("json")) {
        return Err(KeyRejection::Malformed);
    }
    let signing_input = &jws[..header_b64.len() + 1 + claims_b64.len()];
    Ok(DecodedJws { signing_input, header, claims_json, signature })
}

impl DecodedJws<'_> {
    /// The ring's key for this token, if its `typ`, `alg` and `kid` are the expected ones.
    pub fn trusted_key<'r>(&self, ring: &'r KeyRing, typ: &str) -> Result<&'r VerifyingKey, KeyRejection> {
        let header = &self.header;
        if header.typ.as_deref() != Some(typ) || header.alg != "EdDSA" {
            return Err(KeyRejection::BadSignature);
        }
        let kid = header.kid.as_deref().ok_or(KeyRejection::BadSignature)?;
        ring.verifier(kid).ok_or(KeyRejection::BadSignature)
    }

    /// The payload as `iat`/`nbf`/`exp` and the custom claims `T` (the rest of the object, as
    /// jwt-compact's `Claims<T>` reads it). A payload that does not parse is not one we signed:
    /// `BadSignature`.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<(TokenTimes, T), KeyRejection> {
        let claims: Claims<T> =
            serde_json::from_slice(&self.claims_json).map_err(|_| KeyRejection::BadSignature)?;
        let times = TokenTimes {
            issued_at: claims.issued_at,
            not_before: claims.not_before,
            expires_at: claims.expiration,
        };
        Ok((times, claims.custom))
    }

    /// [`Self::claims`] for a `T` that is a plain struct: two typed passes over the same bytes
    /// instead of `#[serde(flatten)]`, which buffers every field as a `serde` `Content` tree
    /// first. Such a `T` never names the time claims and ignores fields it does not know, so
    /// the result is the same (the parity tests hold it to jwt-compact's).
    pub fn plain_claims<T: DeserializeOwned>(&self) -> Result<(TokenTimes, T), KeyRejection> {
        let times: TimeClaims = from_json_object(&self.claims_json).ok_or(KeyRejection::BadSignature)?;
        let custom: T = from_json_object(&self.claims_json).ok_or(KeyRejection::BadSignature)?;
        let times = TokenTimes { issued_at: times.iat, not_before: times.nbf, expires_at: times.exp };
        Ok((times, custom))
    }
}

/// A JSON object (never an array: a derived `Deserialize` would also take one, and
/// jwt-compact's flattened structs do not).
fn from_json_object<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
    let first = json.iter().find(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'))?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// The registered time claims, as jwt-compact reads them (NumericDate: an integer or a float
/// of seconds).
#[derive(Deserialize)]
struct TimeClaims {
    #[serde(default, with = "numeric_date")]
    iat: Option<DateTime<Utc>>,
    #[serde(default, with = "numeric_date")]
    nbf: Option<DateTime<Utc>>,
    #[serde(default, with = "numeric_date")]
    exp: Option<DateTime<Utc>>,
}

/// jwt-compact's `serde_timestamp`: seconds since the epoch (an absent claim is `None` through
/// `#[serde(default)]`; `null` is refused, as there).
mod numeric_date {
    use std::fmt;

    use chrono::{DateTime, TimeZone as _, Utc};
    use serde::de::{Deserializer, Error, Visitor};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_i64(SecondsVisitor).map(Some)
    }

    struct SecondsVisitor;

    impl Visitor<'_> for SecondsVisitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("UTC timestamp")
        }
        fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
            Utc.timestamp_opt(value, 0).single().ok_or_else(|| E::custom("UTC timestamp overflow"))
        }
        fn visit_u64<E: Error>(self, value: u64) -> Result<Self::Value, E> {
            self.visit_i64(i64::try_from(value).map_err(E::custom)?)
        }
        #[allow(clippy::cast_possible_truncation)] // out-of-range values fail in `timestamp_opt`
        fn visit_f64<E: Error>(self, value: f64) -> Result<Self::Value, E> {
            self.visit_i64(value as i64)
        }
    }
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
    let (kid, times, claims) = verify_jws_plain::<LicenseClaims>(ring, LICENSE_TYP, jws)?;
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

#[cfg(test)]
mod parity_tests;
