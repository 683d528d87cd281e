//! Signing-key rotation on the real `nls serve` (docs/runbooks/signing-key-compromised.md):
//! `nls keys rotate` adds a new signer and keeps the old key as a verifier, so old keys still
//! validate while new keys and receipts carry the new `kid` and the JWKS serves both;
//! `nls license reissue --all` re-issues every live license's key (audited, emailed); after
//! `nls keys retire`, the old keys answer BAD_SIGNATURE and the re-issued ones are VALID.
//! The same on `nls serve --store dynamodb` (moto), where `nls license reissue --store dynamodb`
//! re-issues in the table.

use std::process::{Command, Output};

use nls_core::key_ring::{Jwks, KeyRing};
use nls_core::receipt::verify_receipt;
use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary, run_nls};
use serde_json::{Value, json};

fn nls(args: &[&str]) -> Output {
    Command::new(nls_binary()).args(args).output().expect("run nls")
}

fn nls_json(args: &[&str]) -> Value {
    let output = nls(args);
    assert!(output.status.success(), "nls {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn key_kid(key: &str) -> String {
    nls_json(&["license", "inspect", key])["header"]["kid"].as_str().expect("a kid").to_owned()
}

fn jwks(server: &NlsServer) -> Jwks {
    serde_json::from_str(&server.call("GET", "/.well-known/jwks.json", None, None).text()).expect("a JWKS")
}

fn jwks_kids(server: &NlsServer) -> Vec<String> {
    jwks(server).keys.into_iter().filter_map(|k| k.kid).collect()
}

/// A ring of only `kid`'s public key, as the server publishes it.
fn ring_of(server: &NlsServer, kid: &str) -> KeyRing {
    let keys = jwks(server).keys.into_iter().filter(|k| k.kid.as_deref() == Some(kid)).collect();
    KeyRing::from_jwks(&Jwks { keys }).expect("the kid is in the JWKS")
}

fn new_license(server: &NlsServer, name: &str) -> (String, String) {
    let customer = server.admin(
        "POST",
        "/v1/customers",
        Some(&json!({"name": name, "email": format!("{}@rotation.test", name.to_lowercase())})),
    );
    let license =
        server.admin("POST", "/v1/licenses", Some(&json!({"customer_id": customer["customer"]["id"]})));
    (
        license["license"]["id"].as_str().expect("id").to_owned(),
        license["key"].as_str().expect("key").to_owned(),
    )
}

/// The `NLS-...` key signed by `kid` in an `.eml` of the outbox that names `license_id`.
fn emailed_key(outbox: &std::path::Path, license_id: &str, kid: &str) -> String {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(outbox).expect("the outbox") {
        // Quoted-printable soft line breaks split the long key.
        let text =
            std::fs::read_to_string(entry.expect("an entry").path()).expect("an .eml").replace("=\r\n", "");
        if let (true, Some(at)) = (text.contains(license_id), text.find("NLS-")) {
            keys.push(
                text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect(),
            );
        }
    }
    keys.into_iter().find(|k: &String| key_kid(k) == kid).expect("an emailed key signed by the new kid")
}

#[test]
fn rotate_reissue_retire_on_nls_serve() {
    rotate_reissue_retire("key-rotation", &[], &[]);
}

#[test]
fn rotate_reissue_retire_on_nls_serve_over_dynamodb() {
    let moto = MotoServer::shared();
    let env = aws_env(&moto.endpoint);
    let table = format!("nls-key-rotation-{}", std::process::id());
    run_nls(&["dynamodb", "create-table", "--table", &table], &env);
    rotate_reissue_retire("key-rotation-ddb", &["--store", "dynamodb", "--dynamodb-table", &table], &env);
}

/// The whole rotation on one store: `store_args` go to `nls serve` and `nls license reissue`.
fn rotate_reissue_retire(label: &str, store_args: &[&str], env: &[(&'static str, String)]) {
    let dir = TempDir::new(label);
    let data = dir.path().to_str().expect("UTF-8");
    let server_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server_args = vec!["--renewals-every-secs", "0"];
    server_args.extend(store_args);
    let mut server = NlsServer::start_with_env(dir.path(), &server_args, &server_env, "warn");
    let (old_id, old_key) = new_license(&server, "Before");
    let (revoked_id, _) = new_license(&server, "Revoked");
    server.admin("DELETE", &format!("/v1/licenses/{revoked_id}"), None);
    let old_kid = key_kid(&old_key);
    assert_eq!(jwks_kids(&server), vec![old_kid.clone()]);
    assert_eq!(server.validate(&json!({"key": old_key, "deployment_id": "d1"}))["code"], "VALID");

    // Retiring the signer is refused; so is a kid the data dir does not trust.
    let refused = nls(&["keys", "retire", "--data-dir", data, "--kid", &old_kid]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("current signing key"), "retire the signer: {said}");

    server.stop();
    let rotated = nls_json(&["keys", "rotate", "--data-dir", data]);
    let new_kid = rotated["kid"].as_str().expect("the new kid").to_owned();
    assert_eq!(rotated["previous_kid"], json!(old_kid));
    assert_ne!(new_kid, old_kid);
    server.start_again();

    let mut kids = jwks_kids(&server);
    kids.sort();
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    assert_eq!(kids, both, "the JWKS serves both keys");
    let answer = server.validate(&json!({"key": old_key, "deployment_id": "d1"}));
    assert_eq!(answer["code"], "VALID", "an old key still validates: {answer}");
    let receipt = answer["receipt"].as_str().expect("a receipt");
    verify_receipt(&ring_of(&server, &new_kid), receipt, &old_key)
        .expect("the receipt is signed by the new kid");
    let (_, fresh_key) = new_license(&server, "After");
    assert_eq!(key_kid(&fresh_key), new_kid, "new keys carry the new kid");

    server.stop();
    let mut reissue_args = vec!["license", "reissue", "--all", "--data-dir", data];
    reissue_args.extend(store_args);
    let output = Command::new(nls_binary())
        .args(&reissue_args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run nls license reissue");
    assert!(output.status.success(), "nls license reissue: {}", String::from_utf8_lossy(&output.stderr));
    let reissued: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let reissued = reissued.as_array().expect("a list");
    assert_eq!(reissued.len(), 2, "every live license, not the revoked one: {reissued:?}");
    assert!(
        reissued.iter().all(|r| r["kid"] == json!(new_kid) && r["emailed"] == json!(true)),
        "{reissued:?}"
    );
    let retired = nls_json(&["keys", "retire", "--data-dir", data, "--kid", &old_kid]);
    assert_eq!(retired["verifiers"], json!([]));
    let unknown = nls(&["keys", "retire", "--data-dir", data, "--kid", &old_kid]);
    assert!(!unknown.status.success(), "retiring twice is refused");
    server.start_again();

    assert_eq!(jwks_kids(&server), vec![new_kid.clone()]);
    let old = server.validate(&json!({"key": old_key, "deployment_id": "d1"}));
    assert_eq!(old["code"], "BAD_SIGNATURE", "{old}");
    let emailed = emailed_key(&dir.path().join("outbox"), &old_id, &new_kid);
    assert_eq!(key_kid(&emailed), new_kid);
    let again = server.validate(&json!({"key": emailed, "deployment_id": "d1"}));
    assert_eq!(again["code"], "VALID", "the re-issued key validates: {again}");
    let audit = server.admin("GET", &format!("/v1/audit-log?target=license:{old_id}"), None);
    let actions: Vec<&str> =
        audit["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"license.reissue"), "the re-issue is audited: {actions:?}");
}
