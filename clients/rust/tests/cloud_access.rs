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
use nls_client::cloud_meter::{MeterError, NlsCallMeter};
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

/// An HTTP proxy to `upstream` that forwards every request but, for the first `drop_first`
/// requests starting with `request_line` (e.g. `POST /v1/usage `), throws the answer away and
/// closes the connection: NLS counted the batch, the client never heard, so it must send the
/// same batch again. Also counts those requests.
fn answer_dropping_proxy(
    upstream: u16,
    request_line: &'static str,
    drop_first: usize,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let usage_posts = Arc::new(AtomicUsize::new(0));
    let counter = usage_posts.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            // One request: headers, then Content-Length bytes of body.
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            let header_end = loop {
                let Ok(n) = client.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(at + 4);
                }
            };
            let Some(header_end) = header_end else { continue };
            let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while request.len() < header_end + length {
                let Ok(n) = client.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            // Forward with `Connection: close` so the answer ends with the connection.
            let head = String::from_utf8_lossy(&request[..header_end])
                .replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
            let mut upstream_conn = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            upstream_conn.write_all(head.as_bytes()).unwrap();
            upstream_conn.write_all(&request[header_end..]).unwrap();
            let mut answer = Vec::new();
            let _ = upstream_conn.read_to_end(&mut answer);
            let is_watched = head.starts_with(request_line);
            if is_watched && counter.fetch_add(1, Ordering::SeqCst) < drop_first {
                continue; // dropped: the client sees the connection close without an answer
            }
            let _ = client.write_all(&answer);
        }
    });
    (port, usage_posts)
}

#[tokio::test(flavor = "multi_thread")]
async fn n_allowed_calls_are_n_units_of_usage_once_each_across_retries() {
    let server = Server::start(3600);
    const N: u64 = 7;
    let quota = json!({"workflows": {"requests_per_minute": 600, "burst": 100, "monthly_quota": N}});
    let (license_id, key) = server.issue_license(json!({"cloud": quota}));
    let (proxy, usage_posts) = answer_dropping_proxy(server.port(), "POST /v1/usage ", 2);
    let mut config =
        ClientConfig::new(&format!("http://127.0.0.1:{proxy}"), &key, &server.jwks(), temp_dir("meter"));
    config.request_timeout = Duration::from_secs(5);
    let license = LicenseClient::open(config).unwrap();
    let _ = tokio::task::block_in_place(|| license.validate_now()); // takes the seat usage needs
    let token = tokio::task::block_in_place(|| license.access_token("workflows")).unwrap();
    let access = CloudAccess::from_jwks_json(&server.jwks()).unwrap();
    let app = cloud_service::app(&access);
    for _ in 0..N {
        let (status, _, _) = call(&app, "/v1/whoami", Some(&token.token)).await;
        assert_eq!(status, StatusCode::OK);
        license.record_cloud_call("workflows").unwrap();
    }
    // The first two sends lose their answer; the third is acknowledged.
    for attempt in 1..=3 {
        let report = tokio::task::block_in_place(|| license.flush_usage());
        assert_eq!(report.stopped.is_some(), attempt < 3, "attempt {attempt}: {report:?}");
    }
    assert!(license.pending_usage().unwrap().is_empty());
    assert_eq!(usage_posts.load(std::sync::atomic::Ordering::SeqCst), 3, "the same batch, sent three times");
    assert_eq!(server.usage_counter(&license_id, "cloud.workflows.calls"), N);
    // The quota is used up: the next token is refused.
    match tokio::task::block_in_place(|| license.fetch_access_token("workflows")) {
        Err(AccessTokenError::Refused { status: 403, code, .. }) => assert_eq!(code, "USAGE_LIMIT_EXCEEDED"),
        other => panic!("{other:?}"),
    }
}

