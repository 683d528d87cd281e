//! The signing key, fetched once at init from Secrets Manager (a private Ed25519 JWK as the
//! secret string). Errors name the secret, never its content.

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use nls_core::key_ring::{JwkError, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("reading secret {secret_id}: {detail}")]
    Fetch { secret_id: String, detail: String },
    #[error("secret {secret_id} has no string value (a private JWK is expected)")]
    NotAString { secret_id: String },
    #[error("secret {secret_id} is not a private Ed25519 JWK: {source}")]
    NotAJwk { secret_id: String, source: JwkError },
}

pub async fn fetch_signing_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<SigningKey, SigningKeyError> {
    let output =
        client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| SigningKeyError::Fetch {
            secret_id: secret_id.to_owned(),
            detail: DisplayErrorContext(&e).to_string(),
        })?;
    let json = output
        .secret_string()
        .ok_or_else(|| SigningKeyError::NotAString { secret_id: secret_id.to_owned() })?;
    SigningKey::parse_jwk_json(json)
        .map_err(|source| SigningKeyError::NotAJwk { secret_id: secret_id.to_owned(), source })
}
