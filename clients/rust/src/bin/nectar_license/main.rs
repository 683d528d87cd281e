//! `nectar-license`: the customer operator's tool. It reads the configuration the app reads
//! (`NECTAR_LICENSE_*`, overridden by flags), so it sees what the app sees, and explains the
//! license state of this machine. Exit codes: `failure_class.rs` and docs/install.md.

mod diagnose;
mod failure_class;
mod local_state;
mod network_probe;
mod resolved_config;
mod support_bundle;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Parser, Subcommand};
use nls_client::env_config::OFFLINE_FILE_NAME;
use nls_client::http_transport::HttpTransport;
use nls_client::{LicenseState, Policy};
use nls_client_core::LicenseMachine;
use nls_core::key_ring::KeyRing;

use crate::failure_class::{Failure, FailureClass};
use crate::resolved_config::{Overrides, ResolvedConfig};

#[derive(Parser)]
#[command(
    name = "nectar-license",
    version,
    about = "Check, explain and troubleshoot this machine's Nectar license"
)]
struct Cli {
    /// License server URL [env: NECTAR_LICENSE_SERVER]
    #[arg(long, global = true)]
    server: Option<String>,
    /// The license key (prefer --key-file or the environment: flags show in `ps`) [env: NECTAR_LICENSE_KEY]
    #[arg(long, global = true, conflicts_with = "key_file")]
    key: Option<String>,
    /// A file holding the license key
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// The pinned public JWKS file [env: NECTAR_LICENSE_JWKS]
    #[arg(long, global = true)]
    jwks: Option<PathBuf>,
    /// The license state directory the app uses [env: NECTAR_LICENSE_DATA_DIR]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// This machine's fingerprint, when the offline license file is bound to one
    #[arg(long, global = true)]
    fingerprint: Option<String>,
    /// Network timeout per step, in seconds
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The license as this machine knows it (no network); exit 0 when usable, 3 when not
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run every check (key, network, time, state, server) and name the one that fails
    Diagnose {
        #[arg(long)]
        json: bool,
    },
    /// Write a tar.gz for support: diagnose, versions, redacted config, recent log lines
    SupportBundle {
        #[arg(long)]
        out: PathBuf,
        /// The app's log file, whose last lines go in (redacted)
        #[arg(long)]
        app_log: Option<PathBuf>,
    },
    /// Import an offline license file (air-gapped sites)
    ActivateOffline { file: PathBuf },
    /// Free this machine's seat on the license server (decommissioning)
    Release,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bug must still end in a clear message and a documented code, never a raw panic trace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("nectar-license: internal error: {info}");
    }));
    let result = std::panic::catch_unwind(|| run(cli));
    let (code, log) = match result {
        Ok(Ok((code, log))) => (code, log),
        Ok(Err((failure, log))) => {
            eprintln!("nectar-license: {}", failure.message);
            (failure.class.exit_code(), log)
        }
        Err(_) => (FailureClass::Internal.exit_code(), None),
    };
    if let Some((dir, line)) = log {
        append_log(&dir, &format!("{line} exit={code}"));
    }
    ExitCode::from(code)
}

/// The exit code and, when the data dir is known, a line for the CLI's log.
type LogLine = Option<(PathBuf, String)>;
type Outcome = Result<(u8, LogLine), (Failure, LogLine)>;

fn run(cli: Cli) -> Outcome {
    let config = ResolvedConfig::resolve(Overrides {
        server: cli.server,
        key: cli.key,
        key_file: cli.key_file,
        jwks: cli.jwks,
        data_dir: cli.data_dir,
        fingerprint: cli.fingerprint,
        timeout: Duration::from_secs(cli.timeout.clamp(1, 300)),
    })
    .map_err(|m| (Failure::new(FailureClass::Config, m), None))?;
    let log_to = |what: String| config.data_dir.clone().map(|d| (d, what));
    match cli.command {
        Command::Status { json } => {
            let (ring, key) = ring_and_key(&config).map_err(|f| (f, log_to("status".into())))?;
            let report = local_state::status_report(
                &ring,
                &key,
                config.data_dir.as_deref(),
                config.fingerprint.as_deref(),
                Utc::now(),
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", local_state::render_status(&report));
            }
            let code = if report.usable { 0 } else { FailureClass::NotUsable.exit_code() };
            Ok((code, log_to(format!("status usable={}", report.usable))))
        }
        Command::Diagnose { json } => {
            let report = diagnose::run(&config);
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", diagnose::render(&report));
            }
            let failed = report.failure.as_ref().map_or("none".to_owned(), |f| f.check.clone());
            Ok((report.exit_code, log_to(format!("diagnose failed_check={failed}"))))
        }
        Command::SupportBundle { out, app_log } => {
            let report = diagnose::run(&config);
            let status_json = ring_and_key(&config).ok().map(|(ring, key)| {
                let status = local_state::status_report(
                    &ring,
                    &key,
                    config.data_dir.as_deref(),
                    config.fingerprint.as_deref(),
                    Utc::now(),
                );
                serde_json::to_string_pretty(&status).unwrap_or_default()
            });
            let input = support_bundle::BundleInput {
                diagnose: &report,
                diagnose_text: diagnose::render(&report),
                status_json,
                config: config.redacted(),
                data_dir: config.data_dir.as_deref(),
                app_log: app_log.as_deref(),
                key: config.key.as_deref(),
            };
            let names = support_bundle::write_bundle(&out, &input).map_err(|e| {
                (Failure::new(FailureClass::Internal, format!("writing {}: {e}", out.display())), None)
            })?;
            println!(
                "wrote {} ({}); diagnose exit code {}",
                out.display(),
                names.join(", "),
                report.exit_code
            );
            Ok((0, log_to(format!("support-bundle diagnose_exit={}", report.exit_code))))
        }
        Command::ActivateOffline { file } => {
            let line = log_to("activate-offline".into());
            activate_offline(&config, &file).map(|code| (code, line.clone())).map_err(|f| (f, line))
        }
        Command::Release => {
            let line = log_to("release".into());
            release(&config).map(|code| (code, line.clone())).map_err(|f| (f, line))
        }
    }
}

