//! The Rust client against a real `nls serve` (started by each test from the built binary;
//! `cargo build -p nls` first). No test here is skipped: a server that cannot start fails.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use nls_client::{AnswerOutcome, ClientConfig, InvalidCode, LicenseClient, LicenseState};
use support::{Server, temp_dir};
use tower::ServiceExt;

fn config(server: &Server, key: &str, dir: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::new(&server.url, key, &server.jwks(), dir);
    config.request_timeout = Duration::from_secs(5);
    config
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn validates_caches_the_receipt_and_works_offline_from_it() {
    let mut server = Server::start(3600);
    let (_, key) = server.issue_license(serde_json::json!({"features": ["reports"], "limits": {"runs": 5}}));
    let dir = temp_dir("offline");
    let client = LicenseClient::start(config(&server, &key, &dir)).unwrap();
    let state = client.state();
    assert!(matches!(state, LicenseState::Valid { .. }), "{state:?}");
    assert!(client.has_feature("reports") && !client.has_feature("audit"));
    assert_eq!(client.check_limit("runs", 5).limit, Some(5));
    client.shutdown();
    drop(client); // releases the usage spool's lock for the next process

    // The server goes away: the next check is offline, not invalid.
    let jwks = server.jwks();
    server.kill();
    let mut cfg = ClientConfig::new(&server.url, &key, &jwks, &dir);
    cfg.request_timeout = Duration::from_secs(2);
    let restarted = LicenseClient::open(cfg.clone()).unwrap();
    assert!(matches!(restarted.validate_now(), AnswerOutcome::Offline { .. }));
    let state = restarted.state();
    assert!(matches!(state, LicenseState::Offline { .. }), "offline from the cached receipt: {state:?}");
    assert!(restarted.has_feature("reports"), "features come from the signed receipt");
    drop(restarted);

    // Someone edits the cache (say, to push the receipt's time forward): it is ignored.
    let cache_path = dir.join("license-cache.json");
    let cache = std::fs::read_to_string(&cache_path).unwrap();
    std::fs::write(&cache_path, cache.replacen("\"effective\": ", "\"effective\": 1", 1)).unwrap();
    let tampered = LicenseClient::open(cfg).unwrap();
    tampered.validate_now();
    assert!(
        matches!(tampered.state(), LicenseState::Invalid { code: InvalidCode::NotValidated, .. }),
        "{:?}",
        tampered.state()
    );
}

#[test]
fn air_gapped_install_runs_on_the_offline_file_until_its_ttl() {
    use std::sync::{Arc, Mutex};
    struct SetClock(Mutex<chrono::DateTime<chrono::Utc>>);
    impl nls_client::Clock for SetClock {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            *self.0.lock().unwrap()
        }
    }
    let server = Server::start(3600);
    let (license_id, _) = server.issue_license(serde_json::json!({"features": ["reports"]}));
    let (file, expires_at) =
        server.offline_file(&license_id, serde_json::json!({"ttl_days": 2, "fingerprint": "machine-1"}));
    let jwks = server.jwks();
    drop(server); // air-gapped: no server from here on
    let at = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap();
    let clock = Arc::new(SetClock(Mutex::new(chrono::Utc::now())));
    let open = |fingerprint: &str| {
        let mut config = ClientConfig::air_gapped(&file, &jwks, temp_dir("airgap"));
        config.fingerprint = Some(fingerprint.to_owned());
        config.clock = clock.clone();
        LicenseClient::open(config)
    };
    assert!(open("machine-2").is_err(), "a file bound to machine-1 is refused on machine-2");
    let client = open("machine-1").unwrap();
    assert!(matches!(
        client.state(),
        LicenseState::Valid { source: nls_client::ProofSource::OfflineFile, .. }
    ));
    assert!(client.has_feature("reports"));
    *clock.0.lock().unwrap() = at(expires_at - 1);
    assert!(client.state().is_usable());
    *clock.0.lock().unwrap() = at(expires_at);
    assert!(matches!(client.state(), LicenseState::Invalid { code: InvalidCode::OfflineFileInvalid, .. }));
}

#[test]
fn a_revoked_license_fails_closed() {
    let server = Server::start(3600);
    let (license_id, key) = server.issue_license(serde_json::json!({}));
    let client = LicenseClient::open(config(&server, &key, &temp_dir("revoke"))).unwrap();
    assert!(matches!(client.validate_now(), AnswerOutcome::Good { .. }));
    server.revoke(&license_id);
    let outcome = client.validate_now();
    assert!(matches!(outcome, AnswerOutcome::Refused { code: InvalidCode::Revoked, .. }), "{outcome:?}");
    assert!(matches!(client.state(), LicenseState::Invalid { code: InvalidCode::Revoked, .. }));
}

