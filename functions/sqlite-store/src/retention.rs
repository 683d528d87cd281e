//! Retention: the SQLite counterpart of the DynamoDB table's TTLs (docs/dynamodb.md), so the
//! file of a long-running `nls serve` does not grow with every batch, event and validation.
//!
//! Each call deletes at most [`Retention::max_rows_per_table`] rows per table, so one run holds
//! the write lock briefly however far behind it is; the next run continues.

use chrono::Duration;
use nls_core::model::Timestamp;
use nls_core::ports::StoreResult;
use rusqlite::{TransactionBehavior, params};

use crate::row_codec::index_seconds;
use crate::{SqliteStore, sql_failure};

/// How long each kind of row is kept, and how many rows one run may delete per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Processed Stripe event ids (DynamoDB: 30 days). Stripe retries for up to three days,
    /// so a replay inside this window is still recognized.
    pub webhook_events: Duration,
    /// Validation history (DynamoDB: 90 days).
    pub validation_logs: Duration,
    /// Usage batch ids. Must exceed the usage `at` window (`max_age + max_ahead`): a replay
    /// older than that is refused by the window, so forgetting its id cannot count it twice.
    pub usage_batches: Duration,
    pub max_rows_per_table: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            webhook_events: Duration::days(30),
            validation_logs: Duration::days(90),
            usage_batches: Duration::days(90),
            max_rows_per_table: 10_000,
        }
    }
}

impl Retention {
    /// The default, with the usage batch retention raised past a usage `at` window of
    /// `usage_max_age + usage_max_ahead` if that is longer.
    pub fn for_usage_window(usage_max_age: Duration, usage_max_ahead: Duration) -> Self {
        let floor = usage_max_age + usage_max_ahead + Duration::days(1);
        let default = Self::default();
        Self { usage_batches: default.usage_batches.max(floor), ..default }
    }
}

/// Rows one [`SqliteStore::prune_expired`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub webhook_events: usize,
    pub validation_logs: usize,
    pub usage_batches: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.webhook_events + self.validation_logs + self.usage_batches
    }
}

const PRUNE_WEBHOOK_EVENTS: &str = "DELETE FROM webhook_events WHERE event_id IN (
    SELECT event_id FROM webhook_events WHERE received_at_s < ?1 LIMIT ?2)";
const PRUNE_VALIDATION_LOGS: &str = "DELETE FROM validation_logs WHERE seq IN (
    SELECT seq FROM validation_logs WHERE at_s < ?1 LIMIT ?2)";
const PRUNE_USAGE_BATCHES: &str = "DELETE FROM usage_batches WHERE (license_id, batch_id) IN (
    SELECT license_id, batch_id FROM usage_batches WHERE recorded_at_s < ?1 LIMIT ?2)";

impl SqliteStore {
    /// Deletes rows older than `retention` allows at `now` (whole seconds: a row is kept until
    /// the second after its retention ends), at most `max_rows_per_table` per table.
    pub async fn prune_expired(&self, now: Timestamp, retention: Retention) -> StoreResult<Pruned> {
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let limit = i64::from(retention.max_rows_per_table);
            let prune = |sql: &str, keep: Duration| {
                let cutoff = index_seconds(now - keep);
                tx.execute(sql, params![cutoff, limit]).map_err(sql_failure)
            };
            let pruned = Pruned {
                webhook_events: prune(PRUNE_WEBHOOK_EVENTS, retention.webhook_events)?,
                validation_logs: prune(PRUNE_VALIDATION_LOGS, retention.validation_logs)?,
                usage_batches: prune(PRUNE_USAGE_BATCHES, retention.usage_batches)?,
            };
            tx.commit().map_err(sql_failure)?;
            Ok(pruned)
        })
        .await
    }
}
