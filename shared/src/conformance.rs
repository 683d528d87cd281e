//! The store conformance suite: one set of behaviours every store implementation must show,
//! written once and run by each store's own tests (in-memory, SQLite, DynamoDB).
//!
//! Usage, from a store crate's integration test, on a multi-threaded runtime (the concurrency
//! cases spawn real tasks):
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn conforms() {
//!     nls_core::conformance::run_all(|| async { Arc::new(MyStore::fresh().await) as Arc<dyn Store> }).await;
//! }
//! ```
//!
//! Each case gets a fresh store from the factory. A failing case panics with its name.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration};

use crate::issuing::{LicenseTerms, new_id, new_license};
use crate::lifecycle::LicenseStatus;
use crate::model::*;
use crate::ports::*;

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Case = fn(Arc<dyn Store>) -> CaseFuture;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("customers_crud_and_paging", |s| Box::pin(customers_crud_and_paging(s))),
    ("stripe_customer_id_is_unique", |s| Box::pin(stripe_customer_id_is_unique(s))),
    ("license_updates_are_versioned", |s| Box::pin(license_updates_are_versioned(s))),
    ("license_filters_and_paging", |s| Box::pin(license_filters_and_paging(s))),
    ("licenses_expiring_between", |s| Box::pin(licenses_expiring_between(s))),
    ("commit_is_all_or_nothing", |s| Box::pin(commit_is_all_or_nothing(s))),
    ("webhook_event_applies_once", |s| Box::pin(webhook_event_applies_once(s))),
    ("concurrent_webhook_replays_apply_once", |s| Box::pin(concurrent_webhook_replays_apply_once(s))),
    ("concurrent_activations_respect_limit", |s| Box::pin(concurrent_activations_respect_limit(s))),
    ("lease_renewal_and_expiry", |s| Box::pin(lease_renewal_and_expiry(s))),
    ("activation_churn_is_limited", |s| Box::pin(activation_churn_is_limited(s))),
    ("release_frees_a_seat", |s| Box::pin(release_frees_a_seat(s))),
    ("usage_batch_counts_once", |s| Box::pin(usage_batch_counts_once(s))),
    ("concurrent_usage_replays_count_once", |s| Box::pin(concurrent_usage_replays_count_once(s))),
    ("usage_counter_overflow_is_refused", |s| Box::pin(usage_counter_overflow_is_refused(s))),
    ("garbage_cursors_are_refused", |s| Box::pin(garbage_cursors_are_refused(s))),
    ("snapshot_holds_license_seats_and_usage", |s| Box::pin(snapshot_holds_license_seats_and_usage(s))),
    ("api_keys_round_trip", |s| Box::pin(api_keys_round_trip(s))),
    ("oversized_ids_are_absent", |s| Box::pin(oversized_ids_are_absent(s))),
    ("audit_filters_newest_first", |s| Box::pin(audit_filters_newest_first(s))),
    ("notification_claims", |s| Box::pin(notification_claims(s))),
    ("concurrent_notification_claims_one_winner", |s| Box::pin(concurrent_notification_claims_one_winner(s))),
    ("validation_logs_newest_first", |s| Box::pin(validation_logs_newest_first(s))),
    ("staff_users_get_find_and_list", |s| Box::pin(staff_users_get_find_and_list(s))),
    ("staff_email_is_unique", |s| Box::pin(staff_email_is_unique(s))),
    ("concurrent_staff_creates_one_email_one_winner", |s| {
        Box::pin(concurrent_staff_creates_one_email_one_winner(s))
    }),
    ("staff_updates_are_versioned", |s| Box::pin(staff_updates_are_versioned(s))),
    ("staff_sessions_lifecycle", |s| Box::pin(staff_sessions_lifecycle(s))),
    ("staff_commit_with_audit_is_all_or_nothing", |s| Box::pin(staff_commit_with_audit_is_all_or_nothing(s))),
    ("concurrent_totp_sign_ins_one_code_one_winner", |s| {
        Box::pin(concurrent_totp_sign_ins_one_code_one_winner(s))
    }),
    ("licenses_need_their_customer", |s| Box::pin(licenses_need_their_customer(s))),
    ("customer_delete_races_license_create", |s| Box::pin(customer_delete_races_license_create(s))),
    ("license_search_filters_sorts_and_pages", |s| Box::pin(license_search_filters_sorts_and_pages(s))),
    ("validation_events_count_once_per_batch", |s| {
        Box::pin(vstats::validation_events_count_once_per_batch(s))
    }),
    ("concurrent_validation_event_writers_add_up", |s| {
        Box::pin(vstats::concurrent_validation_event_writers_add_up(s))
    }),
    ("distinct_values_are_bounded", |s| Box::pin(vstats::distinct_values_are_bounded(s))),
    ("compliance_records_by_license_and_flagged", |s| {
        Box::pin(vstats::compliance_records_by_license_and_flagged(s))
    }),
    ("late_batches_widen_first_and_last_seen", |s| {
        Box::pin(vstats::late_batches_widen_first_and_last_seen(s))
    }),
];

mod validation_stats_cases;
use validation_stats_cases as vstats;

/// Runs every case against fresh stores from `make_store`.
pub async fn run_all<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, case) in CASES {
        let store = make_store().await;
        let outcome = tokio::spawn(case(store)).await;
        if let Err(e) = outcome {
            panic!("store conformance case `{name}` failed: {e}");
        }
    }
}

fn t0() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-15T12:00:00Z").expect("valid literal").to_utc()
}

fn customer(name: &str, stripe: Option<&str>) -> Customer {
    Customer {
        id: new_id("cus"),
        name: name.to_owned(),
        email: format!("{name}@example.com"),
        stripe_customer_id: stripe.map(str::to_owned),
        reminders_opt_out: false,
        created_at: t0(),
        updated_at: t0(),
    }
}

fn license_for(customer_id: &str, max: Option<u32>, expires_at: Option<Timestamp>) -> License {
    // Every license carries a registry grant, so each store is seen to round-trip it.
    let registry = Some(crate::registry_token::RegistryGrant {
        repositories: vec!["nectar/app".into(), "nectar/worker-*".into()],
        actions: vec!["pull".into()],
    });
    let terms = LicenseTerms { max_deployments: max, expires_at, registry, ..LicenseTerms::default() };
    let mut license = new_license(customer_id, terms, t0());
    // And a cloud grant (docs/cloud-access.md), one audience with a quota and one without.
    license.cloud = Some(std::collections::BTreeMap::from([
        (
            "workflows".to_owned(),
            crate::access_token::CloudLimits {
                requests_per_minute: 600,
                burst: 50,
                monthly_quota: Some(100_000),
            },
        ),
        (
            "ai".to_owned(),
            crate::access_token::CloudLimits { requests_per_minute: 60, burst: 5, monthly_quota: None },
        ),
    ]));
    license
}

async fn given_license(store: &Arc<dyn Store>, max: Option<u32>) -> License {
    let c = customer("acme", None);
    let l = license_for(&c.id, max, Some(t0() + Duration::days(365)));
    store
        .commit(None, vec![Write::CreateCustomer(c), Write::CreateLicense(l.clone())])
        .await
        .expect("create");
    l
}

