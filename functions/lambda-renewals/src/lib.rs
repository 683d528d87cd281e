//! The `renewals` Lambda: a thin host for the core's [`run_renewals`], invoked by an
//! EventBridge schedule. `main` builds the store and mailer once at init; [`renewals_handler`]
//! is the per-invocation part, testable without AWS.
//!
//! A run whose report has retryable failures (a mail or store outage) fails the invocation,
//! so EventBridge's async retry runs the job again; the core's claim → send → mark makes the
//! rerun send only what is still due.

pub mod renewals_config;

use std::sync::Arc;

use lambda_runtime::LambdaEvent;
use nls_core::ports::{Clock, Mailer, Store};
use nls_core::renewals::{RenewalsConfig, RenewalsError, RenewalsReport, run_renewals};
use serde::{Deserialize, Serialize};

/// The parts of EventBridge's "Scheduled Event" the job uses; anything else is ignored, so
/// a manual invoke with `{}` works too.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScheduledEvent {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
}

/// The invocation's result, as EventBridge (and a manual `invoke`) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub examined: u32,
    pub sent: usize,
    pub already_sent: u32,
    pub held_by_other: u32,
    pub skipped_opt_out: u32,
    pub expired: usize,
    pub failures: usize,
}

impl From<&RenewalsReport> for RunSummary {
    fn from(report: &RenewalsReport) -> Self {
        Self {
            run_id: report.run_id.clone(),
            examined: report.examined,
            sent: report.sent.len(),
            already_sent: report.already_sent,
            held_by_other: report.held_by_other,
            skipped_opt_out: report.skipped_opt_out,
            expired: report.expired.len(),
            failures: report.failures.len(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenewalsJobError {
    #[error(transparent)]
    Job(#[from] RenewalsError),
    /// Some notices failed in a way a rerun can fix; the rest of the run is done.
    #[error("{failed} notice(s) failed and will be retried (run {run_id})")]
    RetryableFailures { run_id: String, failed: usize },
}

impl RenewalsJobError {
    /// A stable name for the invocation's error type (what alarms and logs filter on).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Job(e) if e.is_retryable() => "RenewalsStoreUnavailable",
            Self::Job(_) => "RenewalsStoreError",
            Self::RetryableFailures { .. } => "RenewalsNoticesFailed",
        }
    }
}

impl From<RenewalsJobError> for lambda_runtime::Diagnostic {
    fn from(error: RenewalsJobError) -> Self {
        Self { error_type: error.error_type().to_owned(), error_message: error.to_string() }
    }
}

/// The store, mailer and clock of every invocation, built once at init.
pub struct RenewalsDeps {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
    pub job: RenewalsConfig,
}

/// One run of the job. The run id names this invocation in the claims it makes.
pub async fn renewals_handler(
    deps: &RenewalsDeps,
    event: LambdaEvent<ScheduledEvent>,
) -> Result<RunSummary, RenewalsJobError> {
    let (schedule, context) = event.into_parts();
    let config = RenewalsConfig { run_id: format!("lambda-{}", context.request_id), ..deps.job.clone() };
    tracing::info!(
        run_id = %config.run_id,
        schedule_event = schedule.id.as_deref().unwrap_or(""),
        scheduled_for = schedule.time.as_deref().unwrap_or(""),
        "renewals run starting"
    );
    let report = run_renewals(deps.store.as_ref(), deps.mailer.as_ref(), deps.clock.as_ref(), &config)
        .await
        .inspect_err(|e| tracing::error!(retryable = e.is_retryable(), error = %e, "renewals run failed"))?;
    for failure in &report.failures {
        tracing::warn!(
            license_id = %failure.license_id,
            notice = %failure.notice,
            retryable = failure.retryable,
            reason = %failure.reason,
            "notice failed"
        );
    }
    let summary = RunSummary::from(&report);
    tracing::info!(summary = ?summary, "renewals run finished");
    if report.has_retryable_failures() {
        return Err(RenewalsJobError::RetryableFailures {
            run_id: report.run_id,
            failed: report.failures.iter().filter(|f| f.retryable).count(),
        });
    }
    Ok(summary)
}
