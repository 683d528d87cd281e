//! Two instances of the example cloud service (`clients/rust/examples/cloud_service.rs`), each
//! with its own DynamoDB client, share the `DynamoRateLimiter` on moto: a concurrent burst over
//! the tier limit through the verifier middleware gets exactly the expected number of 429s,
//! with the `RateLimit-*` and `Retry-After` headers. Tokens come from a real `nls serve`.

mod moto_support;

#[allow(dead_code)]
#[path = "../../../clients/rust/examples/cloud_service.rs"]
mod cloud_service;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use moto_support::{MotoServer, sdk_config, test_tuning};
use nls_aws::DynamoRateLimiter;
use nls_client::Clock;
use nls_client::cloud_access::CloudAccess;
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::json;
use tower::ServiceExt;

struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

async fn instance(table: &str, jwks: &str, clock: Arc<FixedClock>) -> Router {
    let client = nls_aws::dynamodb_client(&sdk_config(MotoServer::shared()).await, &test_tuning(), None);
    let limiter = Arc::new(DynamoRateLimiter::new(client, table, cloud_service::AUDIENCE));
    let access = CloudAccess::from_jwks_json(jwks).unwrap().with_clock(clock).with_rate_limiter(limiter);
    cloud_service::app(&access)
}

/// `tasks` concurrent callers per instance, `calls` each: (statuses 200, statuses 429).
async fn burst(instances: &[Router], token: &str, tasks: usize, calls: usize) -> (usize, usize) {
    let mut handles = Vec::new();
    for app in instances {
        for _ in 0..tasks {
            let app = app.clone();
            let token = token.to_owned();
            handles.push(tokio::spawn(async move {
                let mut seen = (0, 0);
                for _ in 0..calls {
                    let request = Request::get("/v1/whoami")
                        .header("authorization", format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap();
                    let response = app.clone().oneshot(request).await.unwrap();
                    match response.status() {
                        StatusCode::OK => seen.0 += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_eq!(response.headers()["retry-after"], "1");
                            assert_eq!(response.headers()["ratelimit-remaining"], "0");
                            assert_eq!(response.headers()["ratelimit-limit"], "20");
                            seen.1 += 1;
                        }
                        other => panic!("{other}"),
                    }
                }
                seen
            }));
        }
    }
    let mut total = (0, 0);
    for handle in handles {
        let (ok, limited) = handle.await.unwrap();
        total = (total.0 + ok, total.1 + limited);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_service_instances_answer_exactly_the_expected_429s() {
    let dir = TempDir::new("shared-limiter-middleware");
    let server = NlsServer::start(dir.path(), &[]);
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let license = server.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"],
                     "cloud": {"workflows": {"requests_per_minute": 60, "burst": 20}}})),
    );
    let body = json!({"key": license["key"], "deployment_id": "d1", "audience": "workflows"});
    let answer = server.call("POST", "/v1/access-tokens", None, Some(&body)).json();
    let token = answer["token"].as_str().expect("a token").to_owned();
    let jwks = server.call("GET", "/.well-known/jwks.json", None, None).text();

    let table = format!("nls-rate-mw-{}-{}", std::process::id(), nls_core::issuing::new_id("t"));
    let client = nls_aws::dynamodb_client(&sdk_config(MotoServer::shared()).await, &test_tuning(), None);
    nls_aws::create_table(&client, &table).await.expect("create the table");
    // One instant for both instances: no refill during the burst.
    let clock = Arc::new(FixedClock(Utc::now()));
    let a = instance(&table, &jwks, clock.clone()).await;
    let b = instance(&table, &jwks, clock.clone()).await;

    // 2 instances × 4 callers × 5 calls = 40 calls against a burst of 20: 20 pass, 20 are 429.
    assert_eq!(burst(&[a.clone(), b.clone()], &token, 4, 5).await, (20, 20));
    // A third instance joining later sees the same empty bucket.
    let c = instance(&table, &jwks, clock.clone()).await;
    assert_eq!(burst(&[c], &token, 1, 3).await, (0, 3));
    // One instance alone, against the same table: still nothing left.
    assert_eq!(burst(&[a], &token, 1, 1).await, (0, 1));
}
