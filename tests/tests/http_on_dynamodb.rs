//! The same `nls` binary on DynamoDB: `nls dynamodb create-table` on a real DynamoDB-compatible
//! server (moto), then `nls serve --store dynamodb --table NAME` driven over HTTP.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::json;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NLS_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    assert!(venv.exists(), "moto_server not found: run tests/run.sh, or set NLS_MOTO_SERVER");
    venv
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new(moto_binary())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn moto_server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, endpoint: format!("http://127.0.0.1:{port}") }
}

fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

#[test]
fn serve_runs_on_a_dynamodb_table() {
    let moto = start_moto();
    let env = aws_env(&moto.endpoint);
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
