//! Issue 17, fault injection on the real store: `nls serve`'s SQLite file write-locked by
//! another process (`BEGIN EXCLUSIVE` held from Python's sqlite3). Validations that need a
//! seat write answer 200 `degraded: true` with no receipt (they were 503 before), reads go on,
//! admin and usage writes answer 503 with `Retry-After`, never 500; once the lock goes,
//! everything works again and nothing half-done is visible.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::json;

/// Another process holding SQLite's write lock on `db` until dropped.
struct LockHolder(Child);

impl LockHolder {
    fn hold(db: &std::path::Path) -> Self {
        let script = "import sqlite3, sys, time\n\
            c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
            c.execute('BEGIN EXCLUSIVE')\n\
            print('locked', flush=True)\n\
            time.sleep(120)\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "locked", "the lock holder could not lock the file");
        Self(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_locked_database_degrades_validations_and_503s_writes_until_the_lock_goes() {
    let dir = TempDir::new("store-locked");
    let server = NlsServer::start(dir.path(), &["--renewals-every-secs", "0"]);
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let created = server.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"], "max_deployments": 5})),
    );
    let (license_id, key) =
        (created["license"]["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    assert_eq!(server.validate(&json!({"key": key, "deployment_id": "d1"}))["code"], "VALID");

    let lock = LockHolder::hold(&dir.path().join("nls.sqlite3"));
    // Each write waits out the store's busy timeout (5 s): run them side by side.
    let (new_seat, customer_write, usage) = std::thread::scope(|s| {
        let new_seat = s.spawn(|| {
            server.call(
                "POST",
                "/v1/licenses/validate",
                None,
                Some(&json!({"key": key, "deployment_id": "d2"})),
            )
        });
        let customer_write = s.spawn(|| {
            server.call(
                "POST",
                "/v1/customers",
                Some(server.admin_key()),
                Some(&json!({"name": "B", "email": "b@acme.test"})),
            )
        });
        let usage = s.spawn(|| {
            let body = json!({"key": key, "deployment_id": "d1", "batch_id": "b1",
                "records": [{"metric": "calls", "value": 3, "at": chrono::Utc::now().to_rfc3339()}]});
            server.call("POST", "/v1/usage", None, Some(&body))
        });
        (new_seat.join().unwrap(), customer_write.join().unwrap(), usage.join().unwrap())
    });
    assert_eq!(new_seat.status, 200, "{}", new_seat.text());
    let answer = new_seat.json();
    assert_eq!((answer["degraded"].as_bool(), answer["receipt"].is_null()), (Some(true), true), "{answer}");
    for (what, r) in [("POST /v1/customers", &customer_write), ("POST /v1/usage", &usage)] {
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
        assert_eq!(r.error_code().as_deref(), Some("unavailable"), "{what}");
    }
    // Reads are not blocked by a writer (WAL): an admin read still answers.
    let read = server.call("GET", &format!("/v1/licenses/{license_id}"), Some(server.admin_key()), None);
    assert_eq!(read.status, 200, "{}", read.text());

    drop(lock);
    let answer = server.validate(&json!({"key": key, "deployment_id": "d2"}));
    assert_eq!(
        (answer["code"].as_str(), answer["degraded"].as_bool()),
        (Some("VALID"), Some(false)),
        "{answer}"
    );
    assert!(answer["receipt"].is_string());
    let retried = server.call(
        "POST",
        "/v1/customers",
        Some(server.admin_key()),
        Some(&json!({"name": "B", "email": "b@acme.test"})),
    );
    assert_eq!(retried.status, 201, "{}", retried.text());
    let customers = server.admin("GET", "/v1/customers", None);
    assert_eq!(customers["items"].as_array().unwrap().len(), 2, "the refused write left nothing behind");
    let usage_again = server.call(
        "POST",
        "/v1/usage",
        None,
        Some(&json!({"key": key, "deployment_id": "d1", "batch_id": "b1",
        "records": [{"metric": "calls", "value": 3, "at": chrono::Utc::now().to_rfc3339()}]})),
    );
    assert_eq!(
        (usage_again.status, usage_again.json()["duplicate"].as_bool()),
        (202, Some(false)),
        "{}",
        usage_again.text()
    );
}