fn ring_and_key(config: &ResolvedConfig) -> Result<(KeyRing, String), Failure> {
    let (path, text) = config.jwks.as_ref().map_err(|why| Failure::new(FailureClass::Config, why.clone()))?;
    let ring = KeyRing::parse_jwks_json(text).map_err(|e| {
        Failure::new(FailureClass::Config, format!("{}: not a usable JWKS: {e}", path.display()))
    })?;
    let key = local_state::effective_key(&ring, config.key.as_deref(), config.data_dir.as_deref())
        .ok_or_else(|| {
            Failure::new(FailureClass::Config, "no license key: set NECTAR_LICENSE_KEY, --key-file or --key")
        })?;
    Ok((ring, key))
}

fn activate_offline(config: &ResolvedConfig, file: &Path) -> Result<u8, Failure> {
    let offline = |m: String| Failure::new(FailureClass::OfflineFile, m);
    let (path, text) = config.jwks.as_ref().map_err(|why| Failure::new(FailureClass::Config, why.clone()))?;
    let ring = KeyRing::parse_jwks_json(text).map_err(|e| {
        Failure::new(FailureClass::Config, format!("{}: not a usable JWKS: {e}", path.display()))
    })?;
    let data_dir = config.data_dir.as_ref().ok_or_else(|| {
        Failure::new(FailureClass::Config, "no data dir: set NECTAR_LICENSE_DATA_DIR or --data-dir")
    })?;
    let json = std::fs::read_to_string(file).map_err(|e| offline(format!("{}: {e}", file.display())))?;
    let key_in_file = LicenseMachine::key_from_offline_file(&ring, &json)
        .map_err(|e| offline(format!("{} is rejected: {e}", file.display())))?;
    let license_of = |key: &str| local_state::key_summary(key).license_id;
    if config.key.as_deref().is_some_and(|k| license_of(k) != license_of(&key_in_file)) {
        return Err(offline("the file is for another license than the configured key".into()));
    }
    let now = Utc::now();
    let mut machine = LicenseMachine::new(ring, &key_in_file, Policy::default());
    machine
        .load_offline_file(&json, config.fingerprint.as_deref(), now)
        .map_err(|e| offline(format!("{} is rejected: {e}", file.display())))?;
    let state = machine.state(now);
    if let LicenseState::Invalid { code, reason } = &state {
        return Err(offline(format!("the license in the file is not usable ({code}): {reason}")));
    }
    std::fs::create_dir_all(data_dir)
        .and_then(|()| {
            nls_client::durable_file::write_atomic(&data_dir.join(OFFLINE_FILE_NAME), json.as_bytes())
        })
        .map_err(|e| {
            Failure::new(FailureClass::DataDir, format!("saving into {}: {e}", data_dir.display()))
        })?;
    let until = match &state {
        LicenseState::Valid { valid_until, .. } => valid_until.to_rfc3339(),
        LicenseState::Grace { ends_at, .. } => format!("{} (in grace)", ends_at.to_rfc3339()),
        _ => "-".into(),
    };
    println!(
        "imported the offline license file into {}; license {} usable until {until}; restart the app to load it",
        data_dir.join(OFFLINE_FILE_NAME).display(),
        machine.license_id().unwrap_or("?"),
    );
    Ok(0)
}

fn release(config: &ResolvedConfig) -> Result<u8, Failure> {
    let server = config.server_url.as_deref().ok_or_else(|| {
        Failure::new(FailureClass::Config, "no server: set NECTAR_LICENSE_SERVER or --server")
    })?;
    let key = config.key.as_deref().ok_or_else(|| {
        Failure::new(FailureClass::Config, "no license key: set NECTAR_LICENSE_KEY or --key-file")
    })?;
    let data_dir = config.data_dir.as_deref().ok_or_else(|| {
        Failure::new(FailureClass::Config, "no data dir: set NECTAR_LICENSE_DATA_DIR or --data-dir")
    })?;
    let Some(deployment_id) = local_state::read_deployment_id(data_dir) else {
        println!("no deployment id in {}: this machine holds no seat", data_dir.display());
        return Ok(0);
    };
    let path = format!("/v1/deployments/{}", nls_core::path_segment::encode(&deployment_id));
    let reply = HttpTransport::new(server, config.timeout)
        .delete_with_key(&path, key)
        .map_err(|e| Failure::new(FailureClass::Http, format!("release: {e}")))?;
    match reply.status {
        200..=299 => {
            println!(
                "released the seat of deployment {deployment_id}; stop the app, or it takes a seat again"
            );
            Ok(0)
        }
        404 => {
            println!("deployment {deployment_id} holds no seat (already released or its lease ended)");
            Ok(0)
        }
        401 => Err(Failure::new(FailureClass::KeySignature, "the server does not accept this license key")),
        status => Err(Failure::new(FailureClass::Http, format!("release answered HTTP {status}"))),
    }
}

/// Best effort: a CLI that cannot write its log still does its job.
fn append_log(dir: &Path, line: &str) {
    if !dir.is_dir() {
        return;
    }
    let path = dir.join(support_bundle::CLI_LOG);
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{} {line}", Utc::now().to_rfc3339());
    }
}
