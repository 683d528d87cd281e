//! End to end: the real `nls-renewals` binary under cargo-lambda's local Runtime API, against
//! moto (DynamoDB and SES), invoked with EventBridge's scheduled event as the schedule would.

#[path = "../../aws/tests/moto_support/mod.rs"]
mod moto_support;

use std::path::Path;
use std::process::{Command, Stdio};

use chrono::Utc;
use moto_support::MotoServer;
use nls_core::issuing::{LicenseTerms, new_id, new_license};
use nls_core::model::Customer;
use nls_core::ports::{UnitOfWork, Write};
use nls_tests::lambda_runtime::{ChildGuard, LocalRuntimeApi};
use nls_tests::moto::aws_env;

const SENDER: &str = "licenses@nectar.example";

fn ses_messages_to(server: &MotoServer, to: &str) -> usize {
    let data = server.data_json();
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages.iter().filter(|m| m["destinations"]["ToAddresses"][0] == to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_renewals_lambda_sends_a_due_reminder_once() {
    // GIVEN a license expiring in 7 days on moto, and a verified sender
    let server = MotoServer::shared();
    let table = moto_support::fresh_table().await;
    let sdk_config = moto_support::sdk_config(server).await;
    let _ =
        aws_sdk_sesv2::Client::new(&sdk_config).create_email_identity().email_identity(SENDER).send().await;
    let now = Utc::now();
    let recipient = format!("{}@customer.example", table.table);
    let customer = Customer {
        id: new_id("cus"),
        name: "Ana".to_owned(),
        email: recipient.clone(),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let terms = LicenseTerms {
        expires_at: Some(now + chrono::Duration::days(7) - chrono::Duration::minutes(1)),
        ..LicenseTerms::default()
    };
    let license = new_license(&customer.id, terms, now);
    table
        .store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license)])
        .await
        .expect("seeded");

    // AND the real binary polling the local Runtime API
    let runtime = LocalRuntimeApi::start(Path::new(env!("CARGO_MANIFEST_DIR")));
    let link = runtime.connect_function();
    let _function = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_nls-renewals"))
            .envs(link.env())
            .envs(aws_env(&server.endpoint))
            .env_remove("AWS_PROFILE")
            .env("NLS_TABLE_NAME", &table.table)
            .env("NLS_SENDER_ADDRESS", SENDER)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nls-renewals"),
    );
    let scheduled_event = std::fs::read_to_string(format!(
        "{}/tests/fixtures/scheduled_event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");

    // WHEN the schedule fires twice
    let (status, first) = runtime.invoke(&scheduled_event);
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).expect("a run summary");
    assert_eq!(first["sent"], 1, "{first}");
    let (status, second) = runtime.invoke(&scheduled_event);
    assert_eq!(status, 200, "{second}");
    let second: serde_json::Value = serde_json::from_str(&second).expect("a run summary");
    assert_eq!((&second["sent"], &second["already_sent"]), (&0.into(), &1.into()), "{second}");

    // THEN moto's SES holds exactly one reminder
    assert_eq!(ses_messages_to(server, &recipient), 1);
}
