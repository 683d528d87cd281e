//! The synthetic canary (docs/operations.md, "Synthetic canary"): every minute an EventBridge
//! schedule invokes this Lambda, which validates a dedicated canary license through the
//! public URL, checks the answer and the receipt's signature against the origin's JWKS
//! ([`canary_check`]), and writes the result as CloudWatch metrics in an EMF log line
//! ([`emf`]). The `CanaryFailing` alarm in template.yaml watches `CanarySuccess`.
//!
//! A failed check is a successful invocation: the metric carries the failure, and Lambda's
//! retries would only add runs to a schedule that already runs every minute.

pub mod canary_check;
pub mod canary_config;
pub mod canary_http;
pub mod emf;

use chrono::Utc;
use lambda_runtime::LambdaEvent;
use nls_core::model::Timestamp;

use crate::canary_check::{CanaryOutcome, fetch_expected_jwks, run_check};
use crate::canary_http::CanaryHttp;

/// Built once at init. No `Debug`: it holds the canary license's key.
pub struct CanaryDeps {
    pub http: CanaryHttp,
    pub target_url: String,
    pub jwks_url: String,
    pub license_key: String,
    pub stage: String,
}

/// One run: the expected JWKS (fetched each run, so a rotation needs no redeploy), then the
/// check.
pub async fn run_canary(deps: &CanaryDeps, now: Timestamp) -> CanaryOutcome {
    match fetch_expected_jwks(&deps.http, &deps.jwks_url).await {
        Ok(expected) => run_check(&deps.http, &deps.target_url, &deps.license_key, &expected, now).await,
        Err(failure) => CanaryOutcome::failed(&failure, 0),
    }
}

/// The invocation: run, print the EMF line, return the outcome (never an error).
pub async fn canary_handler(
    deps: &CanaryDeps,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<CanaryOutcome, lambda_runtime::Error> {
    let now = Utc::now();
    let outcome = run_canary(deps, now).await;
    println!("{}", emf::emf_line(&deps.stage, &outcome, now.timestamp_millis()));
    if let Some(failure) = &outcome.failure {
        tracing::warn!(event = "canary_failed", failure = %failure, "the canary check failed");
    }
    Ok(outcome)
}
