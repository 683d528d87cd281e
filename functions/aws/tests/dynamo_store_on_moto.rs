//! DynamoStore against a real DynamoDB-compatible server (moto, started by the test itself).
//! GIVEN / WHEN / THEN, one fresh table per test.

mod moto_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, TimeZone, Utc};
use nls_core::lifecycle::LicenseStatus;
use nls_core::model::*;
use nls_core::ports::*;

use moto_support::fresh_table;

fn at(text: &str) -> Timestamp {
    DateTime::parse_from_rfc3339(text).expect("test timestamp").with_timezone(&Utc)
}

fn now() -> Timestamp {
    at("2026-11-30T12:00:00Z")
}

fn customer(id: &str, stripe: Option<&str>) -> Customer {
    Customer {
        id: id.into(),
        name: format!("Customer {id}"),
        email: format!("{id}@example.com"),
        stripe_customer_id: stripe.map(Into::into),
        reminders_opt_out: false,
        created_at: now(),
        updated_at: now(),
    }
}

fn license(id: &str, customer_id: &str) -> License {
    License {
        id: id.into(),
        customer_id: customer_id.into(),
        status: LicenseStatus::Active,
        tier: "pro".into(),
        features: vec!["sso".into(), "audit".into()],
        limits: BTreeMap::from([("api_calls".into(), 1_000_000)]),
        max_deployments: Some(5),
        offline_days: 30,
        grace_days: 7,
        expires_at: Some(at("2027-01-15T08:30:00.123456789Z")),
        grace_ends_at: None,
        key_id: format!("jti-{id}"),
        stripe_subscription_id: None,
        stripe_price_id: None,
        billing_event_at: None,
        registry: Some(nls_core::model::RegistryGrant {
            repositories: vec!["nectar/app".into(), "nectar/worker-*".into()],
            actions: vec!["pull".into()],
        }),
        suspension_reason: None,
        // The cloud grant (docs/cloud-access.md) round-trips as JSON text.
        cloud: Some(BTreeMap::from([(
            "workflows".to_owned(),
            nls_core::access_token::CloudLimits {
                requests_per_minute: 600,
                burst: 50,
                monthly_quota: Some(1000),
            },
        )])),
        version: 1,
        created_at: now(),
        updated_at: now(),
    }
}

fn deployment(license_id: &str, deployment_id: &str) -> Deployment {
    Deployment {
        license_id: license_id.into(),
        deployment_id: deployment_id.into(),
        fingerprint: Some(format!("fp-{deployment_id}")),
        app_version: Some("1.0.0".into()),
        activated_at: now(),
        last_heartbeat_at: now(),
        lease_expires_at: now(),
    }
}

fn policy(max: Option<u32>) -> ActivationPolicy {
    ActivationPolicy {
        max_deployments: max,
        lease: Duration::hours(1),
        churn_window: Duration::hours(24),
        churn_max: 10_000,
    }
}

fn audit(id: &str, at_time: Timestamp, actor: &str, target: &str) -> AuditEntry {
    AuditEntry {
        id: id.into(),
        at: at_time,
        actor: actor.into(),
        action: "license.update".into(),
        target: target.into(),
        before: Some(serde_json::json!({"tier": "basic"})),
        after: Some(serde_json::json!({"tier": "pro", "n": [1, 2]})),
    }
}

async fn create(store: &impl UnitOfWork, writes: Vec<Write>) {
    assert_eq!(store.commit(None, writes).await.expect("commit"), CommitOutcome::Applied);
}

