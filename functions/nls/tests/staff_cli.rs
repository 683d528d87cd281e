//! `nls staff`, run as the real binary: the password read twice from stdin or generated,
//! changes audited with actor `cli`, safe while `nls serve` runs on the same data dir, and the
//! same commands on a DynamoDB table (moto).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nls_core::model::StaffUser;
use nls_core::ports::StaffStore;
use nls_core::staff_accounts::verify_password;
use nls_sqlite_store::SqliteStore;
use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// Runs `nls staff ARGS` with `stdin` piped (not a terminal) and `env` added.
fn nls_staff<A: AsRef<std::ffi::OsStr>>(args: &[A], stdin: &str, env: &[(&str, String)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nls"))
        .arg("staff")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nls staff");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait for nls staff")
}

fn succeeded(o: &Output) -> Value {
    assert!(o.status.success(), "nls staff failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

/// The one-line error of a failed command.
fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure, got {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn at(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not a time: {value}"))
}

fn twice(password: &str) -> String {
    format!("{password}\n{password}\n")
}

/// The stored user, read through a store handle of our own (the CLI and maybe a server hold
/// others on the same file).
fn stored_user(data_dir: &Path, email: &str) -> StaffUser {
    let store = SqliteStore::open(&data_dir.join("nls.sqlite3")).expect("open the store");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(store.find_staff_user_by_email(email)).expect("read").expect("the user exists")
}

#[test]
fn create_reads_the_password_twice_from_stdin_and_refuses_bad_input() {
    let dir = TempDir::new("staff-create");
    let data_dir = dir.path().to_string_lossy().into_owned();
    let create = |email: &str, stdin: &str| {
        nls_staff(
            &["create", "--email", email, "--name", "Ops", "--role", "admin", "--data-dir", &data_dir],
            stdin,
            &[],
        )
    };

    let differ = create("ops@nectar.example", &format!("{PASSWORD}\n{PASSWORD}!\n"));
    assert!(failed(&differ).contains("the two passwords differ"), "{differ:?}");
    let once = create("ops@nectar.example", &format!("{PASSWORD}\n"));
    assert!(failed(&once).contains("the password twice"), "{once:?}");
    let short = create("ops@nectar.example", &twice("too short"));
    assert!(failed(&short).contains("at least 12 characters"), "{short:?}");
    let bad_email = create("not-an-email", &twice(PASSWORD));
    assert!(failed(&bad_email).contains("is not an email address"), "{bad_email:?}");
    let bad_role = nls_staff(&["create", "--email", "a@b.example", "--name", "A", "--role", "root"], "", &[]);
    assert_eq!(bad_role.status.code(), Some(2), "a usage error: {bad_role:?}");
    let list = nls_staff(&["list", "--data-dir", &data_dir], "", &[]);
    assert!(failed(&list).contains("no NLS data dir"), "nothing was created by the refused commands");

    let created = succeeded(&create("  Ops@Nectar.Example ", &twice(PASSWORD)));
    assert_eq!(created["email"], "ops@nectar.example");
    assert_eq!((created["role"].as_str(), created["disabled"].as_bool()), (Some("admin"), Some(false)));
    assert!(created["id"].as_str().is_some_and(|id| id.starts_with("stf_")), "{created}");
    assert!(created.get("generated_password").is_none(), "{created}");
    assert!(!created.to_string().contains("argon2"), "no hash is printed: {created}");
    let stored = stored_user(dir.path(), "ops@nectar.example");
    assert!(verify_password(&stored.password_hash, PASSWORD), "the piped password is the one stored");

    let again = create("OPS@nectar.example", &twice(PASSWORD));
    assert!(failed(&again).contains("already exists"), "{again:?}");
    let unknown =
        nls_staff(&["disable", "--email", "nobody@nectar.example", "--data-dir", &data_dir], "", &[]);
    assert!(failed(&unknown).contains("no staff user has email nobody@nectar.example"), "{unknown:?}");

    let listed = succeeded(&nls_staff(&["list", "--data-dir", &data_dir], "", &[]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], created["id"]);
}

#[test]
fn staff_commands_run_beside_nls_serve_and_are_audited_with_actor_cli() {
    let dir = TempDir::new("staff-serve");
    let data_dir = dir.path().to_string_lossy().into_owned();
    let server = NlsServer::start(dir.path(), &["--renewals-every-secs", "0"]);
    // The server keeps writing while the CLI does: both hold the same SQLite file.
    let writer = {
        let (port, admin_key) = (server.port, server.admin_key.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {admin_key}");
            (0..30)
                .map(|i| {
                    let body = json!({"name": format!("Customer {i}"), "email": format!("c{i}@acme.test")});
                    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
                    nls_tests::http_client::request(
                        port,
                        "POST",
                        "/v1/customers",
                        &headers,
                        body.to_string().as_bytes(),
                    )
                    .map(|r| r.status)
                    .unwrap_or(0)
                })
                .collect::<Vec<u16>>()
        })
    };

    let email = "kim@nectar.example";
    let created = succeeded(&nls_staff(
        &[
            "create",
            "--email",
            email,
            "--name",
            "Kim",
            "--role",
            "support",
            "--generate-password",
            "--data-dir",
            &data_dir,
        ],
        "",
        &[],
    ));
    let first_password = created["generated_password"].as_str().expect("a generated password").to_owned();
    assert!(first_password.len() >= 24, "{first_password}");
    assert!(verify_password(&stored_user(dir.path(), email).password_hash, &first_password));

    let disabled = succeeded(&nls_staff(
        &["disable", "--email", "Kim@Nectar.example", "--data-dir", &data_dir],
        "",
        &[],
    ));
    assert_eq!((disabled["disabled"].as_bool(), disabled["version"].as_u64()), (Some(true), Some(2)));
    assert!(
        at(&disabled["sessions_valid_after"]) > at(&created["sessions_valid_after"]),
        "disabling ends the sessions: {disabled}"
    );

    let reset = succeeded(&nls_staff(
        &["reset-password", "--email", email, "--generate-password", "--data-dir", &data_dir],
        "",
        &[],
    ));
    let second_password = reset["generated_password"].as_str().expect("a generated password");
    assert_eq!(reset["version"].as_u64(), Some(3));
    assert!(at(&reset["sessions_valid_after"]) > at(&disabled["sessions_valid_after"]));
    let stored = stored_user(dir.path(), email);
    assert!(verify_password(&stored.password_hash, second_password));
    assert!(!verify_password(&stored.password_hash, &first_password), "the old password is gone");
    assert!(stored.disabled, "a reset does not enable the user");

    let piped = succeeded(&nls_staff(
        &["reset-password", "--email", email, "--data-dir", &data_dir],
        &twice(PASSWORD),
        &[],
    ));
    assert_eq!(piped["version"].as_u64(), Some(4));
    assert!(verify_password(&stored_user(dir.path(), email).password_hash, PASSWORD));

    let statuses = writer.join().expect("writer thread");
    assert!(statuses.iter().all(|s| *s == 201), "every API write beside the CLI succeeded: {statuses:?}");

    // The running server reads what the CLI committed: the audit trail, newest first.
    let log = server.admin("GET", "/v1/audit-log?actor=cli", None);
    let entries = log["items"].as_array().expect("audit items");
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["staff_user.reset_password", "staff_user.reset_password", "staff_user.disable", "staff_user.create"]
    );
    let target = format!("staff_user:{}", created["id"].as_str().expect("id"));
    assert!(entries.iter().all(|e| e["target"] == target.as_str()), "{log}");
    assert_eq!(entries[2]["before"]["disabled"], false);
    assert_eq!(entries[2]["after"]["disabled"], true);
    let text = log.to_string();
    assert!(!text.contains("argon2") && !text.contains(&first_password), "no secret in the audit log");
}

#[test]
fn staff_commands_work_on_a_dynamodb_table() {
    let env = aws_env(&MotoServer::shared().endpoint);
    let table = format!("nls-staff-{}", std::process::id());
    let created_table = Command::new(env!("CARGO_BIN_EXE_nls"))
        .args(["dynamodb", "create-table", "--table", &table])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run create-table");
    assert!(created_table.status.success(), "{}", String::from_utf8_lossy(&created_table.stderr));
    let on_table = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string())
            .chain(["--store", "dynamodb", "--table", &table].map(String::from))
            .collect()
    };

    let created = succeeded(&nls_staff(
        &on_table(&["create", "--email", "Lee@Nectar.example", "--name", "Lee", "--role", "viewer"]),
        &twice(PASSWORD),
        &env,
    ));
    assert_eq!(created["email"], "lee@nectar.example");
    let duplicate = nls_staff(
        &on_table(&["create", "--email", "lee@nectar.example", "--name", "Lee 2", "--role", "admin"]),
        &twice(PASSWORD),
        &env,
    );
    assert!(failed(&duplicate).contains("already exists"), "{duplicate:?}");

    let disabled = succeeded(&nls_staff(&on_table(&["disable", "--email", "lee@nectar.example"]), "", &env));
    assert_eq!((disabled["disabled"].as_bool(), disabled["version"].as_u64()), (Some(true), Some(2)));
    let listed = succeeded(&nls_staff(&on_table(&["list"]), "", &env));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        (listed[0]["id"].clone(), listed[0]["disabled"].clone()),
        (created["id"].clone(), json!(true))
    );
}

