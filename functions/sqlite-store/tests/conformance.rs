//! The shared store conformance suite, against a fresh database file per case.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nls_core::ports::Store;
use nls_sqlite_store::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases_started = AtomicUsize::new(0);
    nls_core::conformance::run_all(|| {
        let path = dir.path().join(format!("case-{}.db", cases_started.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(SqliteStore::open(&path).expect("open store")) as Arc<dyn Store> }
    })
    .await;
}
