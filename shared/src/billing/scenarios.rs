//! Billing and renewals scenarios, written once against the ports and run by every store's
//! tests (in-memory here; SQLite and DynamoDB by their own crates), like
//! [`crate::conformance`]:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn billing_scenarios() {
//!     nls_core::billing::scenarios::run_all(|| async { Arc::new(MyStore::fresh().await) as Arc<dyn Store> }).await;
//! }
//! ```
//!
//! Each case gets a fresh store, drives [`handle_stripe_webhook`] with the Stripe fixtures in
//! `shared/tests/fixtures/stripe/` (signed as Stripe would sign them) and [`run_renewals`] with
//! a [`ManualClock`] and a [`RecordingMailer`], and panics with its name on failure.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration};

use super::plans::PlanCatalogue;
use super::stripe_signature::sign_stripe_payload;
use super::{BillingDeps, BillingPolicy, WebhookAck, WebhookError, WebhookOutcome, handle_stripe_webhook};
use crate::issuing::{LicenseTerms, new_id, new_license};
use crate::key_ring::{KeyRing, SigningKey};
use crate::lifecycle::LicenseStatus;
use crate::model::*;
use crate::ports::*;
use crate::renewals::{RenewalsConfig, RenewalsReport, run_renewals};

pub const WEBHOOK_SECRET: &[u8] = b"whsec_nls_conformance_secret";

/// The fixtures, by file stem.
pub const FIXTURES: &[(&str, &str)] = &[
    ("plans", include_str!("../../tests/fixtures/stripe/plans.json")),
    (
        "checkout.session.completed",
        include_str!("../../tests/fixtures/stripe/checkout.session.completed.json"),
    ),
    ("customer.created", include_str!("../../tests/fixtures/stripe/customer.created.json")),
    (
        "customer.subscription.created",
        include_str!("../../tests/fixtures/stripe/customer.subscription.created.json"),
    ),
    (
        "customer.subscription.updated",
        include_str!("../../tests/fixtures/stripe/customer.subscription.updated.json"),
    ),
    (
        "customer.subscription.updated.past_due",
        include_str!("../../tests/fixtures/stripe/customer.subscription.updated.past_due.json"),
    ),
    (
        "customer.subscription.updated.recovered",
        include_str!("../../tests/fixtures/stripe/customer.subscription.updated.recovered.json"),
    ),
    (
        "customer.subscription.updated.unpaid",
        include_str!("../../tests/fixtures/stripe/customer.subscription.updated.unpaid.json"),
    ),
    (
        "customer.subscription.deleted",
        include_str!("../../tests/fixtures/stripe/customer.subscription.deleted.json"),
    ),
    (
        "customer.subscription.trial_will_end",
        include_str!("../../tests/fixtures/stripe/customer.subscription.trial_will_end.json"),
    ),
    ("invoice.paid", include_str!("../../tests/fixtures/stripe/invoice.paid.json")),
    ("invoice.paid.renewal", include_str!("../../tests/fixtures/stripe/invoice.paid.renewal.json")),
    ("invoice.payment_failed", include_str!("../../tests/fixtures/stripe/invoice.payment_failed.json")),
];

pub fn fixture(name: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// The fixtures' subscription and customer, for re-labelling copies.
pub const FIXTURE_SUBSCRIPTION: &str = "sub_1QnlsSubscription01";
pub const FIXTURE_CUSTOMER: &str = "cus_QnlsJennyRosen01";

/// A subscription that pays, upgrades, fails one renewal and recovers, in Stripe's order.
pub const RECOVERING_HISTORY: &[&str] = &[
    "customer.subscription.created",
    "checkout.session.completed",
    "invoice.paid",
    "customer.subscription.updated",
    "invoice.payment_failed",
    "customer.subscription.updated.past_due",
    "invoice.paid.renewal",
    "customer.subscription.updated.recovered",
];

/// A subscription that pays, fails, goes unpaid and is cancelled.
pub const LAPSING_HISTORY: &[&str] = &[
    "customer.subscription.created",
    "checkout.session.completed",
    "invoice.paid",
    "customer.subscription.updated",
    "invoice.payment_failed",
    "customer.subscription.updated.past_due",
    "customer.subscription.updated.unpaid",
    "customer.subscription.deleted",
];

/// A mailer that keeps what it was asked to send. It can be told to fail the next sends.
#[derive(Debug, Default)]
pub struct RecordingMailer {
    sent: Mutex<Vec<OutgoingEmail>>,
    failures: Mutex<Vec<MailFailure>>,
}

/// How a [`RecordingMailer`] fails its next send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailFailure {
    /// The provider is down: nothing is delivered.
    Unavailable,
    /// The provider delivers, but the answer is lost (the crash-after-accept case).
    AcceptedThenLost,
}

