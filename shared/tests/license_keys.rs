//! License keys: known answers, forged and tampered keys, and round-trip properties.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use nls_core::key_format::{self, MAX_KEY_BYTES};
use nls_core::key_ring::{Jwk, KeyRing, SigningKey, VerifyingKey};
use nls_core::license_token::{
    KeyRejection, LICENSE_TYP, LicenseClaims, TokenTimes, issue_license_key, verify_license_key,
};
use nls_core::validation::Verifier;
use proptest::prelude::*;
use sha2::Sha256;

const RFC8037_PRIVATE_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519",
  "d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
  "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("valid literal").to_utc()
}

fn claims() -> LicenseClaims {
    LicenseClaims {
        iss: "nls".into(),
        sub: "lic_test".into(),
        aud: "nectar".into(),
        jti: "key_test".into(),
        customer_id: "cus_test".into(),
        tier: "pro".into(),
        features: vec!["sso".into(), "audit".into()],
        limits: BTreeMap::from([("api_calls".into(), 1000)]),
        max_deployments: Some(3),
        offline_days: 30,
        grace_days: 7,
    }
}

fn ring(seed: u8) -> KeyRing {
    KeyRing::with_signer(SigningKey::from_seed([seed; 32], None), vec![]).expect("ring")
}

fn times() -> TokenTimes {
    TokenTimes {
        issued_at: Some(at("2026-11-01T00:00:00Z")),
        not_before: Some(at("2026-11-01T00:00:00Z")),
        expires_at: Some(at("2027-11-01T00:00:00Z")),
    }
}

fn key(ring: &KeyRing) -> String {
    issue_license_key(ring, &claims(), times()).expect("issue")
}

/// Wraps an arbitrary header and payload, signed by `sign`, into the NLS key format.
fn wrap(header: &serde_json::Value, payload: &serde_json::Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(payload.to_string()));
    let jws = format!("{input}.{}", B64.encode(sign(input.as_bytes())));
    key_format::format_key(&jws)
}

fn payload() -> serde_json::Value {
    let mut p = serde_json::to_value(claims()).expect("claims json");
    p["iat"] = 1_790_000_000.into();
    p
}

#[test]
fn rfc8037_appendix_a4_known_answer() {
    let key = SigningKey::parse_jwk_json(RFC8037_PRIVATE_JWK).expect("RFC key parses");
    assert_eq!(key.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "A.3 thumbprint as default kid");
    let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let expected = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let signature = B64.decode(expected).expect("b64");
    assert!(key.verifying_key().verify_raw(input.as_bytes(), &signature), "RFC signature verifies");
    let mut flipped = signature.clone();
    flipped[0] ^= 1;
    assert!(!key.verifying_key().verify_raw(input.as_bytes(), &flipped));
    assert!(!key.verifying_key().verify_raw(b"Example of Ed25519 signinG", &signature));
}

#[test]
fn issued_key_verifies_with_its_claims() {
    let ring = ring(1);
    let verified = verify_license_key(&ring, &key(&ring)).expect("verifies");
    assert_eq!(verified.claims, claims());
    assert_eq!(verified.expires_at, times().expires_at);
    assert_eq!(verified.kid, ring.signer().expect("signer").kid);
}

#[test]
fn a_key_signed_elsewhere_with_the_same_jwk_verifies() {
    // Another implementation: raw ed25519-compact, our own JSON, no jwt-compact.
    let jwk: Jwk = serde_json::from_str(RFC8037_PRIVATE_JWK).expect("jwk");
    let seed: [u8; 32] = B64.decode(jwk.d.as_deref().expect("d")).expect("b64").try_into().expect("32 bytes");
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    let kid = SigningKey::parse_jwk_json(RFC8037_PRIVATE_JWK).expect("key").kid;
    let header = serde_json::json!({"alg": "EdDSA", "typ": LICENSE_TYP, "kid": kid});
    let foreign = wrap(&header, &payload(), |m| pair.sk.sign(m, None).to_vec());
    let ring =
        KeyRing::parse_jwks_json(&format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#, jwk.x))
            .expect("jwks");
    assert_eq!(verify_license_key(&ring, &foreign).expect("foreign key verifies").claims, claims());
}

fn check_rejected(ring: &KeyRing, key: &str, expected: KeyRejection) {
    assert_eq!(verify_license_key(ring, key).map(|_| ()), Err(expected), "key: {:.80}", key);
}

#[test]
fn forged_and_tampered_keys_are_refused() {
    let ring = ring(1);
    let kid = ring.signer().expect("signer").kid.clone();
    let good = key(&ring);

    let none =
        wrap(&serde_json::json!({"alg": "none", "typ": LICENSE_TYP, "kid": kid}), &payload(), |_| vec![]);
    check_rejected(&ring, &none, KeyRejection::BadSignature);

    // HS256 with the public key bytes as the HMAC secret: the classic algorithm-confusion forgery.
    let public = B64.decode(&ring.jwks().keys[0].x).expect("x");
    let hs = wrap(&serde_json::json!({"alg": "HS256", "typ": LICENSE_TYP, "kid": kid}), &payload(), |m| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&public).expect("hmac key");
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    });
    check_rejected(&ring, &hs, KeyRejection::BadSignature);

    let stranger = ring_key_from(2, Some(kid.clone()));
    check_rejected(&ring, &stranger, KeyRejection::BadSignature);
    let unknown_kid = ring_key_from(1, Some("not-in-ring".into()));
    check_rejected(&ring, &unknown_kid, KeyRejection::BadSignature);

    // A receipt-typed token signed by the right key is still not a license key.
    let wrong_typ =
        wrap(&serde_json::json!({"alg": "EdDSA", "typ": "nls-receipt+jwt", "kid": kid}), &payload(), |m| {
            ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([1; 32])).sk.sign(m, None).to_vec()
        });
    check_rejected(&ring, &wrong_typ, KeyRejection::BadSignature);

    check_rejected(&ring, &good[..good.len() - 20], KeyRejection::Malformed);
    let jws = key_format::parse_key(&good).expect("jws");
    let truncated_jws = &jws[..jws.len() - 10];
    check_rejected(&ring, &key_format::format_key(truncated_jws), KeyRejection::BadSignature);
    let bad_sum = format!("{}00000000", &good[..good.len() - 8]);
    check_rejected(&ring, &bad_sum, KeyRejection::ChecksumMismatch);
    let long = format!("{good}{}", " ".repeat(MAX_KEY_BYTES));
    check_rejected(&ring, &long, KeyRejection::Malformed);
    check_rejected(&ring, "NLS-not-a-key", KeyRejection::Malformed);
    check_rejected(&ring, &good.replacen("NLS-", "XYZ-", 1), KeyRejection::Malformed);
}

