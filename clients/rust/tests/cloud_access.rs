//! Cloud access end to end: a real `nls serve` issues tokens to `LicenseClient::access_token`,
//! and the example cloud service (`examples/cloud_service.rs`) admits them through
//! `require_access_token`. `cargo build -p nls` first.

mod support;

#[allow(dead_code)]
#[path = "../examples/cloud_service.rs"]
mod cloud_service;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use nls_client::cloud_access::CloudAccess;
use nls_client::{AccessTokenError, ClientConfig, Clock, LicenseClient};
use serde_json::{Value, json};
use support::{Server, temp_dir};
use tower::ServiceExt;

struct SetClock(Mutex<DateTime<Utc>>);

impl Clock for SetClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl SetClock {
    fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

fn cloud(burst: u32) -> Value {
    json!({"workflows": {"requests_per_minute": 60, "burst": burst, "monthly_quota": 1000}})
}

fn client(server: &Server, key: &str) -> LicenseClient {
    let mut config = ClientConfig::new(&server.url, key, &server.jwks(), temp_dir("cloud"));
    config.request_timeout = Duration::from_secs(5);
    LicenseClient::open(config).unwrap()
}

/// Calls `path` with `Authorization: Bearer <token>`; returns status, error code or body, headers.
async fn call(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent
        .post(&format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .send(body.to_string().as_str())
        .unwrap();
    (r.status().as_u16(), serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_current_access_token_for_this_service_gets_in() {
    let server = Server::start(3600);
    let (license_id, key) = server.issue_license(json!({"cloud": cloud(100), "tier": "pro"}));
    let license = client(&server, &key);
    let token = license.access_token("workflows").expect("a token");
    assert_eq!(license.access_token("workflows").unwrap(), token, "cached, not fetched again");

    let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
    let access = CloudAccess::from_jwks_url(&format!("{}/.well-known/jwks.json", server.url))
        .unwrap()
        .with_clock(clock.clone());
    let app = cloud_service::app(&access);

    let (status, body, headers) = call(&app, "/v1/whoami", Some(&token.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["license_id"], license_id.as_str());
    assert_eq!(body["deployment_id"], license.deployment_id());
    assert_eq!(body["tier"], "pro");
    assert_eq!(headers["ratelimit-limit"], "100");

    let code = |body: &Value| body["error"]["code"].as_str().unwrap_or_default().to_owned();
    let refused = |(status, body, headers): (StatusCode, Value, axum::http::HeaderMap)| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        code(&body)
    };

    assert_eq!(refused(call(&app, "/v1/whoami", None).await), "missing_token");
    // Tampered: another license id under the same signature.
    let parts: Vec<&str> = token.token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "lic_someone_else".into();
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2]);
    assert_eq!(refused(call(&app, "/v1/whoami", Some(&tampered)).await), "bad_signature");
    // alg none, same header otherwise, no signature.
    let mut header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    header["alg"] = "none".into();
    let none = format!("{}.{}.", B64.encode(header.to_string()), parts[1]);
    refused(call(&app, "/v1/whoami", Some(&none)).await);
    // The license key itself, its bare JWS, and a validation receipt.
    refused(call(&app, "/v1/whoami", Some(&key)).await);
    let key_jws = nls_core::key_format::parse_key(&key).unwrap();
    assert_eq!(refused(call(&app, "/v1/whoami", Some(key_jws)).await), "wrong_token_type");
    let (_, answer) = post(&server, "/v1/licenses/validate", json!({"key": key, "deployment_id": "d9"}));
    let receipt = answer["receipt"].as_str().expect("a receipt");
    assert_eq!(refused(call(&app, "/v1/whoami", Some(receipt)).await), "wrong_token_type");
    // A token for another service.
    let other = Router::new()
        .route("/x", axum::routing::get(|| async { "x" }))
        .layer(access.require_access_token("integrations"));
    assert_eq!(refused(call(&other, "/x", Some(&token.token)).await), "wrong_audience");

    // Suspension: no new token; the one already out dies at its expiry (15 minutes at most).
    server.suspend(&license_id);
    match license.fetch_access_token("workflows") {
        Err(AccessTokenError::Refused { status: 403, code, .. }) => assert_eq!(code, "SUSPENDED"),
        other => panic!("a suspended license got {other:?}"),
    }
    assert_eq!(call(&app, "/v1/whoami", Some(&token.token)).await.0, StatusCode::OK, "still inside its TTL");
    let left = token.expires_at - clock.now();
    assert!(left <= chrono::Duration::minutes(15), "{left}");
    clock.advance(left);
    assert_eq!(refused(call(&app, "/v1/whoami", Some(&token.token)).await), "token_expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_tier_rate_gets_exactly_the_expected_429s() {
    let server = Server::start(3600);
    let (_, key) = server.issue_license(json!({"cloud": cloud(5)}));
    let token = client(&server, &key).access_token("workflows").unwrap();
    let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
    let access = CloudAccess::from_jwks_json(&server.jwks()).unwrap().with_clock(clock.clone());
    let app = cloud_service::app(&access);

    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, _, headers) = call(&app, "/v1/whoami", Some(&token.token)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(headers["retry-after"], "1");
            assert_eq!(headers["ratelimit-remaining"], "0");
            assert_eq!(headers["ratelimit-reset"], "5");
        }
        statuses.push(status.as_u16());
    }
    // burst 5: five pass, the other seven are refused.
    assert_eq!(statuses, [[200; 5].as_slice(), [429; 7].as_slice()].concat());
    // 60 per minute: one more call a second later, and only one.
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(call(&app, "/v1/whoami", Some(&token.token)).await.0, StatusCode::OK);
    assert_eq!(call(&app, "/v1/whoami", Some(&token.token)).await.0, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn the_app_is_told_when_nls_cannot_be_reached_and_what_nls_refused() {
    let mut server = Server::start(3600);
    let (_, key) = server.issue_license(json!({"cloud": cloud(5)}));
    let license = client(&server, &key);
    match license.access_token("integrations") {
        Err(AccessTokenError::Refused { status: 403, code, .. }) => assert_eq!(code, "FEATURE_NOT_ENTITLED"),
        other => panic!("{other:?}"),
    }
    let token = license.access_token("workflows").unwrap();
    server.kill();
    // The cached token is still handed out; a fresh one cannot be had.
    assert_eq!(license.access_token("workflows").unwrap(), token);
    let err = license.fetch_access_token("workflows").unwrap_err();
    assert!(err.is_transient() && matches!(err, AccessTokenError::Unreachable(_)), "{err:?}");
    license.forget_access_token("workflows");
    assert!(matches!(license.access_token("workflows"), Err(AccessTokenError::Unreachable(_))));
}