fn deployment(license_id: &str, id: &str) -> Deployment {
    Deployment {
        license_id: license_id.to_owned(),
        deployment_id: id.to_owned(),
        fingerprint: Some(format!("fp-{id}")),
        app_version: None,
        activated_at: t0(),
        last_heartbeat_at: t0(),
        lease_expires_at: t0(),
    }
}

fn policy(max: Option<u32>) -> ActivationPolicy {
    ActivationPolicy {
        max_deployments: max,
        lease: Duration::hours(1),
        churn_window: Duration::hours(1),
        churn_max: 1000,
    }
}

fn audit(actor: &str, target: &str, at: Timestamp) -> AuditEntry {
    AuditEntry {
        id: new_id("aud"),
        at,
        actor: actor.to_owned(),
        action: "test".to_owned(),
        target: target.to_owned(),
        before: None,
        after: Some(serde_json::json!({"n": 1})),
    }
}

async fn customers_crud_and_paging(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let c = customer(&format!("c{i}"), None);
        ids.push(c.id.clone());
        store.commit(None, vec![Write::CreateCustomer(c)]).await.expect("create customer");
    }
    ids.sort();
    let first = store.list_customers(&PageRequest::first(2)).await.expect("page 1");
    assert_eq!(first.items.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), ids[..2]);
    let mut seen: Vec<String> = first.items.iter().map(|c| c.id.clone()).collect();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = store.list_customers(&PageRequest { limit: 2, cursor: Some(c) }).await.expect("next page");
        seen.extend(page.items.iter().map(|c| c.id.clone()));
        cursor = page.next_cursor;
    }
    assert_eq!(seen, ids, "paging visits every customer once, in id order");

    let mut c = store.get_customer(&ids[0]).await.expect("get").expect("exists");
    c.name = "renamed".into();
    store.commit(None, vec![Write::UpdateCustomer(c.clone())]).await.expect("update");
    assert_eq!(store.get_customer(&ids[0]).await.expect("get").expect("exists").name, "renamed");
    store.commit(None, vec![Write::DeleteCustomer { id: ids[0].clone() }]).await.expect("delete");
    assert!(store.get_customer(&ids[0]).await.expect("get").is_none());
    let missing = store.commit(None, vec![Write::UpdateCustomer(c)]).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "update of a deleted customer: {missing:?}");
}

async fn stripe_customer_id_is_unique(store: Arc<dyn Store>) {
    let a = customer("a", Some("cus_stripe_1"));
    store.commit(None, vec![Write::CreateCustomer(a.clone())]).await.expect("create");
    let found = store.find_customer_by_stripe_id("cus_stripe_1").await.expect("find").expect("exists");
    assert_eq!(found.id, a.id);
    let dup = store.commit(None, vec![Write::CreateCustomer(customer("b", Some("cus_stripe_1")))]).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "{dup:?}");
    let same_id = store.commit(None, vec![Write::CreateCustomer(a)]).await;
    assert!(matches!(same_id, Err(StoreError::AlreadyExists(_))), "{same_id:?}");
}

async fn license_updates_are_versioned(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(3)).await;
    let mut next = l.clone();
    next.status = LicenseStatus::Suspended;
    next.version = 2;
    store
        .commit(None, vec![Write::UpdateLicense { license: next.clone(), expected_version: 1 }])
        .await
        .expect("v1→v2");
    let stale = store.commit(None, vec![Write::UpdateLicense { license: next, expected_version: 1 }]).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "stale version must conflict: {stale:?}");
    let got = store.get_license(&l.id).await.expect("get").expect("exists");
    assert_eq!((got.status, got.version), (LicenseStatus::Suspended, 2));

    let mut with_sub = got.clone();
    with_sub.stripe_subscription_id = Some("sub_123".into());
    with_sub.version = 3;
    store
        .commit(None, vec![Write::UpdateLicense { license: with_sub, expected_version: 2 }])
        .await
        .expect("v3");
    let by_sub = store.find_license_by_subscription("sub_123").await.expect("find").expect("exists");
    assert_eq!(by_sub.id, l.id);
    assert!(store.find_license_by_subscription("sub_other").await.expect("find").is_none());
}

async fn license_filters_and_paging(store: Arc<dyn Store>) {
    let a = customer("a", None);
    let b = customer("b", None);
    let mut writes = vec![Write::CreateCustomer(a.clone()), Write::CreateCustomer(b.clone())];
    let mut a_ids = Vec::new();
    for i in 0..4 {
        let mut l = license_for(&a.id, None, Some(t0() + Duration::days(10 * (i + 1))));
        if i == 3 {
            l.status = LicenseStatus::Suspended;
        }
        a_ids.push(l.id.clone());
        writes.push(Write::CreateLicense(l));
    }
    writes.push(Write::CreateLicense(license_for(&b.id, None, None)));
    store.commit(None, writes).await.expect("create");
    a_ids.sort();

    let by_customer = LicenseFilter { customer_id: Some(a.id.clone()), ..Default::default() };
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = store.list_licenses(&by_customer, &page).await.expect("list");
        assert!(got.items.len() <= 3);
        seen.extend(got.items.into_iter().map(|l| l.id));
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, a_ids);
    let suspended = LicenseFilter { status: Some(LicenseStatus::Suspended), ..Default::default() };
    assert_eq!(store.list_licenses(&suspended, &PageRequest::first(10)).await.expect("list").items.len(), 1);
    let soon = LicenseFilter { expires_before: Some(t0() + Duration::days(25)), ..Default::default() };
    assert_eq!(store.list_licenses(&soon, &PageRequest::first(10)).await.expect("list").items.len(), 2);
}

async fn licenses_expiring_between(store: Arc<dyn Store>) {
    let c = customer("c", None);
    let mut writes = vec![Write::CreateCustomer(c.clone())];
    let mut expected = Vec::new();
    for days in [0, 1, 6, 7, 8, 40] {
        let l = license_for(&c.id, None, Some(t0() + Duration::days(days)));
        if (1..8).contains(&days) {
            expected.push(l.id.clone());
        }
        writes.push(Write::CreateLicense(l));
    }
    writes.push(Write::CreateLicense(license_for(&c.id, None, None)));
    store.commit(None, writes).await.expect("create");
    let mut got: Vec<String> = store
        .licenses_expiring_between(t0() + Duration::days(1), t0() + Duration::days(8))
        .await
        .expect("query")
        .into_iter()
        .map(|l| l.id)
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "from is inclusive, to exclusive; perpetual licenses never due");
}

async fn commit_is_all_or_nothing(store: Arc<dyn Store>) {
    let l = given_license(&store, None).await;
    let newcomer = customer("new", None);
    let result = store
        .commit(
            None,
            vec![
                Write::CreateCustomer(newcomer.clone()),
                Write::Audit(audit("admin", "customer:x", t0())),
                Write::CreateLicense(l.clone()), // already exists: the whole commit fails
            ],
        )
        .await;
    assert!(matches!(result, Err(StoreError::AlreadyExists(_))), "{result:?}");
    assert!(store.get_customer(&newcomer.id).await.expect("get").is_none(), "no partial commit");
    let audit_rows = store.list_audit(&AuditFilter::default(), &PageRequest::first(10)).await.expect("audit");
    assert!(audit_rows.items.is_empty(), "no audit row from a failed commit");
}

