//! Secrets the Lambdas fetch once at init from Secrets Manager: the signing key ring and plain
//! string secrets (Stripe's webhook secret, the edges' service token). Errors name the secret,
//! never its content.
//!
//! The ring is two versions of one secret, each a private Ed25519 JWK: `AWSCURRENT` signs, and
//! `AWSPREVIOUS`, while it exists, still verifies. Rotating is `put-secret-value` with a new
//! key (Secrets Manager moves the labels); retiring is removing the `AWSPREVIOUS` label
//! (docs/operations.md, "Key rotation on AWS").

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use nls_core::key_ring::{JwkError, KeyRing, SigningKey};

/// The version label of the key that still verifies after a rotation.
pub const PREVIOUS_STAGE: &str = "AWSPREVIOUS";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading secret {secret_id}: {detail}")]
    Fetch { secret_id: String, detail: String },
    #[error("secret {secret_id} has no (non-empty) string value")]
    NotAString { secret_id: String },
    #[error("secret {secret_id} is not a private Ed25519 JWK: {source}")]
    NotAJwk { secret_id: String, source: JwkError },
}

/// The signer (`AWSCURRENT`) and, if the secret has an `AWSPREVIOUS` version with another
/// kid, that key as a verifier.
pub async fn fetch_signing_ring(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<KeyRing, SecretError> {
    let signer = fetch_signing_key(client, secret_id).await?;
    let previous =
        match client.get_secret_value().secret_id(secret_id).version_stage(PREVIOUS_STAGE).send().await {
            Ok(output) => output.secret_string().map(str::trim).map(SigningKey::parse_jwk_json),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => None,
            Err(e) => {
                return Err(SecretError::Fetch {
                    secret_id: format!("{secret_id} ({PREVIOUS_STAGE})"),
                    detail: DisplayErrorContext(&e).to_string(),
                });
            }
        };
    let not_a_jwk =
        |source| SecretError::NotAJwk { secret_id: format!("{secret_id} ({PREVIOUS_STAGE})"), source };
    let verifiers = match previous {
        Some(key) => vec![key.map_err(not_a_jwk)?.verifying_key()],
        None => Vec::new(),
    };
    let verifiers = verifiers.into_iter().filter(|k| k.kid != signer.kid).collect();
    KeyRing::with_signer(signer, verifiers)
        .map_err(|source| SecretError::NotAJwk { secret_id: secret_id.to_owned(), source })
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

/// The secret's `AWSCURRENT` string and, if it has one, its `AWSPREVIOUS` string: a key and
/// the key it replaced (the registry token key's certificate bundle holds both,
/// docs/distribution.md).
pub async fn fetch_current_and_previous(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<(String, Option<String>), SecretError> {
    let current = fetch_secret_string(client, secret_id).await?;
    let previous =
        match client.get_secret_value().secret_id(secret_id).version_stage(PREVIOUS_STAGE).send().await {
            Ok(output) => output.secret_string().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => None,
            Err(e) => {
                return Err(SecretError::Fetch {
                    secret_id: format!("{secret_id} ({PREVIOUS_STAGE})"),
                    detail: DisplayErrorContext(&e).to_string(),
                });
            }
        };
    Ok((current, previous))
}
