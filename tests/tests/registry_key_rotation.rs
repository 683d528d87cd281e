//! The registry token key rotates like the license ring (docs/distribution.md, "Rotating the
//! registry key"), judged by the real CNCF registry: after `nls registry rotate` the bundle
//! from `nls registry cert` holds both keys and new tokens are signed by the new one; a
//! registry with that bundle accepts tokens of both, one with the old bundle refuses the new
//! key's; after `nls registry retire` the retired key's tokens are refused. The same bundle
//! comes from Secrets Manager (`--secret-id`, moto): `AWSCURRENT` and `AWSPREVIOUS`.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use nls_core::registry_token::{RegistryClaims, RegistrySigningKey, ResourceActions};
use nls_tests::docker_registry::{Registry, build_oci_layout, skopeo};
use nls_tests::http_client::request;
use nls_tests::moto::{MotoServer, aws_env};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::{Value, json};

const SERVICE: &str = "nectar-registry-rotation";
const ISSUER: &str = "nls-rotation";

fn nls(args: &[&str], env: &[(&'static str, String)]) -> std::process::Output {
    Command::new(nls_binary()).args(args).envs(env.iter().map(|(k, v)| (k, v))).output().expect("run nls")
}

fn nls_json(args: &[&str]) -> Value {
    let out = nls(args, &[]);
    assert!(out.status.success(), "nls {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `nls registry cert --data-dir DATA --out OUT`; returns how many certificates it holds.
fn write_bundle(data: &Path, out: &Path) -> usize {
    let done = nls(&["registry", "cert", "--data-dir", path(data), "--out", path(out)], &[]);
    assert!(done.status.success(), "nls registry cert: {}", String::from_utf8_lossy(&done.stderr));
    std::fs::read_to_string(out).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
}

fn token_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&B64URL.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// A pull token for `nectar/app` from `server`, for HTTP Basic `creds`.
fn token(server: &NlsServer, creds: &str) -> String {
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds));
    let query = format!("/v1/registry/token?service={SERVICE}&scope=repository:nectar/app:pull");
    let answer = request(server.port, "GET", &query, &[("authorization", &basic)], b"").unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["token"].as_str().unwrap().to_owned()
}

/// Trusted: the registry lets the token in (200, or 404 for a repository with no image yet);
/// refused: 401.
fn assert_trusted(registry: &Registry, token: &str, trusted: bool, what: &str) {
    let status = registry.tags_with_token("nectar/app", token).status;
    let expected: &[u16] = if trusted { &[200, 404] } else { &[401] };
    assert!(expected.contains(&status), "{what}: the registry answered {status}\n{}", registry.log_tail());
}

#[test]
fn a_rotated_registry_key_is_trusted_alongside_the_old_until_the_old_is_retired() {
    let dir = TempDir::new("registry-rotation");
    let data = dir.path().join("nls-data");
    let registry_dir = dir.path().join("registry");
    std::fs::create_dir_all(&registry_dir).unwrap();
    let args = ["--registry-service", SERVICE, "--registry-issuer", ISSUER];

    // GIVEN a registry trusting the first key, and an image pushed by staff
    assert_eq!(write_bundle(&data, &dir.path().join("bundle-1.pem")), 1);
    let mut server = NlsServer::start(&data, &args);
    let registry =
        Registry::start(&registry_dir, server.port, &dir.path().join("bundle-1.pem"), SERVICE, ISSUER);
    let staff =
        server.admin("POST", "/v1/api-keys", Some(&json!({"name": "ci", "scopes": ["registry:push"]})));
    let staff = format!("ci:{}", staff["secret"].as_str().unwrap());
    let layout = format!("oci:{}:v1", build_oci_layout(dir.path()).display());
    let push = |registry: &Registry| {
        let args = ["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", &staff, &layout];
        let dest = registry.url("nectar/app");
        skopeo(dir.path(), &[&args[..], &[dest.as_str()]].concat())
    };
    let inspect = |registry: &Registry| {
        skopeo(dir.path(), &["inspect", "--tls-verify=false", "--creds", &staff, &registry.url("nectar/app")])
    };
    let (pushed, why) = push(&registry);
    assert!(pushed, "staff push: {why}\n{}", registry.log_tail());
    let old_token = token(&server, &staff);
    let old_kid = token_kid(&old_token);
    assert_trusted(&registry, &old_token, true, "the first key's token");
    drop(registry);

    // WHEN the key rotates (nls serve restarted to sign with it, the registry given the new bundle)
    server.stop();
    let rotated = nls_json(&["registry", "rotate", "--data-dir", path(&data)]);
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous_kid"], json!(old_kid));
    assert_ne!(new_kid, old_kid);
    assert_eq!(write_bundle(&data, &dir.path().join("bundle-2.pem")), 2, "the bundle holds every live key");
    server.start_again();
    let registry =
        Registry::start(&registry_dir, server.port, &dir.path().join("bundle-2.pem"), SERVICE, ISSUER);

    // THEN new tokens carry the new kid, and the registry takes tokens of both keys
    let new_token = token(&server, &staff);
    assert_eq!(token_kid(&new_token), new_kid, "new tokens are signed with the newest key");
    assert_trusted(&registry, &new_token, true, "the new key's token");
    assert_trusted(&registry, &old_token, true, "the old key's token, still live");
    let (inspected, why) = inspect(&registry);
    assert!(inspected, "staff inspect after rotation: {why}\n{}", registry.log_tail());
    let (pushed, why) = push(&registry);
    assert!(pushed, "staff push after rotation: {why}\n{}", registry.log_tail());
    // A registry still on the old bundle refuses the new key: the bundle is what it trusts.
    let stale_dir = dir.path().join("stale-registry");
    std::fs::create_dir_all(&stale_dir).unwrap();
    let stale = Registry::start(&stale_dir, server.port, &dir.path().join("bundle-1.pem"), SERVICE, ISSUER);
    assert_trusted(&stale, &new_token, false, "a registry with only the old certificate");
    drop(stale);
    drop(registry);

    // WHEN the old key is retired
    server.stop();
    let refused = nls(&["registry", "retire", "--data-dir", path(&data), "--kid", &new_kid], &[]);
    assert!(!refused.status.success(), "retiring the signer is refused");
    let retired = nls_json(&["registry", "retire", "--data-dir", path(&data), "--kid", &old_kid]);
    assert_eq!(retired["previous"], json!([]));
    let again = nls(&["registry", "retire", "--data-dir", path(&data), "--kid", &old_kid], &[]);
    assert!(!again.status.success(), "retiring twice is refused");
    assert_eq!(write_bundle(&data, &dir.path().join("bundle-3.pem")), 1);
    server.start_again();
    let registry =
        Registry::start(&registry_dir, server.port, &dir.path().join("bundle-3.pem"), SERVICE, ISSUER);

    // THEN the retired key's tokens are refused, the new key's accepted
    assert_trusted(&registry, &old_token, false, "the retired key's token");
    assert_trusted(&registry, &new_token, true, "the new key's token");
    let (inspected, why) = inspect(&registry);
    assert!(inspected, "staff inspect after retirement: {why}\n{}", registry.log_tail());
}

/// A token for `nectar/app` signed directly with `key` (what a server holding it would issue).
fn signed_token(key: &RegistrySigningKey) -> String {
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: "nectar/app".into(),
        actions: vec!["pull".into()],
    }];
    let claims =
        RegistryClaims::new(ISSUER, "ci", SERVICE, access, chrono::Utc::now(), chrono::Duration::minutes(5));
    key.sign(&claims)
}

