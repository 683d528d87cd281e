//! `POST /v1/webhooks/stripe`: HTTP in and out of [`billing::handle_stripe_webhook`], where the
//! logic lives. The body is taken as raw bytes: the signature covers them exactly.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::billing::{BillingDeps, BillingPolicy, PlanCatalogue, WebhookOutcome, handle_stripe_webhook};
use crate::http::AppState;
use crate::http::app_error::AppError;
use crate::http::wire::{ErrorBody, ErrorDetail};
use crate::ports::Mailer;

/// Stripe events (invoices with many lines) can exceed the API's 64 KiB limit.
pub const STRIPE_WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// What a host supplies to accept Stripe webhooks.
pub struct BillingSetup {
    pub mailer: Arc<dyn Mailer>,
    pub plans: PlanCatalogue,
    /// `NLS_STRIPE_WEBHOOK_SECRET` (the whole `whsec_...` string is the HMAC key).
    pub webhook_secret: Vec<u8>,
    pub policy: BillingPolicy,
}

pub async fn stripe_webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(billing) = state.billing() else {
        return AppError::NotFound { code: "webhooks_not_configured", what: "the Stripe webhook".into() }
            .into_response();
    };
    // The host's counting mailer when it has one, so failed notices reach the dashboard.
    let mailer = state.mailer().unwrap_or_else(|| Arc::clone(&billing.mailer));
    let deps = BillingDeps {
        store: state.store(),
        mailer: &*mailer,
        clock: state.clock(),
        key_ring: state.key_ring(),
        plans: &billing.plans,
        webhook_secret: &billing.webhook_secret,
        policy: billing.policy,
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    match handle_stripe_webhook(&deps, signature, &body).await {
        Ok(ack) => {
            for warning in &ack.warnings {
                tracing::warn!(event_id = %ack.event_id, event_type = %ack.event_type, "{warning}");
            }
            match (&ack.license_id, ack.outcome) {
                (Some(license_id), WebhookOutcome::Ignored) => state.invalidate_license(license_id),
                // A duplicate pushes too: the first delivery's push may have been lost.
                (Some(license_id), _) => state.license_changed(license_id).await,
                (None, _) => {}
            }
            axum::Json(ack).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if e.is_retryable() {
                tracing::warn!(code = e.code(), "Stripe webhook failed; Stripe will retry: {e}");
            }
            let body = ErrorBody { error: ErrorDetail { code: e.code(), message: e.to_string() } };
            (status, axum::Json(body)).into_response()
        }
    }
}
