//! Notification intents. A claim reads the existing record and writes the new one in one
//! `BEGIN IMMEDIATE` transaction, so two runs cannot both claim a fresh notice.

use async_trait::async_trait;
use chrono::Duration;
use nls_core::model::*;
use nls_core::ports::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{record_at, shifted, to_json};
use crate::{SqliteStore, sql_failure};

fn notification_item(key: &NotificationKey) -> String {
    format!("notification {}/{}/{}", key.license_id, key.notice, key.window)
}

fn load_notification(
    connection: &Connection,
    key: &NotificationKey,
) -> StoreResult<Option<NotificationRecord>> {
    let item = || notification_item(key);
    connection
        .query_row(
            "SELECT record FROM notifications
             WHERE license_id = ?1 AND notice = ?2 AND notice_window = ?3",
            [&key.license_id, &key.notice, &key.window],
            |row| Ok(record_at(row, 0, &item)),
        )
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

fn put_notification(connection: &Connection, record: &NotificationRecord) -> StoreResult<()> {
    let key = &record.key;
    connection
        .execute(
            "INSERT INTO notifications (license_id, notice, notice_window, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (license_id, notice, notice_window) DO UPDATE SET record = excluded.record",
            params![key.license_id, key.notice, key.window, to_json(&notification_item(key), record)?],
        )
        .map_err(sql_failure)?;
    Ok(())
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome> {
        let record = record.clone();
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            if let Some(existing) = load_notification(&tx, &record.key)? {
                match existing.state {
                    NotificationState::Sent { .. } => return Ok(ClaimOutcome::AlreadySent),
                    NotificationState::Pending { claimed_at, .. }
                        if claimed_at > shifted(now, -stale_after) =>
                    {
                        return Ok(ClaimOutcome::HeldByOther);
                    }
                    // A stale claim: its owner died between claiming and marking.
                    NotificationState::Pending { .. } => {}
                }
            }
            put_notification(&tx, &record)?;
            tx.commit().map_err(sql_failure)?;
            Ok(ClaimOutcome::Claimed)
        })
        .await
    }

    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        sent_at: Timestamp,
        message_id: &str,
    ) -> StoreResult<()> {
        let (key, claimant, message_id) = (key.clone(), claimant.to_owned(), message_id.to_owned());
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let mut record = load_notification(&tx, &key)?
                .ok_or_else(|| StoreError::NotFound(format!("notification {key:?}")))?;
            check_mark(&key, &record.state, &claimant, &message_id)?;
            record.state = NotificationState::Sent { sent_at, message_id };
            put_notification(&tx, &record)?;
            tx.commit().map_err(sql_failure)
        })
        .await
    }

    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>> {
        let license_id = license_id.to_owned();
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT notice, notice_window, record FROM notifications
                     WHERE license_id = ?1 ORDER BY notice, notice_window",
                )
                .map_err(sql_failure)?;
            let mut rows = statement.query([&license_id]).map_err(sql_failure)?;
            let mut records = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let item = || match (row.get::<_, String>(0), row.get::<_, String>(1)) {
                    (Ok(notice), Ok(window)) => format!("notification {license_id}/{notice}/{window}"),
                    _ => format!("notification {license_id}/(key unreadable)"),
                };
                records.push(record_at(row, 2, &item)?);
            }
            Ok(records)
        })
        .await
    }
}
