//! Ed25519 signing keys as RFC 8037 JWKs, and the `kid` ring used for rotation.
//!
//! Only Ed25519 exists here: there is no algorithm parameter anywhere, so nothing can switch it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_compact::{KeyPair, Seed};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ed25519::{Backend, PublicKey};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    #[error("not valid JWK JSON: {0}")]
    Json(String),
    #[error("unsupported key: kty must be \"OKP\" and crv \"Ed25519\"")]
    UnsupportedKey,
    #[error("JWK field `{0}` is not valid base64url of the right length")]
    BadField(&'static str),
    #[error("JWK `d` does not match its `x`")]
    KeyMismatch,
    #[error("a private key (with `d`) is required")]
    NotPrivate,
    #[error("the key ring is empty")]
    EmptyRing,
    #[error("duplicate kid {0:?} in key ring")]
    DuplicateKid(String),
}

/// A JWK on the wire (RFC 7517 / RFC 8037). `d` is present only for private keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// A public verification key with its id, decoded once for verification.
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    pub(crate) key: PublicKey,
}

/// A private signing key with its id. Debug output never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub(crate) pair: KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).finish()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key, used as the default `kid`.
pub fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(public));
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

impl SigningKey {
    /// Builds a key from a 32-byte seed; the caller supplies the randomness.
    pub fn from_seed(seed: [u8; 32], kid: Option<String>) -> Self {
        let pair = KeyPair::from_seed(Seed::new(seed));
        let kid = kid.unwrap_or_else(|| thumbprint(pair.pk.as_ref()));
        Self { kid, pair }
    }

    /// A fresh key from the operating system's randomness (or the JS crypto API on wasm).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the platform random source is unavailable");
        Self::from_seed(seed, None)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey { kid: self.kid.clone(), key: PublicKey::from_bytes(*self.pair.pk) }
    }

    pub fn to_private_jwk(&self) -> Jwk {
        Jwk { d: Some(B64.encode(self.pair.sk.seed().as_ref())), ..self.verifying_key().to_jwk() }
    }

    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        let public = VerifyingKey::from_jwk(jwk)?;
        let d = jwk.d.as_deref().ok_or(JwkError::NotPrivate)?;
        let seed: [u8; 32] = decode_fixed(d, "d")?;
        let key = Self::from_seed(seed, Some(public.kid));
        if *key.pair.pk != *public.key.as_bytes() {
            return Err(JwkError::KeyMismatch);
        }
        Ok(key)
    }

    pub fn parse_jwk_json(json: &str) -> Result<Self, JwkError> {
        let jwk: Jwk = serde_json::from_str(json).map_err(|e| JwkError::Json(e.to_string()))?;
        Self::from_jwk(&jwk)
    }
}

impl VerifyingKey {
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: B64.encode(self.key.as_bytes()),
            d: None,
            kid: Some(self.kid.clone()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }

    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return Err(JwkError::UnsupportedKey);
        }
        if jwk.alg.as_deref().is_some_and(|alg| alg != "EdDSA") {
            return Err(JwkError::UnsupportedKey);
        }
        let x: [u8; 32] = decode_fixed(&jwk.x, "x")?;
        let key = PublicKey::from_bytes(x);
        let kid = jwk.kid.clone().unwrap_or_else(|| thumbprint(&x));
        Ok(Self { kid, key })
    }

    /// A bare Ed25519 check with the default verifier, for known-answer tests and the
    /// benchmarks' floor; tokens go through `license_token`.
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify(message, signature)
    }

    /// The same check with a chosen implementation (tests and benchmarks compare them).
    pub fn verify_raw_with(&self, backend: Backend, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_with(backend, message, signature)
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.key
    }
}

fn decode_fixed<const N: usize>(b64: &str, field: &'static str) -> Result<[u8; N], JwkError> {
    let bytes = B64.decode(b64).map_err(|_| JwkError::BadField(field))?;
    bytes.try_into().map_err(|_| JwkError::BadField(field))
}

