//! `UnitOfWork::commit`: every write of a commit, and its once-guard, in one transaction.

use async_trait::async_trait;
use nls_core::model::*;
use nls_core::ports::*;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use crate::license_search::SearchColumns;
use crate::row_codec::{index_seconds, record_at, to_json};
use crate::{SqliteStore, sql_failure};

#[async_trait]
impl UnitOfWork for SqliteStore {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome> {
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            if let Some(OnceGuard::WebhookEvent(event)) = &guard {
                let item = format!("webhook event {}", event.event_id);
                let inserted = tx
                    .execute(
                        "INSERT INTO webhook_events (event_id, record, received_at_s) VALUES (?1, ?2, ?3)
                         ON CONFLICT (event_id) DO NOTHING",
                        params![event.event_id, to_json(&item, event)?, index_seconds(event.received_at)],
                    )
                    .map_err(sql_failure)?;
                if inserted == 0 {
                    return Ok(CommitOutcome::Duplicate);
                }
            }
            // An early return drops `tx`, which rolls back: all writes or none.
            for write in writes {
                apply_write(&tx, write)?;
            }
            tx.commit().map_err(sql_failure)?;
            Ok(CommitOutcome::Applied)
        })
        .await
    }
}

fn apply_write(tx: &Transaction<'_>, write: Write) -> StoreResult<()> {
    match write {
        Write::CreateCustomer(customer) => {
            let item = format!("customer {}", customer.id);
            let taken: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)
                         OR (?2 IS NOT NULL AND EXISTS (
                             SELECT 1 FROM customers WHERE stripe_customer_id = ?2))",
                    params![customer.id, customer.stripe_customer_id],
                    |row| row.get(0),
                )
                .map_err(sql_failure)?;
            if taken {
                return Err(StoreError::AlreadyExists(item));
            }
            tx.execute(
                "INSERT INTO customers (id, stripe_customer_id, record) VALUES (?1, ?2, ?3)",
                params![customer.id, customer.stripe_customer_id, to_json(&item, &customer)?],
            )
            .map_err(sql_failure)?;
        }
        Write::UpdateCustomer(customer) => {
            let item = format!("customer {}", customer.id);
            let updated = tx
                .execute(
                    "UPDATE customers SET stripe_customer_id = ?2, record = ?3 WHERE id = ?1",
                    params![customer.id, customer.stripe_customer_id, to_json(&item, &customer)?],
                )
                .map_err(sql_failure)?;
            if updated == 0 {
                return Err(StoreError::NotFound(item));
            }
        }
        Write::DeleteCustomer { id } => {
            // Checked inside the write transaction, so no license can be created in between.
            let has_licenses: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM licenses WHERE customer_id = ?1)", [&id], |row| {
                    row.get(0)
                })
                .map_err(sql_failure)?;
            if has_licenses {
                return Err(StoreError::StillReferenced(format!("customer {id}")));
            }
            let deleted = tx.execute("DELETE FROM customers WHERE id = ?1", [&id]).map_err(sql_failure)?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("customer {id}")));
            }
        }
        Write::CreateLicense(license) => {
            let item = format!("license {}", license.id);
            let customer_exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)",
                    [&license.customer_id],
                    |row| row.get(0),
                )
                .map_err(sql_failure)?;
            if !customer_exists {
                return Err(StoreError::NotFound(format!("customer {}", license.customer_id)));
            }
            let search = SearchColumns::of(&license);
            let inserted = tx
                .execute(
                    "INSERT INTO licenses
                         (id, customer_id, status, expires_at_s, stripe_subscription_id, record,
                          tier, key_id, features, created_key, expiry_key, customer_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        license.id,
                        license.customer_id,
                        license.status.as_str(),
                        license.expires_at.map(index_seconds),
                        license.stripe_subscription_id,
                        to_json(&item, &license)?,
                        search.tier,
                        search.key_id,
                        search.features,
                        search.created_key,
                        search.expiry_key,
                        search.customer_key,
                    ],
                )
                .map_err(sql_failure)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(item));
            }
        }
        Write::UpdateLicense { license, expected_version } => {
            let item = format!("license {}", license.id);
            let stored_version = tx
                .query_row("SELECT record FROM licenses WHERE id = ?1", [&license.id], |row| {
                    Ok(record_at::<License>(row, 0, &|| item.clone()).map(|stored| stored.version))
                })
                .optional()
                .map_err(sql_failure)?
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(item.clone()))?;
            if stored_version != expected_version {
                return Err(StoreError::Conflict(item));
            }
            let search = SearchColumns::of(&license);
            tx.execute(
                "UPDATE licenses SET customer_id = ?2, status = ?3, expires_at_s = ?4,
                     stripe_subscription_id = ?5, record = ?6, tier = ?7, key_id = ?8,
                     features = ?9, created_key = ?10, expiry_key = ?11, customer_key = ?12
                 WHERE id = ?1",
                params![
                    license.id,
                    license.customer_id,
                    license.status.as_str(),
                    license.expires_at.map(index_seconds),
                    license.stripe_subscription_id,
                    to_json(&item, &license)?,
                    search.tier,
                    search.key_id,
                    search.features,
                    search.created_key,
                    search.expiry_key,
                    search.customer_key,
                ],
            )
            .map_err(sql_failure)?;
        }
        Write::PutApiKey(key) => {
            let item = format!("api key {}", key.id);
            tx.execute(
                "INSERT INTO api_keys (id, secret_sha256, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256,
                     record = excluded.record",
                params![key.id, key.secret_sha256, to_json(&item, &key)?],
            )
            .map_err(sql_failure)?;
        }
        Write::CreateStaffUser(user) => {
            let item = format!("staff user {}", user.id);
            // Both the id and the email are unique keys: either taken refuses the insert.
            let inserted = tx
                .execute(
                    "INSERT INTO staff_users (id, email, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![user.id, user.email, to_json(&item, &user)?],
                )
                .map_err(sql_failure)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(item));
            }
        }
        Write::UpdateStaffUser { user, expected_version } => {
            let item = format!("staff user {}", user.id);
            let stored = tx
                .query_row("SELECT record FROM staff_users WHERE id = ?1", [&user.id], |row| {
                    Ok(record_at::<StaffUser>(row, 0, &|| item.clone()))
                })
                .optional()
                .map_err(sql_failure)?
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(item.clone()))?;
            if stored.version != expected_version || stored.email != user.email {
                return Err(StoreError::Conflict(item));
            }
            tx.execute(
                "UPDATE staff_users SET record = ?2 WHERE id = ?1",
                params![user.id, to_json(&item, &user)?],
            )
            .map_err(sql_failure)?;
        }
        Write::Audit(entry) => {
            let item = format!("audit entry {}", entry.id);
            tx.execute(
                "INSERT INTO audit (actor, target, at_s, record) VALUES (?1, ?2, ?3, ?4)",
                params![entry.actor, entry.target, index_seconds(entry.at), to_json(&item, &entry)?],
            )
            .map_err(sql_failure)?;
        }
    }
    Ok(())
}
