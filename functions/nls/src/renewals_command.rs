//! `nls renewals run`: one run of the scheduled-notices job against a local data dir, for
//! operators and tests. `nls serve` runs the same job in-process; the Lambda runs it daily.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use nls_core::ports::{Clock, ManualClock, SystemClock};
use nls_core::renewals::{RenewalsConfig, run_renewals};
use nls_sqlite_store::SqliteStore;

use crate::outbox_mailer::OutboxMailer;
use crate::serve::DATABASE_FILE;

#[derive(Subcommand)]
pub enum RenewalsCommand {
    /// Send the reminders, warnings and notices that are due, each exactly once.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The data dir of `nls serve` (its store and `outbox/`).
    #[arg(long, default_value = "nls-data")]
    data_dir: PathBuf,
    /// Run as if it were this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewalsCommandError {
    #[error("invalid --now {0:?}: expected RFC 3339, e.g. 2027-01-31T00:00:00Z")]
    BadNow(String),
    #[error("{0}: no NLS data dir here (run `nls serve --data-dir` first)")]
    NoStore(PathBuf),
    #[error("opening the store: {0}")]
    Store(#[from] nls_core::ports::StoreError),
    #[error("the job failed: {0}")]
    Job(String),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

pub fn run(cmd: RenewalsCommand) -> Result<ExitCode, RenewalsCommandError> {
    let RenewalsCommand::Run(args) = cmd;
    let clock: Box<dyn Clock> = match &args.now {
        Some(now) => Box::new(ManualClock::new(
            DateTime::parse_from_rfc3339(now)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| RenewalsCommandError::BadNow(now.clone()))?,
        )),
        None => Box::new(SystemClock),
    };
    let db_path = args.data_dir.join(DATABASE_FILE);
    if !db_path.exists() {
        return Err(RenewalsCommandError::NoStore(db_path));
    }
    let store = SqliteStore::open(&db_path)?;
    let mailer = OutboxMailer::new(args.data_dir.join("outbox"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RenewalsCommandError::Runtime)?;
    let report = runtime
        .block_on(run_renewals(&store, &mailer, clock.as_ref(), &RenewalsConfig::for_new_run()))
        .map_err(|e| RenewalsCommandError::Job(e.to_string()))?;
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    Ok(if report.has_retryable_failures() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
