//! `nls registry cert --out FILE`: the certificate bundle the registry trusts tokens by
//! (`auth.token.rootcertbundle`, docs/distribution.md). The key is the one `nls serve` signs
//! registry tokens with, from the same data directory (created there if this runs first).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{Duration, Utc};
use nls_core::registry_token::{certificate_pem, self_signed_certificate_der};

use crate::serve::signing_key_file::load_or_create_registry_key;

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Write the PEM certificate of the registry token key (a self-signed X.509 certificate).
    Cert(CertArgs),
}

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Where the certificate goes (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The data directory of `nls serve`, where the key lives.
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    pub data_dir: PathBuf,
    /// How long the certificate is valid (the registry reads only its key, so this matters
    /// only to tools that check dates).
    #[arg(long, value_name = "DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub valid_days: u32,
}

pub fn run(command: RegistryCommand) -> Result<ExitCode, String> {
    let RegistryCommand::Cert(args) = command;
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let key = load_or_create_registry_key(&args.data_dir).map_err(|e| e.to_string())?;
    let now = Utc::now();
    let der = self_signed_certificate_der(
        &key,
        "nls registry token signer",
        now - Duration::hours(1),
        now + Duration::days(i64::from(args.valid_days)),
    );
    let pem = certificate_pem(&der);
    if args.out.as_os_str() == "-" {
        print!("{pem}");
    } else {
        std::fs::write(&args.out, pem).map_err(|e| format!("{}: {e}", args.out.display()))?;
        eprintln!("wrote {} (key id {})", args.out.display(), key.kid());
    }
    Ok(ExitCode::SUCCESS)
}