fn webhook_event(id: &str) -> OnceGuard {
    OnceGuard::WebhookEvent(WebhookEventRecord {
        event_id: id.to_owned(),
        event_type: "invoice.paid".to_owned(),
        received_at: t0(),
    })
}

async fn webhook_event_applies_once(store: Arc<dyn Store>) {
    let l = given_license(&store, None).await;
    let entry = audit("stripe", &format!("license:{}", l.id), t0());
    let first =
        store.commit(Some(webhook_event("evt_1")), vec![Write::Audit(entry.clone())]).await.expect("first");
    assert_eq!(first, CommitOutcome::Applied);
    let second = store.commit(Some(webhook_event("evt_1")), vec![Write::Audit(entry)]).await.expect("replay");
    assert_eq!(second, CommitOutcome::Duplicate);
    let rows = store.list_audit(&AuditFilter::default(), &PageRequest::first(10)).await.expect("audit");
    assert_eq!(rows.items.len(), 1, "a replayed event writes nothing");

    // A guarded commit that fails does not record the event, so Stripe's retry can apply it.
    let failing = store.commit(Some(webhook_event("evt_2")), vec![Write::CreateLicense(l.clone())]).await;
    assert!(failing.is_err());
    let retry = store.commit(Some(webhook_event("evt_2")), vec![]).await.expect("retry");
    assert_eq!(retry, CommitOutcome::Applied);
}

async fn concurrent_webhook_replays_apply_once(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let entry = audit("stripe", &format!("replay:{i}"), t0());
                store.commit(Some(webhook_event("evt_same")), vec![Write::Audit(entry)]).await
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(CommitOutcome::Applied) => applied += 1,
            Ok(CommitOutcome::Duplicate) | Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(applied, 1);
    let rows = store.list_audit(&AuditFilter::default(), &PageRequest::first(100)).await.expect("audit");
    assert_eq!(rows.items.len(), 1);
}

async fn concurrent_activations_respect_limit(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(5)).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            let d = deployment(&l.id, &format!("dep-{i}"));
            tokio::spawn(async move { store.activate_deployment(&d, &policy(Some(5)), t0()).await })
        })
        .collect();
    let mut activated = 0;
    for t in tasks {
        match t.await.expect("task").expect("activation answers") {
            Activation::Activated(_) => activated += 1,
            Activation::LimitReached { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(activated, 5, "exactly the limit activates");
    let snap = store.license_snapshot(&l.id, t0()).await.expect("snapshot").expect("exists");
    assert_eq!(snap.live_deployments.len(), 5);
}

async fn lease_renewal_and_expiry(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(1)).await;
    let p = policy(Some(1));
    let a = deployment(&l.id, "a");
    assert!(matches!(store.activate_deployment(&a, &p, t0()).await.expect("a"), Activation::Activated(_)));
    let again = store.activate_deployment(&a, &p, t0() + Duration::minutes(10)).await.expect("a again");
    let Activation::AlreadyActive(renewed) = again else { panic!("expected AlreadyActive, got {again:?}") };
    assert_eq!(renewed.lease_expires_at, t0() + Duration::minutes(70));

    let b = deployment(&l.id, "b");
    let full = store.activate_deployment(&b, &p, t0() + Duration::minutes(20)).await.expect("b");
    assert_eq!(full, Activation::LimitReached { live: 1 });

    let hb_at = t0() + Duration::minutes(60);
    let beat =
        store.heartbeat(&l.id, "a", Some("2.1.0"), hb_at, hb_at + Duration::hours(1)).await.expect("hb");
    let beat = beat.expect("a holds a live seat");
    assert_eq!(beat.app_version.as_deref(), Some("2.1.0"));
    assert_eq!(beat.last_heartbeat_at, hb_at);
    assert!(store.heartbeat(&l.id, "nobody", None, hb_at, hb_at).await.expect("hb").is_none());

    // a's lease now ends at t0+120m; at exactly that instant the seat is free.
    let lapse = t0() + Duration::minutes(120);
    assert!(
        store.heartbeat(&l.id, "a", None, lapse, lapse + Duration::hours(1)).await.expect("hb").is_none()
    );
    let b_now = store.activate_deployment(&b, &p, lapse).await.expect("b after lapse");
    assert!(matches!(b_now, Activation::Activated(_)), "a lapsed lease frees its seat: {b_now:?}");
    let listed = store.list_deployments(&l.id).await.expect("list");
    assert!(listed.iter().any(|d| d.deployment_id == "b"));
}

async fn activation_churn_is_limited(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(1)).await;
    let p = ActivationPolicy { churn_max: 3, ..policy(Some(1)) };
    for i in 0..3 {
        let d = deployment(&l.id, &format!("churn-{i}"));
        let at = t0() + Duration::minutes(i);
        assert!(matches!(
            store.activate_deployment(&d, &p, at).await.expect("act"),
            Activation::Activated(_)
        ));
        assert!(store.release_deployment(&l.id, &d.deployment_id).await.expect("release"));
    }
    let d = deployment(&l.id, "churn-3");
    let refused = store.activate_deployment(&d, &p, t0() + Duration::minutes(3)).await.expect("act");
    assert_eq!(refused, Activation::ChurnLimited);
    let later = store.activate_deployment(&d, &p, t0() + Duration::minutes(61)).await.expect("act");
    assert!(matches!(later, Activation::Activated(_)), "the churn window slides: {later:?}");
}

async fn release_frees_a_seat(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(1)).await;
    let p = policy(Some(1));
    assert!(matches!(
        store.activate_deployment(&deployment(&l.id, "x"), &p, t0()).await.expect("x"),
        Activation::Activated(_)
    ));
    assert!(store.release_deployment(&l.id, "x").await.expect("release"));
    assert!(!store.release_deployment(&l.id, "x").await.expect("release twice"));
    let y = store.activate_deployment(&deployment(&l.id, "y"), &p, t0()).await.expect("y");
    assert!(matches!(y, Activation::Activated(_)));
}

fn batch(license_id: &str, batch_id: &str) -> UsageBatch {
    UsageBatch {
        license_id: license_id.to_owned(),
        deployment_id: "dep".to_owned(),
        batch_id: batch_id.to_owned(),
        records: vec![
            UsageRecord { metric: "api_calls".into(), value: 7, at: t0() },
            UsageRecord { metric: "api_calls".into(), value: 3, at: t0() + Duration::days(1) },
            UsageRecord { metric: "seats".into(), value: 2, at: t0() },
        ],
        received_at: t0(),
    }
}

