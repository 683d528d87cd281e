//! The api Lambda's request handling, fed API Gateway v2 events (no AWS): the same
//! conversion `lambda_http::run` applies, then the app, over the in-memory store.

use std::sync::Arc;

use nls_core::http::{AppDeps, AppState, HttpConfig};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::memory_store::MemoryStore;
use nls_core::ports::SystemClock;
use nls_lambda_api::api_app;
use tower::ServiceExt;

fn app() -> axum::Router {
    let key_ring = KeyRing::with_signer(SigningKey::generate(), Vec::new()).expect("key ring");
    api_app(AppState::new(AppDeps {
        store: Arc::new(MemoryStore::new()),
        key_ring: Arc::new(key_ring),
        clock: Arc::new(SystemClock),
        config: HttpConfig::default(),
    }))
}

/// Sends a fixture event through the app: (status, JSON body).
async fn check(fixture: &str) -> (u16, serde_json::Value) {
    let event = std::fs::read_to_string(format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR")))
        .expect("fixture");
    let request = lambda_http::request::from_str(&event).expect("an API Gateway v2 event");
    let response = app().oneshot(request).await.expect("the router is infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn health_answers() {
    let (status, _) = check("health.json").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_malformed_key_is_a_well_formed_answer() {
    let (status, body) = check("validate_malformed.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], "MALFORMED", "{body}");
}

#[tokio::test]
async fn admin_routes_need_credentials() {
    let (status, body) = check("admin_without_credentials.json").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
}
