//! What is particular to the SQLite store: data outlives the process's handle, invariants hold
//! across several handles on one file (as across processes), times keep their nanoseconds, and
//! damaged rows are reported, not panicked on. The shared semantics are in `conformance.rs`.

use std::sync::Arc;

use chrono::{DateTime, Duration};
use nls_core::issuing::{LicenseTerms, new_license};
use nls_core::model::*;
use nls_core::ports::*;
use nls_sqlite_store::SqliteStore;

/// Sub-second on purpose: the index columns hold whole seconds, the answers must not.
fn t0() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-15T12:00:00.123456789Z").expect("valid literal").to_utc()
}

fn customer(id: &str) -> Customer {
    Customer {
        id: id.to_owned(),
        name: "Acme".to_owned(),
        email: "ops@acme.example".to_owned(),
        stripe_customer_id: Some(format!("cus_stripe_{id}")),
        reminders_opt_out: false,
        created_at: t0(),
        updated_at: t0(),
    }
}

async fn given_license(store: &SqliteStore, max_deployments: Option<u32>) -> License {
    let c = customer(&nls_core::issuing::new_id("cus"));
    let terms =
        LicenseTerms { max_deployments, expires_at: Some(t0() + Duration::days(30)), ..Default::default() };
    let license = new_license(&c.id, terms, t0());
    store
        .commit(None, vec![Write::CreateCustomer(c), Write::CreateLicense(license.clone())])
        .await
        .expect("create");
    license
}

fn deployment(license_id: &str, deployment_id: &str) -> Deployment {
    Deployment {
        license_id: license_id.to_owned(),
        deployment_id: deployment_id.to_owned(),
        fingerprint: None,
        app_version: Some("1.0.0".to_owned()),
        activated_at: t0(),
        last_heartbeat_at: t0(),
        lease_expires_at: t0(),
    }
}

fn policy(max_deployments: Option<u32>) -> ActivationPolicy {
    ActivationPolicy {
        max_deployments,
        lease: Duration::hours(1),
        churn_window: Duration::hours(1),
        churn_max: 1000,
    }
}

fn usage_batch(license_id: &str, batch_id: &str) -> UsageBatch {
    UsageBatch {
        license_id: license_id.to_owned(),
        deployment_id: "dep".to_owned(),
        batch_id: batch_id.to_owned(),
        records: vec![UsageRecord { metric: "api_calls".to_owned(), value: 7, at: t0() }],
        received_at: t0(),
    }
}

fn webhook_event(id: &str) -> OnceGuard {
    OnceGuard::WebhookEvent(WebhookEventRecord {
        event_id: id.to_owned(),
        event_type: "invoice.paid".to_owned(),
        received_at: t0(),
    })
}