async fn usage_batch_counts_once(store: Arc<dyn Store>) {
    let l = given_license(&store, None).await;
    assert_eq!(store.record_usage_batch(&batch(&l.id, "b1")).await.expect("b1"), BatchOutcome::Recorded);
    assert_eq!(
        store.record_usage_batch(&batch(&l.id, "b1")).await.expect("b1 again"),
        BatchOutcome::Duplicate
    );
    assert_eq!(store.record_usage_batch(&batch(&l.id, "b2")).await.expect("b2"), BatchOutcome::Recorded);
    let month = store.usage_counters(&l.id, "2026-11").await.expect("month");
    assert_eq!(month, BTreeMap::from([("api_calls".to_owned(), 20), ("seats".to_owned(), 4)]));
    let day = store.usage_counters(&l.id, "2026-11-16").await.expect("day");
    assert_eq!(day, BTreeMap::from([("api_calls".to_owned(), 6)]));
    // The same batch id under another license is another batch.
    let other = given_license(&store, None).await;
    assert_eq!(
        store.record_usage_batch(&batch(&other.id, "b1")).await.expect("other"),
        BatchOutcome::Recorded
    );
}

/// Counters never wrap or saturate: a batch that would take one past `u64::MAX` is refused
/// whole (no counter moves, its batch id stays unused), and one that fits still counts.
async fn usage_counter_overflow_is_refused(store: Arc<dyn Store>) {
    let l = given_license(&store, None).await;
    let one = |batch_id: &str, metric: &str, value: u64| UsageBatch {
        records: vec![UsageRecord { metric: metric.into(), value, at: t0() }],
        ..batch(&l.id, batch_id)
    };
    let near_max = u64::MAX - 5;
    assert_eq!(
        store.record_usage_batch(&one("fill", "bytes", near_max)).await.expect("fill"),
        BatchOutcome::Recorded
    );
    let over = UsageBatch {
        records: vec![
            UsageRecord { metric: "api_calls".into(), value: 1, at: t0() },
            UsageRecord { metric: "bytes".into(), value: 6, at: t0() },
        ],
        ..batch(&l.id, "over")
    };
    let refused = store.record_usage_batch(&over).await;
    assert!(matches!(refused, Err(StoreError::CounterOverflow(_))), "{refused:?}");
    let month = store.usage_counters(&l.id, "2026-11").await.expect("month");
    assert_eq!(
        month,
        BTreeMap::from([("bytes".to_owned(), near_max)]),
        "nothing of the refused batch counted"
    );
    // Two records of one batch that overflow together are refused too.
    let within = UsageBatch {
        records: vec![
            UsageRecord { metric: "tokens".into(), value: u64::MAX, at: t0() },
            UsageRecord { metric: "tokens".into(), value: 1, at: t0() },
        ],
        ..batch(&l.id, "within")
    };
    assert!(matches!(store.record_usage_batch(&within).await, Err(StoreError::CounterOverflow(_))));
    // The refused batch id was not used up, and an addition that fits exactly is accepted.
    assert_eq!(
        store.record_usage_batch(&one("over", "bytes", 5)).await.expect("fits"),
        BatchOutcome::Recorded
    );
    let month = store.usage_counters(&l.id, "2026-11").await.expect("month");
    assert_eq!(month.get("bytes"), Some(&u64::MAX));
}

/// A cursor no list handed out is the caller's mistake on every list, not a silent first page.
async fn garbage_cursors_are_refused(store: Arc<dyn Store>) {
    given_license(&store, None).await;
    for garbage in ["not a cursor!", "", "\u{0}"] {
        let page = PageRequest { limit: 10, cursor: Some(garbage.to_owned()) };
        let customers = store.list_customers(&page).await;
        assert!(
            matches!(customers, Err(StoreError::InvalidCursor(_))),
            "customers {garbage:?}: {customers:?}"
        );
        let licenses = store.list_licenses(&LicenseFilter::default(), &page).await;
        assert!(matches!(licenses, Err(StoreError::InvalidCursor(_))), "licenses {garbage:?}: {licenses:?}");
        let audit = store.list_audit(&AuditFilter::default(), &page).await;
        assert!(matches!(audit, Err(StoreError::InvalidCursor(_))), "audit {garbage:?}: {audit:?}");
    }
    assert!(matches!(
        store
            .list_audit(&AuditFilter::default(), &PageRequest { limit: 10, cursor: Some("-5".into()) })
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
}

async fn concurrent_usage_replays_count_once(store: Arc<dyn Store>) {
    let l = given_license(&store, None).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let b = batch(&l.id, "same-batch");
            tokio::spawn(async move { store.record_usage_batch(&b).await })
        })
        .collect();
    let mut recorded = 0;
    for t in tasks {
        if t.await.expect("task").expect("record") == BatchOutcome::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    let month = store.usage_counters(&l.id, "2026-11").await.expect("month");
    assert_eq!(month.get("api_calls"), Some(&10));
}

async fn snapshot_holds_license_seats_and_usage(store: Arc<dyn Store>) {
    let l = given_license(&store, Some(3)).await;
    let p = policy(Some(3));
    store.activate_deployment(&deployment(&l.id, "live"), &p, t0()).await.expect("live");
    store.activate_deployment(&deployment(&l.id, "old"), &p, t0() - Duration::hours(2)).await.expect("old");
    store.record_usage_batch(&batch(&l.id, "b")).await.expect("usage");
    let snap = store.license_snapshot(&l.id, t0()).await.expect("snapshot").expect("exists");
    assert_eq!(snap.license, l);
    assert_eq!(snap.live_deployments, vec!["live".to_owned()], "lapsed leases are not live");
    assert_eq!(snap.month_usage.get("api_calls"), Some(&10));
    assert!(store.license_snapshot("lic_missing", t0()).await.expect("snapshot").is_none());
}

async fn api_keys_round_trip(store: Arc<dyn Store>) {
    let key = ApiKeyRecord {
        id: new_id("ak"),
        name: "ci".into(),
        secret_sha256: "ab".repeat(32),
        scopes: vec![Scope::Read, Scope::Write],
        created_at: t0(),
        revoked_at: None,
    };
    store.commit(None, vec![Write::PutApiKey(key.clone())]).await.expect("put");
    assert_eq!(store.get_api_key(&key.id).await.expect("get"), Some(key.clone()));
    let revoked = ApiKeyRecord { revoked_at: Some(t0()), ..key.clone() };
    store.commit(None, vec![Write::PutApiKey(revoked.clone())]).await.expect("revoke");
    assert_eq!(store.list_api_keys().await.expect("list"), vec![revoked]);
    assert!(store.get_api_key("ak_missing").await.expect("get").is_none());
}

/// Ids come from URLs and tokens: one larger than any key a store can hold is simply absent,
/// never a store failure (DynamoDB refuses keys over 2 KB; that was a 503).
async fn oversized_ids_are_absent(store: Arc<dyn Store>) {
    let huge = format!("ak_{}", "x".repeat(3000));
    assert_eq!(store.get_api_key(&huge).await.expect("an absent api key, not an error"), None);
    assert_eq!(store.get_customer(&huge).await.expect("an absent customer, not an error"), None);
    assert_eq!(store.get_license(&huge).await.expect("an absent license, not an error"), None);
}

async fn audit_filters_newest_first(store: Arc<dyn Store>) {
    let mut writes = Vec::new();
    for i in 0..6 {
        let actor = if i % 2 == 0 { "alice" } else { "bob" };
        writes.push(Write::Audit(audit(actor, &format!("license:{}", i % 3), t0() + Duration::minutes(i))));
    }
    store.commit(None, writes).await.expect("audit");
    let all = store.list_audit(&AuditFilter::default(), &PageRequest::first(100)).await.expect("all");
    let times: Vec<_> = all.items.iter().map(|e| e.at).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(all.items.len(), 6);

    let alice = AuditFilter { actor: Some("alice".into()), ..Default::default() };
    assert_eq!(store.list_audit(&alice, &PageRequest::first(100)).await.expect("alice").items.len(), 3);
    let target = AuditFilter { target: Some("license:1".into()), ..Default::default() };
    assert_eq!(store.list_audit(&target, &PageRequest::first(100)).await.expect("target").items.len(), 2);
    let window = AuditFilter {
        since: Some(t0() + Duration::minutes(2)),
        until: Some(t0() + Duration::minutes(4)),
        ..Default::default()
    };
    assert_eq!(store.list_audit(&window, &PageRequest::first(100)).await.expect("window").items.len(), 2);

    let first = store.list_audit(&AuditFilter::default(), &PageRequest::first(4)).await.expect("page 1");
    assert_eq!(first.items.len(), 4);
    let rest = store
        .list_audit(&AuditFilter::default(), &PageRequest { limit: 4, cursor: first.next_cursor.clone() })
        .await
        .expect("page 2");
    assert_eq!(rest.items.len(), 2);
    assert!(rest.items.iter().all(|e| !first.items.contains(e)));
}

fn notice(license_id: &str, window: &str, by: &str, at: Timestamp) -> NotificationRecord {
    NotificationRecord {
        key: NotificationKey {
            license_id: license_id.to_owned(),
            notice: "renewal_reminder_7d".to_owned(),
            window: window.to_owned(),
        },
        recipient: "ops@example.com".to_owned(),
        subject: "Your license renews soon".to_owned(),
        state: NotificationState::Pending { claimed_by: by.to_owned(), claimed_at: at },
    }
}

async fn notification_claims(store: Arc<dyn Store>) {
    let stale = Duration::minutes(15);
    let n = notice("lic_1", "2026-12-01", "run-a", t0());
    assert_eq!(store.claim_notification(&n, t0(), stale).await.expect("claim"), ClaimOutcome::Claimed);
    let other = notice("lic_1", "2026-12-01", "run-b", t0() + Duration::minutes(1));
    assert_eq!(
        store.claim_notification(&other, t0() + Duration::minutes(1), stale).await.expect("claim"),
        ClaimOutcome::HeldByOther
    );
    // run-a died between claim and send: after the stale timeout, run-b may take over.
    let later = t0() + Duration::minutes(16);
    let takeover = notice("lic_1", "2026-12-01", "run-b", later);
    assert_eq!(
        store.claim_notification(&takeover, later, stale).await.expect("claim"),
        ClaimOutcome::Claimed
    );
    // run-a wakes up and tries to mark what run-b now holds.
    assert!(
        matches!(
            store.mark_notification_sent(&takeover.key, "run-a", later, "msg-a").await,
            Err(StoreError::Conflict(_))
        ),
        "a run marked a notice another run holds"
    );
    store.mark_notification_sent(&takeover.key, "run-b", later, "msg-1").await.expect("mark");
    // A repeated mark (the answer to the first was lost) succeeds; another message id does not.
    store.mark_notification_sent(&takeover.key, "run-b", later, "msg-1").await.expect("mark again");
    assert!(matches!(
        store.mark_notification_sent(&takeover.key, "run-a", later, "msg-a").await,
        Err(StoreError::Conflict(_))
    ));
    let missing = NotificationKey { window: "2099-01-01".into(), ..takeover.key.clone() };
    assert!(matches!(
        store.mark_notification_sent(&missing, "run-b", later, "m").await,
        Err(StoreError::NotFound(_))
    ));
    let much_later = later + Duration::days(1);
    assert_eq!(
        store
            .claim_notification(&notice("lic_1", "2026-12-01", "run-c", much_later), much_later, stale)
            .await
            .expect("c"),
        ClaimOutcome::AlreadySent
    );
    let listed = store.list_notifications("lic_1").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, NotificationState::Sent { sent_at: later, message_id: "msg-1".into() });
    assert!(store.list_notifications("lic_2").await.expect("list").is_empty());
}

