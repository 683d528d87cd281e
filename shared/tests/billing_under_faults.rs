//! Stripe deliveries and renewal runs over a store that fails, times out, conflicts and stalls
//! by a seeded schedule (`nls_core::fault_injection`), retried the way Stripe and the scheduler
//! retry: every event has the effect it has without faults, once; no notice goes out twice
//! except in the one documented case (mail accepted, mark lost twice: reported as such).
//! Seeds come from `NLS_FAULT_SEEDS` (comma-separated) when set.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use nls_core::billing::WebhookError;
use nls_core::billing::scenarios::{
    BillingHarness, FIXTURE_SUBSCRIPTION as SUBSCRIPTION, RECOVERING_HISTORY, at, billing_state, digest,
    fixture,
};
use nls_core::email::DeliveryError;
use nls_core::fault_injection::{FaultRates, FaultyStore};
use nls_core::issuing::{LicenseTerms, new_id, new_license};
use nls_core::memory_store::MemoryStore;
use nls_core::model::{Customer, License, Timestamp};
use nls_core::ports::{Store, Write};
use nls_core::renewals::{RenewalsConfig, run_renewals};

fn seeds() -> Vec<u64> {
    match std::env::var("NLS_FAULT_SEEDS") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1, 7, 2026],
    }
}

fn emails_by_notice(h: &BillingHarness) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for email in h.mailer.sent() {
        *counts.entry((email.to.clone(), email.subject.clone())).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_deliveries_retried_through_faults_have_their_effect_once() {
    let clean = BillingHarness::new(Arc::new(MemoryStore::new()));
    for name in RECOVERING_HISTORY {
        clean.deliver_fixture(name).await;
    }
    let expected_state = billing_state(clean.store.as_ref(), SUBSCRIPTION).await.expect("a license");
    let expected_digest = digest(&clean).await;

    for seed in seeds() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new()), seed, FaultRates::harsh()));
        let h = BillingHarness::new(faulty.clone() as Arc<dyn Store>);
        let (mut failed_deliveries, mut marks_lost) = (0, 0);
        for name in RECOVERING_HISTORY {
            let mut tries = 0;
            loop {
                tries += 1;
                assert!(tries < 100, "seed {seed}: {name} never acknowledged");
                match h.deliver(fixture(name)).await {
                    Ok(_) => break,
                    Err(e) => {
                        assert!(e.is_retryable(), "seed {seed}: {name}: a fault made a final refusal: {e}");
                        failed_deliveries += 1;
                        if matches!(e, WebhookError::Delivery(DeliveryError::MarkFailed { .. })) {
                            marks_lost += 1;
                        }
                        // Stripe retries later; a notice claimed by a delivery whose answer was
                        // lost is taken over once its claim is stale.
                        if matches!(e, WebhookError::NoticeInFlight) {
                            h.clock.advance(Duration::minutes(16));
                        }
                    }
                }
            }
        }
        assert!(failed_deliveries > 0, "seed {seed}: no delivery met a fault: {:?}", faulty.injected());
        faulty.set_enabled(false);
        let state = billing_state(h.store.as_ref(), SUBSCRIPTION).await.expect("a license");
        assert_eq!(state, expected_state, "seed {seed}: the faults changed the outcome");
        let got = digest(&h).await;
        assert_eq!(got.audit_entries, expected_digest.audit_entries, "seed {seed}: an effect applied twice");
        assert_eq!(got.licenses.len(), expected_digest.licenses.len(), "seed {seed}");
        assert_eq!(got.customers.len(), expected_digest.customers.len(), "seed {seed}");
        let (want, sent) = (emails_by_notice(&clean), emails_by_notice(&h));
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            sent.keys().collect::<Vec<_>>(),
            "seed {seed}: a notice lost"
        );
        let extra: usize = sent.iter().map(|(k, n)| n - want[k]).sum();
        assert!(
            extra <= marks_lost,
            "seed {seed}: {extra} duplicate emails, {marks_lost} lost marks: {sent:?}"
        );
    }
}

async fn seed_license(store: &dyn Store, name: &str, expires_at: Timestamp, now: Timestamp) -> License {
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
    let license = new_license(&customer.id, terms, now);
    store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
        .await
        .unwrap();
    license
}

/// Daily renewal runs for 60 days over a faulty store, each failed run retried (as
/// EventBridge retries): each notice goes out once, except where a run reported the mark lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_runs_retried_through_faults_send_each_notice_once() {
    for seed in seeds() {
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new()), seed, FaultRates::NONE));
        let h = BillingHarness::new(faulty.clone() as Arc<dyn Store>);
        let start = at("2027-01-01T09:00:00Z");
        h.clock.set(start);
        let mut licenses = Vec::new();
        for i in 0..4 {
            let expiry = start + Duration::days(35 + 3 * i);
            licenses.push(seed_license(h.store.as_ref(), &format!("c{i}"), expiry, start).await);
        }
        faulty.set_rates(FaultRates::harsh());
        let (mut marks_lost, mut failed_runs) = (0, 0);
        for day in 0..60 {
            for attempt in 0..20 {
                let config = RenewalsConfig::new(format!("run-{day}-{attempt}"));
                match run_renewals(h.store.as_ref(), h.mailer.as_ref(), h.clock.as_ref(), &config).await {
                    Ok(report) if report.failures.is_empty() => break,
                    Ok(report) => {
                        failed_runs += 1;
                        marks_lost +=
                            report.failures.iter().filter(|f| f.reason.contains("not marked")).count();
                    }
                    Err(_) => failed_runs += 1,
                }
                // The retry comes later than the stale-claim timeout, so claims lost with their
                // answer are taken over.
                h.clock.advance(Duration::minutes(16));
            }
            h.clock.set(start + Duration::days(day + 1));
        }
        assert!(failed_runs > 0, "seed {seed}: no run met a fault: {:?}", faulty.injected());
        faulty.set_enabled(false);
        let sent = emails_by_notice(&h);
        let extra: usize = sent.values().map(|n| n - 1).sum();
        assert!(extra <= marks_lost, "seed {seed}: {extra} duplicates, {marks_lost} lost marks: {sent:?}");
        for license in &licenses {
            let stored = h.store.get_license(&license.id).await.unwrap().unwrap();
            assert_eq!(stored.status, nls_core::lifecycle::LicenseStatus::Expired, "seed {seed}");
            let to = format!(
                "{}@example.com",
                h.store.get_customer(&license.customer_id).await.unwrap().unwrap().name
            );
            let notices = sent.keys().filter(|(t, _)| *t == to).count();
            assert_eq!(notices, 6, "seed {seed}: every notice of {to} goes out: {sent:?}");
        }
    }
}
