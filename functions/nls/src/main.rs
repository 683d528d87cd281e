//! `nls`: key tools, offline license issuing, and the local server.
//!
//! The subcommands and their output are a contract that outside tools use (docs/cli.md).
//! Every failure is one line on stderr and a non-zero exit; nothing here panics on input.

mod backup_command;
mod dynamodb_command;
mod jwks_push_command;
mod key_commands;
mod outbox_mailer;
mod registry_command;
mod reissue_command;
mod renewals_command;
mod serve;
mod staff_command;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use key_commands::{KeysCommand, LicenseCommand};

#[derive(Parser)]
#[command(name = "nls", version, about = "NLS, the Nectar License Service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Signing keys: generate one, print a JWKS, rotate and retire a data dir's keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue, inspect and verify license keys offline.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Run the whole service on this machine (HTTP API over an embedded store).
    Serve(serve::ServeArgs),
    /// The scheduled renewal and expiry notices.
    #[command(subcommand)]
    Renewals(renewals_command::RenewalsCommand),
    /// Back up `nls serve`'s store while it runs (and its keys, with --include-keys).
    Backup(backup_command::BackupArgs),
    /// Restore a data dir from `nls backup`'s file.
    Restore(backup_command::RestoreArgs),
    /// DynamoDB set-up for running `nls serve --store dynamodb` locally.
    #[command(subcommand)]
    Dynamodb(dynamodb_command::DynamodbCommand),
    /// The Docker Registry token service: its key (rotate, retire) and the certificates the
    /// registry trusts.
    #[command(subcommand)]
    Registry(registry_command::RegistryCommand),
    /// Staff users of the admin portal: create, disable, reset a password, list.
    #[command(subcommand)]
    Staff(staff_command::StaffCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Keys(cmd) => key_commands::run_keys(cmd).map_err(|e| e.to_string()),
        Command::License(cmd) => key_commands::run_license(cmd).map_err(|e| e.to_string()),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS).map_err(|e| e.to_string()),
        Command::Renewals(cmd) => renewals_command::run(cmd).map_err(|e| e.to_string()),
        Command::Dynamodb(cmd) => dynamodb_command::run(cmd),
        Command::Backup(args) => backup_command::run_backup(args).map_err(|e| e.to_string()),
        Command::Restore(args) => backup_command::run_restore(args).map_err(|e| e.to_string()),
        Command::Registry(cmd) => registry_command::run(cmd),
        Command::Staff(cmd) => staff_command::run(cmd).map_err(|e| e.to_string()),
    };
    outcome.unwrap_or_else(|message| {
        eprintln!("nls: error: {message}");
        ExitCode::FAILURE
    })
}
