//! End to end: the real `nls-api` binary under cargo-lambda's local Runtime API, against moto
//! (DynamoDB and Secrets Manager), driven over HTTP through the lambda-url route. Nothing is
//! mocked: init fetches the signing key from the secret and builds its clients from the
//! environment, as in AWS.

#[path = "../../aws/tests/moto_support/mod.rs"]
mod moto_support;

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moto_support::MotoServer;
use nls_core::key_ring::SigningKey;
use nls_core::ports::UsageStore;

const ADMIN_KEY: &str = "lambda-e2e-bootstrap-admin-key";

/// Kills the child when the test ends, passing or not.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_cargo_lambda() -> PathBuf {
    if let Ok(path) = std::env::var("NLS_CARGO_LAMBDA") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|dirs| std::env::split_paths(&dirs).collect::<Vec<_>>())
        .map(|dir| dir.join("cargo-lambda"));
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/cargo-lambda");
    on_path.chain([venv]).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("cargo-lambda not found: set NLS_CARGO_LAMBDA, put it on PATH, or `.venv/bin/pip install cargo-lambda`")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("ephemeral port").port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request (connection closed after it): (status, JSON body or Null).
fn http(
    port: u16,
    method: &str,
    path: &str,
    admin: bool,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the runtime emulator");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = if admin { format!("Authorization: Bearer {ADMIN_KEY}\r\n") } else { String::new() };
    write!(
        stream,
        "{method} /lambda-url/_{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lambda_serves_a_license_lifecycle_on_moto() {
    // GIVEN moto with the table and the signing-key secret
    let server = MotoServer::shared();
    let table = moto_support::fresh_table().await;
    let secret_id = format!("nls/e2e/{}/signing-key", table.table);
    let secrets = aws_sdk_secretsmanager::Client::new(&server.sdk_config().await);
    let jwk = serde_json::to_string(&SigningKey::generate().to_private_jwk()).expect("JWK");
    secrets.create_secret().name(&secret_id).secret_string(jwk).send().await.expect("create the secret");

    // AND the local Runtime API with the release-shaped binary polling it
    let runtime_port = free_port();
    let _runtime = ChildGuard(
        Command::new(find_cargo_lambda())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &runtime_port.to_string(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cargo lambda watch"),
    );
    wait_for_port(runtime_port, "cargo lambda watch");
    let _function = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_nls-api"))
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{runtime_port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_ENDPOINT_URL", &server.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .env("NLS_TABLE_NAME", &table.table)
            .env("NLS_SIGNING_KEY_SECRET_ID", &secret_id)
            .env("NLS_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nls-api"),
    );

    // WHEN a customer and a license with two seats are created
    let (status, health) = http(runtime_port, "GET", "/health", false, None);
    assert_eq!(status, 200, "{health}");
    let (status, customer) = http(
        runtime_port,
        "POST",
        "/v1/customers",
        true,
        Some(serde_json::json!({"name": "Acme", "email": "ops@acme.example"})),
    );
    assert_eq!(status, 201, "{customer}");
    let create = serde_json::json!({"customer_id": customer["customer"]["id"], "features": ["sso"], "max_deployments": 2});
    let (status, issued) = http(runtime_port, "POST", "/v1/licenses", true, Some(create));
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().expect("key").to_owned();
    let license_id = issued["license"]["id"].as_str().expect("license id").to_owned();

    // THEN validation takes seats up to the limit
    let validate = |deployment: &str| {
        let body = serde_json::json!({"key": key, "deployment_id": deployment, "features": ["sso"]});
        let (status, answer) = http(runtime_port, "POST", "/v1/licenses/validate", false, Some(body));
        assert_eq!(status, 200, "{answer}");
        answer["code"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(validate("dep-a"), "VALID");
    assert_eq!(validate("dep-b"), "VALID");
    assert_eq!(validate("dep-c"), "TOO_MANY_DEPLOYMENTS");

    // AND heartbeats renew, a usage batch counts once however often it is sent
    let (status, beat) = http(
        runtime_port,
        "POST",
        "/v1/heartbeat",
        false,
        Some(serde_json::json!({"key": key, "deployment_id": "dep-a"})),
    );
    assert_eq!(status, 200, "{beat}");
    let batch = serde_json::json!({
        "key": key, "deployment_id": "dep-a", "batch_id": "batch-1",
        "records": [{"metric": "api_calls", "value": 5, "at": "2026-11-30T10:00:00Z"}]
    });
    for _ in 0..3 {
        let (status, answer) = http(runtime_port, "POST", "/v1/usage", false, Some(batch.clone()));
        assert_eq!(status, 202, "{answer}");
    }
    let counters = table.store.usage_counters(&license_id, "2026-11").await.expect("counters");
    assert_eq!(counters.get("api_calls"), Some(&5));

    // AND a suspension is seen by the next validation
    let (status, suspended) = http(
        runtime_port,
        "POST",
        &format!("/v1/licenses/{license_id}/suspend"),
        true,
        Some(serde_json::json!({})),
    );
    assert!((200..300).contains(&status), "{status} {suspended}");
    assert_eq!(validate("dep-a"), "SUSPENDED");
}
