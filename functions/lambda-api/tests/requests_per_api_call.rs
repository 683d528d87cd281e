//! DynamoDB requests per API call, counted (not assumed): the api Lambda's app over a
//! DynamoStore on moto, with a request counter on the client. Prints the table that
//! docs/dynamodb.md quotes.

#[path = "../../aws/tests/moto_support/mod.rs"]
mod moto_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use nls_core::http::{AppDeps, AppState, HttpConfig};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::ports::SystemClock;
use nls_lambda_api::api_app;
use tower::ServiceExt;

const ADMIN_KEY: &str = "requests-per-call-admin-key";

/// One request through the router; `bearer` is the API key sent, if any.
async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
    if let Some(key) = bearer {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).expect("request"))
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// The api Lambda's app on a fresh moto table, with the bootstrap admin key, and the table's
/// request counter.
async fn app_on_a_fresh_table(config: HttpConfig) -> (axum::Router, nls_aws::RequestCounter) {
    let table = moto_support::fresh_table().await;
    let requests = table.requests.clone();
    let key_ring = KeyRing::with_signer(SigningKey::generate(), Vec::new()).expect("key ring");
    let app = api_app(AppState::new(AppDeps {
        store: Arc::new(table.store),
        key_ring: Arc::new(key_ring),
        clock: Arc::new(SystemClock),
        config: config.with_bootstrap_admin_key(ADMIN_KEY),
    }));
    (app, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_heartbeat_and_usage_cost_what_the_design_says() {
    // A long snapshot TTL so "warm" is deterministic on a slow test machine.
    let (app, requests) = app_on_a_fresh_table(HttpConfig {
        snapshot_ttl: chrono::Duration::minutes(5),
        ..HttpConfig::default()
    })
    .await;

    let (status, customer) = call(
        &app,
        Method::POST,
        "/v1/customers",
        Some(ADMIN_KEY),
        serde_json::json!({"name": "Acme", "email": "ops@acme.example"}),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let license_request = serde_json::json!({"customer_id": customer["customer"]["id"], "features": ["sso"], "max_deployments": 3});
    let (status, issued) = call(&app, Method::POST, "/v1/licenses", Some(ADMIN_KEY), license_request).await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().expect("key").to_owned();

    let mut table_rows: Vec<(&str, BTreeMap<String, u64>)> = Vec::new();
    let mut measure =
        async |label: &'static str, path: &str, body: serde_json::Value, expected_status: u16| {
            requests.reset();
            let (status, answer) = call(&app, Method::POST, path, None, body).await;
            assert_eq!(status, expected_status, "{label}: {answer}");
            let counts = requests.counts();
            table_rows.push((label, counts.clone()));
            counts
        };
    let validate = serde_json::json!({"key": key, "deployment_id": "dep-1"});
    let cold =
        measure("validate, cold (new deployment)", "/v1/licenses/validate", validate.clone(), 200).await;
    let second =
        measure("validate, 2nd (same deployment)", "/v1/licenses/validate", validate.clone(), 200).await;
    let warm = measure("validate, 3rd (same deployment)", "/v1/licenses/validate", validate, 200).await;
    let heartbeat =
        measure("heartbeat", "/v1/heartbeat", serde_json::json!({"key": key, "deployment_id": "dep-1"}), 200)
            .await;
    let usage_batch = serde_json::json!({
        "key": key, "deployment_id": "dep-1", "batch_id": "b-1",
        "records": [{"metric": "api_calls", "value": 5, "at": chrono::Utc::now().to_rfc3339()}]
    });
    let usage = measure("usage batch", "/v1/usage", usage_batch, 202).await;

    println!("| API call | DynamoDB requests |\n| --- | --- |");
    for (label, counts) in &table_rows {
        let cells: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!("| {label} | {} |", if cells.is_empty() { "none".to_owned() } else { cells.join(", ") });
    }

    let reads = |counts: &BTreeMap<String, u64>| {
        ["GetItem", "Query", "Scan", "BatchGetItem"]
            .iter()
            .map(|op| counts.get(*op).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(
        reads(&cold) <= 2,
        "cold validation: one snapshot Query (+ the seats read of a new activation): {cold:?}"
    );
    assert_eq!(cold.get("Query"), Some(&1), "{cold:?}");
    println!("second validation: {second:?}");
    assert_eq!(reads(&warm), 0, "a warm validation reads nothing: {warm:?}");
    assert_eq!(reads(&heartbeat), 0, "{heartbeat:?}");
    assert_eq!(heartbeat.get("UpdateItem"), Some(&1), "a heartbeat is one write: {heartbeat:?}");
    assert_eq!(usage.get("TransactWriteItems"), Some(&1), "{usage:?}");
}

/// Issue 12's ingest benchmark, counted: DynamoDB requests per batch of 100 edge events
/// through the whole route (the once-guarded counts, the distinct values, and one compliance
/// evaluation per license and day the batch touches). Prints the table docs/benchmarks.md
/// quotes (`cargo test -p nls-lambda-api --test requests_per_api_call -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_edge_validation_events_costs_a_counted_number_of_requests() {
    let (app, requests) = app_on_a_fresh_table(HttpConfig::default()).await;
    let customer = serde_json::json!({"name": "Edge Co", "email": "ops@edge.example"});
    let (status, customer) = call(&app, Method::POST, "/v1/customers", Some(ADMIN_KEY), customer).await;
    assert_eq!(status, 201, "{customer}");
    let mut licenses = Vec::new();
    for _ in 0..10 {
        let terms = serde_json::json!({"customer_id": customer["customer"]["id"], "max_deployments": 5});
        let (status, issued) = call(&app, Method::POST, "/v1/licenses", Some(ADMIN_KEY), terms).await;
        assert_eq!(status, 201, "{issued}");
        licenses.push(issued["license"]["id"].as_str().expect("id").to_owned());
    }
    let token = serde_json::json!({"name": "edge", "scopes": ["edge"]});
    let (status, token) = call(&app, Method::POST, "/v1/api-keys", Some(ADMIN_KEY), token).await;
    assert_eq!(status, 201, "{token}");
    let token = token["secret"].as_str().expect("secret").to_owned();

    // 100 events over `spread` licenses, each license's events from `values` deployments,
    // fingerprints and client addresses, one country.
    let batch = |id: &str, spread: usize, values: usize| {
        let at = chrono::Utc::now().to_rfc3339();
        let events: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                let v = (i / spread) % values;
                serde_json::json!({"license_id": licenses[i % spread], "deployment_id": format!("dep-{v}"),
                    "fingerprint": format!("fp-{v}"), "client_ip": format!("198.51.100.{v}"), "country": "DE",
                    "code": "VALID", "at": at, "edge": "FRA"})
            })
            .collect();
        serde_json::json!({"batch_id": id, "events": events})
    };
    let mut rows: Vec<(&str, BTreeMap<String, u64>)> = Vec::new();
    let mut measure = async |label: &'static str, body: serde_json::Value, duplicate: bool| {
        requests.reset();
        let (status, answer) =
            call(&app, Method::POST, "/v1/internal/validation-events", Some(&token), body).await;
        assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(duplicate)), "{label}: {answer}");
        let counts = requests.counts();
        rows.push((label, counts.clone()));
        counts
    };
    let first =
        measure("1 license, 1 value per kind: first batch of the day", batch("b1", 1, 1), false).await;
    let steady = measure("1 license, 1 value per kind: next batch", batch("b2", 1, 1), false).await;
    let replay = measure("the same batch again (an edge's retry)", batch("b2", 1, 1), true).await;
    measure("1 license, 5 values per kind: first batch with them", batch("b3", 1, 5), false).await;
    let five = measure("1 license, 5 values per kind: next batch", batch("b4", 1, 5), false).await;
    measure("10 licenses, 1 value per kind: first batch of the day", batch("b5", 10, 1), false).await;
    let spread = measure("10 licenses, 1 value per kind: next batch", batch("b6", 10, 1), false).await;

    println!("| batch of 100 events | DynamoDB requests |\n| --- | --- |");
    for (label, counts) in &rows {
        let cells: Vec<String> = counts.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!("| {label} | {} |", cells.join(", "));
    }
    let total = |counts: &BTreeMap<String, u64>| counts.values().sum::<u64>();
    // A replay: the service token's read and the guard's refused transaction, nothing else.
    assert_eq!(
        replay,
        BTreeMap::from([("GetItem".into(), 1), ("TransactWriteItems".into(), 1)]),
        "{replay:?}"
    );
    let fixed = total(&replay);
    // A known day: that, one UpdateItem per distinct value (4 kinds), and per (license, day)
    // one compliance evaluation (the license and the day's aggregate read, the record written).
    let per_license = total(&steady) - fixed - 4;
    assert!(per_license <= 4, "one evaluation costs at most 4 requests: {steady:?}");
    assert_eq!(total(&five), fixed + (5 + 5 + 5 + 1) + per_license, "{five:?}");
    assert_eq!(total(&spread), fixed + 10 * (4 + per_license), "{spread:?}");
    assert!(total(&first) >= total(&steady), "{first:?}");
}