impl RecordingMailer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn sent(&self) -> Vec<OutgoingEmail> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn count(&self) -> usize {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn fail_next(&self, failure: MailFailure) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(failure);
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<String, MailError> {
        let failure = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if failures.is_empty() { None } else { Some(failures.remove(0)) }
        };
        if failure == Some(MailFailure::Unavailable) {
            return Err(MailError::Unavailable("simulated outage".to_owned()));
        }
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.push(email.clone());
        if failure == Some(MailFailure::AcceptedThenLost) {
            return Err(MailError::Unavailable("simulated lost answer".to_owned()));
        }
        Ok(format!("msg-{}", sent.len()))
    }
}

/// One store, one mailer, one clock, the fixture plan catalogue and a signing key ring.
pub struct BillingHarness {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<RecordingMailer>,
    pub clock: Arc<ManualClock>,
    pub key_ring: KeyRing,
    pub plans: PlanCatalogue,
    pub policy: BillingPolicy,
}

pub fn at(rfc3339: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(rfc3339).expect("valid literal").to_utc()
}

pub fn from_unix(secs: i64) -> Timestamp {
    DateTime::from_timestamp(secs, 0).expect("valid unix time")
}

impl BillingHarness {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let signer = SigningKey::from_seed([42; 32], Some("billing-test".to_owned()));
        Self {
            store,
            mailer: Arc::new(RecordingMailer::new()),
            // The fixtures' subscription starts 2026-11-01; deliveries happen "now".
            clock: Arc::new(ManualClock::new(at("2026-11-01T00:00:30Z"))),
            key_ring: KeyRing::with_signer(signer, Vec::new()).expect("a valid ring"),
            plans: PlanCatalogue::parse(fixture("plans")).expect("the fixture catalogue parses"),
            policy: BillingPolicy::default(),
        }
    }

    pub fn deps(&self) -> BillingDeps<'_> {
        BillingDeps {
            store: self.store.as_ref(),
            mailer: self.mailer.as_ref(),
            clock: self.clock.as_ref(),
            key_ring: &self.key_ring,
            plans: &self.plans,
            webhook_secret: WEBHOOK_SECRET,
            policy: self.policy,
        }
    }

    /// Delivers `body` signed at the clock's now, as Stripe does.
    pub async fn deliver(&self, body: &str) -> Result<WebhookAck, WebhookError> {
        let header = sign_stripe_payload(WEBHOOK_SECRET, self.clock.now().timestamp(), body.as_bytes());
        handle_stripe_webhook(&self.deps(), Some(&header), body.as_bytes()).await
    }

    pub async fn deliver_fixture(&self, name: &str) -> WebhookAck {
        self.deliver(fixture(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    pub async fn license(&self, subscription: &str) -> Option<License> {
        self.store.find_license_by_subscription(subscription).await.expect("store reads")
    }

    pub async fn customer_of(&self, license: &License) -> Customer {
        self.store.get_customer(&license.customer_id).await.expect("store reads").expect("customer exists")
    }

    pub fn emails_to(&self, to: &str, subject_part: &str) -> usize {
        self.mailer.sent().iter().filter(|e| e.to == to && e.subject.contains(subject_part)).count()
    }
}

/// A fixture re-labelled for another subscription, customer and event ids (suffix `tag`).
pub fn relabel(body: &str, tag: &str) -> String {
    body.replace(FIXTURE_SUBSCRIPTION, &format!("sub_{tag}"))
        .replace(FIXTURE_CUSTOMER, &format!("cus_{tag}"))
        .replace("\"id\": \"evt_", &format!("\"id\": \"evt_{tag}_"))
        .replace("jenny.rosen@example.com", &format!("{tag}@example.com"))
}

/// What a subscription's license and customer look like, without the parts that are random
/// (ids, key ids) or that record when work happened (versions, timestamps of writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingState {
    pub status: LicenseStatus,
    pub tier: String,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
    pub max_deployments: Option<u32>,
    pub expires_at: Option<Timestamp>,
    pub grace_ends_at: Option<Timestamp>,
    pub stripe_price_id: Option<String>,
    pub billing_event_at: Option<i64>,
    pub customer_email: String,
    pub customer_name: String,
}

pub async fn billing_state(store: &dyn Store, subscription: &str) -> Option<BillingState> {
    let license = store.find_license_by_subscription(subscription).await.expect("store reads")?;
    let customer =
        store.get_customer(&license.customer_id).await.expect("store reads").expect("customer exists");
    Some(BillingState {
        status: license.status,
        tier: license.tier,
        features: license.features,
        limits: license.limits,
        max_deployments: license.max_deployments,
        expires_at: license.expires_at,
        grace_ends_at: license.grace_ends_at,
        stripe_price_id: license.stripe_price_id,
        billing_event_at: license.billing_event_at,
        customer_email: customer.email,
        customer_name: customer.name,
    })
}

/// Everything observable, for "nothing changed" checks.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreDigest {
    pub licenses: Vec<License>,
    pub customers: Vec<Customer>,
    pub notifications: Vec<NotificationRecord>,
    pub audit_entries: usize,
    pub emails: usize,
}

