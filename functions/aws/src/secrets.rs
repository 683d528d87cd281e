//! Secrets the Lambdas fetch once at init from Secrets Manager: the signing key (a private
//! Ed25519 JWK as the secret string) and plain string secrets (Stripe's webhook secret, the
//! edges' service token). Errors name the secret, never its content.

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

/// The secret's string value, trimmed; an empty one is an error.
pub async fn fetch_secret_string(
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

pub async fn fetch_signing_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<SigningKey, SecretError> {
    let json = fetch_secret_string(client, secret_id).await?;
    SigningKey::parse_jwk_json(&json)
        .map_err(|source| SecretError::NotAJwk { secret_id: secret_id.to_owned(), source })
}