#[test]
fn heartbeats_keep_the_seat_and_a_stopped_client_frees_it() {
    let lease = 5;
    let server = Server::start(lease);
    let (license_id, key) = server.issue_license(serde_json::json!({"max_deployments": 1}));
    let mut a = config(&server, &key, &temp_dir("seat-a"));
    a.deployment_id = Some("dep-a".into());
    a.heartbeat_interval = Some(Duration::from_secs(1));
    let a = LicenseClient::start(a).unwrap();
    assert!(matches!(a.state(), LicenseState::Valid { .. }));
    let mut b = config(&server, &key, &temp_dir("seat-b"));
    b.deployment_id = Some("dep-b".into());
    let b = LicenseClient::open(b).unwrap();

    // Twice the lease later, A's heartbeats still hold the only seat.
    std::thread::sleep(Duration::from_secs(2 * u64::from(lease)));
    assert_eq!(server.live_deployments(&license_id), vec!["dep-a".to_owned()]);
    let outcome = b.validate_now();
    assert!(
        matches!(outcome, AnswerOutcome::Refused { code: InvalidCode::TooManyDeployments, .. }),
        "{outcome:?}"
    );

    // A stops (no release): its lease runs out and B gets the seat.
    a.shutdown();
    wait_for("A's seat to be freed", Duration::from_secs(3 * u64::from(lease)), || {
        server.live_deployments(&license_id).is_empty()
    });
    let outcome = b.validate_now();
    assert!(matches!(outcome, AnswerOutcome::Good { .. }), "{outcome:?}");
    assert_eq!(server.live_deployments(&license_id), vec!["dep-b".to_owned()]);
}

#[test]
fn usage_spool_survives_kill_9_nothing_lost_nothing_doubled() {
    let server = Server::start(3600);
    let (license_id, key) = server.issue_license(serde_json::json!({}));
    let dir = temp_dir("kill9");
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, server.jwks()).unwrap();
    let data_dir = dir.join("data");
    let example = support::target_dir().join("debug/examples/report_usage");
    assert!(example.exists(), "{} is missing: `cargo test` builds it", example.display());
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(&example);
        cmd.args(["--server", &server.url, "--key", &key, "--jwks-file"])
            .arg(&jwks_file)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    };

    // Three reporting processes, each SIGKILLed part-way through recording and flushing.
    let mut recorded = 0u64;
    for (round, kill_after) in [(1, 137u64), (2, 260), (3, 41)] {
        let mut child = run(&["--records", "100000", "--flush-every", "7"]).spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut last, mut killed) = (0, false);
        // Read to the end: lines printed between our kill and its arrival count too.
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("recorded ") {
                last = n.parse::<u64>().unwrap();
                if last >= kill_after && !killed {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
        }
        child.wait().unwrap();
        assert!(last >= kill_after, "round {round}: the reporter died early");
        recorded += last;
    }

    // A fresh process drains the spool: everything left is sent, nothing is pending.
    let output = run(&["--drain"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.starts_with("drained 0 "), "drain: {text}");

    // Each killed process may have fsync'd one record it never got to print (slack: 3). A batch
    // holds 7 records, so a batch counted twice would exceed the slack, and a lost one fall short.
    let counted = server.usage_counter(&license_id, "api_calls");
    assert!(
        (recorded..=recorded + 3).contains(&counted),
        "server counted {counted}, reporters recorded {recorded} (+ at most 1 unprinted per kill)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn middleware_codes_against_the_server() {
    let server = Server::start(3600);
    let (license_id, key) =
        server.issue_license(serde_json::json!({"features": ["reports"], "limits": {"runs": 2}}));
    // The client's calls are blocking (ureq); a test may block a worker of its own runtime.
    let license = LicenseClient::open(config(&server, &key, &temp_dir("mw"))).unwrap();
    license.validate_now();
    let app = Router::new()
        .route("/reports", get(|| async { "ok" }).layer(license.require_feature("reports")))
        .route("/audit", get(|| async { "ok" }).layer(license.require_feature("audit")))
        .route("/runs", get(|| async { "ok" }).layer(license.check_usage_limit("runs")))
        .route("/home", get(|| async { "ok" }))
        .layer(license.require_valid_license());
    let call = |path: &'static str| {
        let app = app.clone();
        async move {
            let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(call("/home").await, (StatusCode::OK, String::new()));
    assert_eq!(call("/reports").await, (StatusCode::OK, String::new()));
    assert_eq!(call("/audit").await, (StatusCode::FORBIDDEN, "FEATURE_NOT_ENTITLED".into()));
    assert_eq!(call("/runs").await.0, StatusCode::OK);
    assert_eq!(call("/runs").await.0, StatusCode::OK);
    assert_eq!(call("/runs").await, (StatusCode::PAYMENT_REQUIRED, "USAGE_LIMIT_EXCEEDED".into()));
    // The two runs reach the server's counters.
    let report = license.flush_usage();
    assert_eq!((report.records_sent, report.stopped), (2, None));
    let counted = server.usage_counter(&license_id, "runs");
    assert_eq!(counted, 2);
    // Revoked: every guarded route answers 402 REVOKED after the next check-in.
    server.revoke(&license_id);
    license.validate_now();
    assert_eq!(call("/home").await, (StatusCode::PAYMENT_REQUIRED, "REVOKED".into()));
    assert_eq!(call("/reports").await, (StatusCode::PAYMENT_REQUIRED, "REVOKED".into()));
}
