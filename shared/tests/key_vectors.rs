//! The published test vectors (tests/vectors/license_keys.json, described in
//! docs/key-format.md): every case must give its code, so other implementations can use them.

use chrono::DateTime;
use nls_core::ed25519::Backend;
use nls_core::key_ring::KeyRing;
use nls_core::license_token::verify_license_key;
use nls_core::validation::{ValidationCode, ValidationRequest, decide};

#[test]
fn published_vectors_give_their_codes() {
    // Every Ed25519 implementation built for this target (natively both, see src/ed25519.rs).
    assert!(Backend::ALL.contains(&Backend::DEFAULT));
    for &backend in Backend::ALL {
        vectors_give_their_codes(backend);
    }
}

fn vectors_give_their_codes(backend: Backend) {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/license_keys.json")).expect("vectors parse");
    let ring = KeyRing::parse_jwks_json(&vectors["jwks"].to_string()).expect("jwks").with_backend(backend);
    assert_eq!(ring.backend(), backend);
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let key = case["key"].as_str().expect("key");
        let now = DateTime::parse_from_rfc3339(case["at"].as_str().expect("at")).expect("at").to_utc();
        let code = match verify_license_key(&ring, key) {
            Ok(v) => decide(&v, &ValidationRequest::default(), None, now).code,
            Err(rejection) => ValidationCode::from(rejection),
        };
        assert_eq!(code.as_str(), case["code"].as_str().expect("code"), "vector {name:?} ({backend:?})");
    }
}
