//! The embedded, persistent store: every port of `nls_core::ports::Store` on one SQLite file,
//! with the in-memory store's semantics (`nls_core::memory_store` is the reference).
//!
//! - **Atomicity.** Each invariant is one `BEGIN IMMEDIATE` transaction, which takes SQLite's
//!   write lock up front, so a check and the write that depends on it cannot interleave with
//!   another writer, even one in another process using the same file.
//! - **Durability.** WAL journal with `synchronous=FULL`: a call that returned `Ok` has had its
//!   WAL frames fsynced, so it survives `kill -9` and power loss. (`NORMAL` would survive only
//!   the former, and the store's write rate is far below what FULL's fsync per commit costs.)
//! - **Encoding.** See [`schema`]: records are JSON, the columns queries filter on are explicit.
//!   A row that does not decode is `StoreError::Corrupt` naming the item, never a panic.

pub mod backup;
mod deployments;
mod license_search;
mod notifications;
mod records;
pub mod retention;
mod row_codec;
mod schema;
mod staff_accounts;
mod unit_of_work;
mod usage;
mod validation_stats;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use nls_core::ports::{StoreError, StoreResult};
pub use retention::{Pruned, Retention};
use rusqlite::Connection;

/// How long a statement waits for another process's write lock before failing `Unavailable`.
const BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// Room for every distinct statement the store prepares, so none is re-parsed per call.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The store. Share it as `Arc<SqliteStore>`.
///
/// One connection serves every call, behind an async mutex, and each call runs on tokio's
/// blocking pool (`spawn_blocking`): SQLite calls block, and with `synchronous=FULL` a commit
/// waits for an fsync, which must not stall the runtime's worker threads. The mutex is tokio's
/// rather than `std`'s so that callers waiting their turn queue as parked tasks (in FIFO order)
/// instead of each pinning a blocking-pool thread. One connection also means one writer in this
/// process; SQLite serializes writers anyway, and the local server's load is small.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Arc<tokio::sync::Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let connection = Connection::open(path).map_err(sql_failure)?;
        Self::configure(connection)
    }

    /// A private, non-persistent database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::configure(Connection::open_in_memory().map_err(sql_failure)?)
    }

    fn configure(mut connection: Connection) -> Result<Self, StoreError> {
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_failure)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        // An in-memory database answers "memory": it has no file to journal.
        let journal_mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_failure)?;
        if !matches!(journal_mode.to_ascii_lowercase().as_str(), "wal" | "memory") {
            return Err(StoreError::Unavailable(format!(
                "cannot enable WAL (journal mode is {journal_mode})"
            )));
        }
        connection.pragma_update(None, "synchronous", "FULL").map_err(sql_failure)?;
        schema::migrate(&mut connection)?;
        Ok(Self { connection: Arc::new(tokio::sync::Mutex::new(connection)) })
    }

    /// Runs `op` with the connection, on the blocking pool when there is a tokio runtime (and
    /// inline otherwise, so the store also works under other executors).
    async fn with_connection<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let mut connection = Arc::clone(&self.connection).lock_owned().await;
        if tokio::runtime::Handle::try_current().is_err() {
            return op(&mut connection);
        }
        tokio::task::spawn_blocking(move || op(&mut connection))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Maps a SQLite failure: a damaged file is `Corrupt`; anything else (busy, locked, I/O, full
/// disk) is `Unavailable`, which callers may retry.
fn sql_failure(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match error.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => {
            StoreError::Corrupt { item: "database file".to_owned(), reason: error.to_string() }
        }
        _ => StoreError::Unavailable(format!("sqlite: {error}")),
    }
}
