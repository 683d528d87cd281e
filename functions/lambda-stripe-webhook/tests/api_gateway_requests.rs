//! The webhook Lambda's request handling, fed API Gateway v2 events (no AWS): the same
//! conversion `lambda_http::run` applies, then the app, over the in-memory store, a recording
//! mailer and a manual clock.

use std::sync::Arc;

use base64::Engine as _;
use nls_core::billing::scenarios::{
    FIXTURE_SUBSCRIPTION, MailFailure, RecordingMailer, WEBHOOK_SECRET, fixture, from_unix,
};
use nls_core::billing::stripe_signature::sign_stripe_payload;
use nls_core::billing::{BillingPolicy, PlanCatalogue};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::memory_store::MemoryStore;
use nls_core::ports::{LicenseStore, ManualClock};
use nls_lambda_stripe_webhook::{WebhookSecret, WebhookState, webhook_app};
use serde_json::Value;
use tower::ServiceExt;

/// Stripe's delivery time of the fixtures (30 s after `customer.subscription.created`).
const DELIVERED_AT: i64 = 1_793_491_230;

struct Harness {
    store: Arc<MemoryStore>,
    mailer: Arc<RecordingMailer>,
    clock: Arc<ManualClock>,
    app: axum::Router,
}

fn harness() -> Harness {
    let store = Arc::new(MemoryStore::new());
    let mailer = Arc::new(RecordingMailer::new());
    let clock = Arc::new(ManualClock::new(from_unix(DELIVERED_AT)));
    let app = webhook_app(WebhookState {
        store: store.clone(),
        mailer: mailer.clone(),
        clock: clock.clone(),
        key_ring: KeyRing::with_signer(SigningKey::generate(), Vec::new()).expect("key ring"),
        plans: PlanCatalogue::parse(fixture("plans")).expect("plans"),
        webhook_secret: WebhookSecret::new(WEBHOOK_SECRET),
        policy: BillingPolicy::default(),
    });
    Harness { store, mailer, clock, app }
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The unsigned API Gateway event carrying `body`, signed at `signed_at` (or left unsigned).
fn stripe_delivery(body: &str, signed_at: Option<i64>) -> Value {
    let mut event = load("subscription_created_unsigned.json");
    event["body"] = Value::String(body.to_owned());
    if let Some(at) = signed_at {
        event["headers"]["stripe-signature"] =
            Value::String(sign_stripe_payload(WEBHOOK_SECRET, at, body.as_bytes()));
    }
    event
}

/// Sends an API Gateway v2 event through the app: (status, JSON body).
async fn check(h: &Harness, event: &Value) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("an API Gateway v2 event");
    let response = h.app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_bad_signature_is_a_400_with_a_code_and_changes_nothing() {
    let h = harness();
    for (event, code) in [
        (load("subscription_created_bad_signature.json"), "signature_mismatch"),
        (load("subscription_created_unsigned.json"), "signature_missing"),
        (
            stripe_delivery(fixture("customer.subscription.created"), Some(DELIVERED_AT - 301)),
            "signature_stale",
        ),
    ] {
        let (status, body) = check(&h, &event).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // A body changed after signing fails too.
    let mut tampered = stripe_delivery(fixture("customer.subscription.created"), Some(DELIVERED_AT));
    tampered["body"] = Value::String(fixture("customer.subscription.created").replace("basic", "pro"));
    let (status, body) = check(&h, &tampered).await;
    assert_eq!((status, &body["error"]["code"]), (400, &Value::from("signature_mismatch")), "{body}");
    assert!(h.store.find_license_by_subscription(FIXTURE_SUBSCRIPTION).await.expect("reads").is_none());
}

#[tokio::test]
async fn a_signed_event_is_applied_once() {
    let h = harness();
    let event = stripe_delivery(fixture("customer.subscription.created"), Some(DELIVERED_AT));
    let (status, ack) = check(&h, &event).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["outcome"], "applied", "{ack}");
    let license = h.store.find_license_by_subscription(FIXTURE_SUBSCRIPTION).await.expect("reads");
    assert_eq!(license.expect("license created").tier, "basic");
    // A replay is acknowledged and changes nothing.
    let (status, ack) = check(&h, &event).await;
    assert_eq!((status, &ack["outcome"]), (200, &Value::from("duplicate")), "{ack}");
}

#[tokio::test]
async fn a_base64_encoded_body_is_verified_on_its_decoded_bytes() {
    let h = harness();
    let body = fixture("customer.subscription.created");
    let mut event = stripe_delivery(body, Some(DELIVERED_AT));
    event["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
    event["isBase64Encoded"] = Value::Bool(true);
    let (status, ack) = check(&h, &event).await;
    assert_eq!((status, &ack["outcome"]), (200, &Value::from("applied")), "{ack}");
}

#[tokio::test]
async fn a_signed_malformed_payload_is_a_400() {
    let h = harness();
    let (status, body) = check(&h, &stripe_delivery(r#"{"id": 5}"#, Some(DELIVERED_AT))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "payload_malformed", "{body}");
}

#[tokio::test]
async fn a_mail_outage_is_a_503_and_the_redelivery_sends_the_key() {
    let h = harness();
    let (status, _) =
        check(&h, &stripe_delivery(fixture("customer.subscription.created"), Some(DELIVERED_AT))).await;
    assert_eq!(status, 200);
    let checkout = stripe_delivery(fixture("checkout.session.completed"), Some(DELIVERED_AT));
    h.mailer.fail_next(MailFailure::Unavailable);
    let (status, body) = check(&h, &checkout).await;
    assert_eq!(status, 503, "Stripe must retry: {body}");
    assert_eq!(body["error"]["code"], "notice_delivery_failed", "{body}");
    assert!(!body["error"]["message"].as_str().unwrap_or_default().contains("Unavailable"), "{body}");
    // The failed send left its claim: a redelivery right away is told to come back later...
    let (status, body) = check(&h, &checkout).await;
    assert_eq!((status, &body["error"]["code"]), (503, &Value::from("notice_in_flight")), "{body}");
    // ...and Stripe's retry minutes later (re-signed then) sends the key.
    h.clock.advance(chrono::Duration::minutes(6));
    let retry = stripe_delivery(fixture("checkout.session.completed"), Some(DELIVERED_AT + 360));
    let (status, ack) = check(&h, &retry).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["notices_sent"], serde_json::json!(["key_delivery"]), "{ack}");
    assert_eq!(h.mailer.count(), 1);
}

#[tokio::test]
async fn other_paths_are_a_json_404() {
    let h = harness();
    let mut event = load("subscription_created_unsigned.json");
    event["rawPath"] = Value::from("/v1/licenses");
    event["requestContext"]["http"]["path"] = Value::from("/v1/licenses");
    let (status, body) = check(&h, &event).await;
    assert_eq!((status, &body["error"]["code"]), (404, &Value::from("route_not_found")), "{body}");
}

#[tokio::test]
async fn a_body_over_1_mib_is_refused_unread() {
    let h = harness();
    let huge = format!(r#"{{"padding":"{}"}}"#, "x".repeat(nls_lambda_stripe_webhook::MAX_BODY_BYTES));
    let (status, body) = check(&h, &stripe_delivery(&huge, Some(DELIVERED_AT))).await;
    assert_eq!((status, &body["error"]["code"]), (413, &Value::from("body_refused")), "{body}");
}
