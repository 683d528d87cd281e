//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each table keeps the whole record as JSON in `record` (the domain types' serde form) and, as
//! explicit columns, only what queries look up or filter on. Times are encoded one way:
//!
//! - exact times are RFC 3339 text with nanoseconds (inside the JSON records, and
//!   `activations.activated_at`);
//! - `*_s` columns hold whole unix seconds (rounded down), only to narrow an index range. The
//!   exact comparison is then made on the decoded record, so results match the reference store
//!   to the nanosecond.
//!
//! A migration is appended, never edited: a database at version N runs `MIGRATIONS[N..]`.

use nls_core::ports::{StoreError, StoreResult};
use rusqlite::{Connection, TransactionBehavior};

use crate::sql_failure;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE customers (
        id TEXT PRIMARY KEY NOT NULL,
        -- Not UNIQUE: only creation refuses a taken Stripe id (as the reference store does).
        stripe_customer_id TEXT,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX customers_by_stripe_id ON customers (stripe_customer_id, id)
        WHERE stripe_customer_id IS NOT NULL;

    CREATE TABLE licenses (
        id TEXT PRIMARY KEY NOT NULL,
        customer_id TEXT NOT NULL,
        status TEXT NOT NULL,
        expires_at_s INTEGER,
        stripe_subscription_id TEXT,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX licenses_by_customer ON licenses (customer_id, id);
    CREATE INDEX licenses_by_expiry ON licenses (expires_at_s) WHERE expires_at_s IS NOT NULL;
    CREATE INDEX licenses_by_subscription ON licenses (stripe_subscription_id, id)
        WHERE stripe_subscription_id IS NOT NULL;

    CREATE TABLE deployments (
        license_id TEXT NOT NULL,
        deployment_id TEXT NOT NULL,
        lease_expires_at_s INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (license_id, deployment_id)
    ) WITHOUT ROWID;

    -- Times of new activations per license, for churn protection.
    CREATE TABLE activations (
        license_id TEXT NOT NULL,
        activated_at TEXT NOT NULL
    );
    CREATE INDEX activations_by_license ON activations (license_id);

    CREATE TABLE usage_batches (
        license_id TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        PRIMARY KEY (license_id, batch_id)
    ) WITHOUT ROWID;

    -- `total` is a u64 stored bit for bit in SQLite's signed INTEGER; SQL never does
    -- arithmetic on it (the store adds in Rust, saturating, as the reference store does).
    CREATE TABLE usage_counters (
        license_id TEXT NOT NULL,
        period TEXT NOT NULL,
        metric TEXT NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (license_id, period, metric)
    ) WITHOUT ROWID;

    -- `secret_sha256` has its own column: the record's serde form skips it.
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY NOT NULL,
        secret_sha256 TEXT NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;

    -- `seq` is insertion order, which is what "newest first" means (as in the reference store).
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        actor TEXT NOT NULL,
        target TEXT NOT NULL,
        at_s INTEGER NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX audit_by_actor ON audit (actor, seq);
    CREATE INDEX audit_by_target ON audit (target, seq);

    CREATE TABLE webhook_events (
        event_id TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE notifications (
        license_id TEXT NOT NULL,
        notice TEXT NOT NULL,
        notice_window TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (license_id, notice, notice_window)
    ) WITHOUT ROWID;

    CREATE TABLE validation_logs (
        seq INTEGER PRIMARY KEY,
        license_id TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX validation_logs_by_license ON validation_logs (license_id, seq);
    "#,
    // 2: staff accounts and their portal sessions. `email` is UNIQUE: the store, not a
    // read-then-write in the caller, keeps one account per (lower-case) email.
    r#"
    CREATE TABLE staff_users (
        id TEXT PRIMARY KEY NOT NULL,
        email TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL
    ) WITHOUT ROWID;

    -- Keyed by the SHA-256 of the cookie token; `expires_at_s` lets expired sessions be
    -- purged through an index.
    CREATE TABLE staff_sessions (
        token_sha256 TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL,
        expires_at_s INTEGER NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX staff_sessions_by_expiry ON staff_sessions (expires_at_s);
    "#,
    // 3: the times retention prunes by (`retention`), as whole unix seconds. Rows written
    // before this version are stamped from their record, or with the migration's time.
    r#"
    ALTER TABLE usage_batches ADD COLUMN recorded_at_s INTEGER NOT NULL DEFAULT 0;
    UPDATE usage_batches SET recorded_at_s = CAST(strftime('%s', 'now') AS INTEGER);
    CREATE INDEX usage_batches_by_age ON usage_batches (recorded_at_s);

    ALTER TABLE webhook_events ADD COLUMN received_at_s INTEGER NOT NULL DEFAULT 0;
    UPDATE webhook_events SET received_at_s = COALESCE(
        CAST(strftime('%s', json_extract(record, '$.received_at')) AS INTEGER),
        CAST(strftime('%s', 'now') AS INTEGER));
    CREATE INDEX webhook_events_by_age ON webhook_events (received_at_s);

    ALTER TABLE validation_logs ADD COLUMN at_s INTEGER NOT NULL DEFAULT 0;
    UPDATE validation_logs SET at_s = COALESCE(
        CAST(strftime('%s', json_extract(record, '$.at')) AS INTEGER),
        CAST(strftime('%s', 'now') AS INTEGER));
    CREATE INDEX validation_logs_by_age ON validation_logs (at_s);
    "#,
    // 4: the portal's license search (license_search.rs): the filter columns and one sort-key
    // column per sort, each indexed. Rows written before are filled in by `backfill`.
    r#"
    ALTER TABLE licenses ADD COLUMN tier TEXT;
    ALTER TABLE licenses ADD COLUMN key_id TEXT;
    ALTER TABLE licenses ADD COLUMN features TEXT;
    ALTER TABLE licenses ADD COLUMN created_key TEXT;
    ALTER TABLE licenses ADD COLUMN expiry_key TEXT;
    ALTER TABLE licenses ADD COLUMN customer_key TEXT;
    CREATE INDEX licenses_by_created_key ON licenses (created_key);
    CREATE INDEX licenses_by_expiry_key ON licenses (expiry_key);
    CREATE INDEX licenses_by_customer_key ON licenses (customer_key);
    "#,
    // 5: validation events from every edge and the origin (issue 12): batch ids counted
    // once, per-license daily aggregates as counters (rows keyed by value for the distinct
    // counts, at most `DISTINCT_VALUES_KEPT` per kind and day), compliance records.
    r#"
    CREATE TABLE validation_event_batches (
        batch_id TEXT PRIMARY KEY NOT NULL,
        received_at_s INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE validation_days (
        license_id TEXT NOT NULL,
        day TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (license_id, day)
    ) WITHOUT ROWID;
    CREATE TABLE validation_day_codes (
        license_id TEXT NOT NULL,
        day TEXT NOT NULL,
        code TEXT NOT NULL,
        total INTEGER NOT NULL,
        PRIMARY KEY (license_id, day, code)
    ) WITHOUT ROWID;
    CREATE TABLE validation_day_values (
        license_id TEXT NOT NULL,
        day TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        total INTEGER NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (license_id, day, kind, value)
    ) WITHOUT ROWID;
    CREATE TABLE validation_day_untracked (
        license_id TEXT NOT NULL,
        day TEXT NOT NULL,
        kind TEXT NOT NULL,
        events INTEGER NOT NULL,
        PRIMARY KEY (license_id, day, kind)
    ) WITHOUT ROWID;
    CREATE TABLE compliance_records (
        license_id TEXT NOT NULL,
        day TEXT NOT NULL,
        flagged INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (license_id, day)
    ) WITHOUT ROWID;
    CREATE INDEX compliance_flagged_by_day ON compliance_records (day, license_id) WHERE flagged = 1;
    "#,
];

/// The migration that added the license search columns (1-based), after which existing rows
/// are backfilled in the same transaction.
const SEARCH_COLUMNS_VERSION: usize = 4;

/// Brings the schema to the newest version, in one transaction.
pub(crate) fn migrate(connection: &mut Connection) -> StoreResult<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
    let stored_version: i64 =
        tx.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sql_failure)?;
    let applied =
        usize::try_from(stored_version).ok().filter(|v| *v <= MIGRATIONS.len()).ok_or_else(|| {
            StoreError::Corrupt {
                item: "database schema".to_owned(),
                reason: format!(
                    "schema version {stored_version} is not one this build knows (it knows up to {})",
                    MIGRATIONS.len()
                ),
            }
        })?;
    if applied == MIGRATIONS.len() {
        return Ok(());
    }
    for migration in &MIGRATIONS[applied..] {
        tx.execute_batch(migration).map_err(sql_failure)?;
    }
    if applied < SEARCH_COLUMNS_VERSION {
        crate::license_search::backfill(&tx)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64).map_err(sql_failure)?;
    tx.commit().map_err(sql_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_records_the_version() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        migrate(&mut connection).unwrap();
        let version: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_version_1_database_gains_the_staff_tables_and_keeps_its_rows() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        connection.execute("INSERT INTO customers (id, record) VALUES ('cus_1', '{}')", []).unwrap();
        migrate(&mut connection).unwrap();
        let customers: i64 =
            connection.query_row("SELECT count(*) FROM customers", [], |r| r.get(0)).unwrap();
        let staff: i64 = connection.query_row("SELECT count(*) FROM staff_users", [], |r| r.get(0)).unwrap();
        assert_eq!((customers, staff), (1, 0));
    }

    #[test]
    fn a_version_2_database_gets_search_columns_for_its_licenses() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(MIGRATIONS[0]).unwrap();
        connection.execute_batch(MIGRATIONS[1]).unwrap();
        connection.pragma_update(None, "user_version", 2).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().to_utc();
        let mut license = nls_core::issuing::new_license("cus_1", Default::default(), at);
        license.features = vec!["sso".into()];
        connection
            .execute(
                "INSERT INTO licenses (id, customer_id, status, record) VALUES (?1, 'cus_1', 'active', ?2)",
                rusqlite::params![license.id, serde_json::to_string(&license).unwrap()],
            )
            .unwrap();
        migrate(&mut connection).unwrap();
        let (created_key, features): (String, String) = connection
            .query_row("SELECT created_key, features FROM licenses", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(created_key, format!("2026-11-30T12:00:00.000000000Z#{}", license.id));
        assert_eq!(features, "\nsso\n");
    }

    #[test]
    fn every_search_sort_reads_its_index() {
        use nls_core::license_search::{LicenseSort, LicenseSortField, SortDirection};
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        for field in LicenseSortField::ALL {
            for direction in [SortDirection::Ascending, SortDirection::Descending] {
                let sql = crate::license_search::search_sql(&LicenseSort { field, direction });
                let plan: Vec<String> = connection
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap()
                    .query_map(
                        rusqlite::params![
                            None::<String>,
                            None::<String>,
                            None::<String>,
                            None::<String>,
                            None::<i64>,
                            None::<String>,
                            None::<String>,
                            None::<String>
                        ],
                        |row| row.get::<_, String>(3),
                    )
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert!(
                    plan.iter().any(|step| step.contains("USING INDEX licenses_by_")),
                    "{field:?} {direction:?}: {plan:?}"
                );
                assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "sorts in memory: {plan:?}");
            }
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        let error = migrate(&mut connection).unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt { ref item, .. } if item == "database schema"),
            "{error}"
        );
    }

    #[test]
    fn expiry_queries_use_the_expiry_index() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        let plan: Vec<String> = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {}", crate::records::EXPIRING_BETWEEN_SQL))
            .unwrap()
            .query_map([0_i64, 10], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("USING INDEX licenses_by_expiry")), "{plan:?}");
    }
}
