//! `nls-stripe-webhook`: set up logging, parse the config, build the AWS clients and fetch
//! the secrets once at init, then serve every delivery with the core's webhook handler (and
//! push the license's new status to the edges when `NLS_EDGE_PUSH_URLS` is set).

use std::sync::Arc;

use nls_aws::secrets::{fetch_secret_string, fetch_signing_ring};
use nls_aws::{ClientTuning, DynamoStore, SesMailer, dynamodb_client, load_sdk_config, sesv2_client};
use nls_core::ports::StatusPublisher;
use nls_core::ports::SystemClock;
use nls_edge_push::HttpStatusPublisher;
use nls_lambda_stripe_webhook::secret_values::fetch_webhook_secret;
use nls_lambda_stripe_webhook::webhook_config::WebhookConfig;
use nls_lambda_stripe_webhook::{WebhookState, webhook_app_pushing};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    nls_aws::init_lambda_logging();
    let config =
        WebhookConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let sdk_config = load_sdk_config().await;
    let tuning = ClientTuning::default();
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let push_token = async {
        match &config.edge_push {
            Some(push) => fetch_secret_string(&secrets, &push.token_secret_id).await.map(Some),
            None => Ok(None),
        }
    };
    let (key_ring, webhook_secret, push_token) = tokio::try_join!(
        fetch_signing_ring(&secrets, &config.signing_key_secret_id),
        fetch_webhook_secret(&secrets, &config.webhook_secret_id),
        push_token,
    )
    .inspect_err(|e| tracing::error!(error = %e, "a secret is unavailable"))?;
    let publisher: Option<Arc<dyn StatusPublisher>> = match (&config.edge_push, push_token) {
        (Some(push), Some(token)) => {
            let publisher = HttpStatusPublisher::new(&push.urls, &token)
                .inspect_err(|e| tracing::error!(error = %e, "edge push set-up failed"))?;
            // The URLs only: the token is never logged.
            tracing::info!(edges = ?push.urls, "pushing status changes to the edges");
            Some(Arc::new(publisher))
        }
        _ => None,
    };
    let kid = key_ring.signer().map(|signer| signer.kid.clone()).unwrap_or_default();
    let state = WebhookState {
        store: Arc::new(DynamoStore::new(dynamodb_client(&sdk_config, &tuning, None), &config.table_name)),
        mailer: Arc::new(SesMailer::new(sesv2_client(&sdk_config, &tuning), &config.sender_address)),
        clock: Arc::new(SystemClock),
        key_ring,
        plans: config.plans,
        webhook_secret,
        policy: config.policy,
    };
    tracing::info!(table = %config.table_name, kid = %kid, "nls-stripe-webhook ready");
    lambda_http::run(webhook_app_pushing(state, publisher)).await
}
