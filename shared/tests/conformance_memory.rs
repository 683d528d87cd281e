//! The store conformance suite on the in-memory reference store.

use std::sync::Arc;

use nls_core::memory_store::MemoryStore;
use nls_core::ports::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    nls_core::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
}
