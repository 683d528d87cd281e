//! `search_licenses` on DynamoDB (docs/dynamodb.md, "License search").
//!
//! - A subscription or customer filter reads that narrow set from `by_stripe` / `by_customer`
//!   whole and sorts it in memory (a customer has few licenses).
//! - Otherwise the sort's own GSI (`licenses_by_created`, `_by_expiry`, `_by_customer_order`)
//!   is read from the cursor on, in order. Filters DynamoDB cannot index (status, tier,
//!   feature, text) are applied to the rows read, and one call reads at most
//!   [`SEARCH_READ_BUDGET`] rows: a narrow filter can then return a short page whose cursor
//!   goes on from the last row read. Text needs the customers of the rows read (BatchGetItem).

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::KeysAndAttributes;
use nls_core::license_search::{
    LicenseQuery, LicenseSortField, SortDirection, fixed_width_time, page_in_memory,
};

use super::*;

/// Rows one search call reads from a sort index before it answers with what it found.
pub const SEARCH_READ_BUDGET: usize = 1_000;
/// Rows asked for per Query request.
const SEARCH_REQUEST_ROWS: i32 = 100;
/// DynamoDB's limit on keys per BatchGetItem.
const MAX_BATCH_GET_KEYS: usize = 100;
/// Rounds of retrying a BatchGetItem's unprocessed keys.
const BATCH_GET_ATTEMPTS: u32 = 8;

