//! `nls`: key tools, offline license issuing, and the local server.
//!
//! The subcommands and their output are a contract that outside tools use (docs/cli.md).
//! Every failure is one line on stderr and a non-zero exit; nothing here panics on input.

mod key_commands;

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
    /// Signing keys: generate one, print a JWKS.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue, inspect and verify license keys offline.
    #[command(subcommand)]
    License(LicenseCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Keys(cmd) => key_commands::run_keys(cmd),
        Command::License(cmd) => key_commands::run_license(cmd),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nls: error: {e}");
            ExitCode::FAILURE
        }
    }
}
