//! Cloud access token verification (what `require_access_token` runs per call), next to its
//! floor: one raw Ed25519 verify of the same token on the same machine.
//! Run: `cargo bench -p nls-core --bench access_tokens`; docs/benchmarks.md reports the ratios.

use std::collections::BTreeMap;
use std::hint::black_box;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use nls_core::access_token::{
    AccessVerifier, CloudLimits, DEFAULT_ACCESS_TTL_SECS, decide_access, sign_access_token,
    verify_access_token,
};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::verify_license_key;
use nls_core::validation::{ValidationRequest, decide};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("valid literal").to_utc()
}

fn bench(c: &mut Criterion) {
    let signer = SigningKey::from_seed([42; 32], None);
    let ring = KeyRing::with_signer(signer.clone(), vec![]).expect("ring");
    let public = KeyRing::from_jwks(&ring.jwks()).expect("jwks");
    let terms = LicenseTerms { features: vec!["sso".into()], ..LicenseTerms::default() };
    let mut license = new_license("cus_bench", terms, now() - Duration::days(1));
    let limits = CloudLimits { requests_per_minute: 600, burst: 50, monthly_quota: Some(100_000) };
    license.cloud = Some(BTreeMap::from([("workflows".to_owned(), limits)]));
    let key = verify_license_key(&ring, &issue_key(&ring, &license, now()).expect("key")).expect("verify");
    let decision = decide(&key, &ValidationRequest::default(), None, now());
    let grant =
        decide_access(&decision, license.cloud.as_ref(), &BTreeMap::new(), "workflows").expect("grant");
    let ttl = Duration::seconds(DEFAULT_ACCESS_TTL_SECS);
    let token =
        sign_access_token(&ring, &decision, &grant, "dep_1", "workflows", now(), ttl).expect("sign").token;

    // The floor: the same token's signature and nothing else.
    let (signing_input, signature_b64) = token.rsplit_once('.').expect("three parts");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature_b64).expect("b64");
    let verifying = signer.verifying_key();
    c.bench_function("ed25519_verify_raw", |b| {
        b.iter(|| assert!(verifying.verify_raw(black_box(signing_input.as_bytes()), black_box(&signature))))
    });

    c.bench_function("access_token_verify", |b| {
        b.iter(|| verify_access_token(&public, black_box(&token), "workflows", now()).expect("valid"))
    });

    let verifier = AccessVerifier::new(public.clone(), "workflows");
    verifier.verify(&token, now()).expect("prime the cache");
    c.bench_function("access_token_verify_cached", |b| {
        b.iter(|| verifier.verify(black_box(&token), now()).expect("valid"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
