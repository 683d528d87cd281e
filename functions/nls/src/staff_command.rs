//! `nls staff`: create, disable, reset the password of and list the admin portal's staff users,
//! on the same stores as `nls serve` (the data dir's SQLite file, or a DynamoDB table). Safe
//! while `nls serve` runs on the same data dir: every change is one store commit (SQLite takes
//! its write lock per transaction), written with its audit entry (actor [`CLI_ACTOR`]).
//!
//! Passwords never appear in arguments or the environment: they are read from stdin, twice
//! (the password, then the same again), or generated and printed once.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use nls_core::model::{StaffRole, StaffUser};
use nls_core::ports::{Clock, Store, StoreError, SystemClock};
use nls_core::staff_accounts::{StaffAccountError, hash_password, new_staff_user, normalize_email};
use nls_core::staff_changes::{
    Sessions, StaffChangeError, StaffLookup, StaffUserView, create_staff_user, generated_password,
    update_staff_user,
};
use nls_sqlite_store::SqliteStore;
use serde::Serialize;

use crate::serve::{DATABASE_FILE, StoreKind};

/// The audit log's `actor` for changes made with `nls staff`.
pub const CLI_ACTOR: &str = "cli";

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create a staff user. The password is read from stdin (twice), or generated with
    /// `--generate-password` and printed once.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// viewer, support, billing or admin.
        #[arg(long, value_parser = parse_role)]
        role: StaffRole,
        #[arg(long)]
        generate_password: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a staff user: they cannot sign in, and their sessions end at once.
    Disable {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a new password (read from stdin twice, or generated); ends every session of the user.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        generate_password: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user's second factor (TOTP), for a user who lost their authenticator; ends
    /// every session of the user. They can enrol again from their account page.
    DisableTotp {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print every staff user as JSON, ordered by email.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// The store options of `nls serve`, with the same names and defaults.
#[derive(Args)]
pub struct StoreArgs {
    /// The data dir of `nls serve` (its SQLite store).
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    data_dir: PathBuf,
    /// The store: the embedded SQLite file in the data dir, or a DynamoDB table (endpoint,
    /// region and credentials from the usual AWS environment, e.g. `AWS_ENDPOINT_URL`).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// The DynamoDB table, with `--store dynamodb` (also spelled `--table`).
    #[arg(long, alias = "table", value_name = "NAME", default_value = "nls")]
    dynamodb_table: String,
}

fn parse_role(text: &str) -> Result<StaffRole, String> {
    StaffRole::parse(text).ok_or_else(|| {
        let roles: Vec<&str> = StaffRole::ALL.iter().map(|r| r.as_str()).collect();
        format!("expected one of {}", roles.join(", "))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StaffCommandError {
    #[error("{0}: no NLS data dir here (run `nls serve --data-dir` or `nls staff create` first)")]
    NoStore(PathBuf),
    #[error("{0}")]
    Account(#[from] StaffAccountError),
    #[error("reading the password from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("stdin must hold the password twice, on two lines")]
    PasswordNotRepeated,
    #[error("the two passwords differ")]
    PasswordsDiffer,
    #[error("a staff user with email {0} already exists")]
    EmailTaken(String),
    #[error("no staff user has email {0}")]
    UnknownEmail(String),
    #[error("staff user {0} kept changing under us; try again")]
    KeptChanging(String),
    #[error("{0}")]
    Change(StaffChangeError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// What `create` and `reset-password` print: the user and, when generated, the password.
#[derive(Serialize)]
struct ChangeReport<'a> {
    #[serde(flatten)]
    user: StaffUserView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_password: Option<&'a str>,
}

pub fn run(cmd: StaffCommand) -> Result<ExitCode, StaffCommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StaffCommandError::Runtime)?;
    let clock = SystemClock;
    match cmd {
        StaffCommand::Create { email, name, role, generate_password, store } => {
            // Refuse a bad address before asking for a password.
            let email = normalize_email(&email)?;
            let password = new_password(generate_password)?;
            let user = new_staff_user(&email, &name, role, &password, clock.now())?;
            let store = runtime.block_on(open_store(&store, true))?;
            runtime.block_on(create_staff_user(&*store, CLI_ACTOR, &user))?;
            print_report(&user, generate_password.then_some(password.as_str()));
        }
        StaffCommand::Disable { email, store } => {
            let store = runtime.block_on(open_store(&store, false))?;
            let user = runtime.block_on(update_user(&*store, &clock, &email, "staff_user.disable", |u| {
                u.disabled = true;
                Ok(())
            }))?;
            print_report(&user, None);
        }
        StaffCommand::ResetPassword { email, generate_password, store } => {
            let store = runtime.block_on(open_store(&store, false))?;
            // Read (and hash) once, before any store round trip, so a retry never asks again.
            let password = new_password(generate_password)?;
            let password_hash = hash_password(&password)?;
            let user =
                runtime.block_on(update_user(&*store, &clock, &email, "staff_user.reset_password", |u| {
                    u.password_hash = password_hash.clone();
                    Ok(())
                }))?;
            print_report(&user, generate_password.then_some(password.as_str()));
        }
        StaffCommand::DisableTotp { email, store } => {
            let store = runtime.block_on(open_store(&store, false))?;
            let user =
                runtime.block_on(update_user(&*store, &clock, &email, "staff_user.totp_disable", |u| {
                    u.totp_secret = None;
                    u.totp_last_step = None;
                    Ok(())
                }))?;
            print_report(&user, None);
        }
        StaffCommand::List { store } => {
            let store = runtime.block_on(open_store(&store, false))?;
            let users = runtime.block_on(store.list_staff_users())?;
            let views: Vec<StaffUserView> = users.iter().map(StaffUserView::from).collect();
            println!("{}", serde_json::to_string_pretty(&views).unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(user: &StaffUser, generated_password: Option<&str>) {
    let report = ChangeReport { user: StaffUserView::from(user), generated_password };
    println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
}

async fn open_store(args: &StoreArgs, may_create: bool) -> Result<Arc<dyn Store>, StaffCommandError> {
    match args.store {
        StoreKind::Sqlite => {
            let db_path = args.data_dir.join(DATABASE_FILE);
            if !may_create && !db_path.exists() {
                return Err(StaffCommandError::NoStore(db_path));
            }
            Ok(Arc::new(SqliteStore::open(&db_path)?))
        }
        StoreKind::Dynamodb => Ok(Arc::new(nls_aws::from_env(args.dynamodb_table.clone()).await)),
    }
}

/// Applies `change` to the user with `email` and ends their sessions, in one audited commit
/// (actor `cli`): the core's `update_staff_user`, which the portal uses too.
async fn update_user(
    store: &dyn Store,
    clock: &dyn Clock,
    email: &str,
    action: &str,
    change: impl Fn(&mut StaffUser) -> Result<(), StaffChangeError>,
) -> Result<StaffUser, StaffCommandError> {
    let email = normalize_email(email)?;
    Ok(update_staff_user(store, clock, StaffLookup::Email(&email), CLI_ACTOR, action, Sessions::End, change)
        .await?)
}

impl From<StaffChangeError> for StaffCommandError {
    fn from(e: StaffChangeError) -> Self {
        match e {
            StaffChangeError::Account(e) => Self::Account(e),
            StaffChangeError::EmailTaken(email) => Self::EmailTaken(email),
            StaffChangeError::UnknownUser(email) => Self::UnknownEmail(email),
            StaffChangeError::KeptChanging(email) => Self::KeptChanging(email),
            StaffChangeError::Store(e) => Self::Store(e),
            other => Self::Change(other),
        }
    }
}

/// A generated password, or the one given on stdin (checked against the policy by hashing).
fn new_password(generate: bool) -> Result<String, StaffCommandError> {
    if generate {
        return Ok(generated_password());
    }
    let stdin = std::io::stdin();
    let (first, second) = if stdin.is_terminal() {
        let ask = |prompt: &str| rpassword::prompt_password(prompt).map_err(StaffCommandError::Stdin);
        (ask("Password: ")?, ask("Password again: ")?)
    } else {
        let mut lines = stdin.lock().lines();
        let mut next = || lines.next().transpose().map_err(StaffCommandError::Stdin);
        let first = next()?.ok_or(StaffCommandError::PasswordNotRepeated)?;
        let second = next()?.ok_or(StaffCommandError::PasswordNotRepeated)?;
        (first, second)
    };
    // `lines` drops the `\n`; a Windows-style `\r` is not part of the password either.
    let (first, second) = (first.trim_end_matches('\r'), second.trim_end_matches('\r'));
    if first != second {
        return Err(StaffCommandError::PasswordsDiffer);
    }
    Ok(first.to_owned())
}
