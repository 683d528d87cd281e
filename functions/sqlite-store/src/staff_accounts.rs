//! Staff users (written by `UnitOfWork::commit`, read here) and their portal sessions.
//!
//! `touch_session` reads and writes in one `BEGIN IMMEDIATE` transaction, so two requests of
//! one session cannot move `last_seen_at` backwards between them. A new session purges the
//! sessions whose absolute timeout passed before it was created, through the expiry index:
//! SQLite's stand-in for DynamoDB's TTL.

use async_trait::async_trait;
use nls_core::model::*;
use nls_core::ports::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{index_seconds, record_at, text_at, to_json};
use crate::{SqliteStore, sql_failure};

fn session_item(token_sha256: &str) -> String {
    // A prefix names the session in errors without writing the whole hash into logs.
    format!("staff session {}…", token_sha256.get(..8).unwrap_or(token_sha256))
}

fn load_session(connection: &Connection, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
    connection
        .query_row("SELECT record FROM staff_sessions WHERE token_sha256 = ?1", [token_sha256], |row| {
            Ok(record_at(row, 0, &|| session_item(token_sha256)))
        })
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

/// The first staff user of `sql` (which selects `id, record` with one parameter).
fn load_staff_user(connection: &Connection, sql: &str, key: &str) -> StoreResult<Option<StaffUser>> {
    connection
        .query_row(sql, [key], |row| {
            let id = text_at(row, 0, &|| "staff user (id unreadable)".to_owned());
            Ok(id.and_then(|id| record_at(row, 1, &|| format!("staff user {id}"))))
        })
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

#[async_trait]
impl StaffStore for SqliteStore {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>> {
        let id = id.to_owned();
        self.with_connection(move |connection| {
            load_staff_user(connection, "SELECT id, record FROM staff_users WHERE id = ?1", &id)
        })
        .await
    }

    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>> {
        let email = email.to_lowercase();
        self.with_connection(move |connection| {
            load_staff_user(connection, "SELECT id, record FROM staff_users WHERE email = ?1", &email)
        })
        .await
    }

    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT id, record FROM staff_users ORDER BY email")
                .map_err(sql_failure)?;
            let mut rows = statement.query([]).map_err(sql_failure)?;
            let mut users = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let id = text_at(row, 0, &|| "staff user (id unreadable)".to_owned())?;
                users.push(record_at(row, 1, &|| format!("staff user {id}"))?);
            }
            Ok(users)
        })
        .await
    }

    async fn create_session(&self, session: &StaffSession) -> StoreResult<()> {
        let session = session.clone();
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            // Whole seconds round down, so every purged session expired before this one began.
            tx.execute(
                "DELETE FROM staff_sessions WHERE expires_at_s < ?1",
                [index_seconds(session.created_at)],
            )
            .map_err(sql_failure)?;
            let item = session_item(&session.token_sha256);
            let inserted = tx
                .execute(
                    "INSERT INTO staff_sessions (token_sha256, user_id, expires_at_s, record)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (token_sha256) DO NOTHING",
                    params![
                        session.token_sha256,
                        session.user_id,
                        index_seconds(session.expires_at),
                        to_json(&item, &session)?,
                    ],
                )
                .map_err(sql_failure)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(item));
            }
            tx.commit().map_err(sql_failure)
        })
        .await
    }

    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
        let token_sha256 = token_sha256.to_owned();
        self.with_connection(move |connection| load_session(connection, &token_sha256)).await
    }

    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()> {
        let token_sha256 = token_sha256.to_owned();
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let Some(session) = load_session(&tx, &token_sha256)? else { return Ok(()) };
            if last_seen_at <= session.last_seen_at {
                return Ok(());
            }
            let touched = StaffSession { last_seen_at, ..session };
            tx.execute(
                "UPDATE staff_sessions SET record = ?2 WHERE token_sha256 = ?1",
                params![token_sha256, to_json(&session_item(&token_sha256), &touched)?],
            )
            .map_err(sql_failure)?;
            tx.commit().map_err(sql_failure)
        })
        .await
    }

    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        let token_sha256 = token_sha256.to_owned();
        self.with_connection(move |connection| {
            connection
                .execute("DELETE FROM staff_sessions WHERE token_sha256 = ?1", [&token_sha256])
                .map_err(sql_failure)?;
            Ok(())
        })
        .await
    }
}
