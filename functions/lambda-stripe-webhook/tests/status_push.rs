//! The webhook Lambda pushes a handled event's license status to the edges after the commit,
//! and a failed push does not fail the delivery (Stripe must not retry a committed change).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use nls_core::billing::scenarios::{LAPSING_HISTORY, RecordingMailer, WEBHOOK_SECRET, fixture, from_unix};
use nls_core::billing::stripe_signature::sign_stripe_payload;
use nls_core::billing::{BillingPolicy, PlanCatalogue};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::memory_store::MemoryStore;
use nls_core::ports::{ManualClock, PublishError, StatusPublisher};
use nls_core::validation::StatusSnapshot;
use nls_lambda_stripe_webhook::{WEBHOOK_PATH, WebhookSecret, WebhookState, webhook_app_pushing};
use tower::ServiceExt;

const DELIVERED_AT: i64 = 1_793_491_230;

/// Records what it is handed; fails every push when `failing`.
#[derive(Default)]
struct Recording {
    pushed: Mutex<Vec<StatusSnapshot>>,
    failing: bool,
}

#[async_trait]
impl StatusPublisher for Recording {
    async fn publish(&self, snapshot: &StatusSnapshot) -> Result<(), PublishError> {
        if self.failing {
            return Err(PublishError::Unavailable {
                target: "http://edge.test".into(),
                reason: "down".into(),
            });
        }
        self.pushed.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
}

fn app(publisher: Arc<Recording>) -> axum::Router {
    let state = WebhookState {
        store: Arc::new(MemoryStore::new()),
        mailer: Arc::new(RecordingMailer::new()),
        clock: Arc::new(ManualClock::new(from_unix(DELIVERED_AT))),
        key_ring: KeyRing::with_signer(SigningKey::generate(), Vec::new()).expect("key ring"),
        plans: PlanCatalogue::parse(fixture("plans")).expect("plans"),
        webhook_secret: WebhookSecret::new(WEBHOOK_SECRET),
        policy: BillingPolicy::default(),
    };
    webhook_app_pushing(state, Some(publisher))
}

async fn deliver(app: &axum::Router, name: &str) -> u16 {
    let body = fixture(name);
    let request = Request::post(WEBHOOK_PATH)
        .header("stripe-signature", sign_stripe_payload(WEBHOOK_SECRET, DELIVERED_AT, body.as_bytes()))
        .body(Body::from(body))
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_payment_failure_is_pushed_as_past_due() {
    let publisher = Arc::new(Recording::default());
    let app = app(publisher.clone());
    for name in &LAPSING_HISTORY[..5] {
        assert_eq!(deliver(&app, name).await, 200, "{name}");
    }
    let last = publisher.pushed.lock().unwrap().last().cloned().expect("pushed");
    assert_eq!(last.license.status.as_str(), "past_due");
    let before = publisher.pushed.lock().unwrap().len();
    assert_eq!(deliver(&app, "customer.created").await, 200);
    assert_eq!(publisher.pushed.lock().unwrap().len(), before, "an ignored event pushes nothing");
}

#[tokio::test]
async fn a_failed_push_still_acknowledges_the_delivery() {
    let app = app(Arc::new(Recording { failing: true, ..Recording::default() }));
    assert_eq!(deliver(&app, "customer.subscription.created").await, 200);
}
