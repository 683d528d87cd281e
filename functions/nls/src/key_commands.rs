//! `nls keys ...` and `nls license ...`: everything that needs no server.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_ring::{Jwk, JwkError, Jwks, KeyRing, SigningKey, VerifyingKey};
use nls_core::license_token::{inspect_license_key, verify_license_key};
use nls_core::validation::{ValidationCode, ValidationRequest, decide};

use crate::serve::signing_key_file;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: JwkError },
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("reading the key from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("invalid {what}: {value:?} ({why})")]
    BadArg { what: &'static str, value: String, why: &'static str },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("cannot inspect: {0}")]
    Inspect(String),
    #[error("{0}")]
    KeyRing(String),
    #[error("{kid:?} is the current signing key; rotate first")]
    RetireSigner { kid: String },
    #[error("{kid:?} is not a trusted verifier in {dir}")]
    UnknownKid { kid: String, dir: PathBuf },
    #[error("{0}")]
    Reissue(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_owned(), source }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new private Ed25519 JWK (with `kid`) to FILE, mode 0600.
    Generate {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Key id; defaults to the RFC 7638 thumbprint.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Print the public JWKS for a private or public JWK file (or a JWKS file).
    Jwks {
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// A new signing key (new kid) for a data dir; the old one stays trusted as a verifier.
    /// Restart `nls serve` to sign with it.
    Rotate {
        #[arg(long, value_name = "DIR", default_value = "nls-data")]
        data_dir: PathBuf,
    },
    /// Stop trusting a verifier kept by `rotate` (after `nls license reissue --all`): keys it
    /// signed then answer BAD_SIGNATURE. Restart `nls serve` to apply.
    Retire {
        #[arg(long, value_name = "DIR", default_value = "nls-data")]
        data_dir: PathBuf,
        #[arg(long)]
        kid: String,
    },
    /// Send a JWKS to the edges now (`nls serve --edge-push-url` does it at start-up).
    PushJwks(crate::jwks_push_command::PushJwksArgs),
}

#[derive(Subcommand)]
pub enum LicenseCommand {
    /// Sign a new license key offline and print it (the air-gapped path).
    Issue(IssueArgs),
    /// Print a key's header, claims and whether its checksum holds. Verifies nothing.
    Inspect {
        /// The key, or `-` to read it from stdin.
        key: String,
    },
    /// Re-issue live licenses' keys with the current signer, audited, and email them.
    Reissue(crate::reissue_command::ReissueArgs),
    /// Verify a key against a JWKS; exit 0 only when it is valid.
    Verify {
        /// The key, or `-` to read it from stdin.
        key: String,
        #[arg(long, value_name = "FILE")]
        jwks: PathBuf,
        /// Judge the key at this time instead of now (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
    },
}

#[derive(Args)]
pub struct IssueArgs {
    /// Private JWK file to sign with.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[arg(long, value_name = "ID")]
    customer: String,
    #[arg(long)]
    tier: Option<String>,
    /// Comma-separated feature names.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// A usage limit, `metric=N`; repeat for several.
    #[arg(long = "limit", value_name = "METRIC=N")]
    limits: Vec<String>,
    #[arg(long)]
    max_deployments: Option<u32>,
    /// Lifetime such as `30d`, `12h`, `90m`, `2w`.
    #[arg(long, conflicts_with = "expires_at")]
    expires_in: Option<String>,
    #[arg(long, value_name = "RFC3339")]
    expires_at: Option<String>,
    #[arg(long)]
    offline_days: Option<u32>,
    #[arg(long)]
    grace_days: Option<u32>,
}

pub fn run_keys(cmd: KeysCommand) -> Result<ExitCode, CliError> {
    match cmd {
        KeysCommand::Generate { out, kid } => {
            let mut key = SigningKey::generate();
            if let Some(kid) = kid {
                key = SigningKey::from_jwk(&Jwk { kid: Some(kid), ..key.to_private_jwk() })
                    .map_err(|source| CliError::Key { path: out.clone(), source })?;
            }
            write_private_jwk(&out, &key.to_private_jwk())?;
            eprintln!("wrote private key {} (kid {})", out.display(), key.kid);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Jwks { key } => {
            let jwks = read_ring(&key)?.jwks();
            print_json(&serde_json::to_value(jwks).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate { data_dir } => rotate(&data_dir),
        KeysCommand::Retire { data_dir, kid } => retire(&data_dir, &kid),
        KeysCommand::PushJwks(args) => crate::jwks_push_command::run(args).map_err(CliError::KeyRing),
    }
}

/// The trusted verifiers file is written before the new signer: a crash in between leaves the
/// old signer in place and its key trusted twice over, never a signer nobody trusts.
fn rotate(data_dir: &Path) -> Result<ExitCode, CliError> {
    let signer_path = signing_key_file::path_in(data_dir);
    let old = read_signing_key(&signer_path)?;
    let mut trusted =
        signing_key_file::read_trusted(data_dir).map_err(|e| CliError::KeyRing(e.to_string()))?;
    let new = SigningKey::generate();
    trusted.retain(|k| k.kid != old.kid);
    trusted.push(old.verifying_key());
    write_trusted(data_dir, &trusted)?;
    let json = serde_json::to_string_pretty(&new.to_private_jwk()).unwrap_or_default();
    signing_key_file::write_private(data_dir, signing_key_file::SIGNING_KEY_FILE, json.as_bytes())
        .map_err(io_err(&signer_path))?;
    let kids: Vec<&str> = trusted.iter().map(|k| k.kid.as_str()).collect();
    print_json(&serde_json::json!({"kid": new.kid, "previous_kid": old.kid, "verifiers": kids}));
    eprintln!("rotated: restart nls serve to sign with {}", new.kid);
    Ok(ExitCode::SUCCESS)
}

fn retire(data_dir: &Path, kid: &str) -> Result<ExitCode, CliError> {
    let signer = read_signing_key(&signing_key_file::path_in(data_dir))?;
    if signer.kid == kid {
        return Err(CliError::RetireSigner { kid: kid.to_owned() });
    }
    let mut trusted =
        signing_key_file::read_trusted(data_dir).map_err(|e| CliError::KeyRing(e.to_string()))?;
    let count = trusted.len();
    trusted.retain(|k| k.kid != kid);
    if trusted.len() == count {
        return Err(CliError::UnknownKid { kid: kid.to_owned(), dir: data_dir.to_owned() });
    }
    write_trusted(data_dir, &trusted)?;
    let kids: Vec<&str> = trusted.iter().map(|k| k.kid.as_str()).collect();
    print_json(&serde_json::json!({"kid": signer.kid, "retired": kid, "verifiers": kids}));
    eprintln!("retired {kid}: restart nls serve to stop trusting it");
    Ok(ExitCode::SUCCESS)
}

fn write_trusted(data_dir: &Path, trusted: &[VerifyingKey]) -> Result<(), CliError> {
    let jwks = Jwks { keys: trusted.iter().map(VerifyingKey::to_jwk).collect() };
    let json = serde_json::to_string_pretty(&jwks).unwrap_or_default();
    signing_key_file::write_private(data_dir, signing_key_file::TRUSTED_KEYS_FILE, json.as_bytes())
        .map_err(io_err(&data_dir.join(signing_key_file::TRUSTED_KEYS_FILE)))
}

pub fn run_license(cmd: LicenseCommand) -> Result<ExitCode, CliError> {
    match cmd {
        LicenseCommand::Issue(args) => {
            let signer = read_signing_key(&args.key)?;
            let ring = KeyRing::with_signer(signer, vec![])
                .map_err(|source| CliError::Key { path: args.key.clone(), source })?;
            let now = Utc::now();
            let expires_at = match (&args.expires_in, &args.expires_at) {
                (Some(lifetime), _) => Some(now + parse_lifetime(lifetime)?),
                (None, Some(at)) => Some(parse_time("--expires-at", at)?),
                (None, None) => None,
            };
            let terms = LicenseTerms {
                tier: args.tier,
                features: args.features.into_iter().filter(|f| !f.is_empty()).collect(),
                limits: parse_limits(&args.limits)?,
                max_deployments: args.max_deployments,
                expires_at,
                offline_days: args.offline_days,
                grace_days: args.grace_days,
                // An offline key carries no registry grant: image pulls need the origin.
                registry: None,
            };
            let license = new_license(&args.customer, terms, now);
            let key = issue_key(&ring, &license, now).map_err(|e| CliError::Signing(e.to_string()))?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        LicenseCommand::Reissue(args) => crate::reissue_command::run(args).map_err(CliError::Reissue),
        LicenseCommand::Inspect { key } => {
            let key = key_argument(key)?;
            let (header, claims, checksum_ok) =
                inspect_license_key(&key).map_err(|e| CliError::Inspect(e.to_string()))?;
            print_json(&serde_json::json!({"header": header, "claims": claims, "checksum_ok": checksum_ok}));
            Ok(ExitCode::SUCCESS)
        }
        LicenseCommand::Verify { key, jwks, at } => {
            let key = key_argument(key)?;
            let ring = read_ring(&jwks)?;
            let now = match at {
                Some(at) => parse_time("--at", &at)?,
                None => Utc::now(),
            };
            let code = match verify_license_key(&ring, &key) {
                Ok(verified) => decide(&verified, &ValidationRequest::default(), None, now).code,
                Err(rejection) => ValidationCode::from(rejection),
            };
            print_json(&serde_json::json!({"valid": code.is_valid(), "code": code}));
            Ok(if code.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

fn key_argument(key: String) -> Result<String, CliError> {
    if key != "-" {
        return Ok(key);
    }
    let mut buf = String::new();
    std::io::stdin().take(64 * 1024).read_to_string(&mut buf).map_err(CliError::Stdin)?;
    Ok(buf.trim().to_owned())
}

fn write_private_jwk(path: &Path, jwk: &Jwk) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(jwk).unwrap_or_default();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => CliError::Exists { path: path.to_owned() },
        _ => CliError::Io { path: path.to_owned(), source: e },
    })?;
    file.write_all(json.as_bytes()).and_then(|()| file.write_all(b"\n")).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn read_signing_key(path: &Path) -> Result<SigningKey, CliError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    SigningKey::parse_jwk_json(&text).map_err(|source| CliError::Key { path: path.to_owned(), source })
}

/// A JWKS file, or a single private or public JWK file.
fn read_ring(path: &Path) -> Result<KeyRing, CliError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let key_err = |source| CliError::Key { path: path.to_owned(), source };
    if let Ok(jwks) = serde_json::from_str::<Jwks>(&text) {
        return KeyRing::from_jwks(&jwks).map_err(key_err);
    }
    let jwk: Jwk = serde_json::from_str(&text).map_err(|e| key_err(JwkError::Json(e.to_string())))?;
    KeyRing::verify_only(vec![VerifyingKey::from_jwk(&jwk).map_err(key_err)?]).map_err(key_err)
}

fn parse_time(what: &'static str, value: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.to_utc()).map_err(|_| CliError::BadArg {
        what,
        value: value.to_owned(),
        why: "expected RFC 3339, e.g. 2027-01-31T00:00:00Z",
    })
}

fn parse_lifetime(value: &str) -> Result<Duration, CliError> {
    let bad = |why| CliError::BadArg { what: "--expires-in", value: value.to_owned(), why };
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad("expected a number and a unit: s, m, h, d or w"))?;
    if n <= 0 {
        return Err(bad("must be positive"));
    }
    let lifetime = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => return Err(bad("expected a number and a unit: s, m, h, d or w")),
    };
    lifetime.ok_or_else(|| bad("too long"))
}

fn parse_limits(pairs: &[String]) -> Result<BTreeMap<String, u64>, CliError> {
    pairs
        .iter()
        .map(|pair| {
            let bad = |why| CliError::BadArg { what: "--limit", value: pair.clone(), why };
            let (metric, n) = pair.split_once('=').ok_or_else(|| bad("expected metric=N"))?;
            if metric.is_empty() {
                return Err(bad("the metric name is empty"));
            }
            Ok((metric.to_owned(), n.parse().map_err(|_| bad("N must be a whole number"))?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d").ok(), Some(Duration::days(30)));
        assert_eq!(parse_lifetime("2w").ok(), Some(Duration::weeks(2)));
        for bad in ["", "d", "30", "-1d", "0h", "5y", "1.5d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        let parsed = parse_limits(&["api_calls=10".into(), "seats=3".into()]).expect("valid");
        assert_eq!(parsed, BTreeMap::from([("api_calls".into(), 10), ("seats".into(), 3)]));
        for bad in ["api_calls", "=3", "x=-1", "x=1.5"] {
            assert!(parse_limits(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }
}
