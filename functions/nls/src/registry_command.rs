//! `nls registry ...`: the registry token key (docs/distribution.md), kept and rotated like the
//! license ring.
//!
//! - `cert --out FILE`: the certificate bundle for the registry's `auth.token.rootcertbundle`,
//!   one self-signed certificate per live key: the signer and every previous key not yet
//!   retired. The keys come from `nls serve`'s data dir (the signer is created there if this
//!   runs first), or with `--secret-id` from Secrets Manager (`AWSCURRENT` and `AWSPREVIOUS`,
//!   as the api Lambda keeps them).
//! - `rotate`: a new signer; the old one stays in the bundle. Restart `nls serve` to sign with
//!   it, and give the registry the new bundle (it reads it at start).
//! - `retire --kid`: drop a previous key; tokens it signed are refused once the registry runs
//!   with the new bundle (tokens live minutes, so retire as soon as every server signs with
//!   the new key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{Duration, Utc};
use nls_core::registry_token::{RegistrySigningKey, certificate_pem, self_signed_certificate_der};

use crate::serve::signing_key_file::{
    REGISTRY_KEY_FILE, load_or_create_registry_key, read_registry_previous, write_private,
    write_registry_previous,
};

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Write the PEM certificate bundle of the live registry token keys (self-signed X.509).
    Cert(CertArgs),
    /// A new registry token key; the old one stays trusted (in the bundle) until retired.
    Rotate(DataDirArg),
    /// Stop trusting a previous registry key (drop it from the bundle).
    Retire(RetireArgs),
}

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Where the certificate bundle goes (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The data directory of `nls serve`, where the keys live.
    #[arg(long, value_name = "DIR", default_value = "nls-data", conflicts_with = "secret_id")]
    pub data_dir: PathBuf,
    /// Read the keys from this Secrets Manager secret instead (AWS_* environment):
    /// `AWSCURRENT` signs, `AWSPREVIOUS` (if any) is still trusted.
    #[arg(long, value_name = "ID")]
    pub secret_id: Option<String>,
    /// How long the certificates are valid (the registry reads only their keys, so this
    /// matters only to tools that check dates).
    #[arg(long, value_name = "DAYS", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub valid_days: u32,
}

#[derive(Debug, clap::Args)]
pub struct DataDirArg {
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    pub data_dir: PathBuf,
    /// The key id (`kid`, libtrust form) `rotate` printed as `previous_kid`.
    #[arg(long)]
    pub kid: String,
}

pub fn run(command: RegistryCommand) -> Result<ExitCode, String> {
    match command {
        RegistryCommand::Cert(args) => cert(args),
        RegistryCommand::Rotate(args) => rotate(&args.data_dir),
        RegistryCommand::Retire(args) => retire(&args.data_dir, &args.kid),
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// The signer first, then the previous keys.
fn live_keys_from_dir(data_dir: &Path) -> Result<Vec<RegistrySigningKey>, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let signer = load_or_create_registry_key(data_dir).map_err(|e| e.to_string())?;
    let mut keys = vec![signer];
    keys.extend(read_registry_previous(data_dir).map_err(|e| e.to_string())?);
    Ok(keys)
}

fn live_keys_from_secret(secret_id: &str) -> Result<Vec<RegistrySigningKey>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let (current, previous) = runtime.block_on(async {
        let sdk_config = nls_aws::load_sdk_config().await;
        let client = aws_sdk_secretsmanager::Client::new(&sdk_config);
        nls_aws::secrets::fetch_current_and_previous(&client, secret_id).await.map_err(|e| e.to_string())
    })?;
    let parse = |stage: &str, json: &str| {
        RegistrySigningKey::parse_jwk_json(json).map_err(|e| format!("secret {secret_id} ({stage}): {e}"))
    };
    let mut keys = vec![parse("AWSCURRENT", &current)?];
    if let Some(previous) = previous {
        let previous = parse("AWSPREVIOUS", &previous)?;
        if previous.kid() != keys[0].kid() {
            keys.push(previous);
        }
    }
    Ok(keys)
}

fn cert(args: CertArgs) -> Result<ExitCode, String> {
    let keys = match &args.secret_id {
        Some(secret_id) => live_keys_from_secret(secret_id)?,
        None => live_keys_from_dir(&args.data_dir)?,
    };
    let now = Utc::now();
    let bundle: String = keys
        .iter()
        .map(|key| {
            certificate_pem(&self_signed_certificate_der(
                key,
                "nls registry token signer",
                now - Duration::hours(1),
                now + Duration::days(i64::from(args.valid_days)),
            ))
        })
        .collect();
    let kids: Vec<&str> = keys.iter().map(RegistrySigningKey::kid).collect();
    if args.out.as_os_str() == "-" {
        print!("{bundle}");
    } else {
        std::fs::write(&args.out, bundle).map_err(|e| format!("{}: {e}", args.out.display()))?;
        eprintln!("wrote {} (key ids {})", args.out.display(), kids.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// The previous keys are written before the new signer: a crash in between leaves the old
/// signer in place and trusted twice over, never a signer the bundle lacks.
fn rotate(data_dir: &Path) -> Result<ExitCode, String> {
    let mut keys = live_keys_from_dir(data_dir)?;
    let old = keys.remove(0);
    let new = RegistrySigningKey::generate();
    keys.retain(|k| k.kid() != old.kid());
    keys.insert(0, old.clone());
    write_registry_previous(data_dir, &keys).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let json = serde_json::to_string_pretty(&new.to_private_jwk()).map_err(|e| e.to_string())?;
    write_private(data_dir, REGISTRY_KEY_FILE, json.as_bytes())
        .map_err(|e| format!("{}: {e}", data_dir.join(REGISTRY_KEY_FILE).display()))?;
    let previous: Vec<&str> = keys.iter().map(RegistrySigningKey::kid).collect();
    print_json(&serde_json::json!({"kid": new.kid(), "previous_kid": old.kid(), "previous": previous}));
    eprintln!("rotated: write the new bundle (nls registry cert), restart the registry and nls serve");
    Ok(ExitCode::SUCCESS)
}

fn retire(data_dir: &Path, kid: &str) -> Result<ExitCode, String> {
    let mut keys = live_keys_from_dir(data_dir)?;
    let signer = keys.remove(0);
    if signer.kid() == kid {
        return Err(format!("{kid:?} is the current registry signing key; rotate first"));
    }
    let count = keys.len();
    keys.retain(|k| k.kid() != kid);
    if keys.len() == count {
        return Err(format!("{kid:?} is not a previous registry key in {}", data_dir.display()));
    }
    write_registry_previous(data_dir, &keys).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let previous: Vec<&str> = keys.iter().map(RegistrySigningKey::kid).collect();
    print_json(&serde_json::json!({"kid": signer.kid(), "retired": kid, "previous": previous}));
    eprintln!("retired {kid}: write the new bundle (nls registry cert) and restart the registry");
    Ok(ExitCode::SUCCESS)
}
