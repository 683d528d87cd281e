//! SesMailer against moto's SES: the sent message is read back from moto's state.

mod moto_support;

use moto_support::{MotoServer, test_tuning};
use nls_aws::{SesMailer, sesv2_client};
use nls_core::ports::{Mailer, OutgoingEmail};

#[tokio::test]
async fn sent_mail_reaches_moto_with_recipient_subject_and_body() {
    let server = MotoServer::shared();
    let client = sesv2_client(&moto_support::sdk_config(server).await, &test_tuning());
    // GIVEN a verified sender identity (moto verifies on creation)
    client.create_email_identity().email_identity("licenses@nectar.example").send().await.expect("identity");
    let mailer = SesMailer::new(client, "licenses@nectar.example");
    let email = OutgoingEmail {
        to: "buyer@customer.example".into(),
        subject: "Your NLS license key".into(),
        text_body: "Your key: NLS-abc-12345678".into(),
        html_body: "<p>Your key: <code>NLS-abc-12345678</code></p>".into(),
    };

    // WHEN it is sent
    let message_id = mailer.send(&email).await.expect("send");

    // THEN moto holds exactly that message
    let data = server.data_json();
    let messages = data["ses"]["Message"].as_array().unwrap_or_else(|| panic!("no SES messages in {data}"));
    let sent = messages
        .iter()
        .find(|m| m["id"] == message_id.as_str())
        .unwrap_or_else(|| panic!("message {message_id} not among {messages:?}"));
    assert_eq!(sent["source"], "licenses@nectar.example");
    assert_eq!(sent["destinations"]["ToAddresses"], serde_json::json!(["buyer@customer.example"]));
    assert_eq!(sent["subject"], "Your NLS license key");
    // moto keeps one body, the HTML part when there is one.
    assert_eq!(sent["body"], "<p>Your key: <code>NLS-abc-12345678</code></p>");
}

#[tokio::test]
async fn an_unverified_sender_is_rejected_not_retried() {
    let server = MotoServer::shared();
    let mailer = SesMailer::new(
        sesv2_client(&moto_support::sdk_config(server).await, &test_tuning()),
        "nobody@unverified.example",
    );
    let email = OutgoingEmail {
        to: "a@b.example".into(),
        subject: "s".into(),
        text_body: "t".into(),
        html_body: "h".into(),
    };
    let err = mailer.send(&email).await.expect_err("unverified sender");
    assert!(matches!(err, nls_core::ports::MailError::Rejected(_)), "{err:?}");
}