pub async fn digest(harness: &BillingHarness) -> StoreDigest {
    let store = harness.store.as_ref();
    let licenses =
        store.list_licenses(&LicenseFilter::default(), &PageRequest::first(100)).await.expect("lists").items;
    let customers = store.list_customers(&PageRequest::first(100)).await.expect("lists").items;
    let mut notifications = Vec::new();
    for l in &licenses {
        notifications.extend(store.list_notifications(&l.id).await.expect("lists"));
    }
    let mut audit_entries = 0;
    let mut page = PageRequest::first(100);
    loop {
        let got = store.list_audit(&AuditFilter::default(), &page).await.expect("lists");
        audit_entries += got.items.len();
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    StoreDigest { licenses, customers, notifications, audit_entries, emails: harness.mailer.count() }
}

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Case = fn(Arc<dyn Store>) -> CaseFuture;

pub const CASES: &[(&str, Case)] = &[
    ("each_event_has_its_effect", |s| Box::pin(each_event_has_its_effect(s))),
    ("lapsing_subscription_suspends_then_expires", |s| {
        Box::pin(lapsing_subscription_suspends_then_expires(s))
    }),
    ("trial_will_end_sends_a_notice", |s| Box::pin(trial_will_end_sends_a_notice(s))),
    ("every_event_replayed_five_times_has_one_effect", |s| {
        Box::pin(every_event_replayed_five_times_has_one_effect(s))
    }),
    ("shuffled_histories_converge", |s| Box::pin(shuffled_histories_converge(s))),
    ("concurrent_deliveries_apply_once", |s| Box::pin(concurrent_deliveries_apply_once(s))),
    ("unknown_price_is_acknowledged", |s| Box::pin(unknown_price_is_acknowledged(s))),
    ("bad_signatures_change_nothing", |s| Box::pin(bad_signatures_change_nothing(s))),
    ("a_lost_key_email_is_sent_on_redelivery", |s| Box::pin(a_lost_key_email_is_sent_on_redelivery(s))),
    ("renewal_notices_each_window_once", |s| Box::pin(renewal_notices_each_window_once(s))),
    ("overlapping_runs_and_a_crash_send_once", |s| Box::pin(overlapping_runs_and_a_crash_send_once(s))),
    ("opt_out_skips_reminders_not_the_suspension_notice", |s| {
        Box::pin(opt_out_skips_reminders_not_the_suspension_notice(s))
    }),
    ("billing_never_lifts_an_admin_suspension", |s| Box::pin(billing_never_lifts_an_admin_suspension(s))),
    ("payment_lifts_a_billing_suspension", |s| Box::pin(payment_lifts_a_billing_suspension(s))),
    ("a_paid_through_date_past_2200_is_refused", |s| Box::pin(a_paid_through_date_past_2200_is_refused(s))),
];

/// Runs every case against fresh stores from `make_store`.
pub async fn run_all<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, case) in CASES {
        let store = make_store().await;
        if let Err(e) = tokio::spawn(case(store)).await {
            panic!("billing scenario `{name}` failed: {e}");
        }
    }
}

const T1: i64 = 1_796_083_200; // 2026-12-01, end of the first period
const T2: i64 = 1_798_675_200; // 2026-12-31, end of the second period
const JENNY: &str = "jenny.rosen@example.com";

