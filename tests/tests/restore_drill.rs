//! The restore drill (docs/runbooks/restore-from-backup.md) on the real binaries: seed a store
//! through the API (customers, licenses in every state, deployments, usage, audit), back it up
//! with `nls backup` while a writer and a validator keep hitting the running server, restore
//! into an empty data dir with `nls restore`, start a second server there, and check that
//! every license validates with the same code, counters and audit match, and every write
//! acknowledged before the backup started is there. The same drill on DynamoDB (moto) goes
//! through `nls dynamodb export` and `import` into a second table.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary, run_nls};
use serde_json::{Value, json};

fn nls(args: &[&str]) -> Output {
    Command::new(nls_binary()).args(args).output().expect("run nls")
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// One seeded license: its key, the deployment it validates as, and what came back.
struct Seeded {
    id: String,
    key: String,
    deployment: String,
    code: Value,
    usage: Value,
}

/// What the source store held before the backup began.
struct Before {
    licenses: Vec<Seeded>,
    audit: Vec<Value>,
}

fn all_audit(host: &dyn NlsHost) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit-log?limit=100&cursor={c}"),
            None => "/v1/audit-log?limit=100".to_owned(),
        };
        let page = host.admin("GET", &path, None);
        entries.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

fn validate_as(host: &dyn NlsHost, seeded: &Seeded) -> Value {
    host.validate(&json!({"key": seeded.key, "deployment_id": seeded.deployment}))["code"].clone()
}

/// Customers, licenses in every state, a full seat, usage and the audit they leave.
fn seed(host: &dyn NlsHost) -> Before {
    let mut licenses = Vec::new();
    for i in 0..12 {
        let customer = host.admin(
            "POST",
            "/v1/customers",
            Some(&json!({"name": format!("Drill {i}"), "email": format!("ops{i}@drill.test")})),
        );
        let created = host.admin(
            "POST",
            "/v1/licenses",
            Some(&json!({"customer_id": customer["customer"]["id"], "max_deployments": 1, "features": ["sso"]})),
        );
        let id = created["license"]["id"].as_str().expect("id").to_owned();
        let key = created["key"].as_str().expect("key").to_owned();
        let deployment = format!("host-{i}");
        assert_eq!(host.validate(&json!({"key": key, "deployment_id": deployment}))["code"], "VALID");
        let batch = json!({"key": key, "deployment_id": deployment, "batch_id": format!("b{i}"),
            "records": [{"metric": "runs", "value": i + 1, "at": chrono::Utc::now().to_rfc3339()}]});
        assert_eq!(host.call("POST", "/v1/usage", None, Some(&batch)).status, 202);
        match i % 4 {
            1 => drop(host.admin("POST", &format!("/v1/licenses/{id}/suspend"), None)),
            2 => drop(host.admin("DELETE", &format!("/v1/licenses/{id}"), None)),
            _ => {}
        }
        licenses.push(Seeded { id, key, deployment, code: Value::Null, usage: Value::Null });
    }
    for seeded in &mut licenses {
        seeded.code = validate_as(host, seeded);
        seeded.usage =
            host.admin("GET", &format!("/v1/licenses/{}/usage", seeded.id), None)["counters"].clone();
    }
    // A second deployment on a full seat is refused: the seat is in the store, not in memory.
    let full = &licenses[0];
    let second = host.validate(&json!({"key": full.key, "deployment_id": "another-host"}));
    assert_eq!(second["code"], "TOO_MANY_DEPLOYMENTS", "{second}");
    let codes: Vec<&Value> = licenses.iter().map(|l| &l.code).collect();
    for expected in ["VALID", "SUSPENDED", "REVOKED"] {
        assert!(codes.iter().any(|c| **c == expected), "no {expected} among {codes:?}");
    }
    Before { licenses, audit: all_audit(host) }
}

/// Writes and validations against `port` until told to stop: (acknowledged customer id, when).
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, Instant)>>>,
    thread: std::thread::JoinHandle<u32>,
}

fn start_load(port: u16, admin_key: String, key: String) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (stop_flag, acks) = (Arc::clone(&stop), Arc::clone(&acknowledged));
    let thread = std::thread::spawn(move || {
        let auth = format!("Bearer {admin_key}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let mut validations = 0;
        for n in 0.. {
            if stop_flag.load(Ordering::SeqCst) {
                break;
            }
            let body =
                json!({"name": format!("Load {n}"), "email": format!("load{n}@drill.test")}).to_string();
            let created =
                nls_tests::http_client::request(port, "POST", "/v1/customers", &headers, body.as_bytes())
                    .expect("create a customer under load");
            assert_eq!(created.status, 201, "{}", created.text());
            let id = created.json()["customer"]["id"].as_str().expect("id").to_owned();
            acks.lock().expect("acks").push((id, Instant::now()));
            let body = json!({"key": key, "deployment_id": "host-0"}).to_string();
            let answer =
                nls_tests::http_client::request(port, "POST", "/v1/licenses/validate", &[], body.as_bytes())
                    .expect("validate under load");
            assert_eq!(answer.json()["code"], "VALID", "{}", answer.text());
            validations += 1;
        }
        validations
    });
    Load { stop, acknowledged, thread }
}

