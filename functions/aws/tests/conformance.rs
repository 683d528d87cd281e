//! The shared store conformance suite (nls_core::conformance), concurrency cases included,
//! against DynamoStore on moto: a fresh table per case.

mod moto_support;

use std::sync::Arc;

use nls_core::conformance::CASES;
use nls_core::ports::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn dynamo_store_passes_the_store_conformance_suite() {
    let mut failed = Vec::new();
    // Every case runs, so one report names all failures.
    for (name, case) in CASES {
        let store: Arc<dyn Store> = Arc::new(moto_support::fresh_table().await.store);
        if let Err(panic) = tokio::spawn(case(store)).await {
            eprintln!("conformance case `{name}` failed: {panic}");
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "DynamoStore failed conformance cases: {failed:?}");
    eprintln!("DynamoStore passed all {} conformance cases", CASES.len());
}