pub async fn each_event_has_its_effect(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let grace = h.policy.period_grace;

    let ack = h.deliver_fixture("customer.subscription.created").await;
    assert_eq!(ack.outcome, WebhookOutcome::Applied);
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license created");
    assert_eq!((license.status, license.tier.as_str()), (LicenseStatus::Active, "basic"));
    assert_eq!(license.expires_at, Some(from_unix(T1) + grace));
    assert_eq!(license.max_deployments, Some(2));
    // The plan's registry grant comes with the license (docs/distribution.md).
    let registry = license.registry.as_ref().map(|r| r.repositories.clone());
    assert_eq!(registry, Some(vec!["nectar/app".to_owned()]));
    assert_eq!(license.id, super::license_id_for_subscription(FIXTURE_SUBSCRIPTION));
    assert_eq!(h.mailer.count(), 0, "no email known yet: the key waits for checkout");

    let ack = h.deliver_fixture("checkout.session.completed").await;
    assert_eq!(ack.notices_sent, vec!["key_delivery"]);
    let customer = h.customer_of(&license).await;
    assert_eq!((customer.email.as_str(), customer.name.as_str()), (JENNY, "Jenny Rosen"));
    let key_email = &h.mailer.sent()[0];
    assert_eq!(key_email.to, JENNY);
    let key = key_email.text_body.lines().find(|l| l.starts_with("NLS-")).expect("the key is in the email");
    let verified =
        crate::license_token::verify_license_key(&h.key_ring, key).expect("the emailed key verifies");
    assert_eq!(verified.claims.sub, license.id);
    assert_eq!(verified.claims.tier, "basic");

    h.deliver_fixture("invoice.paid").await;
    let after_paid = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(after_paid.expires_at, Some(from_unix(T1) + grace));
    assert_eq!(h.mailer.count(), 1, "a paid invoice sends nothing new");

    let ack = h.deliver_fixture("customer.subscription.updated").await;
    let upgraded = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(upgraded.tier, "pro");
    assert_eq!(upgraded.max_deployments, Some(10));
    assert_eq!(upgraded.registry.as_ref().map(|r| r.repositories.len()), Some(2), "the new plan's images");
    assert!(upgraded.features.contains(&"sso".to_owned()));
    assert_ne!(upgraded.key_id, license.key_id, "a tier change re-issues the key");
    assert_eq!(ack.notices_sent, vec!["key_delivery"], "the new key is emailed");

    let ack = h.deliver_fixture("invoice.payment_failed").await;
    let failed = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(failed.status, LicenseStatus::PastDue);
    assert_eq!(failed.grace_ends_at, Some(from_unix(1_796_086_800) + h.policy.payment_grace));
    assert_eq!(failed.expires_at, Some(from_unix(T1) + grace), "a failed invoice does not extend");
    assert_eq!(ack.notices_sent, vec!["payment_failed"]);
    // Validation answers IN_GRACE while past due.
    let verified = crate::license_token::verify_license_key(&h.key_ring, key).expect("verifies");
    let snapshot = h.store.license_snapshot(&failed.id, h.clock.now()).await.expect("reads").expect("exists");
    let decision = crate::validation::decide(
        &verified,
        &crate::validation::ValidationRequest::default(),
        Some(&snapshot),
        from_unix(1_796_090_000),
    );
    assert_eq!(decision.code, crate::validation::ValidationCode::InGrace);

    h.deliver_fixture("customer.subscription.updated.past_due").await;
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").status, LicenseStatus::PastDue);

    let ack = h.deliver_fixture("invoice.paid.renewal").await;
    let renewed = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(renewed.status, LicenseStatus::Active);
    assert_eq!(renewed.expires_at, Some(from_unix(T2) + grace));
    assert_eq!(renewed.grace_ends_at, None);
    assert_eq!(renewed.key_id, upgraded.key_id, "a renewal keeps the key");
    assert!(ack.notices_sent.is_empty());

    h.deliver_fixture("customer.subscription.updated.recovered").await;
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").status, LicenseStatus::Active);

    let ack = h.deliver_fixture("customer.created").await;
    assert_eq!(ack.outcome, WebhookOutcome::Ignored);

    assert_eq!(h.emails_to(JENNY, "license key"), 2);
    assert_eq!(h.emails_to(JENNY, "Payment failed"), 1);
    let audit = h
        .store
        .list_audit(
            &AuditFilter { actor: Some("stripe".to_owned()), ..AuditFilter::default() },
            &PageRequest::first(100),
        )
        .await
        .expect("lists");
    assert!(audit.items.iter().any(|e| e.action == "license.created"));
    assert!(audit.items.iter().all(|e| e.actor == "stripe"));
}

/// Issue 19 item 4: the next `invoice.paid`, a plan change or a recovered subscription lifted
/// a suspension staff imposed. Staff suspend through the transition table, as the admin API does.
pub async fn billing_never_lifts_an_admin_suspension(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    for name in &RECOVERING_HISTORY[..3] {
        h.deliver_fixture(name).await;
    }
    let active = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    let suspended =
        crate::issuing::apply_event(&active, crate::lifecycle::LifecycleEvent::Suspend, h.clock.now())
            .expect("staff may suspend an active license");
    let write = Write::UpdateLicense { license: suspended, expected_version: active.version };
    h.store.commit(None, vec![write]).await.expect("the suspension commits");
    let stored = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(
        stored.suspension_reason,
        Some(crate::lifecycle::SuspensionReason::Admin),
        "the store keeps the reason"
    );

    for name in &RECOVERING_HISTORY[3..] {
        h.deliver_fixture(name).await;
        let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
        assert_eq!(license.status, LicenseStatus::Suspended, "{name} lifted an admin suspension");
    }
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(license.tier, "pro", "billing still changes the terms of a suspended license");
    assert_eq!(license.expires_at, Some(from_unix(T2) + h.policy.period_grace), "and extends its expiry");
}

