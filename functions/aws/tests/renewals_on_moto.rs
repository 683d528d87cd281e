//! The renewals job on DynamoStore with the real SesMailer, both on moto: the reminder is
//! read back from moto's SES, and overlapping and repeated runs send it once.

mod moto_support;

use std::sync::Arc;

use chrono::{Duration, Utc};
use moto_support::{MotoServer, test_tuning};
use nls_aws::{SesMailer, sesv2_client};
use nls_core::issuing::{LicenseTerms, new_id, new_license};
use nls_core::model::Customer;
use nls_core::ports::{SystemClock, UnitOfWork, Write};
use nls_core::renewals::{RenewalsConfig, run_renewals};

const SENDER: &str = "licenses@nectar.example";

fn ses_messages_to(server: &MotoServer, to: &str) -> Vec<serde_json::Value> {
    let data = server.data_json();
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages.into_iter().filter(|m| m["destinations"]["ToAddresses"][0] == to).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_expiring_in_7_days_gets_one_reminder_through_ses() {
    // GIVEN a customer whose license expires in 7 days, and a verified sender
    let server = MotoServer::shared();
    let table = moto_support::fresh_table().await;
    let ses = sesv2_client(&moto_support::sdk_config(server).await, &test_tuning());
    // Another test may have created it already; either way it is verified.
    let _ = ses.create_email_identity().email_identity(SENDER).send().await;
    let mailer = SesMailer::new(ses, SENDER);
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
        tier: Some("pro".to_owned()),
        expires_at: Some(now + Duration::days(7) - Duration::minutes(1)),
        ..LicenseTerms::default()
    };
    let license = new_license(&customer.id, terms, now);
    table
        .store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
        .await
        .expect("seeded");
    let store = Arc::new(table.store);
    let mailer = Arc::new(mailer);

    // WHEN two runs overlap
    let run = |run_id: &'static str| {
        let (store, mailer) = (store.clone(), mailer.clone());
        tokio::spawn(async move {
            run_renewals(store.as_ref(), mailer.as_ref(), &SystemClock, &RenewalsConfig::new(run_id))
                .await
                .expect("the run reads its window")
        })
    };
    let (a, b) = (run("run-a"), run("run-b"));
    let (a, b) = (a.await.expect("run a"), b.await.expect("run b"));

    // THEN exactly one of them sent the 7-day reminder, and moto's SES holds it
    assert_eq!(a.sent.len() + b.sent.len(), 1, "a: {a:?}\nb: {b:?}");
    let sent = a.sent.iter().chain(&b.sent).next().expect("one notice");
    assert_eq!(
        (sent.license_id.as_str(), sent.notice.as_str()),
        (license.id.as_str(), "renewal_reminder_7d")
    );
    let mail = ses_messages_to(server, &recipient);
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["source"], SENDER);
    assert_eq!(mail[0]["id"], sent.message_id.as_str());

    // WHEN the job runs again
    let again = run("run-c").await.expect("run c");
    // THEN nothing more is sent
    assert!(again.sent.is_empty(), "{again:?}");
    assert_eq!(again.already_sent, 1);
    assert_eq!(ses_messages_to(server, &recipient).len(), 1);
}
