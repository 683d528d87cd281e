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
use nls_core::issuing::new_id;
use nls_core::model::{AuditEntry, StaffRole, StaffUser, Timestamp};
use nls_core::ports::{Clock, Store, StoreError, SystemClock, Write};
use nls_core::staff_accounts::{StaffAccountError, hash_password, new_staff_user, normalize_email};
use nls_sqlite_store::SqliteStore;
use serde::Serialize;

use crate::serve::{DATABASE_FILE, StoreKind};

/// The audit log's `actor` for changes made with `nls staff`.
pub const CLI_ACTOR: &str = "cli";
/// Optimistic updates re-read and retry this often when someone else changed the user first.
const UPDATE_ATTEMPTS: u32 = 5;
/// 24 characters of 5 random bits: 120 bits.
const GENERATED_PASSWORD_CHARS: usize = 24;

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
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// A staff user as `nls staff` prints it and as its audit entries record it: never the
/// password hash or the second-factor secret.
#[derive(Serialize)]
struct StaffUserView<'a> {
    id: &'a str,
    email: &'a str,
    name: &'a str,
    role: &'a str,
    disabled: bool,
    totp_enabled: bool,
    sessions_valid_after: Timestamp,
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl<'a> From<&'a StaffUser> for StaffUserView<'a> {
    fn from(u: &'a StaffUser) -> Self {
        Self {
            id: &u.id,
            email: &u.email,
            name: &u.name,
            role: u.role.as_str(),
            disabled: u.disabled,
            totp_enabled: u.totp_secret.is_some(),
            sessions_valid_after: u.sessions_valid_after,
            version: u.version,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
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
            let entry = audit_entry("staff_user.create", &user, None, clock.now());
            let created =
                runtime.block_on(store.commit(None, vec![Write::CreateStaffUser(user.clone()), entry]));
            match created {
                Ok(_) => {}
                Err(StoreError::AlreadyExists(_)) => return Err(StaffCommandError::EmailTaken(email)),
                Err(e) => return Err(e.into()),
            }
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

/// Applies `change` to the user with `email`, and also ends their sessions
/// (`sessions_valid_after = now`) and bumps `version`, in one audited commit. A lost race
/// re-reads and tries again.
async fn update_user(
    store: &dyn Store,
    clock: &dyn Clock,
    email: &str,
    action: &str,
    change: impl Fn(&mut StaffUser) -> Result<(), StaffCommandError>,
) -> Result<StaffUser, StaffCommandError> {
    let email = normalize_email(email)?;
    for _ in 0..UPDATE_ATTEMPTS {
        let before = store
            .find_staff_user_by_email(&email)
            .await?
            .ok_or_else(|| StaffCommandError::UnknownEmail(email.clone()))?;
        let now = clock.now();
        let mut after = before.clone();
        change(&mut after)?;
        after.sessions_valid_after = now;
        after.updated_at = now;
        after.version = before.version + 1;
        let writes = vec![
            Write::UpdateStaffUser { user: after.clone(), expected_version: before.version },
            audit_entry(action, &after, Some(&before), now),
        ];
        match store.commit(None, writes).await {
            Ok(_) => return Ok(after),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StaffCommandError::KeptChanging(email))
}

fn audit_entry(action: &str, after: &StaffUser, before: Option<&StaffUser>, now: Timestamp) -> Write {
    let view = |u: &StaffUser| serde_json::to_value(StaffUserView::from(u)).ok();
    Write::Audit(AuditEntry {
        id: new_id("aud"),
        at: now,
        actor: CLI_ACTOR.to_owned(),
        action: action.to_owned(),
        target: format!("staff_user:{}", after.id),
        before: before.and_then(view),
        after: view(after),
    })
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

/// Lower-case letters and digits without the look-alikes `0 1 l o`: exactly 32 symbols, so
/// `byte % 32` is unbiased. Grouped by six for reading aloud.
fn generated_password() -> String {
    const ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
    let mut bytes = [0u8; GENERATED_PASSWORD_CHARS];
    getrandom::fill(&mut bytes).expect("the platform random source is unavailable");
    let mut password = String::with_capacity(GENERATED_PASSWORD_CHARS + GENERATED_PASSWORD_CHARS / 6);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 && i % 6 == 0 {
            password.push('-');
        }
        password.push(char::from(ALPHABET[usize::from(*byte % 32)]));
    }
    password
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_fresh_and_pass_the_policy() {
        let a = generated_password();
        let b = generated_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), GENERATED_PASSWORD_CHARS + 3, "{a}");
        assert!(nls_core::staff_accounts::check_password_policy(&a).is_ok());
        assert!(a.split('-').all(|group| group.len() == 6), "{a}");
    }
}
