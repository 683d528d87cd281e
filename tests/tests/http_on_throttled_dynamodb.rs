//! Issue 17, fault injection on DynamoDB: `nls serve --store dynamodb` behind a proxy that
//! answers half of moto's requests with `ThrottlingException` /
//! `ProvisionedThroughputExceededException` (`nls_tests::throttling_proxy`). The SDK's retries
//! absorb most; what is left answers as the contract says: validations 200 (degraded, no
//! receipt, when the store failed them), writes 2xx or 503 with `Retry-After`, never 500; no
//! seat beyond the limit, and usage retried by the client is counted once.

use std::collections::BTreeSet;
use std::process::Command;

use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use nls_tests::throttling_proxy::ThrottlingProxy;
use serde_json::json;

#[test]
fn throttled_dynamodb_keeps_answers_in_contract_and_invariants_whole() {
    let moto = MotoServer::shared();
    let table = format!("nls-throttled-{}", std::process::id());
    let table = table.as_str();
    let created = Command::new(nls_binary())
        .args(["dynamodb", "create-table", "--table", table])
        .envs(aws_env(&moto.endpoint).iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run create-table");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let proxy = ThrottlingProxy::start(moto.endpoint.trim_start_matches("http://"), 17, 0);
    let env = aws_env(&proxy.endpoint);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = TempDir::new("throttled-dynamodb");
    let server = NlsServer::start_with_env(
        dir.path(),
        &["--store", "dynamodb", "--table", table, "--snapshot-ttl-ms", "0", "--renewals-every-secs", "0"],
        &env_refs,
        "warn",
    );
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let license = server.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"], "max_deployments": 3})),
    );
    let (license_id, key) =
        (license["license"]["id"].as_str().unwrap().to_owned(), license["key"].as_str().unwrap().to_owned());

    proxy.set_per_mille(500);
    let (mut confirmed, mut degraded, mut unavailable) = (BTreeSet::new(), 0, 0);
    for d in 0..24 {
        let r = server.call(
            "POST",
            "/v1/licenses/validate",
            None,
            Some(&json!({"key": key, "deployment_id": format!("dep-{d}")})),
        );
        assert_eq!(r.status, 200, "validation: {}", r.text());
        let answer = r.json();
        if answer["degraded"] == true {
            degraded += 1;
            assert!(answer["receipt"].is_null(), "{answer}");
        } else if answer["valid"] == true {
            confirmed.insert(answer["deployment"]["id"].as_str().unwrap().to_owned());
        }
    }
    for i in 0..12 {
        let r = server.call(
            "POST",
            "/v1/customers",
            Some(server.admin_key()),
            Some(&json!({"name": format!("c{i}"), "email": "c@acme.test"})),
        );
        assert!(r.status == 201 || r.status == 503, "POST /v1/customers: {} {}", r.status, r.text());
        if r.status == 503 {
            unavailable += 1;
            assert!(r.header("retry-after").is_some(), "a 503 without Retry-After");
        }
    }
    let at = chrono::Utc::now().to_rfc3339();
    for batch in 0..12 {
        let body = json!({"key": key, "deployment_id": "dep-0", "batch_id": format!("b{batch}"),
            "records": [{"metric": "calls", "value": 2, "at": at}]});
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 50, "batch {batch} never acknowledged");
            let r = server.call("POST", "/v1/usage", None, Some(&body));
            if r.status == 202 {
                break;
            }
            assert_eq!(r.status, 503, "usage: {}", r.text());
            assert!(r.header("retry-after").is_some());
            unavailable += 1;
        }
    }
    assert!(proxy.throttled() > 0, "nothing was throttled");
    eprintln!(
        "throttled {} requests; {degraded} degraded validations, {unavailable} 503s",
        proxy.throttled()
    );
    assert!(confirmed.len() <= 3, "{} seats confirmed", confirmed.len());

    proxy.set_per_mille(0);
    let deployments = server.admin("GET", &format!("/v1/licenses/{license_id}/deployments"), None);
    let live = deployments["items"].as_array().map_or(0, |items| items.len());
    assert!(live <= 3, "{live} seats held: {deployments}");
    let usage = server.admin("GET", &format!("/v1/licenses/{license_id}/usage"), None);
    assert_eq!(usage["counters"]["calls"], 24, "12 batches of 2, each counted once: {usage}");
}
