//! Renewals job edge cases beyond the shared scenarios: who gets what, and renewals that move
//! the expiry under the job's feet.

use std::sync::Arc;

use chrono::Duration;
use nls_core::billing::scenarios::{BillingHarness, at};
use nls_core::issuing::{LicenseTerms, apply_event, new_id, new_license};
use nls_core::lifecycle::{LicenseStatus, LifecycleEvent};
use nls_core::memory_store::MemoryStore;
use nls_core::model::{Customer, License, Timestamp};
use nls_core::ports::{Clock, Store, Write};
use nls_core::renewals::{RenewalsConfig, run_renewals};

async fn seed(h: &BillingHarness, name: &str, expires_at: Timestamp, stripe: bool) -> License {
    let now = h.clock.now();
    let customer = Customer {
        id: new_id("cus"),
        name: name.to_owned(),
        email: format!("{name}@example.com"),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let terms = LicenseTerms { expires_at: Some(expires_at), ..LicenseTerms::default() };
    let mut license = new_license(&customer.id, terms, now);
    if stripe {
        license.stripe_subscription_id = Some(format!("sub_{name}"));
    }
    h.store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
        .await
        .expect("seeded");
    license
}

async fn update(h: &BillingHarness, license: &License, change: impl FnOnce(&mut License)) -> License {
    let current = h.store.get_license(&license.id).await.expect("reads").expect("exists");
    let mut next = current.clone();
    change(&mut next);
    next.version = current.version + 1;
    h.store
        .commit(None, vec![Write::UpdateLicense { license: next.clone(), expected_version: current.version }])
        .await
        .expect("updated");
    next
}

/// Runs the job once a day for `days` days and returns (recipient, notice) in order.
async fn daily(h: &BillingHarness, days: u32) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for _ in 0..days {
        let config = RenewalsConfig::new(format!("run-{}", h.clock.now().date_naive()));
        let report =
            run_renewals(h.store.as_ref(), h.mailer.as_ref(), h.clock.as_ref(), &config).await.expect("runs");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let mut today: Vec<_> = report.sent.iter().map(|s| (s.recipient.clone(), s.notice.clone())).collect();
        today.sort();
        sent.extend(today);
        h.clock.advance(Duration::days(1));
    }
    sent
}

fn harness(start: &str) -> BillingHarness {
    let h = BillingHarness::new(Arc::new(MemoryStore::new()) as Arc<dyn Store>);
    h.clock.set(at(start));
    h
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| (format!("{a}@example.com"), (*b).to_owned())).collect()
}

#[tokio::test]
async fn subscriptions_get_no_reminders_but_the_warning_and_the_notice() {
    let h = harness("2027-01-01T08:00:00Z");
    seed(&h, "billed", at("2027-01-20T00:00:00Z"), true).await;
    let sent = daily(&h, 30).await;
    assert_eq!(sent, pairs(&[("billed", "expiry_warning"), ("billed", "suspension_notice")]));
}

#[tokio::test]
async fn revoked_and_suspended_licenses_get_no_reminders() {
    let h = harness("2027-01-01T08:00:00Z");
    let revoked = seed(&h, "revoked", at("2027-01-10T00:00:00Z"), false).await;
    let suspended = seed(&h, "suspended", at("2027-01-10T00:00:00Z"), false).await;
    let now = h.clock.now();
    update(&h, &revoked, |l| *l = apply_event(l, LifecycleEvent::Revoke, now).expect("allowed")).await;
    update(&h, &suspended, |l| *l = apply_event(l, LifecycleEvent::Suspend, now).expect("allowed")).await;
    let sent = daily(&h, 30).await;
    // The suspended one is told when its grace ends; the revoked one hears nothing.
    assert_eq!(sent, pairs(&[("suspended", "suspension_notice")]));
    let revoked = h.store.get_license(&revoked.id).await.expect("reads").expect("exists");
    assert_eq!(revoked.status, LicenseStatus::Revoked);
    // Staff suspended it: expiry does not move an admin suspension (only staff lift it; issue 19
    // item 4), and validation refuses it either way.
    let suspended = h.store.get_license(&suspended.id).await.expect("reads").expect("exists");
    assert_eq!(suspended.status, LicenseStatus::Suspended);
}

#[tokio::test]
async fn a_renewal_starts_a_new_series_of_reminders() {
    let h = harness("2027-01-01T08:00:00Z");
    let license = seed(&h, "renews", at("2027-01-31T00:00:00Z"), false).await;
    let first = daily(&h, 5).await;
    assert_eq!(first, pairs(&[("renews", "renewal_reminder_30d")]));
    // Renewed by 20 days: the new expiry's 30-day and 14-day reminders come in their turn, and
    // nothing more about the old expiry.
    update(&h, &license, |l| l.expires_at = Some(at("2027-02-20T00:00:00Z"))).await;
    let second = daily(&h, 35).await;
    assert_eq!(second, pairs(&[("renews", "renewal_reminder_30d"), ("renews", "renewal_reminder_14d")]));
    let log = h.store.list_notifications(&license.id).await.expect("lists");
    assert_eq!(log.len(), 3);
}

