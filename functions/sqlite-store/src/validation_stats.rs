//! Validation aggregates and compliance records. A batch is one `BEGIN IMMEDIATE`
//! transaction: its id is inserted first, and an id already present means nothing is added.
//! Counters are upserts (`total = total + excluded.total`); a distinct value gets its row only
//! while its (license, day, kind) holds fewer than `DISTINCT_VALUES_KEPT`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use nls_core::ports::*;
use nls_core::validation_stats::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{exact_time, index_seconds, parse_exact_time, record_at, sql_limit, text_at, to_json};
use crate::{SqliteStore, sql_failure};

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn day_aggregate(
    connection: &Connection,
    license_id: &str,
    day: NaiveDate,
) -> StoreResult<Option<ValidationDayAggregate>> {
    let day_text = day_key(day);
    let item = || format!("validation day {license_id}/{day_text}");
    let seen: Option<(String, String)> = connection
        .query_row(
            "SELECT first_seen, last_seen FROM validation_days WHERE license_id = ?1 AND day = ?2",
            [license_id, &day_text],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sql_failure)?;
    let Some((first_seen, last_seen)) = seen else { return Ok(None) };
    let mut by_code = BTreeMap::new();
    {
        let mut statement = connection
            .prepare_cached("SELECT code, total FROM validation_day_codes WHERE license_id = ?1 AND day = ?2")
            .map_err(sql_failure)?;
        let mut rows = statement.query([license_id, &day_text]).map_err(sql_failure)?;
        while let Some(row) = rows.next().map_err(sql_failure)? {
            let code = text_at(row, 0, &item)?;
            let total: i64 = row.get(1).map_err(sql_failure)?;
            by_code.insert(code, count(total));
        }
    }
    let mut values: BTreeMap<DistinctKind, Vec<ValueSeen>> = BTreeMap::new();
    {
        let mut statement = connection
            .prepare_cached(
                "SELECT kind, value, total, first_seen, last_seen FROM validation_day_values
                 WHERE license_id = ?1 AND day = ?2",
            )
            .map_err(sql_failure)?;
        let mut rows = statement.query([license_id, &day_text]).map_err(sql_failure)?;
        while let Some(row) = rows.next().map_err(sql_failure)? {
            let kind_text = text_at(row, 0, &item)?;
            let kind = DistinctKind::parse(&kind_text)
                .ok_or_else(|| crate::row_codec::corrupt(item(), format!("unknown kind {kind_text:?}")))?;
            let total: i64 = row.get(2).map_err(sql_failure)?;
            values.entry(kind).or_default().push(ValueSeen {
                value: text_at(row, 1, &item)?,
                count: count(total),
                first_seen: parse_exact_time(&text_at(row, 3, &item)?, &item)?,
                last_seen: parse_exact_time(&text_at(row, 4, &item)?, &item)?,
            });
        }
    }
    let mut untracked: BTreeMap<DistinctKind, u64> = BTreeMap::new();
    {
        let mut statement = connection
            .prepare_cached(
                "SELECT kind, events FROM validation_day_untracked WHERE license_id = ?1 AND day = ?2",
            )
            .map_err(sql_failure)?;
        let mut rows = statement.query([license_id, &day_text]).map_err(sql_failure)?;
        while let Some(row) = rows.next().map_err(sql_failure)? {
            let kind_text = text_at(row, 0, &item)?;
            let kind = DistinctKind::parse(&kind_text)
                .ok_or_else(|| crate::row_codec::corrupt(item(), format!("unknown kind {kind_text:?}")))?;
            let events: i64 = row.get(1).map_err(sql_failure)?;
            untracked.insert(kind, count(events));
        }
    }
    let distinct = distinct_by_kind(values, &untracked);
    Ok(Some(ValidationDayAggregate {
        license_id: license_id.to_owned(),
        day,
        by_code,
        distinct,
        first_seen: parse_exact_time(&first_seen, &item)?,
        last_seen: parse_exact_time(&last_seen, &item)?,
    }))
}

/// Every batch runs the same few statements: prepared once per connection, not per call.
fn execute_cached(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    connection.prepare_cached(sql)?.execute(params)
}