async fn concurrent_notification_claims_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let n = notice("lic_1", "w", &format!("run-{i}"), t0());
            tokio::spawn(async move { store.claim_notification(&n, t0(), Duration::minutes(15)).await })
        })
        .collect();
    let mut claimed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(ClaimOutcome::Claimed) => claimed += 1,
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(claimed, 1);
}

async fn validation_logs_newest_first(store: Arc<dyn Store>) {
    let entries: Vec<_> = (0..5)
        .map(|i| ValidationLogEntry {
            license_id: if i == 4 { "lic_b".into() } else { "lic_a".into() },
            at: t0() + Duration::seconds(i),
            code: "VALID".into(),
            deployment_id: Some(format!("d{i}")),
            fingerprint: None,
            client_ip: Some("127.0.0.1".into()),
            // One registry entry among them: every store round-trips it.
            registry: (i == 3).then(|| crate::model::RegistryAccessRecord {
                repository: "nectar/app".into(),
                requested: vec!["pull".into(), "push".into()],
                granted: vec!["pull".into()],
            }),
        })
        .collect();
    store.append_validation_logs(&entries).await.expect("append");
    let got = store.list_validation_logs("lic_a", 2).await.expect("list");
    assert_eq!(
        got.iter().map(|e| e.deployment_id.clone().unwrap_or_default()).collect::<Vec<_>>(),
        ["d3", "d2"]
    );
    assert_eq!(got[0].registry, entries[3].registry);
}

