//! Out-of-order and conflicting Stripe events never roll a license back.

use std::sync::Arc;

use nls_core::billing::scenarios::{BillingHarness, FIXTURE_SUBSCRIPTION, from_unix};
use nls_core::billing::{WebhookOutcome, license_id_for_subscription};
use nls_core::issuing::apply_event;
use nls_core::lifecycle::{LicenseStatus, LifecycleEvent};
use nls_core::memory_store::MemoryStore;
use nls_core::ports::{Clock, Store, Write};

const T2: i64 = 1_798_675_200;

fn harness() -> BillingHarness {
    BillingHarness::new(Arc::new(MemoryStore::new()) as Arc<dyn Store>)
}

#[tokio::test]
async fn a_late_failure_does_not_undo_a_later_recovery() {
    let h = harness();
    h.deliver_fixture("customer.subscription.created").await;
    h.deliver_fixture("invoice.paid.renewal").await;
    let renewed = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(renewed.expires_at, Some(from_unix(T2) + h.policy.period_grace));

    // The failure that the renewal payment cured arrives last.
    let ack = h.deliver_fixture("invoice.payment_failed").await;
    assert_eq!(ack.outcome, WebhookOutcome::Applied, "recorded");
    assert!(ack.warnings.iter().any(|w| w.contains("older")), "{:?}", ack.warnings);
    assert!(ack.notices_sent.is_empty(), "no payment-failed email for a cured invoice");
    let after = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!((after.status, after.expires_at), (LicenseStatus::Active, renewed.expires_at));
    // An old subscription snapshot does not bring the old plan back either.
    h.deliver_fixture("customer.subscription.created").await;
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").tier, "pro");
}

#[tokio::test]
async fn a_revoked_license_ignores_stripe() {
    let h = harness();
    h.deliver_fixture("customer.subscription.created").await;
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    let revoked = apply_event(&license, LifecycleEvent::Revoke, h.clock.now()).expect("allowed");
    h.store
        .commit(None, vec![Write::UpdateLicense { license: revoked, expected_version: license.version }])
        .await
        .expect("revoked");
    let ack = h.deliver_fixture("invoice.paid.renewal").await;
    assert!(ack.warnings.iter().any(|w| w.contains("revoked")), "{:?}", ack.warnings);
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").status, LicenseStatus::Revoked);
    h.deliver_fixture("checkout.session.completed").await;
    assert_eq!(h.mailer.count(), 0, "no key is emailed for a revoked license");
}

#[tokio::test]
async fn a_recovered_payment_reactivates_a_suspended_license() {
    let h = harness();
    for name in [
        "customer.subscription.created",
        "checkout.session.completed",
        "invoice.payment_failed",
        "customer.subscription.updated.unpaid",
    ] {
        h.deliver_fixture(name).await;
    }
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").status, LicenseStatus::Suspended);
    // A payment newer than the unpaid status (the customer paid the open invoice).
    let late_payment = nls_core::billing::scenarios::fixture("invoice.paid.renewal")
        .replace("\"created\": 1796342400", "\"created\": 1797300000");
    let ack = h.deliver(&late_payment).await.expect("applies");
    assert_eq!(ack.outcome, WebhookOutcome::Applied);
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(license.status, LicenseStatus::Active);
    assert_eq!(license.grace_ends_at, None);
}

#[test]
fn subscription_license_ids_are_stable_and_distinct() {
    let a = license_id_for_subscription("sub_a");
    assert_eq!(a, license_id_for_subscription("sub_a"));
    assert_ne!(a, license_id_for_subscription("sub_b"));
    assert!(a.starts_with("lic_") && a.len() == 30, "{a}");
}
