//! Every Stripe fixture parses into the event NLS expects, with the fields NLS reads.

use nls_core::billing::scenarios::{FIXTURES, fixture};
use nls_core::billing::stripe_events::{StripeEventKind, parse_event};

/// (fixture, expected type tag, subscription id, price id, paid-through or period fact)
fn check(name: &str, kind: &str, subscription: Option<&str>, price: Option<&str>, period_end: Option<i64>) {
    let event = parse_event(fixture(name).as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        event.event_type,
        name.split('.')
            .take_while(|p| !["past_due", "recovered", "unpaid", "renewal"].contains(p))
            .collect::<Vec<_>>()
            .join(".")
    );
    let (got_kind, got_sub, got_price, got_end) = match &event.kind {
        StripeEventKind::CheckoutCompleted(s) => {
            ("checkout", s.subscription.as_ref().map(|s| s.id().to_owned()), None, None)
        }
        StripeEventKind::SubscriptionCreated(s) => {
            ("sub_created", Some(s.id.clone()), s.price_id().map(str::to_owned), s.period_end())
        }
        StripeEventKind::SubscriptionUpdated(s) => {
            ("sub_updated", Some(s.id.clone()), s.price_id().map(str::to_owned), s.period_end())
        }
        StripeEventKind::SubscriptionDeleted(s) => {
            ("sub_deleted", Some(s.id.clone()), s.price_id().map(str::to_owned), s.period_end())
        }
        StripeEventKind::TrialWillEnd(s) => {
            ("trial", Some(s.id.clone()), s.price_id().map(str::to_owned), s.period_end())
        }
        StripeEventKind::InvoicePaid(i) => (
            "invoice_paid",
            i.subscription_id().map(str::to_owned),
            i.price_id().map(str::to_owned),
            i.billed_period().map(|p| p.end),
        ),
        StripeEventKind::InvoicePaymentFailed(i) => (
            "invoice_failed",
            i.subscription_id().map(str::to_owned),
            i.price_id().map(str::to_owned),
            i.billed_period().map(|p| p.end),
        ),
        StripeEventKind::Other => ("other", None, None, None),
    };
    assert_eq!(
        (got_kind, got_sub.as_deref(), got_price.as_deref(), got_end),
        (kind, subscription, price, period_end),
        "{name}"
    );
}

const SUB: Option<&str> = Some("sub_1QnlsSubscription01");
const BASIC: Option<&str> = Some("price_1QbasicMonthlyNLS");
const PRO: Option<&str> = Some("price_1QproMonthlyNLS");
const T1: Option<i64> = Some(1_796_083_200);
const T2: Option<i64> = Some(1_798_675_200);

#[test]
fn fixtures_parse_into_the_events_nls_reads() {
    check("checkout.session.completed", "checkout", SUB, None, None);
    check("customer.created", "other", None, None, None);
    check("customer.subscription.created", "sub_created", SUB, BASIC, T1);
    check("customer.subscription.updated", "sub_updated", SUB, PRO, T1);
    check("customer.subscription.updated.past_due", "sub_updated", SUB, PRO, T2);
    // The 2025-03-31 layout: the period on the item.
    check("customer.subscription.updated.recovered", "sub_updated", SUB, PRO, T2);
    check("customer.subscription.updated.unpaid", "sub_updated", SUB, PRO, T2);
    check("customer.subscription.deleted", "sub_deleted", SUB, PRO, T2);
    check(
        "customer.subscription.trial_will_end",
        "trial",
        Some("sub_1QnlsTrialSubscript"),
        PRO,
        Some(1_793_750_400),
    );
    check("invoice.paid", "invoice_paid", SUB, BASIC, T1);
    // The 2025-03-31 layout: subscription under `parent`, price under `pricing`.
    check("invoice.paid.renewal", "invoice_paid", SUB, PRO, T2);
    check("invoice.payment_failed", "invoice_failed", SUB, PRO, T2);
}

#[test]
fn every_fixture_is_checked() {
    // plans.json is the catalogue, not an event.
    assert_eq!(FIXTURES.iter().filter(|(n, _)| *n != "plans").count(), 12);
}

#[test]
fn checkout_reads_email_and_name_from_customer_details() {
    let event = parse_event(fixture("checkout.session.completed").as_bytes()).expect("parses");
    let StripeEventKind::CheckoutCompleted(session) = event.kind else { panic!("not a checkout") };
    assert_eq!(session.email(), Some("jenny.rosen@example.com"));
    assert_eq!(session.name(), Some("Jenny Rosen"));
    assert_eq!(session.customer.as_ref().map(|c| c.id()), Some("cus_QnlsJennyRosen01"));
}

#[test]
fn unknown_event_types_parse_whatever_their_object() {
    let body = br#"{"id":"evt_1","type":"radar.early_fraud_warning.created","created":1,"data":{"object":{"weird":[1,2]}}}"#;
    let event = parse_event(body).expect("parses");
    assert_eq!(event.kind, StripeEventKind::Other);
    for bad in [
        &b"not json"[..],
        br#"{"id":"evt_1"}"#,
        br#"{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":{}}}"#,
    ] {
        assert!(parse_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}
