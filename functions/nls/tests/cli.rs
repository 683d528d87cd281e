//! The `nls` CLI contract, run as the real binary: key tools, offline issuing, inspect and
//! verify, and interop with a standard JOSE library (PyJWT) in both directions.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn nls(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nls")).args(args).output().expect("run nls")
}

fn nls_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nls"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nls");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "nls failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", o))
}

struct Workdir(PathBuf);

impl Workdir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nls-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A signing key and its JWKS in `dir`.
fn keys(dir: &Workdir) -> (String, String) {
    let key = dir.path("signing.jwk");
    stdout(&nls(&["keys", "generate", "--out", &key]));
    let jwks = dir.path("jwks.json");
    std::fs::write(&jwks, stdout(&nls(&["keys", "jwks", "--key", &key]))).expect("write jwks");
    (key, jwks)
}

fn issue(key: &str, extra: &[&str]) -> String {
    let mut args = vec!["license", "issue", "--key", key, "--customer", "cus_acme"];
    args.extend_from_slice(extra);
    stdout(&nls(&args)).trim().to_owned()
}

#[test]
fn generated_key_is_private_0600_and_jwks_is_public() {
    let dir = Workdir::new("gen");
    let (key, jwks) = keys(&dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let private: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).expect("read")).expect("json");
    assert!(private["d"].is_string() && private["kid"].is_string());
    let public: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks).expect("read")).expect("json");
    let first = &public["keys"][0];
    assert_eq!((first["kty"].as_str(), first["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    assert_eq!(first["kid"], private["kid"]);
    assert!(first.get("d").is_none(), "the JWKS never carries the private part");
    // A public JWK file gives the same JWKS.
    let public_only = dir.path("public.jwk");
    std::fs::write(&public_only, first.to_string()).expect("write");
    assert_eq!(json(&nls(&["keys", "jwks", "--key", &public_only])), public);
    // Never overwrite a key.
    let again = nls(&["keys", "generate", "--out", &key]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn issue_inspect_verify() {
    let dir = Workdir::new("ivv");
    let (key, jwks) = keys(&dir);
    let license = issue(
        &key,
        &[
            "--tier",
            "pro",
            "--features",
            "sso,audit",
            "--limit",
            "api_calls=1000",
            "--max-deployments",
            "3",
            "--expires-in",
            "30d",
        ],
    );
    assert!(license.starts_with("NLS-"));

    let inspected = json(&nls(&["license", "inspect", &license]));
    assert_eq!(inspected["checksum_ok"], true);
    assert_eq!(inspected["header"]["alg"], "EdDSA");
    let claims = &inspected["claims"];
    assert_eq!(claims["customer_id"], "cus_acme");
    assert_eq!(claims["features"], serde_json::json!(["sso", "audit"]));
    assert_eq!(claims["limits"]["api_calls"], 1000);
    assert_eq!(claims["max_deployments"], 3);
    let ttl = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(ttl, 30 * 86_400);

    let ok = nls(&["license", "verify", &license, "--jwks", &jwks]);
    assert!(ok.status.success());
    assert_eq!(json(&ok), serde_json::json!({"valid": true, "code": "VALID"}));
    let from_stdin = nls_stdin(&["license", "verify", "-", "--jwks", &jwks], &format!("{license}\n"));
    assert_eq!(json(&from_stdin)["code"], "VALID");
    assert_eq!(json(&nls_stdin(&["license", "inspect", "-"], &license))["checksum_ok"], true);

    let later = chrono::Utc::now() + chrono::Duration::days(40);
    let expired = nls(&["license", "verify", &license, "--jwks", &jwks, "--at", &later.to_rfc3339()]);
    assert_eq!(json(&expired)["code"], "EXPIRED");
    assert!(!expired.status.success(), "exit status is 0 only when valid");
}

#[test]
fn tampered_and_foreign_keys_are_refused_with_their_codes() {
    let dir = Workdir::new("tamper");
    let (key, jwks) = keys(&dir);
    let other = Workdir::new("tamper-other");
    let (other_key, _) = keys(&other);
    let license = issue(&key, &[]);
    let bad_sum = format!("{}00000000", &license[..license.len() - 8]);
    let cases = [
        (bad_sum.as_str(), "CHECKSUM_MISMATCH"),
        (&license[..license.len() - 30], "MALFORMED"),
        ("hello", "MALFORMED"),
        (&issue(&other_key, &[]), "BAD_SIGNATURE"),
    ];
    for (candidate, code) in cases {
        let out = nls(&["license", "verify", candidate, "--jwks", &jwks]);
        assert!(!out.status.success(), "{code}");
        assert_eq!(json(&out), serde_json::json!({"valid": false, "code": code}));
    }
    let inspected = json(&nls(&["license", "inspect", &bad_sum]));
    assert_eq!(inspected["checksum_ok"], false);
}

#[test]
fn errors_are_one_line_without_panics() {
    let dir = Workdir::new("errors");
    let (key, _) = keys(&dir);
    let cases: Vec<Vec<&str>> = vec![
        vec!["keys", "jwks", "--key", "/nonexistent/key.jwk"],
        vec!["license", "issue", "--key", &key, "--customer", "c", "--expires-in", "soon"],
        vec!["license", "issue", "--key", &key, "--customer", "c", "--limit", "nonsense"],
        vec!["license", "issue", "--key", &key, "--customer", "c", "--expires-at", "tomorrow"],
        vec!["license", "verify", "NLS-x", "--jwks", "/nonexistent.json"],
        vec!["license", "inspect", "garbage"],
    ];
    for args in cases {
        let out = nls(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    }
    // A private key file that is not a key.
    let junk = dir.path("junk.jwk");
    std::fs::write(&junk, "{\"kty\":\"RSA\"}").expect("write");
    let out = nls(&["license", "issue", "--key", &junk, "--customer", "c"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("nls: error:"));
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("NLS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(venv.exists(), "PyJWT interop needs the test venv: run tests/run.sh (or set NLS_PYTHON)");
    venv
}

fn jose(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/jose_check.py");
    let out = Command::new(python()).arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "PyJWT failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

#[test]
fn standard_jose_library_interop_both_ways() {
    let dir = Workdir::new("jose");
    let (key, jwks) = keys(&dir);

    // Our key, their verifier.
    let license = issue(&key, &["--tier", "pro", "--expires-in", "2d"]);
    let claims: serde_json::Value =
        serde_json::from_str(&jose(&["verify", &jwks, &license])).expect("claims");
    assert_eq!((claims["customer_id"].as_str(), claims["tier"].as_str()), (Some("cus_acme"), Some("pro")));

    // Their signer, our verifier.
    let now = chrono::Utc::now().timestamp();
    let foreign_claims = serde_json::json!({
        "iss": "nls", "sub": "lic_foreign", "aud": "nectar", "jti": "key_foreign",
        "iat": now, "nbf": now - 60, "exp": now + 3600,
        "customer_id": "cus_foreign", "tier": "basic", "features": ["sso"], "limits": {"api_calls": 5},
        "max_deployments": 2, "offline_days": 30, "grace_days": 7
    });
    let foreign = jose(&["sign", &key, &foreign_claims.to_string()]);
    let out = nls(&["license", "verify", &foreign, "--jwks", &jwks]);
    assert_eq!(json(&out), serde_json::json!({"valid": true, "code": "VALID"}));
    // And their signature over other claims does not pass as ours after tampering.
    let swap = if &foreign[40..41] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swap}{}", &foreign[..40], &foreign[41..]);
    assert!(!nls(&["license", "verify", &tampered, "--jwks", &jwks]).status.success());
}