/// A staff user as `nls staff create` would make it (lower-case email, version 1), with times
/// that carry nanoseconds so a store that rounds them fails the round trip.
fn staff_user(email: &str, role: StaffRole) -> StaffUser {
    let at = t0() + Duration::nanoseconds(123_456_789);
    StaffUser {
        id: new_id("stf"),
        email: email.to_owned(),
        name: format!("Staff {email}"),
        role,
        // Not a real hash: stores keep the string as given.
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${}", email.len()),
        totp_secret: None,
        totp_last_step: None,
        disabled: false,
        sessions_valid_after: at,
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

async fn create_staff(store: &Arc<dyn Store>, user: &StaffUser) {
    let entry = audit("cli", &format!("staff_user:{}", user.id), t0());
    store
        .commit(None, vec![Write::CreateStaffUser(user.clone()), Write::Audit(entry)])
        .await
        .expect("create staff user");
}

async fn staff_users_get_find_and_list(store: Arc<dyn Store>) {
    let mut carol = staff_user("carol@nectar.example", StaffRole::Admin);
    carol.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
    carol.totp_last_step = Some(59_000_123);
    let alice = staff_user("alice@nectar.example", StaffRole::Viewer);
    let bob = StaffUser { disabled: true, ..staff_user("bob@nectar.example", StaffRole::Billing) };
    for user in [&carol, &alice, &bob] {
        create_staff(&store, user).await;
    }

    assert_eq!(store.get_staff_user(&carol.id).await.expect("get"), Some(carol.clone()), "exact round trip");
    assert_eq!(store.get_staff_user(&bob.id).await.expect("get"), Some(bob.clone()));
    assert!(store.get_staff_user("stf_missing").await.expect("get").is_none());

    let found = store.find_staff_user_by_email("Alice@Nectar.EXAMPLE").await.expect("find");
    assert_eq!(found, Some(alice.clone()), "the email is matched lower case");
    assert!(store.find_staff_user_by_email("dave@nectar.example").await.expect("find").is_none());
    assert!(store.find_staff_user_by_email("alice@nectar").await.expect("find").is_none(), "no prefix match");

    let listed = store.list_staff_users().await.expect("list");
    assert_eq!(listed, vec![alice, bob, carol], "ordered by email");
}

async fn staff_email_is_unique(store: Arc<dyn Store>) {
    let first = staff_user("ops@nectar.example", StaffRole::Support);
    create_staff(&store, &first).await;

    let same_email = staff_user("ops@nectar.example", StaffRole::Admin);
    let dup = store.commit(None, vec![Write::CreateStaffUser(same_email.clone())]).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "a taken email: {dup:?}");
    assert!(store.get_staff_user(&same_email.id).await.expect("get").is_none());

    let same_id = StaffUser { email: "other@nectar.example".into(), ..first.clone() };
    let dup = store.commit(None, vec![Write::CreateStaffUser(same_id)]).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "a taken id: {dup:?}");
    assert!(store.find_staff_user_by_email("other@nectar.example").await.expect("find").is_none());

    assert_eq!(store.list_staff_users().await.expect("list"), vec![first.clone()]);
    assert_eq!(store.find_staff_user_by_email("ops@nectar.example").await.expect("find"), Some(first));
}

async fn concurrent_staff_creates_one_email_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            let user = staff_user("race@nectar.example", StaffRole::Admin);
            tokio::spawn(async move { store.commit(None, vec![Write::CreateStaffUser(user)]).await })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(CommitOutcome::Applied) => created += 1,
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1, "one account per email");
    assert_eq!(store.list_staff_users().await.expect("list").len(), 1);
}

async fn staff_updates_are_versioned(store: Arc<dyn Store>) {
    let user = staff_user("ann@nectar.example", StaffRole::Support);
    create_staff(&store, &user).await;

    let later = t0() + Duration::minutes(5) + Duration::nanoseconds(7);
    let disabled = StaffUser {
        disabled: true,
        role: StaffRole::Billing,
        sessions_valid_after: later,
        updated_at: later,
        version: 2,
        ..user.clone()
    };
    store
        .commit(None, vec![Write::UpdateStaffUser { user: disabled.clone(), expected_version: 1 }])
        .await
        .expect("v1→v2");
    assert_eq!(store.get_staff_user(&user.id).await.expect("get"), Some(disabled.clone()));
    assert_eq!(
        store.find_staff_user_by_email("ann@nectar.example").await.expect("find"),
        Some(disabled.clone()),
        "the email still finds the updated user"
    );

    let stale = StaffUser { name: "stale".into(), version: 2, ..user.clone() };
    let result = store.commit(None, vec![Write::UpdateStaffUser { user: stale, expected_version: 1 }]).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "stale version: {result:?}");

    let renamed = StaffUser { email: "ann2@nectar.example".into(), version: 3, ..disabled.clone() };
    let result =
        store.commit(None, vec![Write::UpdateStaffUser { user: renamed, expected_version: 2 }]).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "the email may not change: {result:?}");
    assert!(store.find_staff_user_by_email("ann2@nectar.example").await.expect("find").is_none());
    assert_eq!(store.get_staff_user(&user.id).await.expect("get"), Some(disabled), "nothing changed");

    let ghost = staff_user("ghost@nectar.example", StaffRole::Viewer);
    let result = store.commit(None, vec![Write::UpdateStaffUser { user: ghost, expected_version: 1 }]).await;
    assert!(matches!(result, Err(StoreError::NotFound(_))), "update of a missing user: {result:?}");
    assert!(store.find_staff_user_by_email("ghost@nectar.example").await.expect("find").is_none());
}

fn session(token_sha256: &str, user_id: &str) -> StaffSession {
    let at = t0() + Duration::nanoseconds(987_654_321);
    StaffSession {
        token_sha256: token_sha256.to_owned(),
        user_id: user_id.to_owned(),
        csrf_token: format!("csrf-{token_sha256}"),
        created_at: at,
        last_seen_at: at,
        expires_at: at + Duration::hours(12),
    }
}

async fn staff_sessions_lifecycle(store: Arc<dyn Store>) {
    let user = staff_user("sam@nectar.example", StaffRole::Viewer);
    create_staff(&store, &user).await;
    let (a, b) = ("a1".repeat(32), "b2".repeat(32));
    let first = session(&a, &user.id);
    store.create_session(&first).await.expect("create");
    store.create_session(&session(&b, &user.id)).await.expect("a second session of the same user");
    assert_eq!(store.get_session(&a).await.expect("get"), Some(first.clone()), "exact round trip");
    assert!(store.get_session(&"c3".repeat(32)).await.expect("get").is_none());

    let taken = StaffSession { user_id: "stf_other".into(), ..first.clone() };
    let dup = store.create_session(&taken).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "a taken token hash: {dup:?}");
    assert_eq!(store.get_session(&a).await.expect("get"), Some(first.clone()), "the first session stays");

    let seen = first.last_seen_at + Duration::minutes(3) + Duration::nanoseconds(1);
    store.touch_session(&a, seen).await.expect("touch");
    let touched = store.get_session(&a).await.expect("get").expect("exists");
    assert_eq!(touched, StaffSession { last_seen_at: seen, ..first.clone() }, "only last_seen_at moves");
    store.touch_session(&a, seen - Duration::minutes(1)).await.expect("touch with an older time");
    let after = store.get_session(&a).await.expect("get").expect("exists");
    assert_eq!(after.last_seen_at, seen, "last_seen_at never moves backwards");
    store.touch_session(&"c3".repeat(32), seen).await.expect("touching a missing session is not an error");
    assert!(store.get_session(&"c3".repeat(32)).await.expect("get").is_none(), "touch creates nothing");

    store.delete_session(&a).await.expect("logout");
    assert!(store.get_session(&a).await.expect("get").is_none());
    assert!(store.get_session(&b).await.expect("get").is_some(), "other sessions stay");
    store.delete_session(&a).await.expect("a second logout is not an error");
    store.create_session(&first).await.expect("a deleted token hash can be used again");
}

