//! Secrets fetched once at init from Secrets Manager: Stripe's webhook secret and the key
//! signing key. Errors name the secret, never its content; [`WebhookSecret`] never prints.

use std::fmt;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use nls_core::key_ring::{JwkError, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading secret {secret_id}: {detail}")]
    Fetch { secret_id: String, detail: String },
    #[error("secret {secret_id} has no (non-empty) string value")]
    NotAString { secret_id: String },
    #[error("secret {secret_id} is not a private Ed25519 JWK: {source}")]
    NotAJwk { secret_id: String, source: JwkError },
}

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

async fn secret_string(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<String, SecretError> {
    let output = client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
        SecretError::Fetch { secret_id: secret_id.to_owned(), detail: DisplayErrorContext(&e).to_string() }
    })?;
    output
        .secret_string()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| SecretError::NotAString { secret_id: secret_id.to_owned() })
}

pub async fn fetch_webhook_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<WebhookSecret, SecretError> {
    secret_string(client, secret_id).await.map(WebhookSecret::new)
}

pub async fn fetch_signing_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<SigningKey, SecretError> {
    let json = secret_string(client, secret_id).await?;
    SigningKey::parse_jwk_json(&json)
        .map_err(|source| SecretError::NotAJwk { secret_id: secret_id.to_owned(), source })
}