/// A suspension billing made (`unpaid`) is lifted when the subscription is active again.
pub async fn payment_lifts_a_billing_suspension(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    for name in &LAPSING_HISTORY[..7] {
        h.deliver_fixture(name).await;
    }
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(license.status, LicenseStatus::Suspended);
    assert_eq!(license.suspension_reason, Some(crate::lifecycle::SuspensionReason::Billing));
    // The customer pays after going unpaid: a newer "active" update than the fixture's.
    let paid_again = fixture("customer.subscription.updated.recovered")
        .replace("evt_1QsubscriptionRecover1", "evt_1QsubscriptionPaidAgain")
        .replace("\"created\": 1796342401", "\"created\": 1797300000");
    h.deliver(&paid_again).await.expect("delivered");
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(license.status, LicenseStatus::Active);
    assert_eq!(license.suspension_reason, None);
}

pub async fn lapsing_subscription_suspends_then_expires(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    for name in &LAPSING_HISTORY[..6] {
        h.deliver_fixture(name).await;
    }
    let ack = h.deliver_fixture("customer.subscription.updated.unpaid").await;
    let license = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    assert_eq!(license.status, LicenseStatus::Suspended);
    assert_eq!(ack.notices_sent, vec!["suspension_notice"]);
    let ack = h.deliver_fixture("customer.subscription.deleted").await;
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").status, LicenseStatus::Expired);
    assert!(ack.notices_sent.is_empty(), "one suspension notice per expiry window");
    assert_eq!(h.emails_to(JENNY, "is suspended"), 1);
}

pub async fn trial_will_end_sends_a_notice(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let ack = h.deliver_fixture("customer.subscription.trial_will_end").await;
    let mut sent = ack.notices_sent.clone();
    sent.sort();
    assert_eq!(sent, vec!["key_delivery", "trial_ending"]);
    let license =
        h.license("sub_1QnlsTrialSubscript").await.expect("a trialing subscription gets its license");
    assert_eq!(license.status, LicenseStatus::Active);
    assert_eq!(h.emails_to("trial.user@example.com", "trial ends"), 1);
    let again = h.deliver_fixture("customer.subscription.trial_will_end").await;
    assert_eq!(again.outcome, WebhookOutcome::Duplicate);
    assert_eq!(h.mailer.count(), 2);
}

pub async fn every_event_replayed_five_times_has_one_effect(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let mut names: Vec<&str> = RECOVERING_HISTORY.to_vec();
    names.extend(["customer.subscription.trial_will_end", "customer.created"]);
    for name in names {
        let first = h.deliver_fixture(name).await;
        let after_first = digest(&h).await;
        for replay in 1..5 {
            h.clock.advance(Duration::seconds(7));
            let ack = h.deliver_fixture(name).await;
            let expected = if first.outcome == WebhookOutcome::Ignored {
                WebhookOutcome::Ignored
            } else {
                WebhookOutcome::Duplicate
            };
            assert_eq!(ack.outcome, expected, "{name} replay {replay}");
            assert!(ack.notices_sent.is_empty(), "{name} replay {replay} sent {:?}", ack.notices_sent);
            assert_eq!(digest(&h).await, after_first, "{name} replay {replay} changed something");
        }
    }
}

/// A small deterministic generator, so a failing order can be reproduced from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound
    }
}

