//! The axum guards answer 402/403 with JSON codes, read from the client's state. The licenses
//! here are air-gapped (offline license files signed by a test key), so no server is needed;
//! `against_server.rs` checks the same guards against a real `nls serve`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use chrono::{DateTime, Duration, TimeZone, Utc};
use nls_client::{ClientConfig, Clock, LicenseClient};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::{LicenseClaims, TokenTimes, issue_license_key};
use nls_core::receipt::{OfflineFileClaims, issue_offline_file};
use tower::ServiceExt;

struct FixedClock(Mutex<DateTime<Utc>>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

fn air_gapped_client(ring: &KeyRing, limit: u64, ttl_days: i64, clock: Arc<FixedClock>) -> LicenseClient {
    let claims = LicenseClaims {
        iss: "nls".into(),
        sub: "lic_mw".into(),
        aud: "nectar".into(),
        jti: "j1".into(),
        customer_id: "cus_1".into(),
        tier: "pro".into(),
        features: vec!["reports".into()],
        limits: BTreeMap::from([("runs".to_owned(), limit)]),
        max_deployments: None,
        offline_days: 30,
        grace_days: 7,
    };
    let key = issue_license_key(ring, &claims, TokenTimes::default()).unwrap();
    let file_claims = OfflineFileClaims { sub: "lic_mw".into(), license_key: key, fingerprint: None };
    let file = issue_offline_file(ring, &file_claims, t0(), Duration::days(ttl_days)).unwrap();
    let jwks = serde_json::to_string(&ring.jwks()).unwrap();
    let dir = std::env::temp_dir().join(format!("nls-mw-{}", nls_client::durable_file::random_id()));
    let mut config = ClientConfig::air_gapped(&serde_json::to_string(&file).unwrap(), &jwks, dir);
    config.clock = clock;
    LicenseClient::open(config).unwrap()
}

fn app(license: &LicenseClient) -> Router {
    Router::new()
        .route("/reports", get(|| async { "reports" }).layer(license.require_feature("reports")))
        .route("/audit", get(|| async { "audit" }).layer(license.require_feature("audit")))
        .route("/runs", get(|| async { "run" }).layer(license.check_usage_limit("runs")))
        .route("/home", get(|| async { "home" }))
        .layer(license.require_valid_license())
}

async fn call(app: &Router, path: &str) -> (StatusCode, String) {
    let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or(body);
    (status, code)
}

#[tokio::test]
async fn guards_answer_402_and_403_with_codes() {
    let ring = KeyRing::with_signer(SigningKey::from_seed([3; 32], None), vec![]).unwrap();
    let clock = Arc::new(FixedClock(Mutex::new(t0() + Duration::hours(1))));
    let license = air_gapped_client(&ring, 2, 10, clock.clone());
    let app = app(&license);
    assert_eq!(call(&app, "/home").await, (StatusCode::OK, "home".into()));
    assert_eq!(call(&app, "/reports").await, (StatusCode::OK, "reports".into()));
    assert_eq!(call(&app, "/audit").await, (StatusCode::FORBIDDEN, "FEATURE_NOT_ENTITLED".into()));
    // The usage guard lets two runs through (limit 2), records them, and refuses the third.
    assert_eq!(call(&app, "/runs").await, (StatusCode::OK, "run".into()));
    assert_eq!(call(&app, "/runs").await, (StatusCode::OK, "run".into()));
    assert_eq!(license.used_this_month("runs"), 2);
    assert_eq!(call(&app, "/runs").await, (StatusCode::PAYMENT_REQUIRED, "USAGE_LIMIT_EXCEEDED".into()));
    assert_eq!(license.pending_usage().unwrap().len(), 2, "both runs are spooled on disk");
    // The clock is set back a day: grace, so requests pass, with the warning in a header.
    *clock.0.lock().unwrap() = t0() - Duration::days(1);
    let response = app.clone().oneshot(Request::get("/home").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let warning = response.headers().get("x-license-warning").expect("a grace warning header");
    assert!(warning.to_str().unwrap().contains("clock was set back"), "{warning:?}");
    // The offline file's TTL ends: every guarded route answers 402 with the state's code.
    *clock.0.lock().unwrap() = t0() + Duration::days(10);
    assert_eq!(call(&app, "/home").await, (StatusCode::PAYMENT_REQUIRED, "OFFLINE_FILE_INVALID".into()));
    assert_eq!(call(&app, "/reports").await, (StatusCode::PAYMENT_REQUIRED, "OFFLINE_FILE_INVALID".into()));
}

#[tokio::test]
async fn a_forged_offline_file_is_refused_at_open() {
    let ring = KeyRing::with_signer(SigningKey::from_seed([3; 32], None), vec![]).unwrap();
    let forger = KeyRing::with_signer(SigningKey::from_seed([4; 32], None), vec![]).unwrap();
    let clock = Arc::new(FixedClock(Mutex::new(t0())));
    let good = air_gapped_client(&ring, 1, 10, clock.clone());
    assert!(good.state().is_usable());
    let claims = OfflineFileClaims { sub: "lic_mw".into(), license_key: "NLS-x".into(), fingerprint: None };
    let file = issue_offline_file(&forger, &claims, t0(), Duration::days(10)).unwrap();
    let jwks = serde_json::to_string(&ring.jwks()).unwrap();
    let dir = std::env::temp_dir().join(format!("nls-mw-{}", nls_client::durable_file::random_id()));
    let config = ClientConfig::air_gapped(&serde_json::to_string(&file).unwrap(), &jwks, dir);
    assert!(LicenseClient::open(config).is_err());
}
