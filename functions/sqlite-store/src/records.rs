//! Reads of customers, licenses, API keys, the audit trail and validation logs (and appending
//! validation logs, which no invariant guards).

use async_trait::async_trait;
use nls_core::model::*;
use nls_core::ports::*;
use nls_core::validation::StatusSnapshot;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{index_seconds, record_at, sql_limit, text_at, to_json};
use crate::{SqliteStore, sql_failure};

/// Candidates for `licenses_expiring_between`, narrowed on the expiry index.
pub(crate) const EXPIRING_BETWEEN_SQL: &str = "SELECT id, record FROM licenses
     WHERE expires_at_s >= ?1 AND expires_at_s <= ?2 ORDER BY id";

/// Collects up to `limit` items (in query order) and the cursor of the next page, as the
/// reference store pages: the cursor is the last returned id, given only when more follow.
struct PageCollector<T> {
    limit: usize,
    items: Vec<(String, T)>,
    has_more: bool,
}

impl<T> PageCollector<T> {
    fn new(limit: usize) -> Self {
        Self { limit, items: Vec::new(), has_more: false }
    }
    /// Returns `false` once the page is full and one more item proved there is a next page.
    fn push(&mut self, cursor: String, item: T) -> bool {
        if self.items.len() == self.limit {
            self.has_more = true;
            return false;
        }
        self.items.push((cursor, item));
        true
    }
    fn finish(self) -> Page<T> {
        let next_cursor = if self.has_more { self.items.last().map(|(c, _)| c.clone()) } else { None };
        Page { items: self.items.into_iter().map(|(_, t)| t).collect(), next_cursor }
    }
}

fn load_license(connection: &Connection, id: &str) -> StoreResult<Option<License>> {
    let item = || format!("license {id}");
    connection
        .query_row("SELECT record FROM licenses WHERE id = ?1", [id], |row| Ok(record_at(row, 0, &item)))
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

fn load_customer(connection: &Connection, id: &str) -> StoreResult<Option<Customer>> {
    let item = || format!("customer {id}");
    connection
        .query_row("SELECT record FROM customers WHERE id = ?1", [id], |row| Ok(record_at(row, 0, &item)))
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

#[async_trait]
impl CustomerStore for SqliteStore {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>> {
        let id = id.to_owned();
        self.with_connection(move |connection| load_customer(connection, &id)).await
    }

    async fn find_customer_by_stripe_id(&self, stripe_customer_id: &str) -> StoreResult<Option<Customer>> {
        let stripe_customer_id = stripe_customer_id.to_owned();
        self.with_connection(move |connection| {
            let found = connection
                .query_row(
                    "SELECT id, record FROM customers WHERE stripe_customer_id = ?1 ORDER BY id LIMIT 1",
                    [&stripe_customer_id],
                    |row| {
                        let item = || match row.get::<_, String>(0) {
                            Ok(id) => format!("customer {id}"),
                            Err(_) => format!("customer with Stripe id {stripe_customer_id}"),
                        };
                        Ok(record_at(row, 1, &item))
                    },
                )
                .optional()
                .map_err(sql_failure)?;
            found.transpose()
        })
        .await
    }

    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>> {
        let page = page.clone();
        self.with_connection(move |connection| {
            let limit = page.effective_limit();
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, record FROM customers WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(sql_failure)?;
            let mut rows =
                statement.query(params![page.id_cursor()?, sql_limit(limit + 1)]).map_err(sql_failure)?;
            let mut collector = PageCollector::new(limit);
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let id = text_at(row, 0, &|| "customer (id unreadable)".to_owned())?;
                let customer = record_at(row, 1, &|| format!("customer {id}"))?;
                if !collector.push(id, customer) {
                    break;
                }
            }
            Ok(collector.finish())
        })
        .await
    }
}

#[async_trait]
impl LicenseStore for SqliteStore {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        let id = id.to_owned();
        self.with_connection(move |connection| load_license(connection, &id)).await
    }

    async fn find_license_by_subscription(&self, sub: &str) -> StoreResult<Option<License>> {
        let sub = sub.to_owned();
        self.with_connection(move |connection| {
            let found = connection
                .query_row(
                    "SELECT id, record FROM licenses WHERE stripe_subscription_id = ?1 ORDER BY id LIMIT 1",
                    [&sub],
                    |row| {
                        let item = || match row.get::<_, String>(0) {
                            Ok(id) => format!("license {id}"),
                            Err(_) => format!("license with subscription {sub}"),
                        };
                        Ok(record_at(row, 1, &item))
                    },
                )
                .optional()
                .map_err(sql_failure)?;
            found.transpose()
        })
        .await
    }

    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.with_connection(move |connection| {
            let limit = page.effective_limit();
            // The columns narrow; `filter.matches` on the decoded record decides, exactly.
            let mut statement = connection
                .prepare_cached(
                    "SELECT id, record FROM licenses
                     WHERE (?1 IS NULL OR id > ?1)
                       AND (?2 IS NULL OR customer_id = ?2)
                       AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR expires_at_s <= ?4)
                     ORDER BY id",
                )
                .map_err(sql_failure)?;
            let mut rows = statement
                .query(params![
                    page.id_cursor()?,
                    filter.customer_id,
                    filter.status.map(|s| s.as_str()),
                    filter.expires_before.map(index_seconds),
                ])
                .map_err(sql_failure)?;
            let mut collector = PageCollector::new(limit);
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let id = text_at(row, 0, &|| "license (id unreadable)".to_owned())?;
                let license: License = record_at(row, 1, &|| format!("license {id}"))?;
                if filter.matches(&license) && !collector.push(id, license) {
                    break;
                }
            }
            Ok(collector.finish())
        })
        .await
    }

    async fn search_licenses(
        &self,
        query: &nls_core::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        let (query, page) = (query.clone(), page.clone());
        self.with_connection(move |connection| crate::license_search::search(connection, &query, &page)).await
    }

    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>> {
        self.with_connection(move |connection| {
            let mut statement = connection.prepare_cached(EXPIRING_BETWEEN_SQL).map_err(sql_failure)?;
            let mut rows =
                statement.query(params![index_seconds(from), index_seconds(to)]).map_err(sql_failure)?;
            let mut expiring = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let id = text_at(row, 0, &|| "license (id unreadable)".to_owned())?;
                let license: License = record_at(row, 1, &|| format!("license {id}"))?;
                if license.expires_at.is_some_and(|e| e >= from && e < to) {
                    expiring.push(license);
                }
            }
            Ok(expiring)
        })
        .await
    }

    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>> {
        let id = id.to_owned();
        self.with_connection(move |connection| {
            // One read transaction: the three reads see the same committed state.
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Deferred).map_err(sql_failure)?;
            let Some(license) = load_license(&tx, &id)? else { return Ok(None) };
            let live_deployments = crate::deployments::live_deployments(&tx, &id, now)?
                .into_iter()
                .map(|d| d.deployment_id)
                .collect();
            let month_usage = crate::usage::period_counters(&tx, &id, &UsagePeriod::month_of(now).key())?;
            tx.commit().map_err(sql_failure)?;
            Ok(Some(StatusSnapshot { license, live_deployments, month_usage, as_of: now }))
        })
        .await
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT id, secret_sha256, record FROM api_keys WHERE id = ?1")
                .map_err(sql_failure)?;
            let mut rows = statement.query([&id]).map_err(sql_failure)?;
            match rows.next().map_err(sql_failure)? {
                Some(row) => api_key_from_row(row).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare_cached("SELECT id, secret_sha256, record FROM api_keys ORDER BY id")
                .map_err(sql_failure)?;
            let mut rows = statement.query([]).map_err(sql_failure)?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                keys.push(api_key_from_row(row)?);
            }
            Ok(keys)
        })
        .await
    }
}