fn add_increment(connection: &Connection, inc: &DayIncrement) -> StoreResult<()> {
    let day = day_key(inc.day);
    let license = inc.license_id.as_str();
    // RFC 3339 with nanoseconds in UTC sorts as time does, so min/max work on the text.
    execute_cached(
        connection,
        "INSERT INTO validation_days (license_id, day, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (license_id, day) DO UPDATE SET
                 first_seen = min(first_seen, excluded.first_seen),
                 last_seen = max(last_seen, excluded.last_seen)",
        params![license, day, exact_time(inc.first_at), exact_time(inc.last_at)],
    )
    .map_err(sql_failure)?;
    for (code, n) in &inc.by_code {
        execute_cached(
            connection,
            "INSERT INTO validation_day_codes (license_id, day, code, total) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (license_id, day, code) DO UPDATE SET total = total + excluded.total",
            params![license, day, code, i64::try_from(*n).unwrap_or(i64::MAX)],
        )
        .map_err(sql_failure)?;
    }
    for (kind, values) in &inc.values {
        let mut kept: i64 = connection
            .prepare_cached(
                "SELECT count(*) FROM validation_day_values WHERE license_id = ?1 AND day = ?2 AND kind = ?3",
            )
            .and_then(|mut statement| statement.query_row([license, &day, kind.as_str()], |row| row.get(0)))
            .map_err(sql_failure)?;
        for (value, v) in values {
            let n = i64::try_from(v.count).unwrap_or(i64::MAX);
            let updated = execute_cached(
                connection,
                "UPDATE validation_day_values SET total = total + ?5,
                         first_seen = min(first_seen, ?6), last_seen = max(last_seen, ?7)
                     WHERE license_id = ?1 AND day = ?2 AND kind = ?3 AND value = ?4",
                params![license, day, kind.as_str(), value, n, exact_time(v.first_at), exact_time(v.last_at)],
            )
            .map_err(sql_failure)?;
            if updated > 0 {
                continue;
            }
            if keeps_another_value(count(kept)) {
                execute_cached(
                    connection,
                    "INSERT INTO validation_day_values
                             (license_id, day, kind, value, total, first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        license,
                        day,
                        kind.as_str(),
                        value,
                        n,
                        exact_time(v.first_at),
                        exact_time(v.last_at)
                    ],
                )
                .map_err(sql_failure)?;
                kept += 1;
            } else {
                execute_cached(connection,
                        "INSERT INTO validation_day_untracked (license_id, day, kind, events) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (license_id, day, kind) DO UPDATE SET events = events + excluded.events",
                        params![license, day, kind.as_str(), n],
                    )
                    .map_err(sql_failure)?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ValidationStatsStore for SqliteStore {
    async fn record_day_increments(&self, batch: &DayIncrementBatch) -> StoreResult<BatchOutcome> {
        let batch_id = batch.batch_id.clone();
        let received_at_s = index_seconds(batch.received_at);
        let increments = batch.increments.clone();
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let inserted = execute_cached(
                &tx,
                "INSERT INTO validation_event_batches (batch_id, received_at_s) VALUES (?1, ?2)
                     ON CONFLICT (batch_id) DO NOTHING",
                params![batch_id, received_at_s],
            )
            .map_err(sql_failure)?;
            if inserted == 0 {
                return Ok(BatchOutcome::Duplicate);
            }
            for inc in &increments {
                add_increment(&tx, inc)?;
            }
            tx.commit().map_err(sql_failure)?;
            Ok(BatchOutcome::Recorded)
        })
        .await
    }

    async fn validation_day_aggregate(
        &self,
        license_id: &str,
        day: NaiveDate,
    ) -> StoreResult<Option<ValidationDayAggregate>> {
        let license_id = license_id.to_owned();
        self.with_connection(move |connection| {
            // One read transaction, so the counters come from one moment.
            let tx = connection.transaction().map_err(sql_failure)?;
            let aggregate = day_aggregate(&tx, &license_id, day)?;
            tx.commit().map_err(sql_failure)?;
            Ok(aggregate)
        })
        .await
    }

    async fn put_compliance_record(&self, record: &ComplianceRecord) -> StoreResult<()> {
        let item = format!("compliance record {}/{}", record.license_id, day_key(record.day));
        let json = to_json(&item, record)?;
        let (license_id, day, flagged) = (record.license_id.clone(), day_key(record.day), record.flagged());
        self.with_connection(move |connection| {
            execute_cached(connection,
                    "INSERT INTO compliance_records (license_id, day, flagged, record) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (license_id, day) DO UPDATE SET flagged = excluded.flagged, record = excluded.record",
                    params![license_id, day, i64::from(flagged), json],
                )
                .map_err(sql_failure)?;
            Ok(())
        })
        .await
    }

    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let (license_id, since) = (license_id.to_owned(), day_key(since));
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT day, record FROM compliance_records WHERE license_id = ?1 AND day >= ?2
                     ORDER BY day DESC",
                )
                .map_err(sql_failure)?;
            let mut rows = statement.query([&license_id, &since]).map_err(sql_failure)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let day: String = row.get(0).map_err(sql_failure)?;
                records.push(record_at(row, 1, &|| format!("compliance record {license_id}/{day}"))?);
            }
            Ok(records)
        })
        .await
    }

    async fn list_flagged_compliance(
        &self,
        since: NaiveDate,
        until: NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let (since, until) = (day_key(since), day_key(until));
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT license_id, day, record FROM compliance_records WHERE flagged = 1 AND day >= ?1 AND day <= ?2
                     ORDER BY day DESC, license_id ASC LIMIT ?3",
                )
                .map_err(sql_failure)?;
            let mut rows = statement.query(params![since, until, sql_limit(limit)]).map_err(sql_failure)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let license_id: String = row.get(0).map_err(sql_failure)?;
                let day: String = row.get(1).map_err(sql_failure)?;
                records.push(record_at(row, 2, &|| format!("compliance record {license_id}/{day}"))?);
            }
            Ok(records)
        })
        .await
    }
}
