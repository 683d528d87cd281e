//! `nls-canary`: set up logging, read the config and the canary license's key (Secrets
//! Manager) once at init, then run the check on every scheduled invocation.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use nls_aws::load_sdk_config;
use nls_aws::secrets::fetch_secret_string;
use nls_lambda_canary::canary_config::CanaryConfig;
use nls_lambda_canary::canary_http::CanaryHttp;
use nls_lambda_canary::{CanaryDeps, canary_handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    nls_aws::init_lambda_logging();
    let config =
        CanaryConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let sdk_config = load_sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let license_key = fetch_secret_string(&secrets, &config.key_secret_id)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "no canary license key"))?;
    let http = CanaryHttp::new(config.timeout, config.uses_https())
        .inspect_err(|e| tracing::error!(error = %e, "HTTP client set-up failed"))?;
    tracing::info!(target_url = %config.target_url, jwks_url = %config.jwks_url, "nls-canary ready");
    let deps = Arc::new(CanaryDeps {
        http,
        target_url: config.target_url,
        jwks_url: config.jwks_url,
        license_key,
        stage: config.stage,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let deps = Arc::clone(&deps);
        async move { canary_handler(&deps, event).await }
    }))
    .await
}