pub async fn shuffled_histories_converge(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    for (history_name, history) in [("recovering", RECOVERING_HISTORY), ("lapsing", LAPSING_HISTORY)] {
        let in_order = format!("{history_name}inorder");
        for name in history {
            h.deliver(&relabel(fixture(name), &in_order)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let expected = billing_state(h.store.as_ref(), &format!("sub_{in_order}")).await.expect("license");
        let (status, expires_at) = match history_name {
            "recovering" => (LicenseStatus::Active, from_unix(T2) + h.policy.period_grace),
            _ => (LicenseStatus::Expired, from_unix(T1) + h.policy.period_grace),
        };
        assert_eq!(
            (expected.status, expected.expires_at, expected.tier.as_str()),
            (status, Some(expires_at), "pro")
        );
        let mut rng = Lcg(0x5eed ^ history.len() as u64);
        for round in 0..24 {
            let mut order: Vec<&str> = history.to_vec();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.next(i + 1));
            }
            let tag = format!("{history_name}shuffle{round}");
            for name in &order {
                h.deliver(&relabel(fixture(name), &tag)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let got = billing_state(h.store.as_ref(), &format!("sub_{tag}")).await;
            let expected = BillingState { customer_email: format!("{tag}@example.com"), ..expected.clone() };
            assert_eq!(got, Some(expected), "{history_name} history in the order {order:?}");
        }
    }
}

pub async fn concurrent_deliveries_apply_once(store: Arc<dyn Store>) {
    let h = Arc::new(BillingHarness::new(store));
    h.deliver_fixture("customer.subscription.created").await;
    // Checkout delivered eight times at once: one customer update, one key email.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.deliver(fixture("checkout.session.completed")).await }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.expect("task runs") {
            Ok(ack) if ack.outcome == WebhookOutcome::Applied => applied += 1,
            Ok(_) => {}
            // A delivery that finds the key email claimed by its twin asks Stripe to come back.
            Err(WebhookError::NoticeInFlight) => {}
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(h.emails_to(JENNY, "license key"), 1);

    // Two different events racing to create the same license make one license.
    let tag = "race";
    let created = relabel(fixture("customer.subscription.created"), tag);
    let paid = relabel(fixture("invoice.paid"), tag);
    let (a, b) = tokio::join!(h.deliver(&created), h.deliver(&paid));
    a.expect("created applies");
    b.expect("paid applies");
    let licenses = h
        .store
        .list_licenses(&LicenseFilter::default(), &PageRequest::first(100))
        .await
        .expect("lists")
        .items;
    assert_eq!(
        licenses.iter().filter(|l| l.stripe_subscription_id.as_deref() == Some("sub_race")).count(),
        1
    );
    let customers = h.store.list_customers(&PageRequest::first(100)).await.expect("lists").items;
    assert_eq!(customers.iter().filter(|c| c.stripe_customer_id.as_deref() == Some("cus_race")).count(), 1);

    // Signup: Stripe sends its first events at once. Every delivery succeeds (none is told to
    // come back for a key email another event is sending) and the key goes out once.
    let tag = "burst";
    let mut tasks = Vec::new();
    for name in ["customer.subscription.created", "checkout.session.completed", "invoice.paid"] {
        let (h, body) = (h.clone(), relabel(fixture(name), tag));
        tasks.push(tokio::spawn(async move { h.deliver(&body).await }));
    }
    for task in tasks {
        task.await.expect("task runs").expect("every signup event is acknowledged");
    }
    assert_eq!(h.emails_to("burst@example.com", "license key"), 1);
}

/// Issue 19 item 1: Stripe's paid-through date feeds the expiry; one past the bounds (here
/// 2201) is refused as `terms_out_of_range` (400: Stripe stops retrying) and changes nothing,
/// whether it would create a license or move an existing one.
pub async fn a_paid_through_date_past_2200_is_refused(store: Arc<dyn Store>) {
    const YEAR_2201: &str = "7289654400";
    let h = BillingHarness::new(store);
    let created = fixture("customer.subscription.created").replace(&T1.to_string(), YEAR_2201);
    let refused = h.deliver(&created).await.expect_err("refused");
    assert_eq!((refused.code(), refused.http_status()), ("terms_out_of_range", 400));
    assert!(h.license(FIXTURE_SUBSCRIPTION).await.is_none(), "no license from a refused event");

    h.deliver_fixture("customer.subscription.created").await;
    let before = h.license(FIXTURE_SUBSCRIPTION).await.expect("license");
    let updated = fixture("customer.subscription.updated").replace(&T1.to_string(), YEAR_2201);
    let refused = h.deliver(&updated).await.expect_err("refused");
    assert_eq!(refused.code(), "terms_out_of_range");
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license"), before, "nothing changed");
}

pub async fn unknown_price_is_acknowledged(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let body =
        fixture("customer.subscription.created").replace("price_1QbasicMonthlyNLS", "price_not_in_catalogue");
    let ack = h.deliver(&body).await.expect("acknowledged, not an error");
    assert_eq!(ack.outcome, WebhookOutcome::Ignored);
    assert!(ack.warnings.iter().any(|w| w.contains("price_not_in_catalogue")), "{:?}", ack.warnings);
    assert!(h.license(FIXTURE_SUBSCRIPTION).await.is_none());
    let again = h.deliver(&body).await.expect("acknowledged");
    assert_eq!(again.outcome, WebhookOutcome::Duplicate);

    // On an existing license, an unknown price keeps the plan but the rest applies.
    h.deliver_fixture("invoice.paid").await;
    let body =
        fixture("customer.subscription.updated").replace("price_1QproMonthlyNLS", "price_not_in_catalogue");
    let ack = h.deliver(&body).await.expect("acknowledged");
    assert_eq!(ack.outcome, WebhookOutcome::Applied);
    assert!(!ack.warnings.is_empty());
    assert_eq!(h.license(FIXTURE_SUBSCRIPTION).await.expect("license").tier, "basic");
}

pub async fn bad_signatures_change_nothing(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let body = fixture("customer.subscription.created");
    let now = h.clock.now().timestamp();
    let good = sign_stripe_payload(WEBHOOK_SECRET, now, body.as_bytes());
    let cases: Vec<(Option<String>, String, &str)> = vec![
        (None, body.to_owned(), "signature_missing"),
        (
            Some(sign_stripe_payload(b"whsec_wrong", now, body.as_bytes())),
            body.to_owned(),
            "signature_mismatch",
        ),
        (
            Some(sign_stripe_payload(WEBHOOK_SECRET, now - 301, body.as_bytes())),
            body.to_owned(),
            "signature_stale",
        ),
        (
            Some(good.clone()),
            body.replace("price_1QbasicMonthlyNLS", "price_1QproMonthlyNLS"),
            "signature_mismatch",
        ),
        (Some("t=abc,v1=00".to_owned()), body.to_owned(), "signature_malformed"),
    ];
    for (header, body, code) in cases {
        let err = handle_stripe_webhook(&h.deps(), header.as_deref(), body.as_bytes()).await.expect_err(code);
        assert_eq!((err.code(), err.http_status(), err.is_retryable()), (code, 400, false));
    }
    // A signed body that is not an event is a 400 too, never a 5xx.
    let junk = br#"{"id":"evt_x","type":"invoice.paid","created":1,"data":{"object":{"id":5}}}"#;
    let header = sign_stripe_payload(WEBHOOK_SECRET, now, junk);
    let err = handle_stripe_webhook(&h.deps(), Some(&header), junk).await.expect_err("malformed");
    assert_eq!((err.code(), err.http_status()), ("payload_malformed", 400));
    assert!(digest(&h).await.licenses.is_empty());
    // Several v1, one of them right, pass.
    let rolled = format!(
        "{},v1={}",
        sign_stripe_payload(b"whsec_old", now, body.as_bytes()),
        &good[good.len() - 64..]
    );
    handle_stripe_webhook(&h.deps(), Some(&rolled), body.as_bytes()).await.expect("a rolled secret passes");
}

pub async fn a_lost_key_email_is_sent_on_redelivery(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    h.deliver_fixture("customer.subscription.created").await;
    h.mailer.fail_next(MailFailure::Unavailable);
    let err =
        h.deliver(fixture("checkout.session.completed")).await.expect_err("the mail outage is reported");
    assert!(err.is_retryable() && err.http_status() == 503, "{err}");
    assert_eq!(h.customer_of(&h.license(FIXTURE_SUBSCRIPTION).await.expect("license")).await.email, JENNY);
    // Stripe retries within minutes: the claim is still fresh, so the retry is told to come back.
    h.clock.advance(Duration::minutes(1));
    let err = h.deliver(fixture("checkout.session.completed")).await.expect_err("still claimed");
    assert_eq!(err.code(), "notice_in_flight");
    // Later retries take the stale claim over and send once.
    h.clock.advance(h.policy.notice_stale_after);
    let ack = h.deliver_fixture("checkout.session.completed").await;
    assert_eq!(
        (ack.outcome, ack.notices_sent.clone()),
        (WebhookOutcome::Duplicate, vec!["key_delivery".to_owned()])
    );
    h.clock.advance(Duration::hours(1));
    let ack = h.deliver_fixture("checkout.session.completed").await;
    assert!(ack.notices_sent.is_empty());
    assert_eq!(h.emails_to(JENNY, "license key"), 1);
}

/// A license for the renewal cases, expiring at `expires_at`, of a customer.
async fn seed_license(
    store: &dyn Store,
    name: &str,
    expires_at: Timestamp,
    opt_out: bool,
    now: Timestamp,
) -> License {
    let customer = Customer {
        id: new_id("cus"),
        name: name.to_owned(),
        email: format!("{name}@example.com"),
        stripe_customer_id: None,
        reminders_opt_out: opt_out,
        created_at: now,
        updated_at: now,
    };
    let terms = LicenseTerms {
        tier: Some("pro".to_owned()),
        expires_at: Some(expires_at),
        ..LicenseTerms::default()
    };
    let license = new_license(&customer.id, terms, now);
    store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
        .await
        .expect("seeded");
    license
}

async fn run(h: &BillingHarness, run_id: &str) -> RenewalsReport {
    run_renewals(h.store.as_ref(), h.mailer.as_ref(), h.clock.as_ref(), &RenewalsConfig::new(run_id))
        .await
        .expect("the run reads its window")
}

fn notices(report: &RenewalsReport) -> Vec<(String, String)> {
    let mut out: Vec<_> = report.sent.iter().map(|s| (s.recipient.clone(), s.notice.clone())).collect();
    out.sort();
    out
}

pub async fn renewal_notices_each_window_once(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let start = at("2027-01-01T09:00:00Z");
    h.clock.set(start);
    let expiry = at("2027-02-15T00:00:00Z");
    let license = seed_license(h.store.as_ref(), "ana", expiry, false, start).await;
    let far = seed_license(h.store.as_ref(), "far", at("2028-01-01T00:00:00Z"), false, start).await;

    // Day by day from 45 days before expiry to past the grace (7 days): each window once.
    let mut sent = Vec::new();
    for _ in 0..60 {
        let report = run(&h, &format!("run-{}", h.clock.now().date_naive())).await;
        sent.extend(report.sent.iter().map(|s| s.notice.clone()));
        h.clock.advance(Duration::days(1));
    }
    assert_eq!(
        sent,
        [
            "renewal_reminder_30d",
            "renewal_reminder_14d",
            "renewal_reminder_7d",
            "renewal_reminder_1d",
            "expiry_warning",
            "suspension_notice"
        ]
    );
    let expired = h.store.get_license(&license.id).await.expect("reads").expect("exists");
    assert_eq!(expired.status, LicenseStatus::Expired);
    // Besides one `renewals.run` entry per run (the System page's "last run"), the scheduler
    // audited one change of this license: its expiry.
    let by_scheduler = AuditFilter {
        actor: Some("scheduler".to_owned()),
        target: Some(format!("license:{}", license.id)),
        ..AuditFilter::default()
    };
    let audit = h.store.list_audit(&by_scheduler, &PageRequest::first(10)).await.expect("lists");
    assert_eq!(audit.items.len(), 1);
    assert_eq!(audit.items[0].target, format!("license:{}", license.id));
    // The communication log holds every notice, sent.
    let log = h.store.list_notifications(&license.id).await.expect("lists");
    assert_eq!(log.len(), 6);
    assert!(log.iter().all(|n| matches!(n.state, NotificationState::Sent { .. })));
    assert!(h.store.list_notifications(&far.id).await.expect("lists").is_empty());
}

pub async fn overlapping_runs_and_a_crash_send_once(store: Arc<dyn Store>) {
    let h = Arc::new(BillingHarness::new(store));
    let now = at("2027-03-01T06:00:00Z");
    h.clock.set(now);
    let mut licenses = Vec::new();
    for i in 0..6 {
        licenses.push(
            seed_license(h.store.as_ref(), &format!("c{i}"), now + Duration::days(5 + i), false, now).await,
        );
    }
    // A run died after claiming c0's 7-day reminder and before sending it.
    let dead_claim = NotificationRecord {
        key: NotificationKey {
            license_id: licenses[0].id.clone(),
            notice: "renewal_reminder_7d".to_owned(),
            window: crate::email::expiry_window(licenses[0].expires_at),
        },
        recipient: "c0@example.com".to_owned(),
        subject: "reminder".to_owned(),
        state: NotificationState::Pending { claimed_by: "run-dead".to_owned(), claimed_at: now },
    };
    assert_eq!(
        h.store.claim_notification(&dead_claim, now, Duration::minutes(15)).await.expect("claims"),
        ClaimOutcome::Claimed
    );

    // Two runs overlap, a minute after the crash: c0 is left to its (dead) owner for now.
    h.clock.set(now + Duration::minutes(1));
    let (a, b) = {
        let (ha, hb) = (h.clone(), h.clone());
        let ta = tokio::spawn(async move { run(&ha, "run-a").await });
        let tb = tokio::spawn(async move { run(&hb, "run-b").await });
        (ta.await.expect("runs"), tb.await.expect("runs"))
    };
    assert_eq!(a.sent.len() + b.sent.len(), 5, "a: {a:?}\nb: {b:?}");
    assert_eq!(a.held_by_other + b.held_by_other + a.already_sent + b.already_sent, 7);
    // Once the claim is stale, the next run takes it over.
    h.clock.set(now + Duration::minutes(20));
    let c = run(&h, "run-c").await;
    assert_eq!(notices(&c), vec![("c0@example.com".to_owned(), "renewal_reminder_7d".to_owned())]);
    // A mail outage mid-run leaves a claim that a later run finishes; nothing is sent twice.
    h.clock.set(now + Duration::days(4));
    h.mailer.fail_next(MailFailure::Unavailable);
    let d = run(&h, "run-d").await;
    assert_eq!(d.failures.len(), 1);
    assert!(d.has_retryable_failures());
    h.clock.advance(Duration::minutes(16));
    let e = run(&h, "run-e").await;
    assert_eq!(e.sent.len(), 1);
    let mut per_window: BTreeMap<(String, String), usize> = BTreeMap::new();
    for email in h.mailer.sent() {
        *per_window.entry((email.to.clone(), email.subject.clone())).or_default() += 1;
    }
    assert!(per_window.values().all(|n| *n == 1), "{per_window:?}");
    assert_eq!(h.mailer.count(), 6 + d.sent.len() + e.sent.len());
}

pub async fn opt_out_skips_reminders_not_the_suspension_notice(store: Arc<dyn Store>) {
    let h = BillingHarness::new(store);
    let start = at("2027-05-01T00:00:00Z");
    h.clock.set(start);
    seed_license(h.store.as_ref(), "quiet", start + Duration::days(20), true, start).await;
    let mut sent = Vec::new();
    let mut skipped = 0;
    for _ in 0..40 {
        let report = run(&h, "daily").await;
        sent.extend(notices(&report));
        skipped += report.skipped_opt_out;
        h.clock.advance(Duration::days(1));
    }
    assert_eq!(
        sent,
        vec![
            ("quiet@example.com".to_owned(), "expiry_warning".to_owned()),
            ("quiet@example.com".to_owned(), "suspension_notice".to_owned()),
        ]
    );
    assert!(skipped >= 3, "reminders were due and skipped: {skipped}");
}