#[tokio::test]
async fn writes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A missing parent directory is created.
    let path = dir.path().join("data").join("nls.db");
    let api_key = ApiKeyRecord {
        id: "ak_1".to_owned(),
        name: "ci".to_owned(),
        secret_sha256: "cd".repeat(32),
        scopes: vec![Scope::Admin],
        created_at: t0(),
        revoked_at: None,
    };
    let notice = NotificationRecord {
        key: NotificationKey {
            license_id: "lic_x".to_owned(),
            notice: "expiry_warning".to_owned(),
            window: "2026-12-15".to_owned(),
        },
        recipient: "ops@acme.example".to_owned(),
        subject: "Expiring".to_owned(),
        state: NotificationState::Pending { claimed_by: "run-1".to_owned(), claimed_at: t0() },
    };
    let audit = AuditEntry {
        id: "aud_1".to_owned(),
        at: t0(),
        actor: "stripe".to_owned(),
        action: "renew".to_owned(),
        target: "license:x".to_owned(),
        before: Some(serde_json::json!({"expires_at": null})),
        after: Some(serde_json::json!({"nested": {"n": [1, 2.5, "three"]}})),
    };
    let log = ValidationLogEntry {
        license_id: "lic_x".to_owned(),
        at: t0(),
        code: "VALID".to_owned(),
        deployment_id: Some("d".to_owned()),
        fingerprint: None,
        client_ip: Some("::1".to_owned()),
        registry: None,
    };

    let (license, activated) = {
        let store = SqliteStore::open(&path).expect("open");
        let license = given_license(&store, Some(2)).await;
        let Activation::Activated(activated) = store
            .activate_deployment(&deployment(&license.id, "d1"), &policy(Some(2)), t0())
            .await
            .expect("act")
        else {
            panic!("first activation takes a seat")
        };
        store.record_usage_batch(&usage_batch(&license.id, "b1")).await.expect("usage");
        let outcome = store
            .commit(
                Some(webhook_event("evt_1")),
                vec![Write::PutApiKey(api_key.clone()), Write::Audit(audit.clone())],
            )
            .await
            .expect("commit");
        assert_eq!(outcome, CommitOutcome::Applied);
        store.claim_notification(&notice, t0(), Duration::minutes(15)).await.expect("claim");
        store.append_validation_logs(std::slice::from_ref(&log)).await.expect("log");
        (license, activated)
    };

    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.get_license(&license.id).await.expect("get"), Some(license.clone()));
    assert_eq!(store.get_api_key("ak_1").await.expect("get"), Some(api_key), "the secret hash is kept");
    assert_eq!(store.list_deployments(&license.id).await.expect("list"), vec![activated]);
    let snapshot = store.license_snapshot(&license.id, t0()).await.expect("snapshot").expect("exists");
    assert_eq!(snapshot.live_deployments, vec!["d1".to_owned()]);
    assert_eq!(snapshot.month_usage.get("api_calls"), Some(&7));
    assert_eq!(
        store.record_usage_batch(&usage_batch(&license.id, "b1")).await.expect("b1"),
        BatchOutcome::Duplicate
    );
    assert_eq!(
        store.commit(Some(webhook_event("evt_1")), vec![]).await.expect("replay"),
        CommitOutcome::Duplicate
    );
    assert_eq!(store.list_notifications("lic_x").await.expect("list"), vec![notice]);
    let audit_rows = store.list_audit(&AuditFilter::default(), &PageRequest::first(10)).await.expect("audit");
    assert_eq!(audit_rows.items, vec![audit]);
    assert_eq!(store.list_validation_logs("lic_x", 10).await.expect("logs"), vec![log]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_activations_through_two_handles_leave_exactly_the_limit_live() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nls.db");
    // Two handles on one file contend as two processes would: through SQLite's write lock.
    let handles = [
        Arc::new(SqliteStore::open(&path).expect("open")),
        Arc::new(SqliteStore::open(&path).expect("open")),
    ];
    let license = given_license(&handles[0], Some(5)).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&handles[i % 2]);
            let request = deployment(&license.id, &format!("dep-{i}"));
            tokio::spawn(async move { store.activate_deployment(&request, &policy(Some(5)), t0()).await })
        })
        .collect();
    let (mut activated, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task").expect("activation answers") {
            Activation::Activated(_) => activated += 1,
            Activation::LimitReached { live: 5 } => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((activated, refused), (5, 195));
    let snapshot = handles[1].license_snapshot(&license.id, t0()).await.expect("snapshot").expect("exists");
    assert_eq!(snapshot.live_deployments.len(), 5);
    assert_eq!(handles[0].list_deployments(&license.id).await.expect("list").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_of_one_usage_batch_count_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nls.db");
    let handles = [
        Arc::new(SqliteStore::open(&path).expect("open")),
        Arc::new(SqliteStore::open(&path).expect("open")),
    ];
    let license = given_license(&handles[0], None).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&handles[i % 2]);
            let batch = usage_batch(&license.id, "same-batch");
            tokio::spawn(async move { store.record_usage_batch(&batch).await })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        if task.await.expect("task").expect("record") == BatchOutcome::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    let month = handles[1].usage_counters(&license.id, "2026-11").await.expect("month");
    assert_eq!(month.get("api_calls"), Some(&7));
    let day = handles[1].usage_counters(&license.id, "2026-11-15").await.expect("day");
    assert_eq!(day.get("api_calls"), Some(&7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_webhook_replays_through_two_handles_apply_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nls.db");
    let handles = [
        Arc::new(SqliteStore::open(&path).expect("open")),
        Arc::new(SqliteStore::open(&path).expect("open")),
    ];
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = Arc::clone(&handles[i % 2]);
            let customer = customer(&format!("cus_{i}"));
            tokio::spawn(async move {
                store.commit(Some(webhook_event("evt_same")), vec![Write::CreateCustomer(customer)]).await
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if task.await.expect("task").expect("commit") == CommitOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(handles[0].list_customers(&PageRequest::first(100)).await.expect("list").items.len(), 1);
}

#[tokio::test]
async fn a_batch_that_would_overflow_a_counter_is_refused_and_changes_nothing() {
    let store = SqliteStore::open_in_memory().expect("open");
    let mut batch = usage_batch("lic_1", "b1");
    batch.records[0].value = u64::MAX - 1;
    store.record_usage_batch(&batch).await.expect("b1");
    let overflowing = usage_batch("lic_1", "b2");
    let refused = store.record_usage_batch(&overflowing).await;
    assert!(matches!(refused, Err(StoreError::CounterOverflow(_))), "{refused:?}");
    let month = store.usage_counters("lic_1", "2026-11").await.expect("month");
    assert_eq!(month.get("api_calls"), Some(&(u64::MAX - 1)), "never wrapped nor saturated");
}

#[tokio::test]
async fn lease_and_expiry_boundaries_hold_to_the_nanosecond() {
    let store = SqliteStore::open_in_memory().expect("open");
    let license = given_license(&store, Some(1)).await;
    store.activate_deployment(&deployment(&license.id, "d"), &policy(Some(1)), t0()).await.expect("act");
    let lease_end = t0() + Duration::hours(1);
    let just_before = lease_end - Duration::nanoseconds(1);
    let live_at = |at| {
        let store = &store;
        let id = license.id.clone();
        async move { store.license_snapshot(&id, at).await.expect("snapshot").expect("exists").live_deployments }
    };
    assert_eq!(live_at(just_before).await, vec!["d".to_owned()]);
    assert!(live_at(lease_end).await.is_empty(), "a lease is over at its end instant");

    let expiry = license.expires_at.expect("has an expiry");
    let one_ns = Duration::nanoseconds(1);
    let ids = |found: Vec<License>| found.into_iter().map(|l| l.id).collect::<Vec<_>>();
    let cases = [
        (expiry, expiry + one_ns, true),
        (expiry + one_ns, expiry + Duration::days(1), false),
        (expiry - Duration::days(1), expiry, false),
        (expiry - Duration::days(1), expiry + one_ns, true),
    ];
    for (from, to, included) in cases {
        let found = ids(store.licenses_expiring_between(from, to).await.expect("query"));
        assert_eq!(found == vec![license.id.clone()], included, "[{from}, {to}) → {found:?}");
    }
    let before = |t| LicenseFilter { expires_before: Some(t), ..Default::default() };
    let page = PageRequest::first(10);
    assert!(store.list_licenses(&before(expiry), &page).await.expect("list").items.is_empty());
    assert_eq!(store.list_licenses(&before(expiry + one_ns), &page).await.expect("list").items.len(), 1);
}

#[tokio::test]
async fn a_row_that_does_not_decode_is_corrupt_and_names_the_item() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nls.db");
    let license = {
        let store = SqliteStore::open(&path).expect("open");
        let license = given_license(&store, Some(3)).await;
        store.activate_deployment(&deployment(&license.id, "d1"), &policy(Some(3)), t0()).await.expect("act");
        store.record_usage_batch(&usage_batch(&license.id, "b1")).await.expect("usage");
        license
    };
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.execute("UPDATE licenses SET record = '{\"id\": tru' WHERE id = ?1", [&license.id]).expect("damage");
    raw.execute("UPDATE deployments SET record = 42 WHERE license_id = ?1", [&license.id]).expect("damage");
    raw.execute("UPDATE usage_counters SET total = 'many' WHERE license_id = ?1", [&license.id])
        .expect("damage");
    drop(raw);

    let store = SqliteStore::open(&path).expect("reopen");
    let expect_corrupt = |result: Result<(), StoreError>, names: &str| match result {
        Err(StoreError::Corrupt { item, .. }) => {
            assert!(item.contains(names), "{item:?} should name {names}")
        }
        other => panic!("expected Corrupt naming {names}, got {other:?}"),
    };
    expect_corrupt(store.get_license(&license.id).await.map(drop), &license.id);
    let all = LicenseFilter::default();
    expect_corrupt(store.list_licenses(&all, &PageRequest::first(10)).await.map(drop), &license.id);
    expect_corrupt(store.license_snapshot(&license.id, t0()).await.map(drop), &license.id);
    let bump =
        Write::UpdateLicense { license: License { version: 2, ..license.clone() }, expected_version: 1 };
    expect_corrupt(store.commit(None, vec![bump]).await.map(drop), &license.id);
    expect_corrupt(store.list_deployments(&license.id).await.map(drop), "d1");
    expect_corrupt(store.usage_counters(&license.id, "2026-11").await.map(drop), "api_calls");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nls.db");
    std::fs::write(&path, "this is a text file, not a SQLite database. ".repeat(100)).expect("write");
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt { item, .. }) => assert_eq!(item, "database file"),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("a text file opened as a store"),
    }
}

fn staff_session(token_sha256: &str, created_at: Timestamp, lifetime: Duration) -> StaffSession {
    StaffSession {
        token_sha256: token_sha256.to_owned(),
        user_id: "stf_1".to_owned(),
        csrf_token: "csrf".to_owned(),
        created_at,
        last_seen_at: created_at,
        expires_at: created_at + lifetime,
    }
}

#[tokio::test]
async fn a_new_session_purges_only_sessions_that_expired_before_it_began() {
    let store = SqliteStore::open_in_memory().expect("open");
    let ends_first = staff_session("a", t0(), Duration::minutes(5));
    let ends_later = staff_session("b", t0(), Duration::hours(12));
    store.create_session(&ends_first).await.expect("a");
    store.create_session(&ends_later).await.expect("b");
    // The purge compares whole seconds, rounding in the session's favour: 1 ns after its
    // expiry, in the same second, `a` stays (a reader checks `expires_at` anyway).
    let same_second = ends_first.expires_at + Duration::nanoseconds(1);
    store.create_session(&staff_session("c", same_second, Duration::hours(1))).await.expect("c");
    assert!(store.get_session("a").await.expect("get a").is_some());
    let next_second = ends_first.expires_at + Duration::seconds(1);
    store.create_session(&staff_session("d", next_second, Duration::hours(1))).await.expect("d");
    assert!(store.get_session("a").await.expect("get a").is_none(), "expired before d began: purged");
    assert_eq!(store.get_session("b").await.expect("get b"), Some(ends_later), "still live: kept");
}
