//! Validation cost, next to its physical floor: one raw Ed25519 verify on the same machine.
//! Run: `cargo bench -p nls-core --bench validation`; docs/benchmarks.md reports the ratios.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_format;
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::validation::{ValidationRequest, Verifier, decide};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("valid literal").to_utc()
}

fn bench(c: &mut Criterion) {
    let signer = SigningKey::from_seed([42; 32], None);
    let ring = Arc::new(KeyRing::with_signer(signer.clone(), vec![]).expect("ring"));
    let terms = LicenseTerms {
        features: vec!["sso".into(), "audit".into()],
        max_deployments: Some(5),
        expires_at: Some(now() + chrono::Duration::days(365)),
        ..LicenseTerms::default()
    };
    let license = new_license("cus_bench", terms, now() - chrono::Duration::days(1));
    let key = issue_key(&ring, &license, now()).expect("issue");
    let request = ValidationRequest { features: vec!["sso".into()], ..ValidationRequest::default() };

    // The floor: verify the same JWS's signature with nothing else around it.
    let jws = key_format::parse_key(&key).expect("jws").to_owned();
    let (signing_input, signature_b64) = jws.rsplit_once('.').expect("three parts");
    let signature = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature_b64).expect("b64")
    };
    let verifying = signer.verifying_key();
    c.bench_function("ed25519_verify_raw", |b| {
        b.iter(|| assert!(verifying.verify_raw(black_box(signing_input.as_bytes()), black_box(&signature))))
    });

    c.bench_function("validate_cold", |b| {
        b.iter(|| {
            // A fresh verifier each time: parse, checksum, signature, claims, decide.
            let verifier = Verifier::new(Arc::clone(&ring));
            let verified = verifier.verify(black_box(&key)).expect("valid");
            black_box(decide(&verified, &request, None, now()))
        })
    });

    let warm = Verifier::new(Arc::clone(&ring));
    warm.verify(&key).expect("prime the cache");
    c.bench_function("validate_warm", |b| {
        b.iter(|| {
            let verified = warm.verify(black_box(&key)).expect("valid");
            black_box(decide(&verified, &request, None, now()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