#[test]
fn disable_totp_removes_the_second_factor_and_ends_sessions_for_lockout_recovery() {
    use nls_core::ports::{AuditFilter, AuditStore, PageRequest, UnitOfWork, Write};

    let dir = TempDir::new("staff-totp");
    let data_dir = dir.path().to_string_lossy().into_owned();
    let made = nls_staff(
        &[
            "create",
            "--email",
            "otp@nectar.example",
            "--name",
            "Otp",
            "--role",
            "support",
            "--data-dir",
            &data_dir,
        ],
        &twice(PASSWORD),
        &[],
    );
    succeeded(&made);
    // Enrolled (as the portal's account page would store it).
    let before = stored_user(dir.path(), "otp@nectar.example");
    let enrolled = StaffUser {
        totp_secret: Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into()),
        totp_last_step: Some(1),
        version: before.version + 1,
        ..before.clone()
    };
    let store = SqliteStore::open(&dir.path().join("nls.sqlite3")).expect("open the store");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime
        .block_on(
            store.commit(
                None,
                vec![Write::UpdateStaffUser { user: enrolled, expected_version: before.version }],
            ),
        )
        .expect("enrol");
    assert!(
        succeeded(&nls_staff(&["list", "--data-dir", &data_dir], "", &[]))[0]["totp_enabled"]
            .as_bool()
            .unwrap()
    );

    let out = succeeded(&nls_staff(
        &["disable-totp", "--email", "OTP@nectar.example", "--data-dir", &data_dir],
        "",
        &[],
    ));
    assert_eq!(out["totp_enabled"], json!(false));
    let after = stored_user(dir.path(), "otp@nectar.example");
    assert_eq!((after.totp_secret, after.totp_last_step), (None, None));
    assert!(after.sessions_valid_after > before.sessions_valid_after, "sessions end");
    assert!(verify_password(&after.password_hash, PASSWORD), "the password stays");

    let filter = AuditFilter { actor: Some("cli".into()), ..AuditFilter::default() };
    let log = runtime.block_on(store.list_audit(&filter, &PageRequest::first(10))).expect("audit");
    assert_eq!(log.items[0].action, "staff_user.totp_disable");
    assert!(!serde_json::to_string(&log.items[0]).unwrap().contains("GEZDGNBV"), "the secret is not audited");

    let unknown =
        nls_staff(&["disable-totp", "--email", "nobody@nectar.example", "--data-dir", &data_dir], "", &[]);
    assert!(failed(&unknown).contains("nobody@nectar.example"), "{unknown:?}");
}