/// The keys a deployment trusts, by `kid`, and the one it signs with (if any).
///
/// Rotation: add the new key as the signer and keep the old one as verifier until every key it
/// signed has been re-issued or has expired; then retire it.
#[derive(Debug, Clone)]
pub struct KeyRing {
    signer: Option<SigningKey>,
    verifiers: Vec<VerifyingKey>,
    /// The Ed25519 implementation that checks signatures ([`Backend::DEFAULT`] unless a test
    /// or benchmark picks one).
    backend: Backend,
}

impl KeyRing {
    /// A ring that signs with `signer` and also accepts `retired_but_trusted`.
    pub fn with_signer(signer: SigningKey, also_trusted: Vec<VerifyingKey>) -> Result<Self, JwkError> {
        let mut verifiers = vec![signer.verifying_key()];
        verifiers.extend(also_trusted);
        Self::check_unique(&verifiers)?;
        Ok(Self { signer: Some(signer), verifiers, backend: Backend::DEFAULT })
    }

    /// A verify-only ring (edges and customer apps).
    pub fn verify_only(verifiers: Vec<VerifyingKey>) -> Result<Self, JwkError> {
        if verifiers.is_empty() {
            return Err(JwkError::EmptyRing);
        }
        Self::check_unique(&verifiers)?;
        Ok(Self { signer: None, verifiers, backend: Backend::DEFAULT })
    }

    pub fn from_jwks(jwks: &Jwks) -> Result<Self, JwkError> {
        let keys = jwks.keys.iter().map(VerifyingKey::from_jwk).collect::<Result<Vec<_>, _>>()?;
        Self::verify_only(keys)
    }

    pub fn parse_jwks_json(json: &str) -> Result<Self, JwkError> {
        let jwks: Jwks = serde_json::from_str(json).map_err(|e| JwkError::Json(e.to_string()))?;
        Self::from_jwks(&jwks)
    }

    fn check_unique(keys: &[VerifyingKey]) -> Result<(), JwkError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(JwkError::DuplicateKid(key.kid.clone()));
            }
        }
        Ok(())
    }

    /// The same ring, checking signatures with `backend` (both accept the same signatures).
    pub fn with_backend(self, backend: Backend) -> Self {
        Self { backend, ..self }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn signer(&self) -> Option<&SigningKey> {
        self.signer.as_ref()
    }

    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifiers.iter().find(|k| k.kid == kid)
    }

    pub fn jwks(&self) -> Jwks {
        Jwks { keys: self.verifiers.iter().map(VerifyingKey::to_jwk).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_jwk_round_trips_and_public_has_no_d() {
        let key = SigningKey::from_seed([7; 32], None);
        let jwk = key.to_private_jwk();
        assert!(jwk.d.is_some());
        let back = SigningKey::from_jwk(&jwk).unwrap();
        assert_eq!(back.kid, key.kid);
        assert_eq!(*back.pair.pk, *key.pair.pk);
        assert!(key.verifying_key().to_jwk().d.is_none());
    }

    #[test]
    fn mismatched_d_is_refused() {
        let a = SigningKey::from_seed([1; 32], None).to_private_jwk();
        let b = SigningKey::from_seed([2; 32], None).to_private_jwk();
        let franken = Jwk { d: b.d, ..a };
        assert_eq!(SigningKey::from_jwk(&franken).unwrap_err(), JwkError::KeyMismatch);
    }

    #[test]
    fn non_ed25519_keys_are_refused() {
        let mut jwk = SigningKey::from_seed([1; 32], None).verifying_key().to_jwk();
        jwk.crv = "X25519".into();
        assert_eq!(VerifyingKey::from_jwk(&jwk).unwrap_err(), JwkError::UnsupportedKey);
        let mut jwk = SigningKey::from_seed([1; 32], None).verifying_key().to_jwk();
        jwk.alg = Some("HS256".into());
        assert_eq!(VerifyingKey::from_jwk(&jwk).unwrap_err(), JwkError::UnsupportedKey);
    }

    #[test]
    fn rfc7638_thumbprint_of_rfc8037_key() {
        // RFC 8037 appendix A.3: the thumbprint of the A.2 public key.
        let x = B64.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(thumbprint(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
