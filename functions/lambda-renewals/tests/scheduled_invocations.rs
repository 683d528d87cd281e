//! The renewals Lambda's handler, fed EventBridge's scheduled event (no AWS), over the
//! in-memory store, a recording mailer and a manual clock.

use std::sync::Arc;

use chrono::Duration;
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use nls_core::billing::scenarios::{MailFailure, RecordingMailer, at};
use nls_core::issuing::{LicenseTerms, new_id, new_license};
use nls_core::memory_store::MemoryStore;
use nls_core::model::Customer;
use nls_core::ports::{ManualClock, UnitOfWork, Write};
use nls_core::renewals::RenewalsConfig;
use nls_lambda_renewals::{RenewalsDeps, RenewalsJobError, ScheduledEvent, renewals_handler};

const NOW: &str = "2027-03-01T06:00:00Z";

async fn deps_with_a_license_expiring_in_7_days() -> (RenewalsDeps, Arc<RecordingMailer>) {
    let now = at(NOW);
    let store = Arc::new(MemoryStore::new());
    let customer = Customer {
        id: new_id("cus"),
        name: "Ana".to_owned(),
        email: "ana@example.com".to_owned(),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let terms = LicenseTerms { expires_at: Some(now + Duration::days(7)), ..LicenseTerms::default() };
    let license = new_license(&customer.id, terms, now);
    store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license)])
        .await
        .expect("seeded");
    let mailer = Arc::new(RecordingMailer::new());
    let deps = RenewalsDeps {
        store,
        mailer: mailer.clone(),
        clock: Arc::new(ManualClock::new(now)),
        job: RenewalsConfig::new("unset"),
    };
    (deps, mailer)
}

fn scheduled_event(request_id: &str) -> LambdaEvent<ScheduledEvent> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/scheduled_event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let payload: ScheduledEvent = serde_json::from_str(&text).expect("EventBridge's scheduled event");
    let mut context = Context::default();
    context.request_id = request_id.to_owned();
    LambdaEvent::new(payload, context)
}

#[tokio::test]
async fn a_scheduled_run_sends_the_due_reminder_once() {
    let (deps, mailer) = deps_with_a_license_expiring_in_7_days().await;
    let first = renewals_handler(&deps, scheduled_event("req-1")).await.expect("the run succeeds");
    assert_eq!((first.run_id.as_str(), first.sent), ("lambda-req-1", 1), "{first:?}");
    let again = renewals_handler(&deps, scheduled_event("req-2")).await.expect("the rerun succeeds");
    assert_eq!((again.sent, again.already_sent), (0, 1), "{again:?}");
    assert_eq!(mailer.count(), 1);
}

#[tokio::test]
async fn a_mail_outage_fails_the_invocation_so_eventbridge_retries() {
    let (deps, mailer) = deps_with_a_license_expiring_in_7_days().await;
    mailer.fail_next(MailFailure::Unavailable);
    let error = renewals_handler(&deps, scheduled_event("req-1")).await.expect_err("a retryable failure");
    assert!(matches!(error, RenewalsJobError::RetryableFailures { failed: 1, .. }), "{error:?}");
    assert_eq!(Diagnostic::from(error).error_type, "RenewalsNoticesFailed");
}

#[tokio::test]
async fn a_manual_invoke_with_an_empty_object_runs_the_job() {
    let (deps, _) = deps_with_a_license_expiring_in_7_days().await;
    let payload: ScheduledEvent = serde_json::from_str("{}").expect("any object");
    let summary = renewals_handler(&deps, LambdaEvent::new(payload, Context::default()))
        .await
        .expect("the run succeeds");
    assert_eq!(summary.examined, 1);
}