/// Licenses need their customer (issue 19: no license outlives its customer).
async fn given_customers(store: &impl UnitOfWork, ids: &[&str]) {
    let writes = ids.iter().map(|id| Write::CreateCustomer(customer(id, None))).collect();
    create(store, writes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_round_trip_page_and_keep_stripe_ids_unique() {
    let t = fresh_table().await;
    // GIVEN five customers, one with a Stripe id
    let mut writes: Vec<Write> =
        (1..=4).map(|i| Write::CreateCustomer(customer(&format!("c{i}"), None))).collect();
    writes.push(Write::CreateCustomer(customer("c5", Some("cus_5"))));
    create(&t.store, writes).await;

    // THEN each reads back exactly, and by Stripe id
    assert_eq!(t.store.get_customer("c5").await.unwrap(), Some(customer("c5", Some("cus_5"))));
    assert_eq!(
        t.store.find_customer_by_stripe_id("cus_5").await.unwrap(),
        Some(customer("c5", Some("cus_5")))
    );
    assert_eq!(t.store.get_customer("nope").await.unwrap(), None);

    // WHEN the id or the Stripe id is taken THEN AlreadyExists, and nothing was written
    let taken = t.store.commit(None, vec![Write::CreateCustomer(customer("c1", None))]).await;
    assert!(matches!(taken, Err(StoreError::AlreadyExists(_))), "{taken:?}");
    let stripe_taken = t.store.commit(None, vec![Write::CreateCustomer(customer("c9", Some("cus_5")))]).await;
    assert!(matches!(stripe_taken, Err(StoreError::AlreadyExists(_))), "{stripe_taken:?}");
    assert_eq!(t.store.get_customer("c9").await.unwrap(), None);

    // WHEN listing two at a time THEN pages follow id order and end
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let result = t.store.list_customers(&page).await.unwrap();
        assert!(result.items.len() <= 2);
        seen.extend(result.items.iter().map(|c| c.id.clone()));
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["c1", "c2", "c3", "c4", "c5"]);

    // WHEN a customer is updated (new Stripe id) THEN the old Stripe id is free again
    let mut updated = customer("c5", Some("cus_5b"));
    updated.name = "Renamed".into();
    create(&t.store, vec![Write::UpdateCustomer(updated.clone())]).await;
    assert_eq!(t.store.get_customer("c5").await.unwrap(), Some(updated.clone()));
    assert_eq!(t.store.find_customer_by_stripe_id("cus_5b").await.unwrap(), Some(updated));
    create(&t.store, vec![Write::CreateCustomer(customer("c6", Some("cus_5")))]).await;

    // WHEN deleted THEN gone, a second delete is NotFound, and its Stripe id is reusable
    create(&t.store, vec![Write::DeleteCustomer { id: "c6".into() }]).await;
    assert_eq!(t.store.get_customer("c6").await.unwrap(), None);
    let again = t.store.commit(None, vec![Write::DeleteCustomer { id: "c6".into() }]).await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");
    let missing = t.store.commit(None, vec![Write::UpdateCustomer(customer("c6", None))]).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    create(&t.store, vec![Write::CreateCustomer(customer("c7", Some("cus_5")))]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn licenses_update_optimistically_filter_and_page() {
    let t = fresh_table().await;
    given_customers(&t.store, &["c1", "c2"]).await;
    let mut with_sub = license("l2", "c1");
    with_sub.stripe_subscription_id = Some("sub_2".into());
    with_sub.stripe_price_id = Some("price_pro".into());
    with_sub.billing_event_at = Some(1_790_000_000);
    with_sub.grace_ends_at = Some(at("2026-12-07T00:00:00Z"));
    with_sub.max_deployments = None;
    create(
        &t.store,
        vec![
            Write::CreateLicense(license("l1", "c1")),
            Write::CreateLicense(with_sub.clone()),
            Write::CreateLicense(license("l3", "c2")),
        ],
    )
    .await;
    assert_eq!(t.store.get_license("l2").await.unwrap(), Some(with_sub.clone()));
    assert_eq!(t.store.find_license_by_subscription("sub_2").await.unwrap(), Some(with_sub));
    assert_eq!(t.store.find_license_by_subscription("sub_x").await.unwrap(), None);

    // Optimistic version: the right expected version wins, a stale one conflicts.
    let mut renewed = license("l1", "c1");
    renewed.version = 2;
    renewed.tier = "enterprise".into();
    create(&t.store, vec![Write::UpdateLicense { license: renewed.clone(), expected_version: 1 }]).await;
    assert_eq!(t.store.get_license("l1").await.unwrap(), Some(renewed.clone()));
    let stale = t
        .store
        .commit(None, vec![Write::UpdateLicense { license: renewed.clone(), expected_version: 1 }])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let ghost = t
        .store
        .commit(None, vec![Write::UpdateLicense { license: license("l9", "c1"), expected_version: 1 }])
        .await;
    assert!(matches!(ghost, Err(StoreError::NotFound(_))), "{ghost:?}");

    // A commit is all or nothing: the new license is not written when the update conflicts.
    let mixed = t
        .store
        .commit(
            None,
            vec![
                Write::CreateLicense(license("l4", "c1")),
                Write::UpdateLicense { license: renewed, expected_version: 1 },
            ],
        )
        .await;
    assert!(matches!(mixed, Err(StoreError::Conflict(_))), "{mixed:?}");
    assert_eq!(t.store.get_license("l4").await.unwrap(), None);

    // Filters: by customer (by_customer index), by status, by expiry.
    let by_customer = t
        .store
        .list_licenses(
            &LicenseFilter { customer_id: Some("c1".into()), ..Default::default() },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(by_customer.items.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["l1", "l2"]);
    let first = t.store.list_licenses(&LicenseFilter::default(), &PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["l1", "l2"]);
    let rest = t
        .store
        .list_licenses(&LicenseFilter::default(), &PageRequest { limit: 2, cursor: first.next_cursor })
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["l3"]);
    assert_eq!(rest.next_cursor, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiring_licenses_come_from_day_partitions_not_a_scan() {
    let t = fresh_table().await;
    given_customers(&t.store, &["c1"]).await;
    let expiring = |id: &str, when: &str| {
        let mut l = license(id, "c1");
        l.expires_at = Some(at(when));
        Write::CreateLicense(l)
    };
    let mut perpetual = license("perpetual", "c1");
    perpetual.expires_at = None;
    create(
        &t.store,
        vec![
            expiring("before", "2026-12-01T09:59:59Z"),
            expiring("from-edge", "2026-12-01T10:00:00Z"),
            expiring("mid", "2026-12-03T23:59:59Z"),
            expiring("to-edge", "2026-12-05T10:00:00Z"),
            expiring("after", "2026-12-09T00:00:00Z"),
            Write::CreateLicense(perpetual),
        ],
    )
    .await;
    t.requests.reset();
    let found = t
        .store
        .licenses_expiring_between(at("2026-12-01T10:00:00Z"), at("2026-12-05T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["from-edge", "mid"]);
    let counts = t.requests.counts();
    assert_eq!(counts.get("Scan"), None);
    assert_eq!(counts.get("Query"), Some(&5), "one Query per day 12-01..=12-05: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_hundred_concurrent_activations_take_exactly_the_limit() {
    let t = fresh_table().await;
    let store = Arc::new(t.store);
    // WHEN 200 distinct deployments activate at once against a limit of 5
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .activate_deployment(&deployment("lic", &format!("d{i:03}")), &policy(Some(5)), now())
                    .await
            })
        })
        .collect();
    let mut activated = BTreeSet::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task").expect("activation") {
            Activation::Activated(d) => {
                activated.insert(d.deployment_id);
            }
            Activation::LimitReached { live } => {
                assert_eq!(live, 5);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // THEN exactly five won, and the store agrees
    assert_eq!(activated.len(), 5);
    assert_eq!(refused, 195);
    let listed: BTreeSet<String> =
        store.list_deployments("lic").await.unwrap().into_iter().map(|d| d.deployment_id).collect();
    assert_eq!(listed, activated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_renew_lapse_release_and_limit_churn() {
    let t = fresh_table().await;
    let limit_two = policy(Some(2));
    let first = t.store.activate_deployment(&deployment("lic", "a"), &limit_two, now()).await.unwrap();
    let Activation::Activated(a) = first else { panic!("{first:?}") };
    assert_eq!(a.lease_expires_at, now() + Duration::hours(1));
    assert_eq!(a.fingerprint.as_deref(), Some("fp-a"));

    // Activating a live deployment again renews it.
    let later = now() + Duration::minutes(10);
    let again = t.store.activate_deployment(&deployment("lic", "a"), &limit_two, later).await.unwrap();
    let Activation::AlreadyActive(renewed) = again else { panic!("{again:?}") };
    assert_eq!(renewed.lease_expires_at, later + Duration::hours(1));
    assert_eq!(renewed.activated_at, now());

    // A heartbeat is exactly one write.
    t.requests.reset();
    let beat = t.store.heartbeat("lic", "a", Some("1.1.0"), later, later + Duration::hours(2)).await.unwrap();
    let beat = beat.expect("live lease");
    assert_eq!(beat.app_version.as_deref(), Some("1.1.0"));
    assert_eq!(beat.lease_expires_at, later + Duration::hours(2));
    assert_eq!(t.requests.counts(), BTreeMap::from([("UpdateItem".to_owned(), 1)]));
    assert_eq!(t.store.heartbeat("lic", "unknown", None, later, later).await.unwrap(), None);
    assert_eq!(t.store.heartbeat("nolicense", "a", None, later, later).await.unwrap(), None);

    // Once the lease ran out, a heartbeat no longer revives it and the seat is free.
    let lapsed = later + Duration::hours(3);
    assert_eq!(t.store.heartbeat("lic", "a", None, lapsed, lapsed + Duration::hours(1)).await.unwrap(), None);
    t.store.activate_deployment(&deployment("lic", "b"), &limit_two, lapsed).await.unwrap();
    let c = t.store.activate_deployment(&deployment("lic", "c"), &limit_two, lapsed).await.unwrap();
    assert!(matches!(c, Activation::Activated(_)), "{c:?}");
    let d = t.store.activate_deployment(&deployment("lic", "d"), &limit_two, lapsed).await.unwrap();
    assert_eq!(d, Activation::LimitReached { live: 2 });
    // The lapsed lease is still on record (listed), but not live.
    let listed: Vec<String> =
        t.store.list_deployments("lic").await.unwrap().into_iter().map(|d| d.deployment_id).collect();
    assert_eq!(listed, ["a", "b", "c"]);

    // Release frees a seat once.
    assert!(t.store.release_deployment("lic", "b").await.unwrap());
    assert!(!t.store.release_deployment("lic", "b").await.unwrap());
    assert!(!t.store.release_deployment("nolicense", "b").await.unwrap());

    // Churn: at most two new activations per window, however many seats are free.
    let churny = ActivationPolicy { churn_max: 2, ..policy(None) };
    for id in ["x1", "x2"] {
        let r = t.store.activate_deployment(&deployment("churn", id), &churny, now()).await.unwrap();
        assert!(matches!(r, Activation::Activated(_)), "{r:?}");
        t.store.release_deployment("churn", id).await.unwrap();
    }
    let third = t.store.activate_deployment(&deployment("churn", "x3"), &churny, now()).await.unwrap();
    assert_eq!(third, Activation::ChurnLimited);
    let next_day = now() + Duration::hours(25);
    let later_one = t.store.activate_deployment(&deployment("churn", "x3"), &churny, next_day).await.unwrap();
    assert!(matches!(later_one, Activation::Activated(_)), "{later_one:?}");
}

fn batch(batch_id: &str) -> UsageBatch {
    UsageBatch {
        license_id: "lic".into(),
        deployment_id: "d1".into(),
        batch_id: batch_id.into(),
        records: vec![
            UsageRecord { metric: "api_calls".into(), value: 10, at: at("2026-11-29T23:00:00Z") },
            UsageRecord { metric: "api_calls".into(), value: 5, at: at("2026-11-30T01:00:00Z") },
            UsageRecord { metric: "seats".into(), value: 2, at: at("2026-11-30T02:00:00Z") },
            UsageRecord { metric: "api_calls".into(), value: 7, at: at("2026-10-31T23:59:59Z") },
        ],
        received_at: now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_usage_batch_replayed_fifty_times_at_once_counts_once() {
    let t = fresh_table().await;
    let store = Arc::new(t.store);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.record_usage_batch(&batch("b-1")).await })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        if task.await.expect("task").expect("record") == BatchOutcome::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    let counters = |period: &'static str| {
        let store = store.clone();
        async move { store.usage_counters("lic", period).await.unwrap() }
    };
    assert_eq!(counters("2026-11").await, BTreeMap::from([("api_calls".into(), 15), ("seats".into(), 2)]));
    assert_eq!(counters("2026-10").await, BTreeMap::from([("api_calls".into(), 7)]));
    assert_eq!(counters("2026-11-30").await, BTreeMap::from([("api_calls".into(), 5), ("seats".into(), 2)]));
    assert_eq!(counters("2026-11-29").await, BTreeMap::from([("api_calls".into(), 10)]));
    assert_eq!(counters("2026-09").await, BTreeMap::new());
    // A different batch adds.
    assert_eq!(store.record_usage_batch(&batch("b-2")).await.unwrap(), BatchOutcome::Recorded);
    assert_eq!(counters("2026-11").await, BTreeMap::from([("api_calls".into(), 30), ("seats".into(), 4)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_deliveries_of_one_webhook_event_apply_once() {
    let t = fresh_table().await;
    given_customers(&t.store, &["c1"]).await;
    let store = Arc::new(t.store);
    let event = WebhookEventRecord {
        event_id: "evt_1".into(),
        event_type: "checkout.session.completed".into(),
        received_at: now(),
    };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let event = event.clone();
            tokio::spawn(async move {
                let writes = vec![
                    Write::CreateLicense(license("from-stripe", "c1")),
                    Write::Audit(audit(&format!("audit-{i}"), now(), "stripe", "license:from-stripe")),
                ];
                store.commit(Some(OnceGuard::WebhookEvent(event)), writes).await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        match task.await.expect("task").expect("commit") {
            CommitOutcome::Applied => applied += 1,
            CommitOutcome::Duplicate => {}
        }
    }
    assert_eq!(applied, 1);
    let audit = store.list_audit(&AuditFilter::default(), &PageRequest::first(100)).await.unwrap();
    assert_eq!(audit.items.len(), 1, "only the applied delivery wrote its audit entry");
    // A later replay is a duplicate too, even with different writes.
    let replay = store
        .commit(Some(OnceGuard::WebhookEvent(event)), vec![Write::CreateLicense(license("other", "c1"))])
        .await;
    assert_eq!(replay.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(store.get_license("other").await.unwrap(), None);
}

fn notice(claimed_by: &str, claimed_at: Timestamp) -> NotificationRecord {
    NotificationRecord {
        key: NotificationKey {
            license_id: "lic".into(),
            notice: "renewal_reminder_7d".into(),
            window: "2026-12-07".into(),
        },
        recipient: "ops@example.com".into(),
        subject: "Your license renews in 7 days".into(),
        state: NotificationState::Pending { claimed_by: claimed_by.into(), claimed_at },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn notices_are_claimed_once_taken_over_when_stale_and_never_resent() {
    let t = fresh_table().await;
    let store = Arc::new(t.store);
    let stale_after = Duration::minutes(15);
    // Twenty overlapping runs: one claim wins.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.claim_notification(&notice(&format!("run-{i}"), now()), now(), stale_after).await
            })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        match task.await.expect("task").expect("claim") {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::HeldByOther => {}
            ClaimOutcome::AlreadySent => panic!("nothing was sent yet"),
        }
    }
    assert_eq!(claimed, 1);

    // Still fresh: held by the winner. Stale: a new run takes it over.
    let soon = now() + Duration::minutes(5);
    assert_eq!(
        store.claim_notification(&notice("late", soon), soon, stale_after).await.unwrap(),
        ClaimOutcome::HeldByOther
    );
    let much_later = now() + Duration::minutes(16);
    assert_eq!(
        store.claim_notification(&notice("rescuer", much_later), much_later, stale_after).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let key = notice("x", now()).key;
    store.mark_notification_sent(&key, "rescuer", much_later, "ses-msg-1").await.unwrap();
    let day_later = now() + Duration::days(1);
    assert_eq!(
        store.claim_notification(&notice("next-day", day_later), day_later, stale_after).await.unwrap(),
        ClaimOutcome::AlreadySent
    );
    let listed = store.list_notifications("lic").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].state,
        NotificationState::Sent { sent_at: much_later, message_id: "ses-msg-1".into() }
    );
    let missing =
        NotificationKey { license_id: "lic".into(), notice: "expiry_warning".into(), window: "w".into() };
    assert!(matches!(
        store.mark_notification_sent(&missing, "x", now(), "m").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn license_snapshot_is_one_query() {
    let t = fresh_table().await;
    given_customers(&t.store, &["c1"]).await;
    create(&t.store, vec![Write::CreateLicense(license("lic", "c1"))]).await;
    for id in ["d1", "d2"] {
        t.store.activate_deployment(&deployment("lic", id), &policy(Some(5)), now()).await.unwrap();
    }
    // d3's lease is over by `now`.
    t.store
        .activate_deployment(&deployment("lic", "d3"), &policy(Some(5)), now() - Duration::hours(2))
        .await
        .unwrap();
    t.store.record_usage_batch(&batch("b-1")).await.unwrap();
    let mut future = batch("b-future");
    future.records =
        vec![UsageRecord { metric: "api_calls".into(), value: 99, at: at("2026-12-02T00:00:00Z") }];
    t.store.record_usage_batch(&future).await.unwrap();

    t.requests.reset();
    let snapshot = t.store.license_snapshot("lic", now()).await.unwrap().expect("snapshot");
    assert_eq!(t.requests.counts(), BTreeMap::from([("Query".to_owned(), 1)]));
    assert_eq!(snapshot.license, license("lic", "c1"));
    assert_eq!(snapshot.live_deployments, ["d1", "d2"]);
    assert_eq!(snapshot.month_usage, BTreeMap::from([("api_calls".into(), 15), ("seats".into(), 2)]));
    assert_eq!(snapshot.as_of, now());
    assert_eq!(t.store.license_snapshot("missing", now()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_item_is_a_corrupt_error_naming_it() {
    let t = fresh_table().await;
    let client = t.store.client();
    let s = |v: &str| AttributeValue::S(v.into());
    client
        .put_item()
        .table_name(&t.table)
        .item("pk", s("LICENSE#bad"))
        .item("sk", s("LICENSE"))
        .item("id", s("bad"))
        .item("customer_id", s("c1"))
        .item("status", s("active"))
        .item("tier", s("pro"))
        .item("offline_days", AttributeValue::N("30".into()))
        .item("grace_days", AttributeValue::S("seven".into()))
        .send()
        .await
        .unwrap();
    let err = t.store.get_license("bad").await.unwrap_err();
    match &err {
        StoreError::Corrupt { item, reason } => {
            assert_eq!(item, "LICENSE#bad/LICENSE");
            assert!(reason.contains("grace_days"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The snapshot reads the same item and fails the same way, without panicking.
    assert!(matches!(t.store.license_snapshot("bad", now()).await, Err(StoreError::Corrupt { .. })));
    client
        .put_item()
        .table_name(&t.table)
        .item("pk", s("LICENSE#bad"))
        .item("sk", s("SEATS"))
        .item("leases", AttributeValue::M([("d1".to_owned(), s("not a map"))].into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let seats_err = t.store.list_deployments("bad").await.unwrap_err();
    assert!(
        matches!(&seats_err, StoreError::Corrupt { item, .. } if item == "LICENSE#bad/SEATS"),
        "{seats_err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_audit_and_validation_logs_round_trip() {
    let t = fresh_table().await;
    let key = ApiKeyRecord {
        id: "key1".into(),
        name: "ci".into(),
        secret_sha256: "ab".repeat(32),
        scopes: vec![Scope::Read, Scope::Admin],
        created_at: now(),
        revoked_at: Some(now() + Duration::days(1)),
    };
    let entries: Vec<Write> = (0..7)
        .map(|i| {
            let actor = if i % 2 == 0 { "key1" } else { "stripe" };
            Write::Audit(audit(&format!("a{i}"), now() + Duration::minutes(i), actor, "license:l1"))
        })
        .chain([Write::PutApiKey(key.clone())])
        .collect();
    create(&t.store, entries).await;
    assert_eq!(t.store.get_api_key("key1").await.unwrap(), Some(key.clone()));
    assert_eq!(t.store.list_api_keys().await.unwrap(), [key]);

    // Audit: newest first, filtered, paged.
    let filter = AuditFilter { actor: Some("key1".into()), ..Default::default() };
    let first = t.store.list_audit(&filter, &PageRequest::first(3)).await.unwrap();
    assert_eq!(first.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a6", "a4", "a2"]);
    assert_eq!(first.items[0], audit("a6", now() + Duration::minutes(6), "key1", "license:l1"));
    let rest =
        t.store.list_audit(&filter, &PageRequest { limit: 3, cursor: first.next_cursor }).await.unwrap();
    assert_eq!(rest.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a0"]);
    assert_eq!(rest.next_cursor, None);
    let window = AuditFilter {
        since: Some(now() + Duration::minutes(2)),
        until: Some(now() + Duration::minutes(5)),
        ..Default::default()
    };
    let in_window = t.store.list_audit(&window, &PageRequest::first(10)).await.unwrap();
    assert_eq!(in_window.items.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a4", "a3", "a2"]);

    // Validation logs: more than one BatchWriteItem's worth, read back newest first.
    let logs: Vec<ValidationLogEntry> = (0..30)
        .map(|i| ValidationLogEntry {
            license_id: "l1".into(),
            at: Utc.timestamp_opt(1_800_000_000 + i, 0).unwrap(),
            code: if i % 3 == 0 { "VALID".into() } else { "EXPIRED".into() },
            deployment_id: Some(format!("d{i}")),
            fingerprint: None,
            client_ip: Some("203.0.113.7".into()),
            registry: (i == 1).then(|| nls_core::model::RegistryAccessRecord {
                repository: "nectar/app".into(),
                requested: vec!["pull".into()],
                granted: vec!["pull".into()],
            }),
        })
        .collect();
    t.store.append_validation_logs(&logs).await.unwrap();
    let newest = t.store.list_validation_logs("l1", 10).await.unwrap();
    let expected: Vec<ValidationLogEntry> = logs.iter().rev().take(10).cloned().collect();
    assert_eq!(newest, expected);
    assert_eq!(t.store.list_validation_logs("l1", 100).await.unwrap().len(), 30);
    assert!(t.store.list_validation_logs("other", 10).await.unwrap().is_empty());
}

/// docs/benchmarks.md "DynamoDB requests per API call": a batch of 100 validation events from
/// one client (one deployment, fingerprint and address), counted with the request counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_validation_events_costs_a_few_requests() {
    use nls_core::ports::ValidationStatsStore;
    use nls_core::validation_stats::{ValidationEvent, ValidationEventBatch};
    let t = fresh_table().await;
    let batch = |id: &str| ValidationEventBatch {
        batch_id: id.to_owned(),
        received_at: now(),
        events: (0..100)
            .map(|_| ValidationEvent {
                license_id: "lic".into(),
                deployment_id: Some("dep".into()),
                fingerprint: Some("fp".into()),
                client_ip: Some("198.51.100.1".into()),
                country: None,
                code: "VALID".into(),
                at: now(),
                edge: Some("FRA".into()),
            })
            .collect(),
    };
    t.store.record_validation_events(&batch("b1")).await.unwrap();
    let first = t.requests.counts();
    t.requests.reset();
    t.store.record_validation_events(&batch("b2")).await.unwrap();
    let steady = t.requests.counts();
    t.requests.reset();
    t.store.record_validation_events(&batch("b2")).await.unwrap();
    let replay = t.requests.counts();
    println!("first batch (3 new values): {first:?}; next batch: {steady:?}; replay: {replay:?}");
    // New values: the guarded transaction, then per value a failed UpdateItem and a transaction.
    assert_eq!(first.get("TransactWriteItems"), Some(&4), "{first:?}");
    assert_eq!(first.get("UpdateItem"), Some(&3), "{first:?}");
    // Known values: the guarded transaction and one UpdateItem per value.
    assert_eq!(steady, BTreeMap::from([("TransactWriteItems".into(), 1), ("UpdateItem".into(), 3)]));
    assert_eq!(
        replay,
        BTreeMap::from([("TransactWriteItems".into(), 1)]),
        "a replay is one refused transaction"
    );
}
