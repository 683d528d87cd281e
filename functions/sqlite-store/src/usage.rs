//! Usage counters. A batch counts once: its id is inserted in the same transaction that adds
//! it to the counters, and a batch id already present means nothing is added.

use std::collections::BTreeMap;

use async_trait::async_trait;
use nls_core::model::*;
use nls_core::ports::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{counter_at, counter_to_sql, index_seconds, text_at};
use crate::{SqliteStore, sql_failure};

/// Counters of one license and period key: metric → total.
pub(crate) fn period_counters(
    connection: &Connection,
    license_id: &str,
    period: &str,
) -> StoreResult<BTreeMap<String, u64>> {
    let mut statement = connection
        .prepare_cached("SELECT metric, total FROM usage_counters WHERE license_id = ?1 AND period = ?2")
        .map_err(sql_failure)?;
    let mut rows = statement.query([license_id, period]).map_err(sql_failure)?;
    let mut counters = BTreeMap::new();
    while let Some(row) = rows.next().map_err(sql_failure)? {
        let metric = text_at(row, 0, &|| format!("usage counter {license_id}/(metric unreadable)/{period}"))?;
        let total = counter_at(row, 1, &|| format!("usage counter {license_id}/{metric}/{period}"))?;
        counters.insert(metric, total);
    }
    Ok(counters)
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        let license_id = batch.license_id.clone();
        let batch_id = batch.batch_id.clone();
        let increments = batch.counter_increments()?;
        let recorded_at_s = index_seconds(batch.received_at);
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let inserted = tx
                .execute(
                    "INSERT INTO usage_batches (license_id, batch_id, recorded_at_s) VALUES (?1, ?2, ?3)
                     ON CONFLICT (license_id, batch_id) DO NOTHING",
                    params![license_id, batch_id, recorded_at_s],
                )
                .map_err(sql_failure)?;
            if inserted == 0 {
                return Ok(BatchOutcome::Duplicate);
            }
            for ((metric, period), amount) in increments {
                let item = || format!("usage counter {license_id}/{metric}/{period}");
                let stored = tx
                    .query_row(
                        "SELECT total FROM usage_counters
                         WHERE license_id = ?1 AND period = ?2 AND metric = ?3",
                        [&license_id, &period, &metric],
                        |row| Ok(counter_at(row, 0, &item)),
                    )
                    .optional()
                    .map_err(sql_failure)?
                    .transpose()?
                    .unwrap_or(0);
                tx.execute(
                    "INSERT INTO usage_counters (license_id, period, metric, total) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (license_id, period, metric) DO UPDATE SET total = excluded.total",
                    params![
                        license_id,
                        period,
                        metric,
                        counter_to_sql(add_to_counter(stored, amount, &metric, &period)?)
                    ],
                )
                .map_err(sql_failure)?;
            }
            tx.commit().map_err(sql_failure)?;
            Ok(BatchOutcome::Recorded)
        })
        .await
    }

    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>> {
        let (license_id, period) = (license_id.to_owned(), period.to_owned());
        self.with_connection(move |connection| period_counters(connection, &license_id, &period)).await
    }
}