impl DynamoStore {
    /// The customers with these ids that exist, by id.
    async fn customers_by_id(&self, ids: &HashSet<String>) -> StoreResult<HashMap<String, Customer>> {
        let mut found = HashMap::new();
        let ids: Vec<&String> = ids.iter().collect();
        for chunk in ids.chunks(MAX_BATCH_GET_KEYS) {
            let keys: Vec<Item> =
                chunk.iter().map(|id| item_key(customer_pk(id), CUSTOMER_ITEM_SK)).collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?,
            );
            let mut attempt = 0;
            while let Some(keys) = request.take() {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", e))?;
                for item in output.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    let customer = customer_from_item(&item)?;
                    found.insert(customer.id.clone(), customer);
                }
                request = output.unprocessed_keys.and_then(|mut u| u.remove(&self.table));
                if request.is_some() {
                    attempt += 1;
                    if attempt >= BATCH_GET_ATTEMPTS {
                        return Err(StoreError::Unavailable("BatchGetItem left keys unprocessed".into()));
                    }
                    pause_before_retry(attempt).await;
                }
            }
        }
        Ok(found)
    }

    /// The customers `query`'s text filter needs for `licenses` (none without text).
    async fn customers_for(
        &self,
        query: &LicenseQuery,
        licenses: &[License],
    ) -> StoreResult<HashMap<String, Customer>> {
        if !query.needs_customer() {
            return Ok(HashMap::new());
        }
        self.customers_by_id(&licenses.iter().map(|l| l.customer_id.clone()).collect()).await
    }

    pub(super) async fn search_license_items(
        &self,
        query: &LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        let limit = page.effective_limit();
        let narrow = match (&query.stripe_subscription_id, &query.customer_id) {
            (Some(sub), _) => Some((GSI_BY_STRIPE, STRIPE_PK, stripe_subscription_gsi_pk(sub))),
            (None, Some(customer)) => Some((GSI_BY_CUSTOMER, CUSTOMER_PK, customer_pk(customer))),
            (None, None) => None,
        };
        if let Some((index, pk_attr, pk_value)) = narrow {
            if pk_value.len() > MAX_PARTITION_KEY_BYTES {
                return page_in_memory(&query.sort, Vec::new(), page.cursor.as_deref(), limit);
            }
            let key_query = KeyQuery {
                index: Some(index),
                key_condition: "#pk = :pk".into(),
                names: names(&[("#pk", pk_attr)]),
                values: values(vec![(":pk", s(pk_value))]),
                forward: true,
            };
            let mut licenses = Vec::new();
            for item in self.query_all(&key_query).await? {
                // `by_stripe` also holds customers under their own partition; only licenses here.
                licenses.push(license_from_item(&item)?);
            }
            let customers = self.customers_for(query, &licenses).await?;
            let matching = licenses.into_iter().filter(|l| query.matches(l, customers.get(&l.customer_id)));
            return page_in_memory(&query.sort, matching, page.cursor.as_deref(), limit);
        }
        self.search_sort_index(query, page.cursor.as_deref(), limit).await
    }

    async fn search_sort_index(
        &self,
        query: &LicenseQuery,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<License>> {
        let sort = query.sort;
        let after = cursor.map(|c| sort.decode_cursor(c)).transpose()?;
        let (index, sk_attr) = match sort.field {
            LicenseSortField::Created => (GSI_LICENSES_BY_CREATED, LICENSE_CREATED_SK),
            LicenseSortField::ExpiresAt => (GSI_LICENSES_BY_EXPIRY, LICENSE_EXPIRY_SK),
            LicenseSortField::Customer => (GSI_LICENSES_BY_CUSTOMER_ORDER, LICENSE_CUSTOMER_SK),
        };
        // In expiry order, "expires before" is a key bound: rows from it on cannot match.
        let expiry_bound = match sort.field {
            LicenseSortField::ExpiresAt => query.expires_before.map(fixed_width_time),
            _ => None,
        };
        let (start, comparison) = match sort.direction {
            SortDirection::Ascending => (after, ">"),
            SortDirection::Descending => {
                let start = match (after, expiry_bound.clone()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (start, "<")
            }
        };
        let mut key_condition = "#pk = :pk".to_owned();
        let mut query_names = vec![("#pk", KIND_PK)];
        let mut query_values = vec![(":pk", s(KIND_LICENSE))];
        if let Some(start) = start {
            key_condition.push_str(&format!(" AND #sk {comparison} :start"));
            query_names.push(("#sk", sk_attr));
            query_values.push((":start", s(start)));
        }
        let key_query = KeyQuery {
            index: Some(index),
            key_condition,
            names: names(&query_names),
            values: values(query_values),
            forward: sort.direction == SortDirection::Ascending,
        };
        let mut items = Vec::new();
        let mut last_returned: Option<String> = None;
        let mut read = 0;
        let mut start_key = None;
        loop {
            let (rows, next) = self.query_page(&key_query, start_key, Some(SEARCH_REQUEST_ROWS)).await?;
            let licenses = rows.iter().map(license_from_item).collect::<StoreResult<Vec<_>>>()?;
            let customers = self.customers_for(query, &licenses).await?;
            for license in licenses {
                let key = sort.key(&license);
                if sort.direction == SortDirection::Ascending
                    && expiry_bound.as_deref().is_some_and(|bound| key.as_str() >= bound)
                {
                    return Ok(Page { items, next_cursor: None });
                }
                read += 1;
                if query.matches(&license, customers.get(&license.customer_id)) {
                    if items.len() == limit {
                        let next_cursor = last_returned.map(|k| sort.cursor_for(&k));
                        return Ok(Page { items, next_cursor });
                    }
                    items.push(license);
                    last_returned = Some(key.clone());
                }
                if read >= SEARCH_READ_BUDGET {
                    // The budget is spent: answer with what was found, going on after this row.
                    return Ok(Page { items, next_cursor: Some(sort.cursor_for(&key)) });
                }
            }
            match next {
                Some(key) => start_key = Some(key),
                None => return Ok(Page { items, next_cursor: None }),
            }
        }
    }
}

impl DynamoStore {
    /// Adds the license sort keys (`license_*_sk`) to license items written before the sort
    /// indexes existed, so they show in the portal's sorted list (docs/dynamodb.md). Reads the
    /// `by_kind` license partition a page at a time; each update is conditional on the version
    /// read, so a license changed meanwhile (which wrote its keys itself) is left alone.
    /// Idempotent and safe while the service runs. Returns how many items it updated.
    pub async fn add_license_sort_keys(&self) -> StoreResult<usize> {
        let query = KeyQuery {
            index: Some(GSI_BY_KIND),
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", KIND_PK)]),
            values: values(vec![(":pk", s(KIND_LICENSE))]),
            forward: true,
        };
        let mut updated = 0;
        let mut start_key = None;
        loop {
            let (rows, next) = self.query_page(&query, start_key, Some(SEARCH_REQUEST_ROWS)).await?;
            for item in rows.iter().filter(|item| !item.contains_key(LICENSE_CREATED_SK)) {
                let license = license_from_item(item)?;
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(item_key(license_pk(&license.id), LICENSE_ITEM_SK)))
                    .update_expression("SET #created = :created, #expiry = :expiry, #customer = :customer")
                    .condition_expression("version = :version")
                    .set_expression_attribute_names(Some(names(&[
                        ("#created", LICENSE_CREATED_SK),
                        ("#expiry", LICENSE_EXPIRY_SK),
                        ("#customer", LICENSE_CUSTOMER_SK),
                    ])))
                    .set_expression_attribute_values(Some(values(vec![
                        (":created", s(license_sort_key(LicenseSortField::Created, &license))),
                        (":expiry", s(license_sort_key(LicenseSortField::ExpiresAt, &license))),
                        (":customer", s(license_sort_key(LicenseSortField::Customer, &license))),
                        (":version", n(license.version)),
                    ])))
                    .send()
                    .await;
                match result {
                    Ok(_) => updated += 1,
                    Err(SdkError::ServiceError(service))
                        if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                    Err(err) => return Err(sdk_error("UpdateItem", err)),
                }
            }
            match next {
                Some(key) => start_key = Some(key),
                None => return Ok(updated),
            }
        }
    }
}
