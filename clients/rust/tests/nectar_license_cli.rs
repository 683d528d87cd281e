//! `nectar-license` against a real `nls serve`: a good license, then each failure class made
//! for real (a typo'd, foreign, edited or foreign-signed key, an expired, suspended or full
//! license, the server down, a self-signed TLS endpoint, a proxy that shifts the server's
//! `Date`, a clock set back, an unusable data dir), each with its documented exit code and
//! message; the support bundle holds no secret. `cargo build -p nls` first.

#[path = "support/fault_servers.rs"]
mod fault_servers;
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nls_client::{ClientConfig, LicenseClient, LicenseState};
use support::{ADMIN_KEY, Server, nls_binary, temp_dir};

const CLI: &str = env!("CARGO_BIN_EXE_nectar-license");

/// One install's configuration, as flags; the environment the CLI inherits is cleared of
/// anything that could change its answer.
struct Install {
    server: String,
    key_file: PathBuf,
    jwks: PathBuf,
    data_dir: PathBuf,
}

impl Install {
    fn new(server_url: &str, key: &str, jwks: &str) -> Self {
        let dir = temp_dir("cli");
        std::fs::write(dir.join("key"), key).unwrap();
        std::fs::write(dir.join("jwks.json"), jwks).unwrap();
        Self {
            server: server_url.to_owned(),
            key_file: dir.join("key"),
            jwks: dir.join("jwks.json"),
            data_dir: dir.join("state"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(CLI);
        for var in
            ["NECTAR_LICENSE_SERVER", "NECTAR_LICENSE_KEY", "NECTAR_LICENSE_JWKS", "NECTAR_LICENSE_DATA_DIR"]
                .iter()
                .chain(&["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
        {
            cmd.env_remove(var);
        }
        cmd.args(["--server", &self.server, "--key-file"])
            .arg(&self.key_file)
            .arg("--jwks")
            .arg(&self.jwks)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--timeout", "5"])
            .args(args)
            .envs(env.iter().copied());
        cmd.output().expect("run nectar-license")
    }

    fn app_config(&self, key: &str) -> ClientConfig {
        let jwks = std::fs::read_to_string(&self.jwks).unwrap();
        let mut config = ClientConfig::new(&self.server, key, &jwks, &self.data_dir);
        config.request_timeout = Duration::from_secs(5);
        config
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs `diagnose` and checks its exit code, the failing check and a phrase of its message.
fn expect_failure(install: &Install, code: i32, failed_check: &str, phrase: &str) {
    let human = install.run(&["diagnose"]);
    let shown = text(&human);
    assert_eq!(human.status.code(), Some(code), "exit code; output:\n{shown}");
    assert!(shown.contains(phrase), "expected {phrase:?} in:\n{shown}");
    assert!(
        shown.contains(&format!("result: {failed_check} failed")),
        "expected {failed_check} in:\n{shown}"
    );
    assert!(shown.contains("fix: "), "every failure comes with a fix:\n{shown}");
    let json = install.run(&["diagnose", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("diagnose --json is JSON");
    assert_eq!(report["exit_code"], code, "{report:#}");
    assert_eq!(report["failure"]["check"], failed_check, "{report:#}");
    assert_eq!(json.status.code(), Some(code));
}

#[test]
fn a_good_license_diagnoses_clean_shows_its_status_bundles_without_secrets_and_releases() {
    let server = Server::start(3600);
    let (license_id, key) = server
        .issue_license(serde_json::json!({"tier": "pro", "features": ["reports"], "limits": {"runs": 50}}));
    let install = Install::new(&server.url, &key, &server.jwks());

    let diagnose = install.run(&["diagnose"]);
    let shown = text(&diagnose);
    assert_eq!(diagnose.status.code(), Some(0), "{shown}");
    assert!(shown.contains("result: the license is usable (exit 0)"), "{shown}");
    for check in [
        "[ok  ] signature",
        "[ok  ] dns",
        "[ok  ] tcp",
        "[ok  ] http",
        "[ok  ] clock_skew",
        "[ok  ] validation",
    ] {
        assert!(shown.contains(check), "missing {check:?} in:\n{shown}");
    }
    // diagnose saved the deployment id the app then reuses: one seat, not two.
    let deployment_id = std::fs::read_to_string(install.data_dir.join("deployment-id")).unwrap();

    // Before the app ever ran, status says so and is not usable.
    let status = install.run(&["status"]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    assert!(text(&status).contains("NOT_VALIDATED"), "{}", text(&status));

    // The app (the library) validates and records usage; status shows what it knows.
    let app = LicenseClient::start(install.app_config(&key)).unwrap();
    app.record_usage("runs", 3).unwrap();
    // Delivered, then validated again: the answer (and its receipt) carry the fleet's count.
    assert_eq!(app.flush_usage().batches_sent, 1);
    assert!(matches!(app.validate_now(), nls_client::AnswerOutcome::Good { .. }));
    app.heartbeat_now().expect("a heartbeat renews the lease");
    app.shutdown();
    drop(app);
    assert_eq!(server.live_deployments(&license_id), vec![deployment_id.trim().to_owned()]);
    let status = install.run(&["status"]);
    let shown = text(&status);
    assert_eq!(status.status.code(), Some(0), "{shown}");
    for phrase in ["VALID", "pro", "reports", "runs=50/month", &license_id, "last good validation"] {
        assert!(shown.contains(phrase), "missing {phrase:?} in:\n{shown}");
    }
    assert!(!shown.contains(&key), "status never prints the key");
    let json: serde_json::Value = serde_json::from_slice(&install.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["state"], "valid");
    assert_eq!(json["usable"], true);
    assert_eq!(json["license"]["tier"], "pro");
    assert_eq!(json["deployment_id"], deployment_id.trim());
    assert!(json["receipt_age_seconds"].as_i64().unwrap() < 600, "{json:#}");
    // Fleet usage per limited metric, and the lease the heartbeat renewed.
    let runs = &json["fleet_usage"]["metrics"]["runs"];
    assert_eq!((runs["used"].as_u64(), runs["limit"].as_u64()), (Some(3), Some(50)), "{json:#}");
    assert_eq!(runs["remaining"].as_u64(), Some(47), "{json:#}");
    assert_eq!(json["lease"]["deployment_id"], deployment_id.trim());
    assert_eq!(json["lease"]["source"], "heartbeat");
    let left = json["lease"]["lease_left_seconds"].as_i64().unwrap_or_default();
    assert!(left > 3000 && left <= 3600, "a 3600 s lease renewed just now: {json:#}");
    for phrase in ["runs: 3 used of 50", "deployment lease", "left); last heartbeat"] {
        assert!(shown.contains(phrase), "missing {phrase:?} in:\n{shown}");
    }

    // The support bundle: an app log that (wrongly) printed the key and an admin token.
    let app_log = install.data_dir.join("app.log");
    let other_key = typo(&key); // a key-shaped string that is not the configured key
    std::fs::write(
        &app_log,
        format!("boot key={key}\nretry with {other_key}\nAuthorization: Bearer {ADMIN_KEY}\nstarted\n"),
    )
    .unwrap();
    let bundle = install.data_dir.join("bundle.tar.gz");
    let out = install.run(&[
        "support-bundle",
        "--out",
        bundle.to_str().unwrap(),
        "--app-log",
        app_log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let files = read_bundle(&bundle);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "diagnose.txt",
        "diagnose.json",
        "config.json",
        "versions.json",
        "status.json",
        "logs/nectar-license.log",
        "logs/app.log",
    ] {
        assert!(names.contains(&format!("nectar-support/{name}").as_str()), "{name} missing from {names:?}");
    }
    let jws = key.strip_prefix("NLS-").unwrap().rsplit_once('-').unwrap().0;
    let signature = jws.rsplit('.').next().unwrap();
    let receipt = std::fs::read_to_string(install.data_dir.join("license-cache.json")).unwrap();
    let receipt: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    let receipt = receipt["body"]["receipt"].as_str().unwrap();
    for (name, content) in &files {
        let secrets = [
            ("key", key.as_str()),
            ("key JWS", jws),
            ("key signature", signature),
            ("other key", other_key.as_str()),
            ("admin key", ADMIN_KEY),
            ("receipt", receipt),
        ];
        for (what, secret) in secrets {
            assert!(!content.contains(secret), "{name} holds the {what}");
        }
    }
    let config = &files.iter().find(|(n, _)| n.ends_with("config.json")).unwrap().1;
    let config: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!(config["key"]["checksum"].as_str(), Some(&key[key.len() - 8..]));
    assert!(config["key"]["jti"].as_str().unwrap().starts_with("key_"), "{config:#}");
    let log = &files.iter().find(|(n, _)| n.ends_with("logs/app.log")).unwrap().1;
    assert!(log.contains("boot key=[license key removed]"), "{log}");
    assert!(
        log.contains(&format!("retry with NLS-[removed]-{}", &other_key[other_key.len() - 8..])),
        "{log}"
    );
    assert!(log.contains("Bearer [removed]") && log.contains("started"), "{log}");

    // Decommissioning: the seat is freed at once.
    let release = install.run(&["release"]);
    assert_eq!(release.status.code(), Some(0), "{}", text(&release));
    assert!(server.live_deployments(&license_id).is_empty());
}

fn read_bundle(path: &Path) -> Vec<(String, String)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            (name, content)
        })
        .collect()
}

/// The key with one character of its signature changed: the checksum no longer matches.
fn typo(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let i = chars.len() - 20;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// The key with its payload edited (tier → enterprise) and the checksum recomputed, as a
/// forger would: only the signature can catch it.
fn tampered(key: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jws = key.strip_prefix("NLS-").unwrap().rsplit_once('-').unwrap().0;
    let parts: Vec<&str> = jws.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["tier"] = "enterprise".into();
    let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
    nls_core::key_format::format_key(&format!("{}.{payload}.{}", parts[0], parts[2]))
}

/// A key signed by a signing key this server has never seen (another NLS, say staging).
fn foreign_signed_key(dir: &Path) -> String {
    let jwk = dir.join("other-signing.jwk");
    let generated =
        Command::new(nls_binary()).args(["keys", "generate", "--out"]).arg(&jwk).output().unwrap();
    assert!(generated.status.success(), "{}", text(&generated));
    let issued = Command::new(nls_binary())
        .args(["license", "issue", "--key"])
        .arg(&jwk)
        .args(["--customer", "cus_other", "--tier", "pro"])
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", text(&issued));
    String::from_utf8(issued.stdout).unwrap().trim().to_owned()
}

#[test]
fn each_key_failure_has_its_exit_code() {
    let server = Server::start(3600);
    let (_, key) = server.issue_license(serde_json::json!({}));
    let jwks = server.jwks();
    let check = |key: &str, code, failed, phrase| {
        expect_failure(&Install::new(&server.url, key, &jwks), code, failed, phrase)
    };
    check(&typo(&key), 11, "key.checksum", "checksum does not match");
    check("registry-password-0123456789", 11, "key.format", "not an NLS license key");
    check(&tampered(&key), 12, "key.signature", "the key was edited");
    check(&foreign_signed_key(&temp_dir("kid")), 13, "key.kid", "which the pinned JWKS does not hold");

    // No JWKS at all: a configuration failure that names the variable.
    let mut install = Install::new(&server.url, &key, &jwks);
    install.jwks = install.data_dir.join("missing-jwks.json");
    expect_failure(&install, 10, "config.jwks", "NECTAR_LICENSE_JWKS");
}

#[test]
fn each_license_failure_has_its_exit_code() {
    let server = Server::start(3600);
    let jwks = server.jwks();

    let expired = server.issue_expired_license();
    expect_failure(&Install::new(&server.url, &expired, &jwks), 14, "server.validation", "EXPIRED");

    let (suspended_id, suspended) = server.issue_license(serde_json::json!({}));
    server.suspend(&suspended_id);
    expect_failure(&Install::new(&server.url, &suspended, &jwks), 50, "server.validation", "SUSPENDED");

    let (_, one_seat) = server.issue_license(serde_json::json!({"max_deployments": 1}));
    let first = Install::new(&server.url, &one_seat, &jwks);
    assert_eq!(first.run(&["diagnose"]).status.code(), Some(0), "the first install takes the seat");
    expect_failure(
        &Install::new(&server.url, &one_seat, &jwks),
        51,
        "server.validation",
        "TOO_MANY_DEPLOYMENTS",
    );
}

#[test]
fn each_network_time_and_state_failure_has_its_exit_code() {
    let mut server = Server::start(3600);
    let (_, key) = server.issue_license(serde_json::json!({}));
    let jwks = server.jwks();

    // A proxy in front of the server whose Date is two hours ahead: this clock is behind.
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc2822();
    let skewed = fault_servers::date_rewriting_proxy(server.port(), ahead);
    let install = Install::new(&format!("http://127.0.0.1:{skewed}"), &key, &jwks);
    expect_failure(&install, 30, "time.clock_skew", "behind the server");

    // The app saw a clock a day ahead, then the clock went back to today: a rollback.
    let install = Install::new(&server.url, &key, &jwks);
    struct DayAhead;
    impl nls_client::Clock for DayAhead {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            chrono::Utc::now() + chrono::Duration::days(1)
        }
    }
    let mut config = install.app_config(&key);
    config.clock = std::sync::Arc::new(DayAhead);
    let app = LicenseClient::open(config).unwrap();
    assert!(matches!(app.validate_now(), nls_client::AnswerOutcome::Good { .. }));
    drop(app);
    expect_failure(&install, 31, "time.clock_rollback", "the clock was set back");

    // A data dir that cannot exist: beneath a regular file (root ignores permissions).
    let mut install = Install::new(&server.url, &key, &jwks);
    let file = install.data_dir.with_extension("file");
    std::fs::write(&file, "not a directory").unwrap();
    install.data_dir = file.join("state");
    expect_failure(&install, 40, "state.data_dir", "cannot be created");

    // A TLS endpoint whose certificate nobody signed.
    let tls = fault_servers::self_signed_tls_endpoint();
    let install = Install::new(&format!("https://localhost:{tls}"), &key, &jwks);
    expect_failure(&install, 22, "network.tls", "TLS handshake with localhost failed");

    // A TLS proxy in front of the real server whose certificate expired (generated now, valid
    // 2024-01-01 to 2025-01-01): its own message and fix, same class.
    let expired = fault_servers::expired_certificate_tls_proxy(server.port());
    let install = Install::new(&format!("https://localhost:{expired}"), &key, &jwks);
    expect_failure(&install, 22, "network.tls", "expired at 2025-01-01T00:00:00+00:00");
    let report: serde_json::Value =
        serde_json::from_slice(&install.run(&["diagnose", "--json"]).stdout).unwrap();
    let fix = report["failure"]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("certificate has expired"), "{report:#}");

    // A name that does not resolve (.invalid never does, RFC 2606).
    let install = Install::new("https://nls.example.invalid", &key, &jwks);
    expect_failure(&install, 20, "network.dns", "does not resolve");

    // The server goes down after the app cached a receipt: diagnose names the network, while
    // status (what the app runs on) is still usable offline.
    let install = Install::new(&server.url, &key, &jwks);
    let app = LicenseClient::start(install.app_config(&key)).unwrap();
    app.shutdown();
    drop(app);
    server.kill();
    expect_failure(&install, 21, "network.tcp", "no TCP connection");
    let status = install.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let json: serde_json::Value = serde_json::from_slice(&install.run(&["status", "--json"]).stdout).unwrap();
    assert!(matches!(json["state"].as_str(), Some("valid" | "offline")), "{json:#}");
}

#[test]
fn proxy_settings_are_honoured_and_shown() {
    let server = Server::start(3600);
    let (_, key) = server.issue_license(serde_json::json!({}));
    let install = Install::new(&server.url, &key, &server.jwks());
    // A proxy nobody listens on: the client goes through it, so the TCP check fails there.
    let dead_proxy = nls_tests::free_port::free_port();
    let proxy = format!("http://ops:s3cret-proxy-pass@127.0.0.1:{dead_proxy}");
    let through = install.run_with_env(&["diagnose"], &[("HTTP_PROXY", &proxy)]);
    let shown = text(&through);
    assert_eq!(through.status.code(), Some(21), "{shown}");
    assert!(shown.contains(&format!("through proxy 127.0.0.1:{dead_proxy}")), "{shown}");
    assert!(
        shown.contains("HTTP_PROXY=http://***@127.0.0.1") && !shown.contains("s3cret-proxy-pass"),
        "{shown}"
    );
    // NO_PROXY names the server: direct, and everything passes.
    let direct = install.run_with_env(&["diagnose"], &[("HTTP_PROXY", &proxy), ("NO_PROXY", "127.0.0.1")]);
    let shown = text(&direct);
    assert_eq!(direct.status.code(), Some(0), "{shown}");
    assert!(shown.contains("direct: NO_PROXY matches"), "{shown}");
}

#[test]
fn an_air_gapped_site_imports_its_offline_file_and_the_app_loads_it_from_the_environment() {
    let server = Server::start(3600);
    let (license_id, key) = server.issue_license(serde_json::json!({"features": ["reports"]}));
    let (file, _) = server.offline_file(&license_id, serde_json::json!({"ttl_days": 30}));
    let mut install = Install::new("", &key, &server.jwks());
    install.server = String::new();
    let path = install.data_dir.with_extension("offline.json");
    std::fs::write(&path, &file).unwrap();

    // A file that was edited is refused, with its own exit code.
    let edited = install.data_dir.with_extension("edited.json");
    std::fs::write(&edited, file.replacen("\"token\":\"", "\"token\":\"x", 1)).unwrap();
    let refused = install.run(&["activate-offline", edited.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(60), "{}", text(&refused));

    let imported = install.run(&["activate-offline", path.to_str().unwrap()]);
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported));
    let status = install.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (json["state"].as_str(), json["source"].as_str()),
        (Some("valid"), Some("offline_file")),
        "{json:#}"
    );

    // The app configured from the environment alone finds the imported file.
    let settings = nls_client::LicenseSettings::from_lookup(|name| match name {
        "NECTAR_LICENSE_JWKS" => Some(install.jwks.display().to_string()),
        "NECTAR_LICENSE_DATA_DIR" => Some(install.data_dir.display().to_string()),
        _ => None,
    });
    let app = LicenseClient::open(settings.client_config().unwrap()).unwrap();
    assert!(
        matches!(app.state(), LicenseState::Valid { .. }) && app.has_feature("reports"),
        "{:?}",
        app.state()
    );
}
