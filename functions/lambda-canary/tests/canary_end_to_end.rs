//! The canary against a real `nls serve`: it passes (metric 1) against a healthy origin,
//! fails (metric 0) when the server is stopped, and fails when the answer's receipt is signed
//! by a key outside the expected JWKS. Then the real `nls-canary` binary under cargo-lambda's
//! Runtime API emulator, with its key in Secrets Manager (moto), publishes the same metric.
//!
//! Needs `cargo build -p nls` first (tests/run.sh does it), moto and cargo-lambda.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use nls_core::key_ring::KeyRing;
use nls_lambda_canary::canary_check::{CanaryOutcome, run_check};
use nls_lambda_canary::canary_http::CanaryHttp;
use nls_lambda_canary::emf::{SUCCESS_METRIC, emf_line};
use nls_lambda_canary::{CanaryDeps, run_canary};
use nls_tests::lambda_runtime::{ChildGuard, LocalRuntimeApi};
use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, run_nls};
use serde_json::{Value, json};

fn base(server: &NlsServer) -> String {
    format!("http://127.0.0.1:{}", server.port)
}

/// A dedicated canary customer and license (what docs/operations.md tells an operator to make).
fn canary_license(server: &NlsServer) -> String {
    let customer = server.admin(
        "POST",
        "/v1/customers",
        Some(&json!({"name": "NLS canary", "email": "canary@nls.test"})),
    );
    let created =
        server.admin("POST", "/v1/licenses", Some(&json!({"customer_id": customer["customer"]["id"]})));
    created["key"].as_str().expect("the license key").to_owned()
}

fn jwks_of(server: &NlsServer) -> KeyRing {
    let answer = server.call("GET", "/.well-known/jwks.json", None, None);
    KeyRing::parse_jwks_json(&answer.text()).expect("a JWKS")
}

fn http() -> CanaryHttp {
    CanaryHttp::new(Duration::from_secs(5), false).expect("client")
}

