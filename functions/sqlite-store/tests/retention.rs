//! Issue 19: the SQLite store never pruned `usage_batches`, `validation_logs` and
//! `webhook_events`. `prune_expired` drops what DynamoDB's TTLs would (30 days of webhook
//! events, 90 of validation logs, usage batch ids past the usage window), keeps the rest (and
//! so its duplicate detection), and deletes a bounded number of rows per call.

use chrono::{DateTime, Duration};
use nls_core::issuing::{LicenseTerms, new_license};
use nls_core::model::*;
use nls_core::ports::*;
use nls_sqlite_store::{Pruned, Retention, SqliteStore};

fn now() -> Timestamp {
    DateTime::parse_from_rfc3339("2027-03-01T12:00:00Z").expect("valid literal").to_utc()
}

fn batch(license_id: &str, id: &str, received_at: Timestamp) -> UsageBatch {
    UsageBatch {
        license_id: license_id.to_owned(),
        deployment_id: "dep-1".to_owned(),
        batch_id: id.to_owned(),
        records: vec![UsageRecord { metric: "calls".to_owned(), value: 1, at: received_at }],
        received_at,
    }
}

fn event(id: &str, received_at: Timestamp) -> OnceGuard {
    OnceGuard::WebhookEvent(WebhookEventRecord {
        event_id: id.to_owned(),
        event_type: "invoice.paid".to_owned(),
        received_at,
    })
}

fn log(license_id: &str, at: Timestamp) -> ValidationLogEntry {
    ValidationLogEntry {
        license_id: license_id.to_owned(),
        at,
        code: "VALID".to_owned(),
        deployment_id: None,
        fingerprint: None,
        client_ip: None,
        registry: None,
    }
}

async fn given_license(store: &SqliteStore) -> License {
    let customer = Customer {
        id: "cus_1".to_owned(),
        name: "Acme".to_owned(),
        email: "ops@acme.example".to_owned(),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now(),
        updated_at: now(),
    };
    let license = new_license(&customer.id, LicenseTerms::default(), now());
    store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
        .await
        .unwrap();
    license
}

#[tokio::test]
async fn old_rows_go_recent_rows_and_their_dedup_stay() {
    let store = SqliteStore::open_in_memory().unwrap();
    let license = given_license(&store).await;
    let (old, recent) = (now() - Duration::days(120), now() - Duration::days(2));
    store.record_usage_batch(&batch(&license.id, "old", old)).await.unwrap();
    store.record_usage_batch(&batch(&license.id, "recent", recent)).await.unwrap();
    // 29 days: inside the webhook retention; 31 days: outside.
    store.commit(Some(event("evt_old", now() - Duration::days(31))), vec![]).await.unwrap();
    store.commit(Some(event("evt_recent", now() - Duration::days(29))), vec![]).await.unwrap();
    store.append_validation_logs(&[log(&license.id, old), log(&license.id, recent)]).await.unwrap();

    let pruned = store.prune_expired(now(), Retention::default()).await.unwrap();
    assert_eq!(pruned, Pruned { webhook_events: 1, validation_logs: 1, usage_batches: 1 });

    // Within the retention, a replay is still recognized.
    assert_eq!(
        store.record_usage_batch(&batch(&license.id, "recent", recent)).await.unwrap(),
        BatchOutcome::Duplicate
    );
    assert_eq!(
        store.commit(Some(event("evt_recent", now())), vec![]).await.unwrap(),
        CommitOutcome::Duplicate
    );
    // Past it, the ids are forgotten (a usage replay that old is refused by the usage window
    // before it reaches the store; the retention is set past that window).
    assert_eq!(store.commit(Some(event("evt_old", now())), vec![]).await.unwrap(), CommitOutcome::Applied);
    let replayed = UsageBatch { received_at: now(), ..batch(&license.id, "old", old) };
    assert_eq!(store.record_usage_batch(&replayed).await.unwrap(), BatchOutcome::Recorded);
    let logs = store.list_validation_logs(&license.id, 10).await.unwrap();
    assert_eq!(logs.iter().map(|l| l.at).collect::<Vec<_>>(), [recent]);
    // Counters are not history: pruning never touches them.
    let counted = store.usage_counters(&license.id, &old.format("%Y-%m").to_string()).await.unwrap();
    assert_eq!(counted.get("calls"), Some(&2));

    // Nothing left to prune.
    assert_eq!(store.prune_expired(now(), Retention::default()).await.unwrap().total(), 0);
}

#[tokio::test]
async fn each_run_deletes_a_bounded_number_of_rows() {
    let store = SqliteStore::open_in_memory().unwrap();
    let license = given_license(&store).await;
    let old = now() - Duration::days(200);
    for i in 0..5 {
        store.record_usage_batch(&batch(&license.id, &format!("b{i}"), old)).await.unwrap();
        store.commit(Some(event(&format!("evt_{i}"), old)), vec![]).await.unwrap();
    }
    store.append_validation_logs(&vec![log(&license.id, old); 5]).await.unwrap();
    let retention = Retention { max_rows_per_table: 2, ..Retention::default() };
    let mut runs = Vec::new();
    loop {
        let pruned = store.prune_expired(now(), retention).await.unwrap();
        if pruned.total() == 0 {
            break;
        }
        runs.push(pruned);
    }
    let each = |n| Pruned { webhook_events: n, validation_logs: n, usage_batches: n };
    assert_eq!(runs, [each(2), each(2), each(1)]);
}

#[test]
fn usage_batch_retention_outlasts_the_usage_window() {
    let default = Retention::default();
    assert_eq!(Retention::for_usage_window(Duration::days(35), Duration::minutes(5)), default);
    let long = Retention::for_usage_window(Duration::days(200), Duration::minutes(5));
    assert!(long.usage_batches > Duration::days(200) + Duration::minutes(5));
}
