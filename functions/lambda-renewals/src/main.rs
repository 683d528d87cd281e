//! `nls-renewals`: set up logging, parse the config and build the AWS clients once at init,
//! then run the renewals job on every scheduled invocation.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use nls_aws::{ClientTuning, DynamoStore, SesMailer, dynamodb_client, load_sdk_config, sesv2_client};
use nls_core::ports::SystemClock;
use nls_lambda_renewals::renewals_config::LambdaRenewalsConfig;
use nls_lambda_renewals::{RenewalsDeps, ScheduledEvent, renewals_handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    nls_aws::init_lambda_logging();
    let config =
        LambdaRenewalsConfig::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let sdk_config = load_sdk_config().await;
    let tuning = ClientTuning::default();
    let deps = Arc::new(RenewalsDeps {
        store: Arc::new(DynamoStore::new(dynamodb_client(&sdk_config, &tuning, None), &config.table_name)),
        mailer: Arc::new(SesMailer::new(sesv2_client(&sdk_config, &tuning), &config.sender_address)),
        clock: Arc::new(SystemClock),
        job: config.job,
    });
    tracing::info!(table = %config.table_name, "nls-renewals ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ScheduledEvent>| {
        let deps = deps.clone();
        async move { renewals_handler(&deps, event).await }
    }))
    .await
}