/// The restored host answers as the source did for everything acknowledged before `started`.
fn check_restored(
    restored: &dyn NlsHost,
    before: &Before,
    load_acks: &[(String, Instant)],
    started: Instant,
) {
    for seeded in &before.licenses {
        assert_eq!(validate_as(restored, seeded), seeded.code, "license {} after restore", seeded.id);
        let usage = restored.admin("GET", &format!("/v1/licenses/{}/usage", seeded.id), None);
        assert_eq!(usage["counters"], seeded.usage, "usage of {}", seeded.id);
    }
    let full = &before.licenses[0];
    let second = restored.validate(&json!({"key": full.key, "deployment_id": "another-host"}));
    assert_eq!(second["code"], "TOO_MANY_DEPLOYMENTS", "the seat survived: {second}");
    let audit = all_audit(restored);
    for entry in &before.audit {
        assert!(audit.contains(entry), "audit entry missing or changed after restore: {entry}");
    }
    let acked_before: Vec<&String> =
        load_acks.iter().filter(|(_, at)| *at < started).map(|(id, _)| id).collect();
    assert!(!acked_before.is_empty(), "the load wrote nothing before the backup");
    for id in acked_before {
        let found = restored.call("GET", &format!("/v1/customers/{id}"), Some(restored.admin_key()), None);
        assert_eq!(found.status, 200, "customer {id}, acknowledged before the backup, is missing");
    }
}