/// The service's own count (`NlsCallMeter`): N calls through the example service are N units of
/// `cloud.workflows.calls` at NLS, sent with the service's `meter` key; a flush whose answer
/// is lost resends the same batch, which NLS counts once. At the quota, no new token.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_meters_n_allowed_calls_as_n_units_once_each_across_a_lost_answer() {
    let server = Server::start(3600);
    const N: u64 = 9;
    let quota = json!({"workflows": {"requests_per_minute": 600, "burst": 5, "monthly_quota": N}});
    let (license_id, key) = server.issue_license(json!({"cloud": quota}));
    let (other_id, other_key) = server.issue_license(json!({"cloud": cloud(100)}));
    let license = client(&server, &key);
    let token = tokio::task::block_in_place(|| license.access_token("workflows")).unwrap();
    let other_token =
        tokio::task::block_in_place(|| client(&server, &other_key).access_token("workflows")).unwrap();

    let (proxy, meter_posts) = answer_dropping_proxy(server.port(), "POST /v1/cloud-usage ", 1);
    let meter = NlsCallMeter::new(&format!("http://127.0.0.1:{proxy}"), &server.api_key("meter"));
    let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
    let access = CloudAccess::from_jwks_json(&server.jwks())
        .unwrap()
        .with_clock(clock.clone())
        .with_meter(Arc::new(meter.clone()));
    let app = cloud_service::app(&access);

    // Burst 5: of 7 calls at once, 5 are allowed and metered; the 2 refused (429) are not.
    let mut allowed = 0;
    for _ in 0..7 {
        allowed += u64::from(call(&app, "/v1/whoami", Some(&token.token)).await.0 == StatusCode::OK);
    }
    assert_eq!(allowed, 5);
    clock.advance(chrono::Duration::seconds(1)); // 600/min: 10 more fit
    for _ in 0..N - 5 {
        assert_eq!(call(&app, "/v1/whoami", Some(&token.token)).await.0, StatusCode::OK);
    }
    assert_eq!(call(&app, "/v1/whoami", Some(&other_token.token)).await.0, StatusCode::OK);
    assert_eq!(refused_calls(&app).await, StatusCode::UNAUTHORIZED, "a refused token is not metered");
    assert_eq!(meter.pending_calls(), N + 1);

    // The first flush's answer is lost: NLS counted the batch, the meter keeps it.
    let lost = tokio::task::block_in_place(|| meter.flush());
    assert!(matches!(lost, Err(MeterError::Unreachable(_))), "{lost:?}");
    assert_eq!(meter.pending_calls(), N + 1, "kept until acknowledged");
    assert_eq!(server.usage_counter(&license_id, "cloud.workflows.calls"), N, "counted at NLS already");
    let resent = tokio::task::block_in_place(|| meter.flush()).expect("acknowledged");
    assert_eq!((resent.batches, resent.calls), (1, N + 1));
    assert_eq!(meter_posts.load(std::sync::atomic::Ordering::SeqCst), 2, "the same batch, sent twice");
    assert_eq!(meter.pending_calls(), 0);
    assert_eq!(server.usage_counter(&license_id, "cloud.workflows.calls"), N, "once, across the retry");
    assert_eq!(server.usage_counter(&other_id, "cloud.workflows.calls"), 1);
    // Nothing new to send: no request.
    assert_eq!(tokio::task::block_in_place(|| meter.flush()).unwrap(), Default::default());
    assert_eq!(meter_posts.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The quota (N) is used up by the service's count alone: the next token is refused.
    match tokio::task::block_in_place(|| license.fetch_access_token("workflows")) {
        Err(AccessTokenError::Refused { status: 403, code, .. }) => assert_eq!(code, "USAGE_LIMIT_EXCEEDED"),
        other => panic!("{other:?}"),
    }
}

async fn refused_calls(app: &Router) -> StatusCode {
    call(app, "/v1/whoami", Some("not.a.token")).await.0
}

