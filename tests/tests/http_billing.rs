//! Billing end to end against the real `nls serve`: signed Stripe events through
//! `POST /v1/webhooks/stripe` (replays have one effect, bad signatures get a 400 and a code),
//! the key emailed once into the `.eml` outbox, and `nls renewals run` sending each reminder
//! exactly once even when two runs overlap.

use std::path::Path;
use std::process::Command;

use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use nls_tests::http_client::HttpResponse;
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "whsec_e2e_test_secret";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/fixtures/stripe").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn signature(body: &str, secret: &str, at: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{at}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

fn post_event(server: &NlsServer, body: &str, signature_header: Option<&str>) -> HttpResponse {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(sig) = signature_header {
        headers.push(("stripe-signature", sig));
    }
    nls_tests::http_client::request(server.port, "POST", "/v1/webhooks/stripe", &headers, body.as_bytes())
        .expect("webhook request")
}

fn outbox(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("outbox")) else { return Vec::new() };
    let mut mails: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .map(|e| std::fs::read_to_string(e.path()).expect("read .eml"))
        .collect();
    mails.sort();
    mails
}

fn start(dir: &TempDir) -> NlsServer {
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tests/fixtures/stripe/plans.json");
    let plans = plans.to_string_lossy().into_owned();
    NlsServer::start_with_env(
        dir.path(),
        &["--renewals-every-secs", "0", "--snapshot-ttl-ms", "0"],
        &[("NLS_STRIPE_WEBHOOK_SECRET", SECRET), ("NLS_PLANS_FILE", &plans)],
        "warn",
    )
}

#[test]
fn signed_events_apply_once_and_email_the_key_once() {
    let dir = TempDir::new("billing-webhook");
    let server = start(&dir);
    let now = Utc::now().timestamp();

    let created = fixture("customer.subscription.created.json");
    let checkout = fixture("checkout.session.completed.json");
    for body in [&created, &checkout] {
        let first = post_event(&server, body, Some(&signature(body, SECRET, now)));
        assert_eq!(first.status, 200, "{}", first.text());
        for _ in 0..5 {
            let replay = post_event(&server, body, Some(&signature(body, SECRET, now)));
            assert_eq!(replay.status, 200, "a replay is acknowledged: {}", replay.text());
            assert_eq!(replay.json()["outcome"], "duplicate", "{}", replay.text());
        }
    }

    let licenses = server.admin("GET", "/v1/licenses", None);
    let items = licenses["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one license however often the events came: {licenses}");
    let license = &items[0];
    assert_eq!((license["tier"].as_str(), license["status"].as_str()), (Some("basic"), Some("active")));
    let customers = server.admin("GET", "/v1/customers", None);
    assert_eq!(customers["items"][0]["email"], "jenny.rosen@example.com");

    let mails = outbox(dir.path());
    assert_eq!(mails.len(), 1, "the key is emailed once");
    assert!(mails[0].contains("To: jenny.rosen@example.com"), "{}", mails[0]);
    assert!(mails[0].contains("NLS-"), "the email carries the key");

    let id = license["id"].as_str().expect("id");
    let log = server.admin("GET", &format!("/v1/licenses/{id}/notifications"), None);
    assert_eq!(log["items"].as_array().map(Vec::len), Some(1), "{log}");
    assert_eq!(log["items"][0]["state"], "sent");
}

#[test]
fn bad_signatures_are_refused_before_the_body_is_read() {
    let dir = TempDir::new("billing-signature");
    let server = start(&dir);
    let body = fixture("invoice.paid.json");
    let now = Utc::now().timestamp();
    let cases = [
        (None, "missing"),
        (Some(signature(&body, "whsec_wrong", now)), "wrong secret"),
        (Some(signature(&body, SECRET, now - 3600)), "stale"),
        (Some("t=abc,v1=zz".to_owned()), "malformed"),
    ];
    for (header, why) in cases {
        let answer = post_event(&server, &body, header.as_deref());
        assert_eq!(answer.status, 400, "{why}: {}", answer.text());
        let code = answer.error_code().unwrap_or_default();
        assert!(code.to_lowercase().starts_with("signature"), "{why}: code {code}");
    }
    let tampered = body.replace("in_", "ix_");
    let answer = post_event(&server, &tampered, Some(&signature(&body, SECRET, now)));
    assert_eq!(answer.status, 400, "a tampered body fails its signature");
    let garbage = "{not json";
    let answer = post_event(&server, garbage, Some(&signature(garbage, SECRET, now)));
    assert_eq!(answer.status, 400, "a signed but malformed payload is a 400, never a 5xx");
}

#[test]
fn overlapping_renewal_runs_send_each_reminder_once() {
    let dir = TempDir::new("billing-renewals");
    let mut server = start(&dir);
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let expires = Utc::now() + Duration::days(7) - Duration::hours(6);
    let body = json!({"customer_id": customer["customer"]["id"], "expires_at": expires.to_rfc3339()});
    let created = server.admin("POST", "/v1/licenses", Some(&body));
    let license_id = created["license"]["id"].as_str().expect("id").to_owned();
    server.stop();

    let run = || {
        Command::new(nls_binary())
            .args(["renewals", "run", "--data-dir"])
            .arg(dir.path())
            .spawn()
            .expect("spawn nls renewals run")
    };
    let (mut a, mut b) = (run(), run());
    assert!(a.wait().expect("run a").success() && b.wait().expect("run b").success());
    assert!(run().wait().expect("run c").success(), "a third, later run finds nothing new");

    let reminders: Vec<String> =
        outbox(dir.path()).into_iter().filter(|m| m.contains("To: ops@acme.test")).collect();
    assert_eq!(reminders.len(), 1, "one 7-day reminder across three runs");

    server.start_again();
    let log: Value = server.admin("GET", &format!("/v1/licenses/{license_id}/notifications"), None);
    let items = log["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(
        (items[0]["notice"].as_str(), items[0]["state"].as_str()),
        (Some("renewal_reminder_7d"), Some("sent"))
    );
}