#[test]
fn sqlite_backup_under_load_restores_everything_acknowledged() {
    let live_dir = TempDir::new("drill-live");
    let live = NlsServer::start(live_dir.path(), &["--renewals-every-secs", "0"]);
    let before = seed(&live);
    let load = start_load(live.port, live.admin_key.clone(), before.licenses[0].key.clone());
    std::thread::sleep(Duration::from_millis(300));

    let backup_dir = TempDir::new("drill-backup");
    let backup_file = backup_dir.path().join("nls.backup");
    let started = Instant::now();
    let backed_up = nls(&[
        "backup",
        "--data-dir",
        path_str(live_dir.path()),
        "--out",
        path_str(&backup_file),
        "--include-keys",
    ]);
    let backup_took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    load.stop.store(true, Ordering::SeqCst);
    let validations = load.thread.join().expect("the load thread");
    assert!(backed_up.status.success(), "nls backup: {}", String::from_utf8_lossy(&backed_up.stderr));
    let summary: Value = serde_json::from_slice(&backed_up.stdout).expect("the summary is JSON");
    // Both private keys travel with --include-keys: the license ring and the registry token key.
    assert_eq!(summary["files"], json!(["registry-signing-key.jwk", "signing-key.jwk"]), "{summary}");
    let acks = load.acknowledged.lock().expect("acks").clone();
    let after_backup = acks.iter().filter(|(_, at)| *at > started + backup_took).count();
    assert!(
        after_backup > 0 && validations > 0,
        "the server kept serving: {after_backup} writes after the backup"
    );
    eprintln!("backup took {backup_took:?}; {} writes and {validations} validations under load", acks.len());

    let restored_dir = TempDir::new("drill-restored");
    let restored_path = restored_dir.path().join("data");
    let restored_arg = path_str(&restored_path);
    let restore = nls(&["restore", "--in", path_str(&backup_file), "--data-dir", restored_arg]);
    assert!(restore.status.success(), "nls restore: {}", String::from_utf8_lossy(&restore.stderr));
    // A data dir with a store is refused without --force, and left as it was.
    let again = nls(&["restore", "--in", path_str(&backup_file), "--data-dir", restored_arg]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let forced = nls(&["restore", "--in", path_str(&backup_file), "--data-dir", restored_arg, "--force"]);
    assert!(forced.status.success(), "nls restore --force: {}", String::from_utf8_lossy(&forced.stderr));

    let restored = NlsServer::start(&restored_path, &["--renewals-every-secs", "0"]);
    assert_eq!(
        restored.private_signing_jwk(),
        live.private_signing_jwk(),
        "the keys came with --include-keys"
    );
    check_restored(&restored, &before, &acks, started);
}

#[test]
fn a_backup_carries_the_keys_only_when_asked() {
    let live_dir = TempDir::new("drill-nokeys");
    let live = NlsServer::start(live_dir.path(), &["--renewals-every-secs", "0"]);
    let before = seed(&live);
    let backup_dir = TempDir::new("drill-nokeys-backup");
    let backup_file = backup_dir.path().join("nls.backup");
    let backed_up =
        nls(&["backup", "--data-dir", path_str(live_dir.path()), "--out", path_str(&backup_file)]);
    assert!(backed_up.status.success(), "{}", String::from_utf8_lossy(&backed_up.stderr));
    let text = std::fs::read(&backup_file).expect("the backup");
    let secret = live.private_signing_jwk()["d"].as_str().expect("d").to_owned();
    assert!(!text.windows(secret.len()).any(|w| w == secret.as_bytes()), "the private key is in the backup");

    let restored_dir = TempDir::new("drill-nokeys-restored");
    let restore =
        nls(&["restore", "--in", path_str(&backup_file), "--data-dir", path_str(restored_dir.path())]);
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    assert!(!restored_dir.path().join("signing-key.jwk").exists());
    // A new key is generated there: the data is back, but the old keys do not verify.
    let restored = NlsServer::start(restored_dir.path(), &["--renewals-every-secs", "0"]);
    let seeded = &before.licenses[0];
    assert_eq!(
        restored.admin("GET", &format!("/v1/licenses/{}", seeded.id), None)["license"]["id"],
        json!(seeded.id)
    );
    assert_eq!(validate_as(&restored, seeded), "BAD_SIGNATURE");

    let not_a_backup = nls(&[
        "restore",
        "--in",
        path_str(&restored_dir.path().join("signing-key.jwk")),
        "--data-dir",
        path_str(&backup_dir.path().join("x")),
    ]);
    assert!(!not_a_backup.status.success());
    assert!(String::from_utf8_lossy(&not_a_backup.stderr).contains("not an NLS backup"));
}

#[test]
fn dynamodb_export_under_load_imports_everything_acknowledged() {
    let moto = MotoServer::start();
    let env = aws_env(&moto.endpoint);
    let nls_on_moto = |args: &[&str]| run_nls(args, &env);
    nls_on_moto(&["dynamodb", "create-table", "--table", "drill-source"]);
    nls_on_moto(&["dynamodb", "create-table", "--table", "drill-restored"]);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve_args = |table: &'static str| {
        ["--store", "dynamodb", "--table", table, "--snapshot-ttl-ms", "0", "--renewals-every-secs", "0"]
    };

    let live_dir = TempDir::new("drill-dynamodb-live");
    let live = NlsServer::start_with_env(live_dir.path(), &serve_args("drill-source"), &env_refs, "warn");
    let before = seed(&live);
    let load = start_load(live.port, live.admin_key.clone(), before.licenses[0].key.clone());
    std::thread::sleep(Duration::from_millis(500));
    let export_dir = TempDir::new("drill-dynamodb-export");
    let export_file = export_dir.path().join("items.jsonl");
    let started = Instant::now();
    let exported =
        nls_on_moto(&["dynamodb", "export", "--table", "drill-source", "--out", path_str(&export_file)]);
    std::thread::sleep(Duration::from_millis(300));
    load.stop.store(true, Ordering::SeqCst);
    load.thread.join().expect("the load thread");
    let report: Value = serde_json::from_str(&exported).expect("the report is JSON");
    let lines = std::fs::read_to_string(&export_file).expect("the export").lines().count();
    assert_eq!(report["items"], json!(lines), "{report}");
    assert!(
        !export_file.with_file_name("items.jsonl.progress").exists(),
        "a finished export leaves no progress"
    );

    let imported =
        nls_on_moto(&["dynamodb", "import", "--table", "drill-restored", "--in", path_str(&export_file)]);
    let report: Value = serde_json::from_str(&imported).expect("the report is JSON");
    assert_eq!(report["items"], json!(lines), "{report}");

    // The keys live outside the table (Secrets Manager on AWS, the data dir here).
    let restored_dir = TempDir::new("drill-dynamodb-restored");
    std::fs::copy(live_dir.path().join("signing-key.jwk"), restored_dir.path().join("signing-key.jwk"))
        .expect("copy the signing key");
    let restored =
        NlsServer::start_with_env(restored_dir.path(), &serve_args("drill-restored"), &env_refs, "warn");
    let acks = load.acknowledged.lock().expect("acks").clone();
    check_restored(&restored, &before, &acks, started);
}
