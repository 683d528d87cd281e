//! The SES v2 mailer: sends an already rendered email (text and HTML) from the configured
//! sender identity.

use async_trait::async_trait;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use nls_core::ports::{MailError, Mailer, OutgoingEmail};

pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from_address: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    /// `from_address` must be a verified SES identity (or an address of a verified domain).
    pub fn new(client: aws_sdk_sesv2::Client, from_address: impl Into<String>) -> Self {
        Self { client, from_address: from_address.into(), configuration_set: None }
    }

    /// Sends through an SES configuration set (event publishing, suppression overrides).
    pub fn with_configuration_set(mut self, name: impl Into<String>) -> Self {
        self.configuration_set = Some(name.into());
        self
    }

    pub fn from_address(&self) -> &str {
        &self.from_address
    }
}

fn utf8(text: &str) -> Result<Content, MailError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| MailError::Rejected(format!("could not build the message: {e}")))
}

fn classify(err: SdkError<SendEmailError>) -> MailError {
    match &err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let detail =
                format!("{}: {}", inner.code().unwrap_or("ServiceError"), inner.message().unwrap_or(""));
            match inner {
                // Throttling and quota: try again later.
                SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_) => {
                    MailError::Unavailable(detail)
                }
                // The message, sender or account is refused: retrying would not help.
                _ => MailError::Rejected(detail),
            }
        }
        _ => MailError::Unavailable(aws_sdk_sesv2::error::DisplayErrorContext(&err).to_string()),
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<String, MailError> {
        let message = Message::builder()
            .subject(utf8(&email.subject)?)
            .body(Body::builder().text(utf8(&email.text_body)?).html(utf8(&email.html_body)?).build())
            .build();
        let output = self
            .client
            .send_email()
            .from_email_address(&self.from_address)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .content(EmailContent::builder().simple(message).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(classify)?;
        output
            .message_id
            .ok_or_else(|| MailError::Unavailable("SES accepted the message but returned no id".into()))
    }
}