async fn staff_commit_with_audit_is_all_or_nothing(store: Arc<dyn Store>) {
    let existing = staff_user("kim@nectar.example", StaffRole::Admin);
    create_staff(&store, &existing).await;
    let audit_rows = |store: Arc<dyn Store>| async move {
        let filter = AuditFilter { actor: Some("portal".into()), ..Default::default() };
        store.list_audit(&filter, &PageRequest::first(10)).await.expect("audit").items
    };

    let newcomer = staff_user("lee@nectar.example", StaffRole::Viewer);
    let result = store
        .commit(
            None,
            vec![
                Write::CreateStaffUser(newcomer.clone()),
                Write::Audit(audit("portal", &format!("staff_user:{}", newcomer.id), t0())),
                Write::CreateStaffUser(staff_user("kim@nectar.example", StaffRole::Viewer)),
            ],
        )
        .await;
    assert!(matches!(result, Err(StoreError::AlreadyExists(_))), "{result:?}");
    assert!(store.get_staff_user(&newcomer.id).await.expect("get").is_none(), "no partial commit");
    assert!(store.find_staff_user_by_email("lee@nectar.example").await.expect("find").is_none());
    assert!(audit_rows(Arc::clone(&store)).await.is_empty(), "no audit row from a failed commit");

    let disabled = StaffUser { disabled: true, version: 2, ..existing.clone() };
    let result = store
        .commit(
            None,
            vec![
                Write::Audit(audit("portal", &format!("staff_user:{}", existing.id), t0())),
                Write::UpdateStaffUser { user: disabled.clone(), expected_version: 7 },
            ],
        )
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert!(audit_rows(Arc::clone(&store)).await.is_empty(), "no audit row from a conflicting update");
    assert_eq!(store.get_staff_user(&existing.id).await.expect("get"), Some(existing.clone()));

    let entry = audit("portal", &format!("staff_user:{}", existing.id), t0());
    store
        .commit(
            None,
            vec![
                Write::UpdateStaffUser { user: disabled.clone(), expected_version: 1 },
                Write::Audit(entry.clone()),
            ],
        )
        .await
        .expect("update with its audit entry");
    assert_eq!(store.get_staff_user(&existing.id).await.expect("get"), Some(disabled));
    assert_eq!(audit_rows(Arc::clone(&store)).await, vec![entry], "the change and its audit entry together");
}

/// A second-factor code signs in once: of sign-ins racing with the same code, exactly one
/// records its step (a conditional write on the user's version); the others re-read and are
/// refused as a replay, and so is any later try with that code. The secret round-trips.
async fn concurrent_totp_sign_ins_one_code_one_winner(store: Arc<dyn Store>) {
    use crate::staff_changes::{StaffChangeError, accept_totp_code};
    use crate::totp::{DIGITS, TotpError, base32_decode, code_for_step, step_at};

    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let user =
        StaffUser { totp_secret: Some(secret.into()), ..staff_user("otp@nectar.example", StaffRole::Admin) };
    create_staff(&store, &user).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let step = step_at(t0().timestamp());
    let code = code_for_step(&base32_decode(secret).expect("base32"), step, DIGITS);

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, clock, user, code) =
                (Arc::clone(&store), Arc::clone(&clock), user.clone(), code.clone());
            tokio::spawn(async move { accept_totp_code(&*store, &*clock, &user, &code).await })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(after) => {
                accepted += 1;
                assert_eq!(after.totp_last_step, Some(step));
            }
            Err(StaffChangeError::Totp(TotpError::AlreadyUsed)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(accepted, 1, "one sign-in per code");
    let stored = store.get_staff_user(&user.id).await.expect("get").expect("user");
    assert_eq!((stored.totp_secret.as_deref(), stored.totp_last_step), (Some(secret), Some(step)));
    let again = accept_totp_code(&*store, &*clock, &stored, &code).await;
    assert!(matches!(again, Err(StaffChangeError::Totp(TotpError::AlreadyUsed))), "{again:?}");
}

/// A license only for an existing customer; a customer with licenses is not deleted.
async fn licenses_need_their_customer(store: Arc<dyn Store>) {
    let orphan = license_for("cus_nobody", None, None);
    let refused = store
        .commit(None, vec![Write::CreateLicense(orphan.clone()), Write::Audit(audit("a", "x", t0()))])
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound(_))), "license for no customer: {refused:?}");
    assert!(store.get_license(&orphan.id).await.expect("get").is_none(), "nothing written");
    let audit_rows = store.list_audit(&AuditFilter::default(), &PageRequest::first(10)).await.expect("audit");
    assert!(audit_rows.items.is_empty(), "no audit row from a refused commit");

    let l = given_license(&store, None).await;
    let delete = store.commit(None, vec![Write::DeleteCustomer { id: l.customer_id.clone() }]).await;
    assert!(matches!(delete, Err(StoreError::StillReferenced(_))), "delete with a license: {delete:?}");
    assert!(store.get_customer(&l.customer_id).await.expect("get").is_some());

    // A second license for a customer created in an earlier commit, and an update of that
    // customer in the same commit as a new license, both keep the customer undeletable.
    let mut c = store.get_customer(&l.customer_id).await.expect("get").expect("exists");
    c.name = "renamed".into();
    let second = license_for(&c.id, None, None);
    store
        .commit(None, vec![Write::UpdateCustomer(c.clone()), Write::CreateLicense(second)])
        .await
        .expect("update and license");
    let delete = store.commit(None, vec![Write::DeleteCustomer { id: c.id.clone() }]).await;
    assert!(matches!(delete, Err(StoreError::StillReferenced(_))), "{delete:?}");
    c.name = "renamed again".into();
    store.commit(None, vec![Write::UpdateCustomer(c.clone())]).await.expect("update alone");
    let delete = store.commit(None, vec![Write::DeleteCustomer { id: c.id.clone() }]).await;
    assert!(matches!(delete, Err(StoreError::StillReferenced(_))), "an update keeps the mark: {delete:?}");
}

/// Issue 19: deleting a customer while a license is created for it, with real concurrency.
/// Exactly one of the two wins, and no license is ever left pointing at a deleted customer.
async fn customer_delete_races_license_create(store: Arc<dyn Store>) {
    let (mut deleted, mut licensed) = (0, 0);
    for round in 0..12 {
        let c = customer(&format!("race{round}"), None);
        store.commit(None, vec![Write::CreateCustomer(c.clone())]).await.expect("create customer");
        let license = license_for(&c.id, None, None);
        let delete = {
            let store = Arc::clone(&store);
            let id = c.id.clone();
            tokio::spawn(async move { store.commit(None, vec![Write::DeleteCustomer { id }]).await })
        };
        let create = {
            let store = Arc::clone(&store);
            let license = license.clone();
            tokio::spawn(async move { store.commit(None, vec![Write::CreateLicense(license)]).await })
        };
        let (delete, create) = (delete.await.expect("task"), create.await.expect("task"));
        let customer_left = store.get_customer(&c.id).await.expect("get customer");
        let license_left = store.get_license(&license.id).await.expect("get license");
        match (&delete, &create) {
            (Ok(_), Err(StoreError::NotFound(_))) => {
                deleted += 1;
                assert!(customer_left.is_none() && license_left.is_none(), "round {round}: delete won");
            }
            (Err(StoreError::StillReferenced(_)), Ok(_)) => {
                licensed += 1;
                assert!(customer_left.is_some() && license_left.is_some(), "round {round}: license won");
            }
            other => panic!("round {round}: exactly one must win: {other:?}"),
        }
        let by_customer = LicenseFilter { customer_id: Some(c.id.clone()), ..Default::default() };
        let licenses = store.list_licenses(&by_customer, &PageRequest::first(10)).await.expect("list");
        assert!(licenses.items.is_empty() || customer_left.is_some(), "round {round}: an orphan license");
    }
    assert_eq!(deleted + licensed, 12);
}

