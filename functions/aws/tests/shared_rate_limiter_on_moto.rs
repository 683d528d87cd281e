//! The store-backed rate limiter (`DynamoRateLimiter`) on a real DynamoDB-compatible server
//! (moto): two instances, each with its own client, share one bucket per license, and a
//! concurrent burst over it gets exactly the expected number of refusals.

mod moto_support;

use std::sync::Arc;

use moto_support::{MotoServer, sdk_config, test_tuning};
use nls_aws::DynamoRateLimiter;
use nls_core::access_token::CloudLimits;
use nls_core::cloud_rate::RateLimiter;

async fn instance(table: &str) -> Arc<DynamoRateLimiter> {
    let client = nls_aws::dynamodb_client(&sdk_config(MotoServer::shared()).await, &test_tuning(), None);
    Arc::new(DynamoRateLimiter::new(client, table, "workflows"))
}

async fn fresh_table() -> String {
    let table = format!("nls-rate-{}-{}", std::process::id(), nls_core::issuing::new_id("t"));
    let client = nls_aws::dynamodb_client(&sdk_config(MotoServer::shared()).await, &test_tuning(), None);
    nls_aws::create_table(&client, &table).await.expect("create the table");
    table
}

/// `tasks` concurrent callers per instance, `calls` takes each, all at `now_ms`: how many passed.
async fn burst(
    instances: &[Arc<DynamoRateLimiter>],
    license: &str,
    tasks: usize,
    calls: usize,
    now_ms: i64,
) -> usize {
    let limits = CloudLimits { requests_per_minute: 60, burst: 20, monthly_quota: None };
    let mut handles = Vec::new();
    for limiter in instances {
        for _ in 0..tasks {
            let limiter = Arc::clone(limiter);
            let license = license.to_owned();
            handles.push(tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..calls {
                    let verdict = limiter.take(&license, &limits, now_ms).await.expect("the limiter answers");
                    allowed += usize::from(verdict.allowed);
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for handle in handles {
        allowed += handle.await.unwrap();
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_each_license_bucket_exactly() {
    let table = fresh_table().await;
    let (a, b) = (instance(&table).await, instance(&table).await);
    let t0 = 1_800_000_000_000;
    // 2 instances × 4 callers × 5 calls = 40 calls against a burst of 20.
    assert_eq!(burst(&[a.clone(), b.clone()], "lic_1", 4, 5, t0).await, 20);
    // Another license has its own bucket.
    assert_eq!(burst(std::slice::from_ref(&a), "lic_2", 1, 3, t0).await, 3);
    // 60 per minute: two seconds later, two more calls fit between both instances, no more.
    assert_eq!(burst(&[a.clone(), b.clone()], "lic_1", 2, 2, t0 + 2_000).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_alone_allows_the_burst_then_the_refill() {
    let table = fresh_table().await;
    let a = instance(&table).await;
    let t0 = 1_800_000_000_000;
    assert_eq!(burst(std::slice::from_ref(&a), "lic_1", 1, 25, t0).await, 20);
    assert_eq!(burst(std::slice::from_ref(&a), "lic_1", 1, 5, t0 + 1_000).await, 1);
}
