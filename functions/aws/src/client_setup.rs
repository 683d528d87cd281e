//! Building the AWS clients once, with retries and timeouts chosen on purpose rather than left
//! to defaults (the SDK sets no operation timeout, so a stuck connection would hold a Lambda
//! until its own timeout).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

use crate::request_counter::RequestCounter;

/// Retry and timeout settings for the DynamoDB and SES clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTuning {
    /// Attempts per operation, first try included (standard retry mode: exponential backoff
    /// with jitter on throttling, 5xx and transient network errors).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub connect_timeout: Duration,
    /// One HTTP attempt.
    pub attempt_timeout: Duration,
    /// The whole operation, retries included.
    pub operation_timeout: Duration,
}

impl Default for ClientTuning {
    /// For an API Lambda: a DynamoDB call normally takes single-digit milliseconds, so a
    /// second is a stuck attempt; three attempts fit inside the five-second budget.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(25),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(5),
        }
    }
}

impl ClientTuning {
    /// For an operator's command (`nls dynamodb ...`): nobody waits on it request by request,
    /// and a one-second attempt can time out on a slow endpoint after the request took effect,
    /// so that the retry of a CreateTable reported the new table as already existing.
    pub fn for_commands() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
        }
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(self.initial_backoff)
    }

    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// Loads the shared AWS configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` for moto or DynamoDB Local).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A DynamoDB client with `tuning`, and an optional request counter attached.
pub fn dynamodb_client(
    sdk_config: &SdkConfig,
    tuning: &ClientTuning,
    counter: Option<&RequestCounter>,
) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk_config)
        .retry_config(tuning.retry_config())
        .timeout_config(tuning.timeout_config());
    if let Some(counter) = counter {
        builder = builder.interceptor(counter.clone());
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// An SES v2 client with `tuning`.
pub fn sesv2_client(sdk_config: &SdkConfig, tuning: &ClientTuning) -> aws_sdk_sesv2::Client {
    let config = aws_sdk_sesv2::config::Builder::from(sdk_config)
        .retry_config(tuning.retry_config())
        .timeout_config(tuning.timeout_config())
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
}