/// Every page of `query`, `limit` rows at a time; a page may be short (a store that stops at a
/// read bound), but never longer than asked, and the cursor must lead on without repeats.
async fn search_all(
    store: &Arc<dyn Store>,
    query: &crate::license_search::LicenseQuery,
    limit: u32,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut page = PageRequest::first(limit);
    for _ in 0..1000 {
        let got = store.search_licenses(query, &page).await.expect("search");
        assert!(got.items.len() <= limit as usize, "a page longer than its limit: {query:?}");
        seen.extend(got.items.into_iter().map(|l| l.id));
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return seen,
        }
    }
    panic!("search {query:?} did not end");
}

async fn license_search_filters_sorts_and_pages(store: Arc<dyn Store>) {
    use crate::license_search::{LicenseQuery, LicenseSort, LicenseSortField, SortDirection};
    let mut orbit = customer("orbit", None);
    orbit.name = "Orbit Labs".into();
    orbit.email = "Ops@Orbit.example".into();
    let mut zeta = customer("zeta", None);
    zeta.name = "Zeta Works".into();
    let mut writes = vec![Write::CreateCustomer(orbit.clone()), Write::CreateCustomer(zeta.clone())];
    let mut all = Vec::new();
    // (customer, hours after t0 created, days to expiry, tier, features, status, subscription)
    type Row<'a> = (&'a Customer, i64, Option<i64>, &'a str, &'a [&'a str], LicenseStatus, Option<&'a str>);
    let rows: [Row<'_>; 7] = [
        (&orbit, 1, Some(30), "standard", &["sso"], LicenseStatus::Active, None),
        (&orbit, 2, None, "enterprise", &["sso", "audit_log"], LicenseStatus::Active, Some("sub_orbit")),
        (&orbit, 3, Some(10), "standard", &[], LicenseStatus::Suspended, None),
        (&zeta, 4, Some(12), "standard", &["audit_log"], LicenseStatus::Active, None),
        (&zeta, 5, Some(90), "enterprise", &["sso"], LicenseStatus::PastDue, None),
        (&zeta, 6, None, "standard", &[], LicenseStatus::Active, None),
        (&zeta, 7, Some(5), "standard", &["sso"], LicenseStatus::Expired, None),
    ];
    for (c, hours, days, tier, features, status, sub) in rows {
        let mut l = license_for(&c.id, None, days.map(|d| t0() + Duration::days(d)));
        l.created_at = t0() + Duration::hours(hours);
        l.tier = tier.into();
        l.features = features.iter().map(|f| (*f).to_owned()).collect();
        l.status = status;
        l.stripe_subscription_id = sub.map(str::to_owned);
        all.push(l.clone());
        writes.push(Write::CreateLicense(l));
    }
    store.commit(None, writes).await.expect("create");
    let customer_of = |l: &License| if l.customer_id == orbit.id { orbit.clone() } else { zeta.clone() };
    let ids = |indexes: &[usize]| indexes.iter().map(|i| all[*i].id.clone()).collect::<Vec<_>>();

    // Hand-checked answers: the default sort is newest first.
    let newest_first = search_all(&store, &LicenseQuery::default(), 2).await;
    assert_eq!(newest_first, ids(&[6, 5, 4, 3, 2, 1, 0]));
    let by_expiry = LicenseQuery {
        sort: LicenseSort { field: LicenseSortField::ExpiresAt, direction: SortDirection::Ascending },
        ..Default::default()
    };
    let got = search_all(&store, &by_expiry, 3).await;
    assert_eq!(got[..5], ids(&[6, 2, 3, 0, 4])[..], "dated first, soonest first");
    let mut perpetual = ids(&[1, 5]);
    perpetual.sort();
    assert_eq!(got[5..], perpetual[..], "perpetual last, by id");
    let text = |t: &str| LicenseQuery { text: Some(t.into()), ..Default::default() };
    assert_eq!(search_all(&store, &text("orbit"), 2).await, ids(&[2, 1, 0]), "customer name");
    assert_eq!(search_all(&store, &text("ops@ORBIT"), 2).await, ids(&[2, 1, 0]), "email, any case");
    assert_eq!(search_all(&store, &text(&all[4].key_id.to_uppercase()), 2).await, ids(&[4]), "key id");
    assert_eq!(search_all(&store, &text(&all[3].id[4..12]), 2).await, ids(&[3]), "part of the id");
    let sso_standard =
        LicenseQuery { tier: Some("standard".into()), feature: Some("sso".into()), ..Default::default() };
    assert_eq!(search_all(&store, &sso_standard, 1).await, ids(&[6, 0]));
    let by_sub = LicenseQuery { stripe_subscription_id: Some("sub_orbit".into()), ..Default::default() };
    assert_eq!(search_all(&store, &by_sub, 5).await, ids(&[1]));

    // Every sort and direction, with each filter, agrees with the reference rule.
    let filters = [
        LicenseQuery::default(),
        LicenseQuery { status: Some(LicenseStatus::Active), ..Default::default() },
        LicenseQuery { expires_before: Some(t0() + Duration::days(30)), ..Default::default() },
        LicenseQuery { customer_id: Some(zeta.id.clone()), ..Default::default() },
        LicenseQuery { tier: Some("enterprise".into()), ..Default::default() },
        LicenseQuery {
            customer_id: Some(orbit.id.clone()),
            feature: Some("sso".into()),
            ..Default::default()
        },
        text("works"),
        text("no such thing"),
    ];
    for filter in filters {
        for field in LicenseSortField::ALL {
            for direction in [SortDirection::Ascending, SortDirection::Descending] {
                let query = LicenseQuery { sort: LicenseSort { field, direction }, ..filter.clone() };
                let matching = all.iter().filter(|l| query.matches(l, Some(&customer_of(l)))).cloned();
                let expected: Vec<String> =
                    crate::license_search::page_in_memory(&query.sort, matching, None, usize::MAX)
                        .expect("reference")
                        .items
                        .into_iter()
                        .map(|l| l.id)
                        .collect();
                assert_eq!(search_all(&store, &query, 2).await, expected, "{query:?}");
            }
        }
    }

    // A status change moves a license between filters (index keys follow updates).
    let mut changed = all[0].clone();
    changed.status = LicenseStatus::Suspended;
    changed.expires_at = Some(t0() + Duration::days(200));
    changed.version += 1;
    store
        .commit(None, vec![Write::UpdateLicense { license: changed, expected_version: all[0].version }])
        .await
        .expect("update");
    let suspended = LicenseQuery { status: Some(LicenseStatus::Suspended), ..Default::default() };
    assert_eq!(search_all(&store, &suspended, 10).await, ids(&[2, 0]));
    let latest = search_all(&store, &by_expiry, 10).await;
    assert_eq!(latest[4], all[0].id, "the new expiry sorts after 90 days");

    for garbage in ["not a cursor!", "", "created.asc.Zm9v"] {
        let page = PageRequest { limit: 10, cursor: Some(garbage.to_owned()) };
        let got = store.search_licenses(&LicenseQuery::default(), &page).await;
        assert!(matches!(got, Err(StoreError::InvalidCursor(_))), "{garbage:?}: {got:?}");
    }
}