/// The record's serde form skips the secret hash, so it comes from its own column.
fn api_key_from_row(row: &rusqlite::Row<'_>) -> StoreResult<ApiKeyRecord> {
    let id = text_at(row, 0, &|| "api key (id unreadable)".to_owned())?;
    let item = || format!("api key {id}");
    let secret_sha256 = text_at(row, 1, &item)?;
    let record: ApiKeyRecord = record_at(row, 2, &item)?;
    Ok(ApiKeyRecord { secret_sha256, ..record })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.with_connection(move |connection| {
            let limit = page.effective_limit();
            // The cursor is the `seq` of the last entry returned (always positive).
            let before_seq = match page.cursor.as_deref() {
                None => None,
                Some(c) => Some(
                    c.parse::<i64>()
                        .ok()
                        .filter(|&seq| seq > 0)
                        .ok_or_else(|| StoreError::InvalidCursor(c.to_owned()))?,
                ),
            };
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, record FROM audit
                     WHERE (?1 IS NULL OR seq < ?1)
                       AND (?2 IS NULL OR actor = ?2)
                       AND (?3 IS NULL OR target = ?3)
                       AND (?4 IS NULL OR at_s >= ?4)
                       AND (?5 IS NULL OR at_s <= ?5)
                     ORDER BY seq DESC",
                )
                .map_err(sql_failure)?;
            let mut rows = statement
                .query(params![
                    before_seq,
                    filter.actor,
                    filter.target,
                    filter.since.map(index_seconds),
                    filter.until.map(index_seconds),
                ])
                .map_err(sql_failure)?;
            let mut collector = PageCollector::new(limit);
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let seq: i64 = row.get(0).map_err(sql_failure)?;
                let entry: AuditEntry = record_at(row, 1, &|| format!("audit entry #{seq}"))?;
                if filter.matches(&entry) && !collector.push(seq.to_string(), entry) {
                    break;
                }
            }
            Ok(collector.finish())
        })
        .await
    }
}

#[async_trait]
impl ValidationLogStore for SqliteStore {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO validation_logs (license_id, record, at_s) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql_failure)?;
                for entry in &entries {
                    let item = format!("validation log of license {}", entry.license_id);
                    insert
                        .execute(params![entry.license_id, to_json(&item, entry)?, index_seconds(entry.at)])
                        .map_err(sql_failure)?;
                }
            }
            tx.commit().map_err(sql_failure)
        })
        .await
    }

    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>> {
        let license_id = license_id.to_owned();
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, record FROM validation_logs WHERE license_id = ?1 ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(sql_failure)?;
            let mut rows = statement.query(params![license_id, sql_limit(limit)]).map_err(sql_failure)?;
            let mut entries = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let seq: i64 = row.get(0).map_err(sql_failure)?;
                entries.push(record_at(row, 1, &|| format!("validation log #{seq}"))?);
            }
            Ok(entries)
        })
        .await
    }
}
