//! Turning rows into records and back. Every read of stored data goes through here, so a bad
//! value becomes `StoreError::Corrupt` naming the item instead of a panic.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use nls_core::model::Timestamp;
use nls_core::ports::{StoreError, StoreResult};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sql_failure;

pub(crate) fn corrupt(item: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt { item: item.into(), reason: reason.into() }
}

/// The JSON form of a record, for its `record` column.
pub(crate) fn to_json<T: Serialize>(item: &str, record: &T) -> StoreResult<String> {
    // Domain records always serialize; a failure here is a bug, reported rather than panicked.
    serde_json::to_string(record).map_err(|e| StoreError::Unavailable(format!("cannot encode {item}: {e}")))
}

/// Reads column `index` as text.
pub(crate) fn text_at(row: &Row<'_>, index: usize, item: &dyn Fn() -> String) -> StoreResult<String> {
    match row.get_ref(index).map_err(sql_failure)? {
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map_err(|_| corrupt(item(), format!("column {index} is not UTF-8"))),
        other => Err(corrupt(item(), format!("column {index} holds {:?}, not text", other.data_type()))),
    }
}

/// Decodes the JSON record in column `index`.
pub(crate) fn record_at<T: DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    item: &dyn Fn() -> String,
) -> StoreResult<T> {
    match row.get_ref(index).map_err(sql_failure)? {
        ValueRef::Text(bytes) => serde_json::from_slice(bytes).map_err(|e| corrupt(item(), e.to_string())),
        other => Err(corrupt(item(), format!("record holds {:?}, not JSON text", other.data_type()))),
    }
}

/// Reads a usage counter total (a u64 stored bit for bit as i64).
pub(crate) fn counter_at(row: &Row<'_>, index: usize, item: &dyn Fn() -> String) -> StoreResult<u64> {
    match row.get_ref(index).map_err(sql_failure)? {
        ValueRef::Integer(bits) => Ok(u64::from_ne_bytes(bits.to_ne_bytes())),
        other => Err(corrupt(item(), format!("total holds {:?}, not an integer", other.data_type()))),
    }
}

pub(crate) fn counter_to_sql(total: u64) -> i64 {
    i64::from_ne_bytes(total.to_ne_bytes())
}

/// Whole unix seconds, rounded down: the form of the `*_s` index columns.
pub(crate) fn index_seconds(at: Timestamp) -> i64 {
    at.timestamp()
}

/// Exact text form of a time outside a JSON record.
pub(crate) fn exact_time(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn parse_exact_time(text: &str, item: &dyn Fn() -> String) -> StoreResult<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(item(), format!("bad time {text:?}: {e}")))
}

/// `at + by`, saturating at the ends of time instead of panicking like `+` would.
pub(crate) fn shifted(at: Timestamp, by: Duration) -> Timestamp {
    at.checked_add_signed(by).unwrap_or(if by < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A SQL `LIMIT` from a caller's count.
pub(crate) fn sql_limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
