//! SDK clients and fresh tables on the moto server that `nls_tests::moto` starts once per test
//! binary (a real DynamoDB-, SES- and Secrets Manager-compatible HTTP server).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use nls_aws::{ClientTuning, DynamoStore, RequestCounter};

pub use nls_tests::moto::MotoServer;

/// An SDK config pointing at `server`.
pub async fn sdk_config(server: &MotoServer) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&server.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

/// moto is one Python process serving many concurrent requests: allow it time.
pub fn test_tuning() -> ClientTuning {
    ClientTuning {
        max_attempts: 3,
        connect_timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(30),
        operation_timeout: Duration::from_secs(60),
        ..ClientTuning::default()
    }
}

/// A store on a fresh table of the shared moto server, and the counter of its requests.
pub struct TestTable {
    pub store: DynamoStore,
    pub requests: RequestCounter,
    pub table: String,
}

pub async fn fresh_table() -> TestTable {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = MotoServer::shared();
    let requests = RequestCounter::new();
    let client = nls_aws::dynamodb_client(&sdk_config(server).await, &test_tuning(), Some(&requests));
    let table = format!("nls-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    nls_aws::create_table(&client, &table).await.expect("create the test table");
    requests.reset();
    TestTable { store: DynamoStore::new(client, table.clone()), requests, table }
}
