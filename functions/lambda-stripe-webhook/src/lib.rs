//! The `stripe-webhook` Lambda: a thin host for the core's [`handle_stripe_webhook`] on the
//! DynamoDB store and the SES mailer. `main` builds everything once at init; [`webhook_app`]
//! is the per-request part, testable without AWS.
//!
//! Status mapping (the core decides, see [`WebhookError`]): a bad signature or payload is a
//! 400 that Stripe does not retry usefully; a store or mail outage is a 503 so Stripe retries
//! the delivery (the core makes replays harmless).
//!
//! With a [`StatusPublisher`] ([`webhook_app_pushing`]), a handled event's license snapshot is
//! pushed to the edges after the commit, as the API's router does (payment failure → past due
//! reaches the edges in seconds). A failed push is logged and never fails the delivery.

pub mod secret_values;
pub mod webhook_config;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nls_core::billing::WebhookOutcome;
use nls_core::billing::{
    BillingDeps, BillingPolicy, PlanCatalogue, WebhookAck, WebhookError, handle_stripe_webhook,
};
use nls_core::key_ring::KeyRing;
use nls_core::ports::{Clock, Mailer, StatusPublisher, Store};
use nls_core::status_push::push_license_status;

pub use secret_values::WebhookSecret;

pub const WEBHOOK_PATH: &str = "/v1/webhooks/stripe";
/// Stripe events are a few KiB; anything near this is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1 << 20;
const SIGNATURE_HEADER: &str = "stripe-signature";

/// Everything a delivery needs, built once at init and shared by every invocation.
pub struct WebhookState {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
    pub key_ring: KeyRing,
    pub plans: PlanCatalogue,
    pub webhook_secret: WebhookSecret,
    pub policy: BillingPolicy,
}

impl WebhookState {
    fn billing_deps(&self) -> BillingDeps<'_> {
        BillingDeps {
            store: self.store.as_ref(),
            mailer: self.mailer.as_ref(),
            clock: self.clock.as_ref(),
            key_ring: &self.key_ring,
            plans: &self.plans,
            webhook_secret: self.webhook_secret.as_bytes(),
            policy: self.policy,
        }
    }
}

/// `POST /v1/webhooks/stripe`; every other path is a JSON 404.
pub fn webhook_app(state: WebhookState) -> Router {
    webhook_app_pushing(state, None)
}

/// [`webhook_app`] that also pushes each handled event's license status to `publisher`.
pub fn webhook_app_pushing(state: WebhookState, publisher: Option<Arc<dyn StatusPublisher>>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(stripe_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(not_found)
        .with_state(Arc::new(Host { state, publisher }))
}

/// What the handler reaches: the state, and the optional status push.
struct Host {
    state: WebhookState,
    publisher: Option<Arc<dyn StatusPublisher>>,
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn stripe_webhook(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    // The raw bytes: the signature covers them exactly, so no JSON extractor may touch them.
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            tracing::warn!(status = %rejection.status(), "webhook body refused");
            return error_response(rejection.status(), "body_refused", &rejection.body_text());
        }
    };
    // A header that is not visible ASCII cannot be a valid signature: passed on as empty, it
    // is refused as malformed rather than as missing.
    let signature = headers.get(SIGNATURE_HEADER).map(|value| value.to_str().unwrap_or(""));
    let state = &host.state;
    match handle_stripe_webhook(&state.billing_deps(), signature, &body).await {
        Ok(ack) => {
            log_ack(&ack);
            // A duplicate pushes too: the first delivery's push may have been lost.
            let pushed = ack.license_id.as_deref().filter(|_| ack.outcome != WebhookOutcome::Ignored);
            if let (Some(publisher), Some(license_id)) = (&host.publisher, pushed) {
                let now = state.clock.now();
                let store = state.store.as_ref();
                if let Err(e) = push_license_status(store, publisher.as_ref(), license_id, now).await {
                    tracing::warn!(license_id, error = %e, "status push to the edges failed; their snapshot TTL bounds the staleness");
                }
            }
            (StatusCode::OK, axum::Json(ack)).into_response()
        }
        Err(error) => webhook_error_response(&error),
    }
}

fn log_ack(ack: &WebhookAck) {
    tracing::info!(
        event_id = %ack.event_id,
        event_type = %ack.event_type,
        outcome = ?ack.outcome,
        license_id = ack.license_id.as_deref().unwrap_or(""),
        notices_sent = ?ack.notices_sent,
        "stripe event handled"
    );
    for warning in &ack.warnings {
        tracing::warn!(event_id = %ack.event_id, event_type = %ack.event_type, warning = %warning, "stripe event warning");
    }
}

/// One place where errors become answers and log lines. The sender's own mistakes are
/// explained; our failures are not (the detail goes to the log).
fn webhook_error_response(error: &WebhookError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if status.is_client_error() {
        error.to_string()
    } else if error.is_retryable() {
        "the event could not be processed now; retry the delivery".to_owned()
    } else {
        "internal error".to_owned()
    };
    if status.is_server_error() {
        tracing::error!(code = error.code(), retryable = error.is_retryable(), error = %error, "stripe event failed");
    } else {
        tracing::warn!(code = error.code(), error = %error, "stripe event refused");
    }
    error_response(status, error.code(), &message)
}
