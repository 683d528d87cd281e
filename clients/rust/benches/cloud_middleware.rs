//! The whole cloud-service middleware per call (`require_access_token`: bearer parsing, token
//! verification or its cache, the per-license token bucket, the meter, the handler), next to
//! its floors measured in the same run: one raw Ed25519 verify of the same token, and the same
//! router without the layer. Run: `cargo bench -p nls-client --bench cloud_middleware`;
//! docs/benchmarks.md reports the ratios.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use nls_client::Clock;
use nls_client::cloud_access::CloudAccess;
use nls_client::cloud_meter::NlsCallMeter;
use nls_core::access_token::{CloudLimits, DEFAULT_ACCESS_TTL_SECS, decide_access, sign_access_token};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::verify_license_key;
use nls_core::validation::{ValidationRequest, decide};
use tower::ServiceExt;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("valid literal").to_utc()
}

/// `count` tokens of one license (distinct `jti`s), signed by `ring`.
fn tokens(ring: &KeyRing, count: usize) -> Vec<String> {
    let mut license = new_license("cus_bench", LicenseTerms::default(), now() - Duration::days(1));
    // No 429 in the measurement: the bucket never runs dry.
    let limits = CloudLimits { requests_per_minute: u32::MAX, burst: u32::MAX, monthly_quota: None };
    license.cloud = Some(BTreeMap::from([("workflows".to_owned(), limits)]));
    let key = verify_license_key(ring, &issue_key(ring, &license, now()).expect("key")).expect("verify");
    let decision = decide(&key, &ValidationRequest::default(), None, now());
    let grant =
        decide_access(&decision, license.cloud.as_ref(), &BTreeMap::new(), "workflows").expect("grant");
    let ttl = Duration::seconds(DEFAULT_ACCESS_TTL_SECS);
    (0..count)
        .map(|_| {
            sign_access_token(ring, &decision, &grant, "dep_1", "workflows", now(), ttl).expect("sign").token
        })
        .collect()
}

fn call(runtime: &tokio::runtime::Runtime, app: &Router, token: &str) {
    let request = Request::get("/v1/whoami")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn bench(c: &mut Criterion) {
    let signer = SigningKey::from_seed([42; 32], None);
    let ring = KeyRing::with_signer(signer.clone(), vec![]).expect("ring");
    let jwks = serde_json::to_string(&ring.jwks()).expect("jwks");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let handler = || Router::new().route("/v1/whoami", get(|| async { "ok" }));
    // More distinct tokens than the verified-token cache holds (10,000): a cycle through them
    // misses the cache, so each call verifies a signature.
    let fresh = tokens(&ring, 20_000);
    let token = fresh[0].clone();

    let (signing_input, signature_b64) = token.rsplit_once('.').expect("three parts");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature_b64).expect("b64");
    let verifying = signer.verifying_key();
    c.bench_function("ed25519_verify_raw", |b| {
        b.iter(|| assert!(verifying.verify_raw(black_box(signing_input.as_bytes()), black_box(&signature))))
    });

    let bare = handler();
    c.bench_function("router_without_the_layer", |b| b.iter(|| call(&runtime, &bare, black_box(&token))));

    let access = CloudAccess::from_jwks_json(&jwks).expect("jwks").with_clock(Arc::new(FixedClock));
    let layered = handler().layer(access.require_access_token("workflows"));
    // Criterion calls the routine once per sample: the cycle must outlive those calls.
    let mut next = fresh.iter().cycle();
    c.bench_function("middleware_new_token", |b| {
        b.iter(|| call(&runtime, &layered, black_box(next.next().expect("cycle"))))
    });
    c.bench_function("middleware_cached_token", |b| b.iter(|| call(&runtime, &layered, black_box(&token))));

    let meter = NlsCallMeter::new("http://127.0.0.1:9", "nls_unused");
    let metered_access = access.with_meter(Arc::new(meter));
    let metered = handler().layer(metered_access.require_access_token("workflows"));
    c.bench_function("middleware_cached_token_metered", |b| {
        b.iter(|| call(&runtime, &metered, black_box(&token)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