fn nls_keys(args: &[&str]) -> Value {
    let output = std::process::Command::new(support::nls_binary()).arg("keys").args(args).output().unwrap();
    assert!(output.status.success(), "nls keys {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn token_kid(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn issue_token(server: &Server, key: &str) -> String {
    let (status, answer) = post(
        server,
        "/v1/access-tokens",
        json!({"key": key, "deployment_id": "d1", "audience": "workflows"}),
    );
    assert_eq!(status, 200, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

/// Signing-key rotation on a running `nls serve` (`nls keys rotate`, then `nls keys retire`):
/// a running service's verifier fetches the new JWKS on the new `kid` and admits tokens signed
/// by the new key, keeps admitting the old key's tokens while NLS still trusts it, and refuses
/// them once the key is retired (at the latest `JWKS_MAX_AGE` later, when the JWKS it holds
/// is refetched; a verifier started after the retirement refuses them at once).
#[tokio::test(flavor = "multi_thread")]
async fn a_running_verifier_follows_a_signing_key_rotation_and_retirement() {
    let mut server = Server::start(3600);
    let (_, key) = server.issue_license(json!({"cloud": cloud(100)}));
    let old_token = issue_token(&server, &key);
    let old_kid = token_kid(&old_token);
    let jwks_url = format!("{}/.well-known/jwks.json", server.url);
    let clock = Arc::new(SetClock(Mutex::new(Utc::now())));
    let access = CloudAccess::from_jwks_url(&jwks_url).unwrap().with_clock(clock.clone());
    let app = cloud_service::app(&access);
    assert_eq!(call(&app, "/v1/whoami", Some(&old_token)).await.0, StatusCode::OK);

    let mut new_kid = String::new();
    tokio::task::block_in_place(|| {
        server.restart(|data| {
            let rotated = nls_keys(&["rotate", "--data-dir", data.to_str().unwrap()]);
            new_kid = rotated["kid"].as_str().unwrap().to_owned();
        })
    });
    let new_token = issue_token(&server, &key);
    assert_eq!(token_kid(&new_token), new_kid);
    assert_ne!(new_kid, old_kid);
    let (status, body, _) = call(&app, "/v1/whoami", Some(&new_token)).await;
    assert_eq!(status, StatusCode::OK, "the unknown kid refetched the JWKS: {body}");
    assert_eq!(
        call(&app, "/v1/whoami", Some(&old_token)).await.0,
        StatusCode::OK,
        "the old key is still trusted"
    );

    tokio::task::block_in_place(|| {
        server.restart(|data| {
            nls_keys(&["retire", "--data-dir", data.to_str().unwrap(), "--kid", &old_kid]);
        })
    });
    let fresh = cloud_service::app(&CloudAccess::from_jwks_url(&jwks_url).unwrap().with_clock(clock.clone()));
    let (status, body, _) = call(&fresh, "/v1/whoami", Some(&old_token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unknown_kid")));
    assert_eq!(call(&fresh, "/v1/whoami", Some(&new_token)).await.0, StatusCode::OK);

    // The running verifier holds the JWKS it fetched until it is JWKS_MAX_AGE old.
    assert_eq!(
        call(&app, "/v1/whoami", Some(&old_token)).await.0,
        StatusCode::OK,
        "within the JWKS's max age"
    );
    clock.advance(chrono::Duration::from_std(nls_client::cloud_access::JWKS_MAX_AGE).unwrap());
    let (status, body, _) = call(&app, "/v1/whoami", Some(&old_token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unknown_kid")),
        "{body}"
    );
    assert_eq!(call(&app, "/v1/whoami", Some(&new_token)).await.0, StatusCode::OK);
}

/// The meter dates calls by UTC day (one record per license and day in a batch); a batch NLS
/// refuses as malformed (here: calls dated outside the usage window) is dropped, not resent
/// forever; a revoked meter key keeps the batches for a later flush.
#[test]
fn the_meter_counts_per_day_drops_what_nls_refuses_and_keeps_what_it_could_not_send() {
    use nls_client::cloud_access::CallMeter;
    let server = Server::start(3600);
    let (license_id, key) = server.issue_license(json!({"cloud": cloud(100)}));
    let token = issue_token(&server, &key);
    let ring = nls_core::key_ring::KeyRing::parse_jwks_json(&server.jwks()).unwrap();
    let caller = nls_core::access_token::verify_access_token(&ring, &token, "workflows", Utc::now()).unwrap();
    let meter_key = server.api_key("meter");

    let clock = Arc::new(SetClock(Mutex::new(Utc::now() - chrono::Duration::days(1))));
    let meter = NlsCallMeter::with_clock(&server.url, &meter_key, clock.clone());
    meter.record_call(&caller);
    meter.record_call(&caller);
    clock.advance(chrono::Duration::days(1));
    meter.record_call(&caller);
    let sent = meter.flush().unwrap();
    assert_eq!((sent.batches, sent.calls, sent.rejected), (1, 3, 0));
    assert_eq!(server.usage_counter(&license_id, "cloud.workflows.calls"), 3);

    let stale = Arc::new(SetClock(Mutex::new(Utc::now() - chrono::Duration::days(40))));
    let old_meter = NlsCallMeter::with_clock(&server.url, &meter_key, stale);
    old_meter.record_call(&caller);
    let refused = old_meter.flush().unwrap();
    assert_eq!((refused.batches, refused.rejected), (0, 1));
    assert_eq!(old_meter.pending_calls(), 0, "a malformed batch is dropped");
    assert_eq!(server.usage_counter(&license_id, "cloud.workflows.calls"), 3);

    let wrong_key = NlsCallMeter::new(&server.url, "nls_ak_unknown_00");
    wrong_key.record_call(&caller);
    assert!(matches!(wrong_key.flush(), Err(MeterError::Refused { status: 401, .. })));
    assert_eq!(wrong_key.pending_calls(), 1, "kept for when the key is fixed");
}
