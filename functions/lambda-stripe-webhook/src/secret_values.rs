//! Stripe's webhook secret, fetched once at init from Secrets Manager (with the signing key
//! and the edges' push token, through `nls_aws::secrets`). [`WebhookSecret`] never prints.

use std::fmt;

use nls_aws::secrets::{SecretError, fetch_secret_string};

/// Stripe's endpoint secret: the whole `whsec_...` string is the HMAC key.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<hidden>)")
    }
}

pub async fn fetch_webhook_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<WebhookSecret, SecretError> {
    fetch_secret_string(client, secret_id).await.map(WebhookSecret::new)
}
