//! Validation cost, next to its physical floor: one raw Ed25519 verify on the same machine; the
//! stages of a cold validation one by one; and the Ed25519 verifiers side by side.
//! Run: `cargo bench -p nls-core --bench validation`; docs/benchmarks.md reports the ratios.
//! Groups can be run alone by name: `... --bench validation -- stage/` (or `verifier/`).

use std::hint::black_box;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use nls_core::ed25519::Backend;
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_format;
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::{LICENSE_TYP, LicenseClaims, decode_jws, verify_license_key};
use nls_core::validation::{ValidationRequest, Verifier, decide};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("valid literal").to_utc()
}

struct Fixture {
    signer: SigningKey,
    ring: Arc<KeyRing>,
    key: String,
    jws: String,
    signature: Vec<u8>,
    request: ValidationRequest,
}

fn fixture() -> Fixture {
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
    let jws = key_format::parse_key(&key).expect("jws").to_owned();
    let signature = decode_jws(&jws).expect("decodes").signature;
    Fixture { signer, ring, key, jws, signature, request }
}

fn signing_input(jws: &str) -> &[u8] {
    jws.rsplit_once('.').expect("three parts").0.as_bytes()
}

/// The headline pair: a whole cold validation against the one verify it runs.
fn cold_and_warm(c: &mut Criterion) {
    let f = fixture();
    let verifying = f.signer.verifying_key();
    let input = signing_input(&f.jws);
    // The floor: verify the same JWS's signature (the default verifier) and nothing else.
    c.bench_function("ed25519_verify_raw", |b| {
        b.iter(|| assert!(verifying.verify_raw(black_box(input), black_box(&f.signature))))
    });

    c.bench_function("validate_cold", |b| {
        b.iter(|| {
            // A fresh verifier each time: parse, checksum, signature, claims, decide.
            let verifier = Verifier::new(Arc::clone(&f.ring));
            let verified = verifier.verify(black_box(&f.key)).expect("valid");
            black_box(decide(&verified, &f.request, None, now()))
        })
    });

    // The same pair with ed25519-compact, the verifier the wasm builds use.
    c.bench_function("ed25519_verify_raw_compact", |b| {
        b.iter(|| {
            assert!(verifying.verify_raw_with(Backend::Compact, black_box(input), black_box(&f.signature)))
        })
    });
    let compact_ring = Arc::new((*f.ring).clone().with_backend(Backend::Compact));
    c.bench_function("validate_cold_compact", |b| {
        b.iter(|| {
            let verifier = Verifier::new(Arc::clone(&compact_ring));
            let verified = verifier.verify(black_box(&f.key)).expect("valid");
            black_box(decide(&verified, &f.request, None, now()))
        })
    });

    let warm = Verifier::new(Arc::clone(&f.ring));
    warm.verify(&f.key).expect("prime the cache");
    c.bench_function("validate_warm", |b| {
        b.iter(|| {
            let verified = warm.verify(black_box(&f.key)).expect("valid");
            black_box(decide(&verified, &f.request, None, now()))
        })
    });
}

/// Each stage of `validate_cold` alone, in the order it runs.
fn stages(c: &mut Criterion) {
    let f = fixture();
    let (jws, sum) = key_format::split_key(&f.key).expect("shape");
    c.bench_function("stage/1_key_format", |b| {
        b.iter(|| key_format::split_key(black_box(&f.key)).expect("shape"))
    });
    c.bench_function("stage/2_checksum", |b| {
        b.iter(|| assert!(key_format::checksum_matches(black_box(jws), black_box(sum))))
    });
    c.bench_function("stage/3_base64_and_header", |b| {
        b.iter(|| decode_jws(black_box(jws)).expect("decodes"))
    });
    let decoded = decode_jws(jws).expect("decodes");
    c.bench_function("stage/4_kid_lookup", |b| {
        b.iter(|| {
            black_box(&decoded).trusted_key(black_box(&f.ring), LICENSE_TYP).expect("known kid").kid.len()
        })
    });
    c.bench_function("stage/5_claims_json", |b| {
        b.iter(|| black_box(&decoded).plain_claims::<LicenseClaims>().expect("claims"))
    });
    let key = decoded.trusted_key(&f.ring, LICENSE_TYP).expect("known kid");
    let input = decoded.signing_input.as_bytes();
    c.bench_function("stage/6_verify", |b| {
        b.iter(|| {
            assert!(key.verify_raw_with(f.ring.backend(), black_box(input), black_box(&decoded.signature)))
        })
    });
    let verified = verify_license_key(&f.ring, &f.key).expect("valid");
    c.bench_function("stage/7_decide", |b| b.iter(|| decide(black_box(&verified), &f.request, None, now())));
    // The rest of `validate_cold` (trim, the cache lookup and insert, the `Arc`) is what it
    // costs beyond the sum of these stages.

    // What stages 3 and 5 cost before they were rewritten (jwt-compact's parse), for the record.
    c.bench_function("stage/before_3_jwt_compact_untrusted_token", |b| {
        b.iter(|| jwt_compact::UntrustedToken::new(black_box(jws)).expect("parses"))
    });
    let untrusted = jwt_compact::UntrustedToken::new(jws).expect("parses");
    c.bench_function("stage/before_5_jwt_compact_flattened_claims", |b| {
        b.iter(|| black_box(&untrusted).deserialize_claims_unchecked::<LicenseClaims>().expect("claims"))
    });
}

/// The candidate Ed25519 verifiers on the same signature. ed25519-dalek's `verify` and
/// `verify_strict` are cofactorless and so accept a slightly different set of signatures than
/// the core's rule (cofactored, canonical, no small-order `A` or `R`); they are here for speed
/// only. `verifier/dalek` is the core's own curve25519-dalek implementation of its rule.
fn verifiers(c: &mut Criterion) {
    let f = fixture();
    let verifying = f.signer.verifying_key();
    let input = signing_input(&f.jws);
    c.bench_function("verifier/compact", |b| {
        b.iter(|| {
            assert!(verifying.verify_raw_with(Backend::Compact, black_box(input), black_box(&f.signature)))
        })
    });
    c.bench_function("verifier/dalek", |b| {
        b.iter(|| {
            assert!(verifying.verify_raw_with(Backend::Dalek, black_box(input), black_box(&f.signature)))
        })
    });
    let public: [u8; 32] = {
        use base64::Engine as _;
        let x = f.ring.jwks().keys[0].x.clone();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(x).expect("b64").try_into().expect("32 bytes")
    };
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("key");
    let dalek_signature = ed25519_dalek::Signature::from_slice(&f.signature).expect("64 bytes");
    c.bench_function("verifier/ed25519_dalek_verify", |b| {
        use ed25519_dalek::Verifier as _;
        b.iter(|| dalek_key.verify(black_box(input), black_box(&dalek_signature)).expect("valid"))
    });
    c.bench_function("verifier/ed25519_dalek_verify_strict", |b| {
        b.iter(|| dalek_key.verify_strict(black_box(input), black_box(&dalek_signature)).expect("valid"))
    });
}

criterion_group!(benches, cold_and_warm, stages, verifiers);
criterion_main!(benches);