#[tokio::test]
async fn an_expired_license_that_is_renewed_in_grace_is_not_expired() {
    let h = harness("2027-01-01T08:00:00Z");
    let license = seed(&h, "late", at("2027-01-03T00:00:00Z"), false).await;
    let sent = daily(&h, 4).await;
    // First seen 39 hours out: the tightest reminder reached (7 days), then 1 day, then the warning.
    assert_eq!(
        sent,
        pairs(&[
            ("late", "renewal_reminder_7d"),
            ("late", "renewal_reminder_1d"),
            ("late", "expiry_warning")
        ])
    );
    update(&h, &license, |l| l.expires_at = Some(at("2028-01-03T00:00:00Z"))).await;
    let sent = daily(&h, 20).await;
    assert!(sent.is_empty(), "{sent:?}");
    let license = h.store.get_license(&license.id).await.expect("reads").expect("exists");
    assert_eq!(license.status, LicenseStatus::Active);
}

#[tokio::test]
async fn reminders_count_whole_days_left() {
    let h = harness("2027-01-01T08:00:00Z");
    seed(&h, "soon", at("2027-01-08T07:00:00Z"), false).await;
    daily(&h, 1).await;
    let email = h.mailer.sent().pop().expect("one reminder");
    assert_eq!(email.subject, "Your Nectar license expires in 7 days");
    assert!(email.text_body.contains("2027-01-08 07:00 UTC"));
}

/// The documented corner: the provider accepted the mail but the run died before marking it.
/// The takeover sends it again (at most one duplicate); a crash before acceptance loses nothing
/// and duplicates nothing.
#[tokio::test]
async fn a_crash_after_acceptance_is_the_only_duplicate() {
    use nls_core::billing::scenarios::MailFailure;
    let h = harness("2027-01-01T08:00:00Z");
    seed(&h, "accepted", at("2027-01-05T00:00:00Z"), false).await;
    seed(&h, "refused", at("2027-01-05T12:00:00Z"), false).await;
    // Licenses run in id order; which one meets which failure does not matter.
    h.mailer.fail_next(MailFailure::AcceptedThenLost);
    h.mailer.fail_next(MailFailure::Unavailable);
    let config = RenewalsConfig::new("crashing");
    let first =
        run_renewals(h.store.as_ref(), h.mailer.as_ref(), h.clock.as_ref(), &config).await.expect("runs");
    assert_eq!(first.failures.len(), 2);
    assert_eq!(h.mailer.count(), 1, "one was delivered before the answer was lost");
    h.clock.advance(config.stale_claim_after + Duration::minutes(1));
    let second =
        run_renewals(h.store.as_ref(), h.mailer.as_ref(), h.clock.as_ref(), &RenewalsConfig::new("next"))
            .await
            .expect("runs");
    assert_eq!(second.sent.len(), 2);
    let mut per_recipient = std::collections::BTreeMap::<String, usize>::new();
    for email in h.mailer.sent() {
        *per_recipient.entry(email.to).or_default() += 1;
    }
    // One recipient got the reminder twice (the lost answer), the other once; nobody none.
    let mut counts: Vec<usize> = per_recipient.values().copied().collect();
    counts.sort();
    assert_eq!(counts, vec![1, 2]);
}

/// Issue 19 item 1: records made before the term bounds may hold `grace_days` of 4294967295,
/// whose date arithmetic overflowed and aborted the whole run. The run now goes on: the
/// legacy license gets its notices (its grace simply never ends) and so does everyone else.
#[tokio::test]
async fn a_legacy_license_with_huge_terms_does_not_stop_the_run() {
    let h = harness("2027-01-01T08:00:00Z");
    let legacy = seed(&h, "legacy", at("2027-01-10T00:00:00Z"), false).await;
    update(&h, &legacy, |l| {
        l.grace_days = u32::MAX;
        l.offline_days = u32::MAX;
    })
    .await;
    seed(&h, "ordinary", at("2027-01-10T00:00:00Z"), false).await;
    let sent = daily(&h, 30).await;
    assert!(sent.contains(&("ordinary@example.com".to_owned(), "expiry_warning".to_owned())), "{sent:?}");
    assert!(sent.contains(&("ordinary@example.com".to_owned(), "suspension_notice".to_owned())), "{sent:?}");
    assert!(sent.contains(&("legacy@example.com".to_owned(), "expiry_warning".to_owned())), "{sent:?}");
    let legacy = h.store.get_license(&legacy.id).await.expect("reads").expect("exists");
    assert_ne!(legacy.status, LicenseStatus::Revoked);
}
