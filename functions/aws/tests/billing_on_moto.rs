//! The billing and renewals scenarios (nls_core::billing::scenarios) against DynamoStore on
//! moto, a fresh table per scenario: every Stripe event type, replays, shuffled histories,
//! concurrent deliveries, and two overlapping scheduler runs plus a crash in the middle
//! (exactly one email per window).

mod moto_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use nls_aws::RequestCounter;
use nls_core::billing::scenarios::{CASES, run_all};
use nls_core::ports::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_store_passes_the_billing_scenarios() {
    let counters: Arc<Mutex<Vec<RequestCounter>>> = Arc::default();
    run_all(|| {
        let counters = counters.clone();
        async move {
            let table = moto_support::fresh_table().await;
            counters.lock().expect("not poisoned").push(table.requests.clone());
            Arc::new(table.store) as Arc<dyn Store>
        }
    })
    .await;
    // The DynamoDB operations billing and renewals use: template.yaml grants the webhook and
    // renewals functions no others.
    let mut operations: BTreeMap<String, u64> = BTreeMap::new();
    for counter in counters.lock().expect("not poisoned").iter() {
        for (operation, count) in counter.counts() {
            *operations.entry(operation).or_default() += count;
        }
    }
    eprintln!("DynamoStore passed all {} billing scenarios; DynamoDB requests: {operations:?}", CASES.len());
}
