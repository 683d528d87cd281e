//! The access-token life is configured at the origin (`nls serve --access-token-ttl-secs`,
//! or `NLS_ACCESS_TOKEN_TTL_SECS`), bounded to 60 s … 1 h (docs/cloud-access.md). A suspended
//! license gets no new token, and the one it holds stops verifying within that life.

use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use nls_core::access_token::{AccessRejection, verify_access_token};
use nls_core::key_ring::KeyRing;
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::{Value, json};

/// A license with a `workflows` grant; returns (id, key).
fn license(server: &NlsServer) -> (String, String) {
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let created = server.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"],
                     "cloud": {"workflows": {"requests_per_minute": 60, "burst": 10}}})),
    );
    (created["license"]["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
}

fn token_answer(server: &NlsServer, key: &str) -> (u16, Value) {
    let body = json!({"key": key, "deployment_id": "d1", "audience": "workflows"});
    let r = server.call("POST", "/v1/access-tokens", None, Some(&body));
    (r.status, r.json())
}

/// The token's life as the answer states it and as its claims state it, in seconds.
fn token_life(server: &NlsServer, answer: &Value) -> (i64, i64) {
    let ring =
        KeyRing::parse_jwks_json(&server.call("GET", "/.well-known/jwks.json", None, None).text()).unwrap();
    let token = answer["token"].as_str().unwrap();
    let verified = verify_access_token(&ring, token, "workflows", Utc::now()).expect("a token that verifies");
    let expires_at: DateTime<Utc> = serde_json::from_value(answer["expires_at"].clone()).unwrap();
    assert_eq!(expires_at, verified.expires_at);
    ((verified.expires_at - verified.issued_at).num_seconds(), (expires_at - Utc::now()).num_seconds())
}

#[test]
fn the_token_life_is_the_configured_one_and_bounds_a_suspension() {
    let dir = TempDir::new("access-ttl-flag");
    let server = NlsServer::start(dir.path(), &["--access-token-ttl-secs", "60"]);
    let (id, key) = license(&server);
    let (status, answer) = token_answer(&server, &key);
    assert_eq!(status, 200, "{answer}");
    let (life, left) = token_life(&server, &answer);
    assert_eq!(life, 60);
    assert!((55..=60).contains(&left), "{left}");

    server.admin("POST", &format!("/v1/licenses/{id}/suspend"), None);
    let (status, refused) = token_answer(&server, &key);
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("SUSPENDED")));
    // The token already out still verifies until its expiry, one TTL at most, and not after.
    let ring =
        KeyRing::parse_jwks_json(&server.call("GET", "/.well-known/jwks.json", None, None).text()).unwrap();
    let token = answer["token"].as_str().unwrap();
    let expires_at: DateTime<Utc> = serde_json::from_value(answer["expires_at"].clone()).unwrap();
    assert!(verify_access_token(&ring, token, "workflows", Utc::now()).is_ok());
    assert!(expires_at <= Utc::now() + Duration::seconds(60));
    assert_eq!(
        verify_access_token(&ring, token, "workflows", expires_at).err(),
        Some(AccessRejection::Expired)
    );
}

#[test]
fn the_environment_sets_it_and_the_default_is_fifteen_minutes() {
    let dir = TempDir::new("access-ttl-env");
    let server = NlsServer::start_with_env(dir.path(), &[], &[("NLS_ACCESS_TOKEN_TTL_SECS", "3600")], "warn");
    let (_, key) = license(&server);
    assert_eq!(token_life(&server, &token_answer(&server, &key).1).0, 3600);
    drop(server);
    let dir = TempDir::new("access-ttl-default");
    let server = NlsServer::start(dir.path(), &[]);
    let (_, key) = license(&server);
    assert_eq!(token_life(&server, &token_answer(&server, &key).1).0, 15 * 60);
}

#[test]
fn a_life_outside_one_minute_to_one_hour_is_refused_at_start() {
    for (flag, env) in [(Some("59"), None), (Some("3601"), None), (None, Some("0")), (None, Some("an hour"))]
    {
        let dir = TempDir::new("access-ttl-bad");
        let mut command = Command::new(nls_binary());
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
        if let Some(secs) = flag {
            command.args(["--access-token-ttl-secs", secs]);
        }
        if let Some(secs) = env {
            command.env("NLS_ACCESS_TOKEN_TTL_SECS", secs);
        }
        let output = command.output().unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag:?} {env:?} started");
        assert!(said.contains("access-token-ttl-secs"), "{flag:?} {env:?}: {said}");
    }
}
