//! Online backup and restore of the store's file, through SQLite's backup API.
//!
//! A backup copies every page in one step, inside one read transaction of the live database:
//! in WAL mode that blocks no writer, and the copy is the database exactly as it was when the
//! step began, so everything committed (acknowledged) before then is in it. The copy is a
//! plain SQLite file (rollback journal, no `-wal` beside it), written to a temporary name,
//! fsynced, then renamed, so a crash never leaves half a backup under the final name.
//!
//! Files that belong with the data (the host's signing keys, when asked) travel inside the
//! same file, in a table this module owns; a restore takes them out again and drops the table.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// The table that carries extra files inside a backup; never present in a live store.
const FILES_TABLE: &str = "nls_backup_files";
/// A table every NLS store has: a file without it is not a backup of one.
const STORE_MARKER_TABLE: &str = "licenses";
/// How often a step that met a lock is retried, and how long to wait between tries.
const STEP_ATTEMPTS: u32 = 200;
const STEP_PAUSE: StdDuration = StdDuration::from_millis(50);
const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: no NLS store there")]
    NoStore(PathBuf),
    #[error("{0}: not an NLS backup ({1})")]
    NotABackup(PathBuf, String),
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: the database stayed locked; try again")]
    Locked(PathBuf),
}

/// A file carried in a backup: its name (no directories) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedFile {
    pub name: String,
    pub content: Vec<u8>,
}

/// What a backup holds: rows per table, and the carried files' names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    pub bytes: u64,
    pub rows: std::collections::BTreeMap<String, u64>,
    pub files: Vec<String>,
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite { path: path.to_owned(), source }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// Copies every page of `from` into `to` in one step (one consistent snapshot of `from`).
fn copy_pages(from: &Connection, to: &mut Connection, path: &Path) -> Result<(), BackupError> {
    let backup = Backup::new(from, to).map_err(sqlite(path))?;
    for _ in 0..STEP_ATTEMPTS {
        match backup.step(-1).map_err(sqlite(path))? {
            StepResult::Done => return Ok(()),
            // Busy or locked: a writer holds the lock this instant; nothing was copied yet.
            _ => std::thread::sleep(STEP_PAUSE),
        }
    }
    Err(BackupError::Locked(path.to_owned()))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    path.with_file_name(name)
}

/// Backs up the live store at `database` into `out` (replaced if it exists), carrying `files`.
pub fn backup_database(
    database: &Path,
    out: &Path,
    files: &[CarriedFile],
) -> Result<BackupSummary, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoStore(database.to_owned()));
    }
    // Read-write flags, though it only reads: a read-only connection cannot open a WAL
    // database whose `-shm` is missing (no server running).
    let source = Connection::open(database).map_err(sqlite(database))?;
    source.busy_timeout(BUSY_TIMEOUT).map_err(sqlite(database))?;
    let partial = partial_path(out);
    let _ = fs::remove_file(&partial);
    fs::File::create(&partial).and_then(|_| restrict_to_owner(&partial)).map_err(io(&partial))?;
    let mut copy = Connection::open(&partial).map_err(sqlite(&partial))?;
    copy_pages(&source, &mut copy, database)?;
    drop(source);
    // One self-contained file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE").map_err(sqlite(&partial))?;
    copy.execute_batch(&format!(
        "CREATE TABLE {FILES_TABLE} (name TEXT PRIMARY KEY NOT NULL, content BLOB NOT NULL)"
    ))
    .map_err(sqlite(&partial))?;
    for file in files {
        copy.execute(
            &format!("INSERT INTO {FILES_TABLE} (name, content) VALUES (?1, ?2)"),
            (&file.name, &file.content),
        )
        .map_err(sqlite(&partial))?;
    }
    let summary = summarize(&copy, &partial)?;
    copy.close().map_err(|(_, e)| sqlite(&partial)(e))?;
    fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io(&partial))?;
    fs::rename(&partial, out).map_err(io(out))?;
    sync_dir(out);
    let bytes = fs::metadata(out).map_err(io(out))?.len();
    Ok(BackupSummary { bytes, ..summary })
}

/// Row counts per table (but the carried files') and the carried files' names.
fn summarize(connection: &Connection, path: &Path) -> Result<BackupSummary, BackupError> {
    let tables: Vec<String> = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
        .map_err(sqlite(path))?;
    let mut rows = std::collections::BTreeMap::new();
    for table in tables.iter().filter(|t| *t != FILES_TABLE) {
        let n: i64 = connection
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |row| row.get(0))
            .map_err(sqlite(path))?;
        rows.insert(table.clone(), n.unsigned_abs());
    }
    let files = if tables.iter().any(|t| t == FILES_TABLE) {
        connection
            .prepare(&format!("SELECT name FROM {FILES_TABLE} ORDER BY name"))
            .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
            .map_err(sqlite(path))?
    } else {
        Vec::new()
    };
    Ok(BackupSummary { bytes: 0, rows, files })
}

/// Checks that `backup` is a sound NLS backup; returns its summary and carried files.
pub fn read_backup(backup: &Path) -> Result<(BackupSummary, Vec<CarriedFile>), BackupError> {
    let not_a_backup = |why: String| BackupError::NotABackup(backup.to_owned(), why);
    if !backup.is_file() {
        return Err(not_a_backup("no such file".to_owned()));
    }
    let connection = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| not_a_backup(e.to_string()))?;
    let check: String = connection
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| not_a_backup(e.to_string()))?;
    if check != "ok" {
        return Err(not_a_backup(format!("quick_check: {check}")));
    }
    let summary = summarize(&connection, backup)?;
    if !summary.rows.contains_key(STORE_MARKER_TABLE) {
        return Err(not_a_backup(format!("it has no {STORE_MARKER_TABLE} table")));
    }
    let files = if summary.files.is_empty() {
        Vec::new()
    } else {
        connection
            .prepare(&format!("SELECT name, content FROM {FILES_TABLE} ORDER BY name"))
            .and_then(|mut s| {
                s.query_map([], |row| Ok(CarriedFile { name: row.get(0)?, content: row.get(1)? }))?.collect()
            })
            .map_err(sqlite(backup))?
    };
    let bytes = fs::metadata(backup).map_err(io(backup))?.len();
    Ok((BackupSummary { bytes, ..summary }, files))
}

/// Replaces the store at `database` (created if missing) with the backup's data, in one
/// transaction of the destination: a process that has it open sees the old data or the
/// restored data, never a mix. Returns the carried files for the caller to place.
pub fn restore_database(backup: &Path, database: &Path) -> Result<Vec<CarriedFile>, BackupError> {
    let (_, files) = read_backup(backup)?;
    // Take the carried files out of a private copy first, so the store never holds them.
    let staging = partial_path(database);
    let _ = fs::remove_file(&staging);
    fs::copy(backup, &staging).map_err(io(&staging))?;
    let cleaned = (|| {
        let staged = Connection::open(&staging).map_err(sqlite(&staging))?;
        staged.execute_batch(&format!("DROP TABLE IF EXISTS {FILES_TABLE}")).map_err(sqlite(&staging))?;
        let mut live = Connection::open(database).map_err(sqlite(database))?;
        live.busy_timeout(BUSY_TIMEOUT).map_err(sqlite(database))?;
        copy_pages(&staged, &mut live, database)?;
        live.pragma_update(None, "journal_mode", "WAL").map_err(sqlite(database))?;
        Ok(())
    })();
    let _ = fs::remove_file(&staging);
    cleaned?;
    sync_dir(database);
    Ok(files)
}

/// Owner-only permissions, set while the file is still empty.
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
