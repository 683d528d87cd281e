//! A real `nls serve` for the client tests: started from the built binary, on a free port,
//! with a fresh data directory and a bootstrap admin key; stopped (SIGKILL) on drop.
//!
//! The binary must exist: `cargo build -p nls` first (CI does). A missing binary or a server
//! that does not become healthy FAILS the test with the reason; nothing is skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "nls-client-tests-admin-key-0123456789";

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

pub fn nls_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NLS_BIN") {
        return PathBuf::from(bin);
    }
    let bin = target_dir().join("debug/nls");
    assert!(
        bin.exists(),
        "the nls binary is missing at {}: run `cargo build -p nls` first (or set NLS_BIN)",
        bin.display()
    );
    bin
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("nls-client-{tag}-{}", nls_client::durable_file::random_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Server {
    pub url: String,
    pub dir: PathBuf,
    child: Child,
    agent: ureq::Agent,
    lease_secs: u32,
}

impl Server {
    /// Starts `nls serve` with a deployment lease of `lease_secs`.
    pub fn start(lease_secs: u32) -> Self {
        let dir = temp_dir("serve");
        let port = nls_tests::free_port::free_port();
        let child = Self::spawn(&dir, port, lease_secs);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut server = Self { url: format!("http://127.0.0.1:{port}"), dir, child, agent, lease_secs };
        server.wait_healthy();
        server
    }

    /// Stops the server and starts it again on the same port and data directory (e.g. after
    /// `nls keys rotate --data-dir <dir>/data`).
    pub fn restart(&mut self, between: impl FnOnce(&std::path::Path)) {
        self.kill();
        between(&self.dir.join("data"));
        let log = std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default();
        std::fs::write(self.dir.join("serve.before-restart.log"), log).unwrap();
        self.child = Self::spawn(&self.dir, self.port(), self.lease_secs);
        self.wait_healthy();
    }

    fn spawn(dir: &std::path::Path, port: u16, lease_secs: u32) -> Child {
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        Command::new(nls_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--lease-secs",
                &lease_secs.to_string(),
                "--check-in-secs",
                "60",
                "--snapshot-ttl-ms",
                "0",
            ])
            .env("NLS_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", nls_binary().display()))
    }

    /// A new API key with exactly `scope`; returns its secret.
    pub fn api_key(&self, scope: &str) -> String {
        let (status, created) = self.admin(
            "POST",
            "/v1/api-keys",
            Some(serde_json::json!({"name": format!("{scope} key"), "scopes": [scope]})),
        );
        assert_eq!(status, 201, "create API key: {created}");
        created["secret"].as_str().unwrap().to_owned()
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nls serve exited with {status} before it was healthy; log:\n{}", self.log());
            }
            if let Ok(mut r) = self.agent.get(&format!("{}/health", self.url)).call()
                && r.status() == 200
            {
                let _ = r.body_mut().read_to_string();
                return;
            }
            assert!(Instant::now() < deadline, "nls serve was not healthy within 30 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {ADMIN_KEY}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("authorization", &auth).call(),
            (method, body) => if method == "PATCH" { self.agent.patch(&url) } else { self.agent.post(&url) }
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or(serde_json::json!({})).to_string().as_str()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// A new customer and license; returns (license id, key).
    pub fn issue_license(&self, terms: serde_json::Value) -> (String, String) {
        let (status, customer) = self.admin(
            "POST",
            "/v1/customers",
            Some(serde_json::json!({"name": "Acme", "email": "ops@acme.test"})),
        );
        assert_eq!(status, 201, "create customer: {customer}");
        let mut body = terms;
        body["customer_id"] = customer["customer"]["id"].clone();
        let (status, created) = self.admin("POST", "/v1/licenses", Some(body));
        assert_eq!(status, 201, "create license: {created}");
        (created["license"]["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
    }

    /// An offline license file (its JSON text) and its expiry, unix seconds.
    pub fn offline_file(&self, license_id: &str, terms: serde_json::Value) -> (String, i64) {
        let (status, body) =
            self.admin("POST", &format!("/v1/licenses/{license_id}/offline-file"), Some(terms));
        assert_eq!(status, 201, "offline file: {body}");
        let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
        (body["file"].to_string(), expires.timestamp())
    }

    pub fn revoke(&self, license_id: &str) {
        let (status, body) = self.admin("DELETE", &format!("/v1/licenses/{license_id}"), None);
        assert_eq!(status, 200, "revoke: {body}");
    }

    pub fn suspend(&self, license_id: &str) {
        let (status, body) = self.admin("POST", &format!("/v1/licenses/{license_id}/suspend"), None);
        assert_eq!(status, 200, "suspend: {body}");
    }

    /// A license that expired an hour ago with no grace; returns its key. A license cannot be
    /// created already expired, so its expiry is moved into the past, which re-issues the key.
    pub fn issue_expired_license(&self) -> String {
        let (id, _) = self.issue_license(serde_json::json!({"grace_days": 0}));
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let (status, updated) =
            self.admin("PATCH", &format!("/v1/licenses/{id}"), Some(serde_json::json!({"expires_at": past})));
        assert_eq!(status, 200, "expire license: {updated}");
        updated["key"].as_str().expect("a new expiry re-issues the key").to_owned()
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the server URL ends with its port")
    }

    pub fn usage_counter(&self, license_id: &str, metric: &str) -> u64 {
        let (status, body) = self.admin("GET", &format!("/v1/licenses/{license_id}/usage"), None);
        assert_eq!(status, 200, "usage: {body}");
        body["counters"][metric].as_u64().unwrap_or(0)
    }

    pub fn live_deployments(&self, license_id: &str) -> Vec<String> {
        let (status, body) = self.admin("GET", &format!("/v1/licenses/{license_id}/deployments"), None);
        assert_eq!(status, 200, "deployments: {body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["live"].as_bool() == Some(true))
            .map(|d| d["deployment_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn jwks(&self) -> String {
        let mut r = self.agent.get(&format!("{}/.well-known/jwks.json", self.url)).call().unwrap();
        assert_eq!(r.status(), 200);
        r.body_mut().read_to_string().unwrap()
    }

    /// Stops the server at once (SIGKILL), like a crash or a network cut.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
