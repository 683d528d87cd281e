//! `nls-api`: set up logging, parse the config, build the AWS clients and fetch the signing
//! key (and the edges' push token, when configured) once at init, then serve every
//! invocation with the core's router.

use std::sync::Arc;

use nls_aws::secrets::{fetch_secret_string, fetch_signing_ring};
use nls_aws::{ClientTuning, DynamoStore, dynamodb_client, load_sdk_config};
use nls_core::http::registry_routes::RegistryTokenService;
use nls_core::http::{AppDeps, AppState};
use nls_core::ports::SystemClock;
use nls_core::registry_token::RegistrySigningKey;
use nls_edge_push::HttpStatusPublisher;
use nls_lambda_api::api_app;
use nls_lambda_api::api_config::ApiConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    nls_aws::init_lambda_logging();
    let config = ApiConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let sdk_config = load_sdk_config().await;
    let dynamodb = dynamodb_client(&sdk_config, &ClientTuning::default(), None);
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let push_token = async {
        match &config.edge_push {
            Some(push) => fetch_secret_string(&secrets, &push.token_secret_id).await.map(Some),
            None => Ok(None),
        }
    };
    let (key_ring, push_token) =
        tokio::join!(fetch_signing_ring(&secrets, &config.signing_key_secret_id), push_token);
    let key_ring = key_ring.inspect_err(|e| tracing::error!(error = %e, "no signing key"))?;
    let push_token = push_token.inspect_err(|e| tracing::error!(error = %e, "no edge push token"))?;
    let kid = key_ring.signer().map(|signer| signer.kid.clone()).unwrap_or_default();
    let state = AppState::new(AppDeps {
        store: Arc::new(DynamoStore::new(dynamodb, config.table_name.clone())),
        key_ring: Arc::new(key_ring),
        clock: Arc::new(SystemClock),
        config: config.http,
    });
    let state = match &config.registry {
        // Kept like the license ring (Secrets Manager), and separate from it.
        Some(registry) => {
            let jwk = fetch_secret_string(&secrets, &registry.key_secret_id)
                .await
                .inspect_err(|e| tracing::error!(error = %e, "no registry signing key"))?;
            let key = RegistrySigningKey::parse_jwk_json(&jwk)
                .inspect_err(|e| tracing::error!(error = %e, "bad registry signing key"))?;
            tracing::info!(kid = key.kid(), "serving registry tokens");
            state.with_registry(RegistryTokenService::new(key, registry.config.clone()))
        }
        None => state,
    };
    let state = match (&config.edge_push, push_token) {
        (Some(push), Some(token)) => {
            let publisher = HttpStatusPublisher::new(&push.urls, &token)
                .inspect_err(|e| tracing::error!(error = %e, "edge push set-up failed"))?;
            // The URLs only: the token is never logged.
            tracing::info!(edges = ?push.urls, "pushing status changes to the edges");
            state.with_status_publisher(Arc::new(publisher))
        }
        _ => state,
    };
    tracing::info!(table = %config.table_name, kid = %kid, "nls-api ready");
    lambda_http::run(api_app(state)).await
}
