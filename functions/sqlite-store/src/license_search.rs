//! `search_licenses`: the portal's license list, on the search columns of schema version 3.
//!
//! Each sort has its own indexed column holding the core's sort key (`<value>#<id>`), so a
//! page is an index range read from the cursor on. The other columns narrow in SQL; the
//! core's `LicenseQuery::matches` on the decoded rows decides, exactly as the reference store.

use nls_core::license_search::{LicenseQuery, LicenseSort, LicenseSortField, SortDirection};
use nls_core::model::{Customer, License};
use nls_core::ports::{Page, PageRequest, StoreResult};
use rusqlite::{Connection, Transaction, params};

use crate::row_codec::{index_seconds, record_at, text_at};
use crate::sql_failure;

/// The search columns of one license, written with every create and update.
pub(crate) struct SearchColumns {
    pub tier: String,
    pub key_id: String,
    /// `\n`-separated, with a `\n` at each end, so `instr` finds a whole feature name.
    pub features: String,
    pub created_key: String,
    pub expiry_key: String,
    pub customer_key: String,
}

impl SearchColumns {
    pub(crate) fn of(l: &License) -> Self {
        let key = |field| LicenseSort { field, direction: SortDirection::Ascending }.key(l);
        Self {
            tier: l.tier.clone(),
            key_id: l.key_id.clone(),
            features: format!("\n{}\n", l.features.join("\n")),
            created_key: key(LicenseSortField::Created),
            expiry_key: key(LicenseSortField::ExpiresAt),
            customer_key: key(LicenseSortField::Customer),
        }
    }
}

/// Fills the search columns of rows written before schema version 3, from their records.
pub(crate) fn backfill(tx: &Transaction<'_>) -> StoreResult<()> {
    let mut rows = Vec::new();
    {
        let mut statement =
            tx.prepare("SELECT id, record FROM licenses WHERE created_key IS NULL").map_err(sql_failure)?;
        let mut found = statement.query([]).map_err(sql_failure)?;
        while let Some(row) = found.next().map_err(sql_failure)? {
            let id = text_at(row, 0, &|| "license (id unreadable)".to_owned())?;
            let license: License = record_at(row, 1, &|| format!("license {id}"))?;
            rows.push(license);
        }
    }
    for l in rows {
        let c = SearchColumns::of(&l);
        tx.execute(
            "UPDATE licenses SET tier = ?2, key_id = ?3, features = ?4, created_key = ?5,
                 expiry_key = ?6, customer_key = ?7
             WHERE id = ?1",
            params![l.id, c.tier, c.key_id, c.features, c.created_key, c.expiry_key, c.customer_key],
        )
        .map_err(sql_failure)?;
    }
    Ok(())
}

/// The statement for one sort: the column and direction come from a fixed list, never input.
pub(crate) fn search_sql(sort: &LicenseSort) -> String {
    let column = match sort.field {
        LicenseSortField::Created => "created_key",
        LicenseSortField::ExpiresAt => "expiry_key",
        LicenseSortField::Customer => "customer_key",
    };
    let (after, order) = match sort.direction {
        SortDirection::Ascending => (">", "ASC"),
        SortDirection::Descending => ("<", "DESC"),
    };
    // SQLite's lower() folds ASCII only, as the core's text rule does.
    format!(
        "SELECT l.id, l.record, c.record, l.{column} FROM licenses l
             LEFT JOIN customers c ON c.id = l.customer_id
         WHERE (?1 IS NULL OR l.{column} {after} ?1)
           AND (?2 IS NULL OR l.status = ?2)
           AND (?3 IS NULL OR l.tier = ?3)
           AND (?4 IS NULL OR instr(l.features, char(10) || ?4 || char(10)) > 0)
           AND (?5 IS NULL OR l.expires_at_s <= ?5)
           AND (?6 IS NULL OR l.customer_id = ?6)
           AND (?7 IS NULL OR l.stripe_subscription_id = ?7)
           AND (?8 IS NULL OR instr(lower(l.id), ?8) > 0 OR instr(lower(l.key_id), ?8) > 0
                OR instr(lower(json_extract(c.record, '$.name')), ?8) > 0
                OR instr(lower(json_extract(c.record, '$.email')), ?8) > 0)
         ORDER BY l.{column} {order}"
    )
}

pub(crate) fn search(
    connection: &Connection,
    query: &LicenseQuery,
    page: &PageRequest,
) -> StoreResult<Page<License>> {
    let limit = page.effective_limit();
    let after = page.cursor.as_deref().map(|c| query.sort.decode_cursor(c)).transpose()?;
    let text = query.normalized_text();
    let mut statement = connection.prepare_cached(&search_sql(&query.sort)).map_err(sql_failure)?;
    let mut rows = statement
        .query(params![
            after,
            query.status.map(|s| s.as_str()),
            query.tier,
            query.feature,
            query.expires_before.map(index_seconds),
            query.customer_id,
            query.stripe_subscription_id,
            text,
        ])
        .map_err(sql_failure)?;
    let mut items = Vec::new();
    let mut last_key = None;
    while let Some(row) = rows.next().map_err(sql_failure)? {
        let id = text_at(row, 0, &|| "license (id unreadable)".to_owned())?;
        let license: License = record_at(row, 1, &|| format!("license {id}"))?;
        let customer: Option<Customer> = match row.get_ref(2).map_err(sql_failure)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(record_at(row, 2, &|| format!("customer {}", license.customer_id))?),
        };
        if !query.matches(&license, customer.as_ref()) {
            continue;
        }
        if items.len() == limit {
            // One more match: there is a next page, after the last row returned.
            let next_cursor = last_key.map(|k: String| query.sort.cursor_for(&k));
            return Ok(Page { items, next_cursor });
        }
        last_key = Some(text_at(row, 3, &|| format!("license {id}"))?);
        items.push(license);
    }
    Ok(Page { items, next_cursor: None })
}
