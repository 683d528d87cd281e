//! End to end: the real `nls-stripe-webhook` binary under cargo-lambda's local Runtime API,
//! against moto (DynamoDB, SES and Secrets Manager), driven over HTTP through the lambda-url
//! route with events signed as Stripe signs them. Nothing is mocked: init fetches both
//! secrets and builds its clients from the environment, as in AWS.

#[path = "../../aws/tests/moto_support/mod.rs"]
mod moto_support;

use std::path::Path;
use std::process::{Command, Stdio};

use moto_support::MotoServer;
use nls_core::billing::scenarios::{fixture, relabel};
use nls_core::billing::stripe_signature::sign_stripe_payload;
use nls_core::key_ring::SigningKey;
use nls_core::lifecycle::LicenseStatus;
use nls_core::ports::{CustomerStore, LicenseStore};
use nls_tests::http_client::request;
use nls_tests::lambda_runtime::{ChildGuard, FUNCTION_URL_PREFIX, LocalRuntimeApi};
use nls_tests::moto::aws_env;

const SENDER: &str = "licenses@nectar.example";
const WEBHOOK_SECRET: &str = "whsec_lambda_e2e_secret";

/// Delivers `body` as Stripe does (signed with `signature`, or now): (status, JSON body or Null).
fn deliver_signed(port: u16, body: &str, signature: Option<&str>) -> (u16, serde_json::Value) {
    let signed_now =
        sign_stripe_payload(WEBHOOK_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    let headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("stripe-signature", signature.unwrap_or(&signed_now)),
    ];
    let path = format!("{FUNCTION_URL_PREFIX}/v1/webhooks/stripe");
    let response = request(port, "POST", &path, &headers, body.as_bytes()).expect("deliver the event");
    (response.status, response.json())
}

fn deliver(port: u16, body: &str) -> (u16, serde_json::Value) {
    deliver_signed(port, body, None)
}

/// Messages moto's SES accepted for `to`.
fn ses_messages_to(server: &MotoServer, to: &str) -> Vec<serde_json::Value> {
    let data = server.data_json();
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages.into_iter().filter(|m| m["destinations"]["ToAddresses"][0] == to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_checkout_issues_a_license_and_emails_the_key_once() {
    // GIVEN moto with the table, both secrets and a verified sender
    let server = MotoServer::shared();
    let table = moto_support::fresh_table().await;
    let sdk_config = moto_support::sdk_config(server).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let signing_key_id = format!("nls/e2e/{}/signing-key", table.table);
    let webhook_secret_id = format!("nls/e2e/{}/stripe-webhook-secret", table.table);
    let jwk = serde_json::to_string(&SigningKey::generate().to_private_jwk()).expect("JWK");
    secrets
        .create_secret()
        .name(&signing_key_id)
        .secret_string(jwk)
        .send()
        .await
        .expect("signing key secret");
    secrets
        .create_secret()
        .name(&webhook_secret_id)
        .secret_string(WEBHOOK_SECRET)
        .send()
        .await
        .expect("webhook secret");
    // Other tests may have created the identity already; either way it is verified.
    let _ =
        aws_sdk_sesv2::Client::new(&sdk_config).create_email_identity().email_identity(SENDER).send().await;

    // AND the local Runtime API with the real binary polling it
    let runtime = LocalRuntimeApi::start(Path::new(env!("CARGO_MANIFEST_DIR")));
    let link = runtime.connect_function();
    let _function = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_nls-stripe-webhook"))
            .envs(link.env())
            .envs(aws_env(&server.endpoint))
            .env_remove("AWS_PROFILE")
            .env("NLS_TABLE_NAME", &table.table)
            .env("NLS_SENDER_ADDRESS", SENDER)
            .env("NLS_SIGNING_KEY_SECRET_ID", &signing_key_id)
            .env("NLS_STRIPE_WEBHOOK_SECRET_ID", &webhook_secret_id)
            .env("NLS_PLANS", fixture("plans"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start nls-stripe-webhook"),
    );

    // WHEN Stripe delivers a new subscription and its completed checkout (ids unique to this run)
    let tag = table.table.replace('-', "");
    let subscription = format!("sub_{tag}");
    let customer_email = format!("{tag}@example.com");
    let events = [
        relabel(fixture("customer.subscription.created"), &tag),
        relabel(fixture("checkout.session.completed"), &tag),
    ];
    let (status, ack) = deliver(runtime.port, &events[0]);
    assert_eq!((status, &ack["outcome"]), (200, &serde_json::json!("applied")), "{ack}");
    let (status, ack) = deliver(runtime.port, &events[1]);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["notices_sent"], serde_json::json!(["key_delivery"]), "{ack}");

    // THEN DynamoDB holds the customer and the active license
    let license = table
        .store
        .find_license_by_subscription(&subscription)
        .await
        .expect("reads")
        .expect("the license exists in DynamoDB");
    assert_eq!((license.status, license.tier.as_str()), (LicenseStatus::Active, "basic"));
    let customer = table.store.get_customer(&license.customer_id).await.expect("reads").expect("customer");
    assert_eq!(customer.email, customer_email);
    // AND moto's SES holds one key-delivery email carrying the key
    let mail = ses_messages_to(server, &customer_email);
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(mail[0]["body"].as_str().unwrap_or_default().contains("NLS-"), "{:?}", mail[0]);

    // WHEN every event is replayed five times
    for event in &events {
        for _ in 0..5 {
            let (status, ack) = deliver(runtime.port, event);
            assert_eq!((status, &ack["outcome"]), (200, &serde_json::json!("duplicate")), "{ack}");
        }
    }
    // THEN nothing changed
    let after =
        table.store.find_license_by_subscription(&subscription).await.expect("reads").expect("license");
    assert_eq!(after, license);
    assert_eq!(ses_messages_to(server, &customer_email).len(), 1);
    // AND a delivery with a wrong signature is refused with its code
    let (status, refusal) = deliver_signed(runtime.port, &events[0], Some("t=1,v1=00"));
    assert_eq!(status, 400, "{refusal}");
    assert!(refusal["error"]["code"].as_str().unwrap_or_default().starts_with("signature_"), "{refusal}");
}