fn metric_value(outcome: &CanaryOutcome) -> i64 {
    let line: Value = serde_json::from_str(&emf_line("test", outcome, 0)).expect("EMF JSON");
    line[SUCCESS_METRIC].as_i64().expect("the success metric")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn the_canary_passes_against_nls_serve_and_fails_when_the_server_is_stopped() {
    let dir = TempDir::new("canary-pass");
    let mut server = NlsServer::start(dir.path(), &[]);
    let key = canary_license(&server);
    let url = base(&server);
    let expected = jwks_of(&server);
    let http = http();
    let rt = runtime();

    // GIVEN a healthy origin: the check passes, the metric is 1
    let outcome = rt.block_on(run_check(&http, &url, &key, &expected, Utc::now()));
    assert!(outcome.passed, "{outcome:?}");
    assert_eq!(metric_value(&outcome), 1);
    // The whole run as the Lambda does it (the JWKS fetched from the origin) passes too.
    let deps = CanaryDeps {
        http,
        target_url: url.clone(),
        jwks_url: format!("{url}/.well-known/jwks.json"),
        license_key: key.clone(),
        stage: "test".into(),
    };
    assert!(rt.block_on(run_canary(&deps, Utc::now())).passed);

    // WHEN the license is suspended, THEN the canary fails (the answer is not VALID)
    let license_id = nls_core::license_token::verify_license_key(&expected, &key).unwrap().claims.sub;
    server.admin("POST", &format!("/v1/licenses/{license_id}/suspend"), None);
    let suspended = rt.block_on(run_check(&deps.http, &url, &key, &expected, Utc::now()));
    assert_eq!(suspended.failure.as_deref(), Some("the answer is SUSPENDED, not VALID"));
    server.admin("POST", &format!("/v1/licenses/{license_id}/reactivate"), None);
    assert!(rt.block_on(run_check(&deps.http, &url, &key, &expected, Utc::now())).passed);

    // WHEN the server stops, THEN the check fails and the metric is 0
    server.stop();
    let outcome = rt.block_on(run_check(&deps.http, &url, &key, &expected, Utc::now()));
    assert!(!outcome.passed);
    assert!(outcome.failure.as_deref().is_some_and(|f| f.starts_with("no answer")), "{outcome:?}");
    assert_eq!(metric_value(&outcome), 0);
    let whole = rt.block_on(run_canary(&deps, Utc::now()));
    assert!(!whole.passed && whole.failure.as_deref().is_some_and(|f| f.contains("JWKS")), "{whole:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_canary_fails_when_the_receipt_is_signed_by_a_key_outside_the_expected_jwks() {
    // GIVEN the real origin, and an impostor holding a copy of its data that signs with
    // another key (a rotated copy: it still accepts the license key, so it answers VALID)
    let dir = TempDir::new("canary-origin");
    let mut origin = NlsServer::start(dir.path(), &[]);
    let key = canary_license(&origin);
    let expected = jwks_of(&origin);
    origin.stop();
    let impostor_dir = TempDir::new("canary-impostor");
    copy_dir(dir.path(), impostor_dir.path());
    run_nls(&["keys", "rotate", "--data-dir", impostor_dir.path().to_str().unwrap()], &[]);
    origin.start_again();
    let impostor = NlsServer::start(impostor_dir.path(), &[]);
    let rt = runtime();
    let http = http();

    // WHEN the canary checks both against the origin's JWKS
    let genuine = rt.block_on(run_check(&http, &base(&origin), &key, &expected, Utc::now()));
    let forged = rt.block_on(run_check(&http, &base(&impostor), &key, &expected, Utc::now()));

    // THEN the origin passes and the impostor, though it answers VALID, fails on the receipt
    assert!(genuine.passed, "{genuine:?}");
    let answer = impostor.validate(&json!({"key": key}));
    assert_eq!(answer["code"], "VALID", "the impostor answers VALID: {answer}");
    assert!(!forged.passed);
    assert!(
        forged.failure.as_deref().is_some_and(|f| f.starts_with("the receipt does not verify")),
        "{forged:?}"
    );
    assert_eq!(metric_value(&forged), 0);
}

/// The EMF lines the function printed, parsed.
fn emf_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

#[test]
fn the_canary_binary_under_the_runtime_api_emulator_publishes_its_metric() {
    // GIVEN an origin, the canary key in Secrets Manager (moto), and the nls-canary binary
    // polling cargo-lambda's Runtime API
    let dir = TempDir::new("canary-lambda");
    let mut server = NlsServer::start(dir.path(), &[]);
    let key = canary_license(&server);
    let moto = MotoServer::shared();
    let secret_id = format!("nls/test/canary-key-{}", std::process::id());
    moto.create_secret(&secret_id, &key);
    let runtime = LocalRuntimeApi::start(Path::new(env!("CARGO_MANIFEST_DIR")));
    let link = runtime.connect_function();
    let log = dir.path().join("canary.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let process = Command::new(env!("CARGO_BIN_EXE_nls-canary"))
        .envs(link.env())
        .envs(aws_env(&moto.endpoint))
        .env_remove("AWS_PROFILE")
        .env("NLS_CANARY_URL", base(&server))
        .env("NLS_CANARY_KEY_SECRET_ID", &secret_id)
        .env("NLS_STAGE", "test")
        .env("NLS_CANARY_TIMEOUT_MS", "2000")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start nls-canary");
    let _process = ChildGuard(process);

    // WHEN the schedule invokes it, THEN it passes and prints CanarySuccess 1
    let scheduled =
        json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}).to_string();
    let (status, body) = runtime.invoke(&scheduled);
    assert_eq!(status, 200, "{body}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let result: Value = serde_json::from_str(&body).expect("the outcome JSON");
    assert_eq!(result["passed"], true, "{result}");
    let lines = emf_lines(&log);
    assert_eq!(lines.len(), 1, "one EMF line per run");
    assert_eq!((lines[0][SUCCESS_METRIC].as_i64(), lines[0]["Stage"].as_str()), (Some(1), Some("test")));
    assert!(!std::fs::read_to_string(&log).unwrap().contains(&key), "the license key is never logged");

    // WHEN the origin is down, THEN the invocation still succeeds and the metric is 0
    server.stop();
    let (status, body) = runtime.invoke(&scheduled);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["passed"], false);
    let lines = emf_lines(&log);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1][SUCCESS_METRIC].as_i64(), Some(0));
    assert!(lines[1]["failure"].is_string());
}