#[test]
fn the_bundle_from_secrets_manager_holds_the_current_and_the_previous_key() {
    // GIVEN the registry key in Secrets Manager, rotated once (moto moves the labels)
    let moto = MotoServer::shared();
    let secret_id = format!("nls/test/registry-key-{}", std::process::id());
    let (old, new) = (RegistrySigningKey::generate(), RegistrySigningKey::generate());
    let jwk = |key: &RegistrySigningKey| serde_json::to_string(&key.to_private_jwk()).unwrap();
    moto.create_secret(&secret_id, &jwk(&old));
    let dir = TempDir::new("registry-secret");
    let bundle = dir.path().join("bundle.pem");
    let cert = |out: &Path| {
        let done = nls(
            &["registry", "cert", "--secret-id", &secret_id, "--out", path(out)],
            &aws_env(&moto.endpoint),
        );
        assert!(
            done.status.success(),
            "nls registry cert --secret-id: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        std::fs::read_to_string(out).unwrap().matches("-----BEGIN CERTIFICATE-----").count()
    };
    assert_eq!(cert(&dir.path().join("before.pem")), 1, "one version: one certificate");
    moto.put_secret_value(&secret_id, &jwk(&new));

    // WHEN the bundle is written from the secret and given to the real registry
    assert_eq!(cert(&bundle), 2);
    let registry_dir = dir.path().join("registry");
    std::fs::create_dir_all(&registry_dir).unwrap();
    // No token service is needed: the tokens are signed here with each key.
    let registry = Registry::start(&registry_dir, 9, &bundle, SERVICE, ISSUER);

    // THEN tokens of both keys are trusted, and of a third key not
    assert_trusted(&registry, &signed_token(&new), true, "AWSCURRENT's token");
    assert_trusted(&registry, &signed_token(&old), true, "AWSPREVIOUS's token");
    assert_trusted(
        &registry,
        &signed_token(&RegistrySigningKey::generate()),
        false,
        "an unknown key's token",
    );
}