fn ring_key_from(seed: u8, kid: Option<String>) -> String {
    let r = KeyRing::with_signer(SigningKey::from_seed([seed; 32], kid), vec![]).expect("ring");
    key(&r)
}

#[test]
fn rotation_by_kid() {
    let old = SigningKey::from_seed([1; 32], Some("2026-01".into()));
    let new = SigningKey::from_seed([2; 32], Some("2026-11".into()));
    let old_key = key(&KeyRing::with_signer(old.clone(), vec![]).expect("old ring"));
    let rotated = KeyRing::with_signer(new.clone(), vec![old.verifying_key()]).expect("rotated ring");
    let new_key = key(&rotated);
    assert!(verify_license_key(&rotated, &old_key).is_ok(), "old keys verify until retired");
    assert_eq!(verify_license_key(&rotated, &new_key).expect("new").kid, "2026-11");
    let retired = KeyRing::with_signer(new, vec![]).expect("retired ring");
    assert_eq!(verify_license_key(&retired, &old_key).map(|_| ()), Err(KeyRejection::BadSignature));
    let jwks = rotated.jwks();
    assert_eq!(
        jwks.keys.iter().map(|k| k.kid.clone().unwrap_or_default()).collect::<Vec<_>>(),
        ["2026-11", "2026-01"]
    );
    assert!(jwks.keys.iter().all(|k| k.d.is_none()), "JWKS never carries private parts");
    let dup = KeyRing::with_signer(
        SigningKey::from_seed([3; 32], Some("2026-01".into())),
        vec![old.verifying_key()],
    );
    assert!(dup.is_err(), "a kid names one key");
}

#[test]
fn verifier_cache_serves_only_what_verified() {
    let ring = Arc::new(ring(1));
    let verifier = Verifier::with_capacity(Arc::clone(&ring), 2);
    let good = key(&ring);
    let a = verifier.verify(&good).expect("cold");
    let b = verifier.verify(&format!(" {good} ")).expect("warm, trimmed");
    assert!(Arc::ptr_eq(&a, &b), "second call is a cache hit");
    let forged = format!("{}00000000", &good[..good.len() - 8]);
    for _ in 0..2 {
        assert_eq!(verifier.verify(&forged).map(|_| ()), Err(KeyRejection::ChecksumMismatch));
    }
    // Over capacity the cache starts afresh rather than growing.
    for seed in 2..6 {
        let other = Arc::new(self::ring(seed));
        let v = Verifier::with_capacity(Arc::clone(&other), 2);
        assert!(v.verify(&key(&other)).is_ok());
    }
}

#[test]
fn public_jwk_round_trips() {
    let key = SigningKey::from_seed([9; 32], None);
    let jwk = key.verifying_key().to_jwk();
    let json = serde_json::to_string(&jwk).expect("json");
    let back = VerifyingKey::from_jwk(&serde_json::from_str(&json).expect("parse")).expect("valid");
    assert_eq!(back.kid, key.kid);
    assert!(
        json.contains(r#""kty":"OKP""#) && json.contains(r#""crv":"Ed25519""#) && !json.contains(r#""d""#)
    );
}

#[test]
fn expiry_is_carried_to_the_second() {
    let ring = ring(1);
    let exact = TokenTimes { expires_at: Some(at("2027-01-01T00:00:00Z") + Duration::seconds(1)), ..times() };
    let k = issue_license_key(&ring, &claims(), exact).expect("issue");
    assert_eq!(verify_license_key(&ring, &k).expect("verify").expires_at, exact.expires_at);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn format_and_parse_round_trip(jws in "[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}") {
        let key = key_format::format_key(&jws);
        prop_assert_eq!(key_format::parse_key(&key), Ok(jws.as_str()));
    }

    #[test]
    fn any_single_byte_change_is_rejected(pos in any::<prop::sample::Index>(), replacement in any::<u8>()) {
        let ring = ring(1);
        let good = key(&ring);
        let mut bytes = good.clone().into_bytes();
        let i = pos.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        // Non-UTF-8 input cannot reach the verifier as &str at all: that is a rejection too.
        if let Ok(tampered) = String::from_utf8(bytes) {
            // White space at either end is trimmed by design; only edits inside the key count.
            prop_assume!(tampered.trim() != good);
            prop_assert!(verify_license_key(&ring, &tampered).is_err(), "accepted tampered key at byte {}", i);
        }
    }
}
