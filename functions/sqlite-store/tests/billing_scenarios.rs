//! The billing and renewals scenarios (Stripe exactly-once and ordering, notices sent once
//! under overlapping runs and a crash) on the embedded store, file-backed as `nls serve` uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nls_core::ports::Store;
use nls_sqlite_store::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_scenarios_hold_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases_started = AtomicUsize::new(0);
    nls_core::billing::scenarios::run_all(|| {
        let path = dir.path().join(format!("case-{}.db", cases_started.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStore::open(&path).expect("open store")) as Arc<dyn Store> }
    })
    .await;
}
