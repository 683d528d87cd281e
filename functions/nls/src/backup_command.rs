//! `nls backup` and `nls restore`: a consistent copy of `nls serve`'s store while it keeps
//! serving (SQLite's online backup, `nls_sqlite_store::backup`), and its way back. The signing
//! keys travel in the backup only with `--include-keys`: a backup of customer data should not
//! also be a way to mint license keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use nls_sqlite_store::backup::{BackupError, CarriedFile, backup_database, read_backup, restore_database};

use crate::serve::DATABASE_FILE;
use crate::serve::signing_key_file::{KEY_FILES, write_private};

#[derive(Args)]
pub struct BackupArgs {
    /// The data dir of `nls serve` (it may be running).
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    data_dir: PathBuf,
    /// The backup file to write (replaced if it exists; mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also carry the signing key and the trusted verifiers. Keep such a backup as secret
    /// as the key itself.
    #[arg(long)]
    include_keys: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A file written by `nls backup`.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// The data dir to restore into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    data_dir: PathBuf,
    /// Replace the store (and, if the backup carries them, the keys) of a data dir that
    /// already has one.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupCommandError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} already holds a store; stop nls serve and add --force to replace it")]
    LiveDataDir(PathBuf),
    #[error("the backup carries an unexpected file {0:?}")]
    UnexpectedFile(String),
}

pub fn run_backup(args: BackupArgs) -> Result<ExitCode, BackupCommandError> {
    let mut carried = Vec::new();
    if args.include_keys {
        for name in KEY_FILES {
            let path = args.data_dir.join(name);
            match std::fs::read(&path) {
                Ok(content) => carried.push(CarriedFile { name: name.to_owned(), content }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(BackupCommandError::Io { path, source }),
            }
        }
    }
    let summary = backup_database(&args.data_dir.join(DATABASE_FILE), &args.out, &carried)?;
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    eprintln!("wrote backup {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

pub fn run_restore(args: RestoreArgs) -> Result<ExitCode, BackupCommandError> {
    let database = args.data_dir.join(DATABASE_FILE);
    if database.exists() && !args.force {
        return Err(BackupCommandError::LiveDataDir(args.data_dir));
    }
    // Check the whole backup before touching the data dir.
    let (summary, files) = read_backup(&args.input)?;
    if let Some(odd) = files.iter().find(|f| !KEY_FILES.contains(&f.name.as_str())) {
        return Err(BackupCommandError::UnexpectedFile(odd.name.clone()));
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| BackupCommandError::Io { path: args.data_dir.clone(), source })?;
    restore_database(&args.input, &database)?;
    for file in &files {
        place_key_file(&args.data_dir, file)?;
    }
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    eprintln!("restored {} into {}", args.input.display(), args.data_dir.display());
    Ok(ExitCode::SUCCESS)
}

fn place_key_file(data_dir: &Path, file: &CarriedFile) -> Result<(), BackupCommandError> {
    let path = data_dir.join(&file.name);
    write_private(data_dir, &file.name, &file.content)
        .map_err(|source| BackupCommandError::Io { path, source })
}
