//! A small Nectar cloud service behind access tokens (docs/cloud-access.md): every route needs
//! `Authorization: Bearer <nls-access+jwt>` for the audience `workflows`, and each license gets
//! its tier's rate. The handlers read who is calling from the verified claims.
//!
//! ```text
//! NLS_JWKS_URL=http://127.0.0.1:8080/.well-known/jwks.json cargo run -p nls-client --example cloud_service -- 127.0.0.1:9090
//! ```
//!
//! With `NLS_URL` and `NLS_METER_KEY` (an API key with the `meter` scope) set, the service also
//! counts every call it allowed and sends the counts to NLS every 10 s (`NlsCallMeter`).
//!
//! `tests/cloud_access.rs` drives the same router (`app`) with tokens from a real `nls serve`.

use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use nls_client::cloud_access::{CloudAccess, CloudCaller};
use nls_client::cloud_meter::NlsCallMeter;
use serde_json::{Value, json};

/// This service's name in the plans' `cloud` objects.
pub const AUDIENCE: &str = "workflows";

pub fn app(access: &CloudAccess) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/runs", post(start_run))
        .layer(access.require_access_token(AUDIENCE))
}

async fn whoami(Extension(caller): Extension<CloudCaller>) -> Json<Value> {
    let c = caller.claims();
    Json(json!({
        "license_id": c.sub,
        "customer_id": c.customer_id,
        "deployment_id": c.deployment_id,
        "tier": c.tier,
        "features": c.features,
    }))
}

async fn start_run(Extension(caller): Extension<CloudCaller>) -> Json<Value> {
    Json(json!({"run": "started", "license_id": caller.claims().sub}))
}

#[allow(dead_code)] // the tests include this file for `app`
#[tokio::main]
async fn main() {
    let jwks_url = std::env::var("NLS_JWKS_URL").unwrap_or_else(|_| {
        eprintln!("cloud_service: set NLS_JWKS_URL (e.g. http://127.0.0.1:8080/.well-known/jwks.json)");
        std::process::exit(2)
    });
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    // The first fetch blocks; at start-up that is what we want.
    let mut access = CloudAccess::from_jwks_url(&jwks_url).unwrap_or_else(|e| {
        eprintln!("cloud_service: {e}");
        std::process::exit(1)
    });
    if let (Ok(nls_url), Ok(meter_key)) = (std::env::var("NLS_URL"), std::env::var("NLS_METER_KEY")) {
        let meter = NlsCallMeter::new(&nls_url, &meter_key);
        meter.spawn_flusher(std::time::Duration::from_secs(10));
        access = access.with_meter(std::sync::Arc::new(meter));
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap_or_else(|e| {
        eprintln!("cloud_service: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    println!("cloud_service listening on {listen}");
    if let Err(e) = axum::serve(listener, app(&access)).await {
        eprintln!("cloud_service: {e}");
        std::process::exit(1);
    }
}
