//! The same `nls` binary on DynamoDB: `nls dynamodb create-table` on a real DynamoDB-compatible
//! server (moto), then `nls serve --store dynamodb --table NAME` driven over HTTP.

use std::process::Command;

use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::json;

#[test]
fn serve_runs_on_a_dynamodb_table() {
    let env = aws_env(&MotoServer::shared().endpoint);
    let created = Command::new(nls_binary())
        .args(["dynamodb", "create-table", "--table", "nls-e2e"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run create-table");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let dir = TempDir::new("serve-dynamodb");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = NlsServer::start_with_env(
        dir.path(),
        &[
            "--store",
            "dynamodb",
            "--table",
            "nls-e2e",
            "--snapshot-ttl-ms",
            "0",
            "--renewals-every-secs",
            "0",
        ],
        &env_refs,
        "warn",
    );
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let license = server.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"], "max_deployments": 1})),
    );
    let key = license["key"].as_str().expect("key").to_owned();
    let first = server.validate(&json!({"key": key, "deployment_id": "host-1"}));
    assert_eq!(first["code"], "VALID", "{first}");
    let second = server.validate(&json!({"key": key, "deployment_id": "host-2"}));
    assert_eq!(second["code"], "TOO_MANY_DEPLOYMENTS", "{second}");

    // The data lives in DynamoDB, not in the data dir: a restarted server still knows it.
    server.restart();
    let again = server.validate(&json!({"key": key, "deployment_id": "host-1"}));
    assert_eq!(again["code"], "VALID", "{again}");
    assert!(!dir.path().join("nls.sqlite3").exists(), "no embedded store was opened");
}
