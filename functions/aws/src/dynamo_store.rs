//! The DynamoDB store: every core port on one table (docs/dynamodb.md). Each invariant is one
//! conditional write or one transaction, never a read followed by an unguarded write:
//!
//! - deployment limit: the per-license seats item, replaced only if its `version` is unchanged;
//! - usage batches: a `BATCH#` marker (`attribute_not_exists`) and the counter `ADD`s in one
//!   TransactWriteItems;
//! - webhook events: the event item (`attribute_not_exists`) in the same transaction as the
//!   event's writes;
//! - notices: a conditional put that only succeeds on a new or stale claim;
//! - licenses and staff users: optimistic `version` on every update;
//! - staff emails: a `STAFF_EMAIL#` claim item (`attribute_not_exists`) in the user's
//!   transaction.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update, WriteRequest,
};
use chrono::Duration;
use nls_core::model::*;
use nls_core::ports::*;
use nls_core::validation::StatusSnapshot;

use crate::client_setup::{ClientTuning, dynamodb_client, load_sdk_config};
use crate::item_mapping::*;
use crate::store_errors::{build_error, sdk_error};
use crate::table_keys::*;

mod license_search;
pub use license_search::SEARCH_READ_BUDGET;

/// Processed Stripe events are kept this long (Stripe retries for up to three days).
pub const WEBHOOK_EVENT_RETENTION: Duration = Duration::days(30);
/// Validation logs expire through the table TTL after this long.
pub const VALIDATION_LOG_RETENTION: Duration = Duration::days(90);
/// A lapsed lease stays listed this long, then the next activation prunes it. Churn
/// protection bounds how many lapsed leases can pile up in the seats item meanwhile.
pub const LAPSED_LEASE_RETENTION: Duration = Duration::days(7);
/// Optimistic retries of an activation. Each failed attempt means another writer succeeded,
/// and only successful activations (at most the limit) and heartbeats write, so this is ample.
const ACTIVATION_ATTEMPTS: u32 = 64;
/// Retries of a transaction cancelled by a conflicting transaction (not by a condition).
const TRANSACTION_ATTEMPTS: u32 = 16;
/// DynamoDB's limit on items per TransactWriteItems.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// On a customer item: set by its first license, never cleared (licenses are not deleted).
/// A customer delete requires its absence (docs/dynamodb.md).
const HAS_LICENSES: &str = "has_licenses";
/// DynamoDB's limit on items per BatchWriteItem.
const MAX_BATCH_WRITE_ITEMS: usize = 25;

/// DynamoDB's key size limits, in bytes.
const MAX_PARTITION_KEY_BYTES: usize = 2048;
const MAX_SORT_KEY_BYTES: usize = 1024;

pub struct DynamoStore {
    client: Client,
    table: String,
    /// Distinguishes validation-log sort keys written by different processes.
    writer_token: String,
    log_sequence: AtomicU64,
}

/// A store on `table`, with clients configured from the environment (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, credentials) and the default [`ClientTuning`].
pub async fn from_env(table: impl Into<String>) -> DynamoStore {
    let sdk_config = load_sdk_config().await;
    DynamoStore::new(dynamodb_client(&sdk_config, &ClientTuning::default(), None), table)
}

fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Sleeps a jittered, growing pause before retrying a lost race.
async fn pause_before_retry(attempt: u32) {
    let cap_ms = (4u64 << attempt.min(5)).min(100);
    tokio::time::sleep(StdDuration::from_millis(random_u64() % (cap_ms + 1))).await;
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn values(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn item_key(pk: String, sk: &str) -> HashMap<String, AttributeValue> {
    values(vec![(PK, s(pk)), (SK, s(sk))])
}

/// A Query, described once so paging loops can repeat it.
struct KeyQuery {
    index: Option<&'static str>,
    key_condition: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    forward: bool,
}

/// An index partition whose sort key is the record id, so pages come in id order.
struct IdOrderedPartition {
    index: &'static str,
    pk_attr: &'static str,
    pk_value: String,
    sk_attr: &'static str,
}

/// What a failed condition of one transaction item means.
#[derive(Debug, Clone)]
enum OnConditionFailed {
    Duplicate,
    Error(fn(String) -> StoreError, String),
    /// An optimistic version check on the item at `pk`/`sk`: `NotFound` naming `what` if the
    /// item is gone, else `Conflict`.
    Versioned {
        pk: String,
        sk: &'static str,
        what: String,
    },
    /// The item has no condition, so this cannot happen.
    Unconditional,
    /// A customer delete: `NotFound` if the customer is gone, else a license marked it.
    CustomerDelete {
        id: String,
    },
}

struct PlannedWrite {
    item: TransactWriteItem,
    on_condition_failed: OnConditionFailed,
}

enum TransactionResult {
    Committed,
    /// The condition of the item at this index failed.
    ConditionFailed(usize),
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            writer_token: format!("{:016x}", random_u64()),
            log_sequence: AtomicU64::new(0),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get_item(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        // DynamoDB refuses keys over its size limits (a ValidationException, read as 503): no
        // such item can exist, whatever id a caller sent.
        if pk.len() > MAX_PARTITION_KEY_BYTES || sk.len() > MAX_SORT_KEY_BYTES {
            return Ok(None);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(output.item)
    }

    async fn query_page(
        &self,
        query: &KeyQuery,
        start_key: Option<Item>,
        limit: Option<i32>,
    ) -> StoreResult<(Vec<Item>, Option<Item>)> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(&query.key_condition)
            .set_expression_attribute_names(Some(query.names.clone()))
            .set_expression_attribute_values(Some(query.values.clone()))
            .scan_index_forward(query.forward)
            // GSIs only offer eventually consistent reads.
            .consistent_read(query.index.is_none())
            .set_exclusive_start_key(start_key)
            .set_limit(limit)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        Ok((output.items.unwrap_or_default(), output.last_evaluated_key))
    }

    async fn query_all(&self, query: &KeyQuery) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let (page, next) = self.query_page(query, start_key, None).await?;
            items.extend(page);
            match next {
                Some(key) => start_key = Some(key),
                None => return Ok(items),
            }
        }
    }

    /// Reads matching items in key order until `limit + 1` are found (so we know whether a
    /// next page exists) or the query is exhausted.
    async fn query_matching<T>(
        &self,
        query: &KeyQuery,
        limit: usize,
        parse: impl Fn(&Item) -> StoreResult<T>,
        keep: impl Fn(&T) -> bool,
    ) -> StoreResult<Vec<T>> {
        let mut found = Vec::new();
        let mut start_key = None;
        let request_size = i32::try_from(limit + 1).unwrap_or(i32::MAX).max(25);
        loop {
            let (page, next) = self.query_page(query, start_key, Some(request_size)).await?;
            for item in &page {
                let record = parse(item)?;
                if keep(&record) {
                    found.push(record);
                    if found.len() > limit {
                        return Ok(found);
                    }
                }
            }
            match next {
                Some(key) => start_key = Some(key),
                None => return Ok(found),
            }
        }
    }

    /// A page ordered by id from an index whose sort key is the id.
    async fn page_by_id<T>(
        &self,
        partition: IdOrderedPartition,
        page: &PageRequest,
        parse: impl Fn(&Item) -> StoreResult<T>,
        keep: impl Fn(&T) -> bool,
        id_of: impl Fn(&T) -> String,
    ) -> StoreResult<Page<T>> {
        let IdOrderedPartition { index, pk_attr, pk_value, sk_attr } = partition;
        let mut key_condition = "#pk = :pk".to_owned();
        let mut query_names = vec![("#pk", pk_attr)];
        let mut query_values = vec![(":pk", s(pk_value))];
        if let Some(cursor) = page.id_cursor()? {
            key_condition.push_str(" AND #sk > :cursor");
            query_names.push(("#sk", sk_attr));
            query_values.push((":cursor", s(cursor)));
        }
        let query = KeyQuery {
            index: Some(index),
            key_condition,
            names: names(&query_names),
            values: values(query_values),
            forward: true,
        };
        let limit = page.effective_limit();
        let mut items = self.query_matching(&query, limit, parse, keep).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(&id_of)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Runs one TransactWriteItems, retrying cancellations caused by conflicting transactions
    /// or throttling; a failed condition is returned for the caller to interpret.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> StoreResult<TransactionResult> {
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Unavailable(format!(
                "a transaction of {} writes exceeds DynamoDB's {MAX_TRANSACTION_ITEMS}",
                items.len()
            )));
        }
        let mut attempt = 0;
        loop {
            let result =
                self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let err = match result {
                Ok(_) => return Ok(TransactionResult::Committed),
                Err(err) => err,
            };
            if let SdkError::ServiceError(service) = &err {
                if let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err() {
                    let reasons = cancelled.cancellation_reasons();
                    if let Some(index) =
                        reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed"))
                    {
                        return Ok(TransactionResult::ConditionFailed(index));
                    }
                    let transient = reasons.iter().any(|r| {
                        matches!(
                            r.code(),
                            Some("TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded")
                        )
                    });
                    attempt += 1;
                    if transient && attempt < TRANSACTION_ATTEMPTS {
                        pause_before_retry(attempt).await;
                        continue;
                    }
                    let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
                    return Err(StoreError::Unavailable(format!(
                        "TransactWriteItems cancelled: [{}]",
                        codes.join(", ")
                    )));
                }
            }
            return Err(sdk_error("TransactWriteItems", err));
        }
    }

    fn put(
        &self,
        item: Item,
        condition: Option<&str>,
        condition_values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values((!condition_values.is_empty()).then(|| values(condition_values)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(
        &self,
        key: HashMap<String, AttributeValue>,
        condition: Option<&str>,
        condition_values: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values((!condition_values.is_empty()).then(|| values(condition_values)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    fn stripe_claim_item(stripe_customer_id: &str, customer_id: &str) -> Item {
        ItemBuilder::keyed(stripe_customer_claim_pk(stripe_customer_id), STRIPE_CLAIM_ITEM_SK)
            .set("customer_id", s(customer_id))
            .build()
    }

    /// Turns a commit's writes into transaction items; customer updates and deletes read the
    /// stored customer first so the Stripe-id uniqueness claim moves with it (guarded by a
    /// condition on the value read).
    ///
    /// A license's customer is written in the same transaction (`has_licenses`, set by the
    /// first license and never cleared), and a customer delete is conditioned on its absence:
    /// a delete and a license creation racing each other cannot both commit.
    async fn plan_writes(&self, writes: Vec<Write>) -> StoreResult<Vec<PlannedWrite>> {
        let mut planned = Vec::new();
        let mut add = |item: TransactWriteItem, on_condition_failed: OnConditionFailed| {
            planned.push(PlannedWrite { item, on_condition_failed })
        };
        // A transaction may touch an item once: customers this commit also creates or updates
        // carry the mark in that write; the others get one marking update each, below.
        let licensed: std::collections::BTreeSet<String> = writes
            .iter()
            .filter_map(|w| match w {
                Write::CreateLicense(l) => Some(l.customer_id.clone()),
                _ => None,
            })
            .collect();
        let mut customers_written = std::collections::BTreeSet::new();
        for write in writes {
            match write {
                Write::CreateCustomer(c) => {
                    customers_written.insert(c.id.clone());
                    let taken =
                        OnConditionFailed::Error(StoreError::AlreadyExists, format!("customer {}", c.id));
                    let mut item = customer_item(&c);
                    if licensed.contains(&c.id) {
                        item.insert(HAS_LICENSES.to_owned(), AttributeValue::Bool(true));
                    }
                    add(self.put(item, Some("attribute_not_exists(pk)"), vec![])?, taken.clone());
                    if let Some(stripe_id) = &c.stripe_customer_id {
                        let claim = Self::stripe_claim_item(stripe_id, &c.id);
                        add(self.put(claim, Some("attribute_not_exists(pk)"), vec![])?, taken);
                    }
                }
                Write::UpdateCustomer(c) => {
                    customers_written.insert(c.id.clone());
                    let stored_item = self
                        .get_item(customer_pk(&c.id), CUSTOMER_ITEM_SK)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("customer {}", c.id)))?;
                    let stored = customer_from_item(&stored_item)?;
                    let changed =
                        OnConditionFailed::Error(StoreError::Conflict, format!("customer {}", c.id));
                    let (condition, condition_values) = match &stored.stripe_customer_id {
                        Some(old) => (
                            "attribute_exists(pk) AND stripe_customer_id = :old_stripe",
                            vec![(":old_stripe", s(old))],
                        ),
                        None => ("attribute_exists(pk) AND attribute_not_exists(stripe_customer_id)", vec![]),
                    };
                    // The put replaces the item: keep the license mark, and conflict if a
                    // license marked it since the read (so the mark is never lost).
                    let marked = stored_item.contains_key(HAS_LICENSES);
                    let condition = if marked {
                        format!("{condition} AND attribute_exists({HAS_LICENSES})")
                    } else {
                        format!("{condition} AND attribute_not_exists({HAS_LICENSES})")
                    };
                    let mut item = customer_item(&c);
                    if marked || licensed.contains(&c.id) {
                        item.insert(HAS_LICENSES.to_owned(), AttributeValue::Bool(true));
                    }
                    add(self.put(item, Some(&condition), condition_values)?, changed.clone());
                    if stored.stripe_customer_id != c.stripe_customer_id {
                        if let Some(old) = &stored.stripe_customer_id {
                            let key = item_key(stripe_customer_claim_pk(old), STRIPE_CLAIM_ITEM_SK);
                            add(
                                self.delete(key, Some("customer_id = :id"), vec![(":id", s(&c.id))])?,
                                changed.clone(),
                            );
                        }
                        if let Some(new) = &c.stripe_customer_id {
                            add(
                                self.put(
                                    Self::stripe_claim_item(new, &c.id),
                                    Some("attribute_not_exists(pk)"),
                                    vec![],
                                )?,
                                OnConditionFailed::Error(
                                    StoreError::AlreadyExists,
                                    format!("customer {}", c.id),
                                ),
                            );
                        }
                    }
                }
                Write::DeleteCustomer { id } => {
                    customers_written.insert(id.clone());
                    let stored_item = self
                        .get_item(customer_pk(&id), CUSTOMER_ITEM_SK)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("customer {id}")))?;
                    if stored_item.contains_key(HAS_LICENSES) || licensed.contains(&id) {
                        return Err(StoreError::StillReferenced(format!("customer {id}")));
                    }
                    let stored = customer_from_item(&stored_item)?;
                    let key = item_key(customer_pk(&id), CUSTOMER_ITEM_SK);
                    add(
                        self.delete(
                            key,
                            Some(&format!("attribute_exists(pk) AND attribute_not_exists({HAS_LICENSES})")),
                            vec![],
                        )?,
                        OnConditionFailed::CustomerDelete { id: id.clone() },
                    );
                    if let Some(stripe_id) = &stored.stripe_customer_id {
                        let key = item_key(stripe_customer_claim_pk(stripe_id), STRIPE_CLAIM_ITEM_SK);
                        add(
                            self.delete(
                                key,
                                Some("attribute_not_exists(pk) OR customer_id = :id"),
                                vec![(":id", s(&id))],
                            )?,
                            OnConditionFailed::Error(StoreError::Conflict, format!("customer {id}")),
                        );
                    }
                }
                Write::CreateLicense(l) => add(
                    self.put(license_item(&l), Some("attribute_not_exists(pk)"), vec![])?,
                    OnConditionFailed::Error(StoreError::AlreadyExists, format!("license {}", l.id)),
                ),
                Write::UpdateLicense { license, expected_version } => add(
                    self.put(
                        license_item(&license),
                        Some("version = :expected"),
                        vec![(":expected", n(expected_version))],
                    )?,
                    OnConditionFailed::Versioned {
                        pk: license_pk(&license.id),
                        sk: LICENSE_ITEM_SK,
                        what: format!("license {}", license.id),
                    },
                ),
                Write::PutApiKey(k) => {
                    add(self.put(api_key_item(&k), None, vec![])?, OnConditionFailed::Unconditional)
                }
                Write::CreateStaffUser(u) => {
                    // The email claim item makes the email unique, in the same transaction.
                    let taken =
                        OnConditionFailed::Error(StoreError::AlreadyExists, format!("staff user {}", u.id));
                    add(
                        self.put(staff_user_item(&u), Some("attribute_not_exists(pk)"), vec![])?,
                        taken.clone(),
                    );
                    let claim = staff_email_claim_item(&u.email, &u.id);
                    add(self.put(claim, Some("attribute_not_exists(pk)"), vec![])?, taken);
                }
                Write::UpdateStaffUser { user, expected_version } => add(
                    // The email may not change, so its claim item stays as it is.
                    self.put(
                        staff_user_item(&user),
                        Some("version = :expected AND email = :email"),
                        vec![(":expected", n(expected_version)), (":email", s(&user.email))],
                    )?,
                    OnConditionFailed::Versioned {
                        pk: staff_user_pk(&user.id),
                        sk: STAFF_USER_ITEM_SK,
                        what: format!("staff user {}", user.id),
                    },
                ),
                Write::Audit(e) => {
                    add(self.put(audit_item(&e), None, vec![])?, OnConditionFailed::Unconditional)
                }
            }
        }
        for customer_id in licensed.difference(&customers_written) {
            add(
                self.mark_customer_licensed(customer_id)?,
                OnConditionFailed::Error(StoreError::NotFound, format!("customer {customer_id}")),
            );
        }
        Ok(planned)
    }

    /// Marks a customer as having licenses, only if it exists (the transaction's check that a
    /// new license's customer is still there).
    fn mark_customer_licensed(&self, customer_id: &str) -> StoreResult<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(customer_pk(customer_id), CUSTOMER_ITEM_SK)))
            .update_expression("SET #mark = :true")
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names(&[("#mark", HAS_LICENSES)])))
            .set_expression_attribute_values(Some(values(vec![(":true", AttributeValue::Bool(true))])))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    async fn guard_recorded(&self, guard: &Option<OnceGuard>) -> StoreResult<bool> {
        match guard {
            Some(OnceGuard::WebhookEvent(event)) => {
                Ok(self.get_item(webhook_event_pk(&event.event_id), WEBHOOK_EVENT_ITEM_SK).await?.is_some())
            }
            None => Ok(false),
        }
    }

    async fn read_seats(&self, license_id: &str) -> StoreResult<Option<Seats>> {
        match self.get_item(license_pk(license_id), SEATS_ITEM_SK).await? {
            Some(item) => seats_from_item(license_id, &item).map(Some),
            None => Ok(None),
        }
    }

    /// Writes `seats` only if nobody changed the item since `expected_version` was read.
    /// `Ok(false)` means someone did: read again and retry.
    async fn replace_seats(
        &self,
        license_id: &str,
        seats: &Seats,
        expected_version: Option<u64>,
    ) -> StoreResult<bool> {
        let request =
            self.client.put_item().table_name(&self.table).set_item(Some(seats_item(license_id, seats)));
        let request = match expected_version {
            Some(version) => request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(version)),
            None => request.condition_expression("attribute_not_exists(pk)"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(err) => Err(sdk_error("PutItem", err)),
        }
    }

    fn next_validation_log_sk(&self, at: Timestamp) -> String {
        validation_log_sk(at, self.log_sequence.fetch_add(1, Ordering::Relaxed), &self.writer_token)
    }
}

#[async_trait]
impl UnitOfWork for DynamoStore {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome> {
        let planned = match self.plan_writes(writes).await {
            Ok(planned) => planned,
            // A replayed event whose target is already gone is still a duplicate.
            Err(err @ StoreError::NotFound(_)) => {
                return if self.guard_recorded(&guard).await? {
                    Ok(CommitOutcome::Duplicate)
                } else {
                    Err(err)
                };
            }
            Err(err) => return Err(err),
        };
        let mut items = Vec::with_capacity(planned.len() + 1);
        let mut on_failure = Vec::with_capacity(planned.len() + 1);
        if let Some(OnceGuard::WebhookEvent(event)) = &guard {
            let expires = (event.received_at + WEBHOOK_EVENT_RETENTION).timestamp();
            items.push(self.put(
                webhook_event_item(event, expires),
                Some("attribute_not_exists(pk)"),
                vec![],
            )?);
            on_failure.push(OnConditionFailed::Duplicate);
        }
        for write in planned {
            items.push(write.item);
            on_failure.push(write.on_condition_failed);
        }
        if items.is_empty() {
            return Ok(CommitOutcome::Applied);
        }
        match self.transact(items).await? {
            TransactionResult::Committed => Ok(CommitOutcome::Applied),
            TransactionResult::ConditionFailed(index) => match on_failure.get(index) {
                Some(OnConditionFailed::Duplicate) => Ok(CommitOutcome::Duplicate),
                Some(OnConditionFailed::Error(make, what)) => Err(make(what.clone())),
                Some(OnConditionFailed::Versioned { pk, sk, what }) => {
                    match self.get_item(pk.clone(), sk).await? {
                        Some(_) => Err(StoreError::Conflict(what.clone())),
                        None => Err(StoreError::NotFound(what.clone())),
                    }
                }
                Some(OnConditionFailed::CustomerDelete { id }) => {
                    match self.get_item(customer_pk(id), CUSTOMER_ITEM_SK).await? {
                        Some(_) => Err(StoreError::StillReferenced(format!("customer {id}"))),
                        None => Err(StoreError::NotFound(format!("customer {id}"))),
                    }
                }
                Some(OnConditionFailed::Unconditional) | None => Err(StoreError::Unavailable(format!(
                    "transaction item {index} failed a condition it does not have"
                ))),
            },
        }
    }
}

#[async_trait]
impl CustomerStore for DynamoStore {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>> {
        self.get_item(customer_pk(id), CUSTOMER_ITEM_SK).await?.as_ref().map(customer_from_item).transpose()
    }

    async fn find_customer_by_stripe_id(&self, stripe_customer_id: &str) -> StoreResult<Option<Customer>> {
        let query = KeyQuery {
            index: Some(GSI_BY_STRIPE),
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", STRIPE_PK)]),
            values: values(vec![(":pk", s(stripe_customer_gsi_pk(stripe_customer_id)))]),
            forward: true,
        };
        let (items, _) = self.query_page(&query, None, Some(1)).await?;
        items.first().map(customer_from_item).transpose()
    }

    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>> {
        let partition = IdOrderedPartition {
            index: GSI_BY_KIND,
            pk_attr: KIND_PK,
            pk_value: KIND_CUSTOMER.to_owned(),
            sk_attr: KIND_SK,
        };
        self.page_by_id(partition, page, customer_from_item, |_| true, |c| c.id.clone()).await
    }
}

#[async_trait]
impl LicenseStore for DynamoStore {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        self.get_item(license_pk(id), LICENSE_ITEM_SK).await?.as_ref().map(license_from_item).transpose()
    }

    async fn find_license_by_subscription(
        &self,
        stripe_subscription_id: &str,
    ) -> StoreResult<Option<License>> {
        let query = KeyQuery {
            index: Some(GSI_BY_STRIPE),
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", STRIPE_PK)]),
            values: values(vec![(":pk", s(stripe_subscription_gsi_pk(stripe_subscription_id)))]),
            forward: true,
        };
        let (items, _) = self.query_page(&query, None, Some(1)).await?;
        items.first().map(license_from_item).transpose()
    }

    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>> {
        let partition = match &filter.customer_id {
            Some(customer_id) => IdOrderedPartition {
                index: GSI_BY_CUSTOMER,
                pk_attr: CUSTOMER_PK,
                pk_value: customer_pk(customer_id),
                sk_attr: CUSTOMER_SK,
            },
            None => IdOrderedPartition {
                index: GSI_BY_KIND,
                pk_attr: KIND_PK,
                pk_value: KIND_LICENSE.to_owned(),
                sk_attr: KIND_SK,
            },
        };
        self.page_by_id(partition, page, license_from_item, |l| filter.matches(l), |l| l.id.clone()).await
    }

    async fn search_licenses(
        &self,
        query: &nls_core::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        self.search_license_items(query, page).await
    }

    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>> {
        let mut licenses = Vec::new();
        if from >= to {
            return Ok(licenses);
        }
        let last_day = (to - Duration::nanoseconds(1)).date_naive();
        let mut day = from.date_naive();
        // One Query per UTC day partition of the expiry index; never a Scan.
        while day <= last_day {
            let query = KeyQuery {
                index: Some(GSI_BY_EXPIRY_DAY),
                // `<from>` sorts before `<from>#id`, and `<to>` before `<to>#id`: inclusive
                // from, exclusive to.
                key_condition: "#pk = :day AND #sk BETWEEN :from AND :to".into(),
                names: names(&[("#pk", EXPIRY_PK), ("#sk", EXPIRY_SK)]),
                values: values(vec![
                    (":day", s(expiry_day_pk(day))),
                    (":from", s(timestamp_key(from))),
                    (":to", s(timestamp_key(to))),
                ]),
                forward: true,
            };
            for item in self.query_all(&query).await? {
                licenses.push(license_from_item(&item)?);
            }
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        licenses.retain(|l| l.expires_at.is_some_and(|e| e >= from && e < to));
        licenses.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(licenses)
    }

    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>> {
        let month = UsagePeriod::month_of(now).key();
        let month_counter_sk = format!("{MONTH_COUNTER_SK_PREFIX}{month}");
        // One strongly consistent Query: this month's counters, the license and its seats are
        // adjacent in the partition (see table_keys.rs).
        let query = KeyQuery {
            index: None,
            key_condition: "#pk = :pk AND #sk BETWEEN :low AND :high".into(),
            names: names(&[("#pk", PK), ("#sk", SK)]),
            values: values(vec![
                (":pk", s(license_pk(id))),
                (":low", s(month_counter_sk.clone())),
                (":high", s(SEATS_ITEM_SK)),
            ]),
            forward: true,
        };
        let mut license = None;
        let mut live_deployments = Vec::new();
        let mut month_usage = BTreeMap::new();
        for item in self.query_all(&query).await? {
            let sk = match item.get(SK) {
                Some(AttributeValue::S(sk)) => sk.as_str(),
                _ => return Err(ItemReader::new(&item).corrupt("sort key is not a string")),
            };
            match sk {
                LICENSE_ITEM_SK => license = Some(license_from_item(&item)?),
                SEATS_ITEM_SK => {
                    let seats = seats_from_item(id, &item)?;
                    live_deployments = seats
                        .leases
                        .values()
                        .filter(|d| d.is_live(now))
                        .map(|d| d.deployment_id.clone())
                        .collect();
                }
                sk if sk == month_counter_sk => month_usage = counter_totals_from_item(&item)?,
                // A later month's counter (a record stamped in the future): not this month's.
                _ => {}
            }
        }
        Ok(license.map(|license| StatusSnapshot { license, live_deployments, month_usage, as_of: now }))
    }
}

#[async_trait]
impl DeploymentStore for DynamoStore {
    async fn activate_deployment(
        &self,
        request: &Deployment,
        policy: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation> {
        let license_id = &request.license_id;
        for attempt in 0..ACTIVATION_ATTEMPTS {
            if attempt > 0 {
                pause_before_retry(attempt).await;
            }
            let stored = self.read_seats(license_id).await?;
            let expected_version = stored.as_ref().map(|seats| seats.version);
            let mut seats = stored.unwrap_or_default();
            let outcome = match seats.leases.get_mut(&request.deployment_id).filter(|d| d.is_live(now)) {
                Some(existing) => {
                    existing.last_heartbeat_at = now;
                    existing.lease_expires_at = now + policy.lease;
                    Activation::AlreadyActive(existing.clone())
                }
                None => {
                    let live = seats.leases.values().filter(|d| d.is_live(now)).count() as u32;
                    if policy.max_deployments.is_some_and(|max| live >= max) {
                        return Ok(Activation::LimitReached { live });
                    }
                    seats.recent_activations.retain(|t| *t > now - policy.churn_window);
                    if seats.recent_activations.len() as u32 >= policy.churn_max {
                        return Ok(Activation::ChurnLimited);
                    }
                    seats.recent_activations.push(now);
                    let deployment = Deployment {
                        activated_at: now,
                        last_heartbeat_at: now,
                        lease_expires_at: now + policy.lease,
                        ..request.clone()
                    };
                    seats.leases.insert(request.deployment_id.clone(), deployment.clone());
                    Activation::Activated(deployment)
                }
            };
            seats.leases.retain(|_, d| d.lease_expires_at > now - LAPSED_LEASE_RETENTION);
            seats.version = expected_version.unwrap_or(0) + 1;
            if self.replace_seats(license_id, &seats, expected_version).await? {
                return Ok(outcome);
            }
        }
        Err(StoreError::Conflict(format!("seats of license {license_id}")))
    }

    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>> {
        let mut update =
            "SET leases.#d.last_heartbeat_at = :now, leases.#d.lease_expires_at = :lease".to_owned();
        let mut update_values = vec![(":now", ts(now)), (":lease", ts(lease_expires_at)), (":one", n(1))];
        if let Some(version) = app_version {
            update.push_str(", leases.#d.app_version = :app_version");
            update_values.push((":app_version", s(version)));
        }
        // Bumping `version` makes a concurrent activation that read the old lease retry.
        update.push_str(" ADD version :one");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(license_pk(license_id), SEATS_ITEM_SK)))
            .update_expression(update)
            .condition_expression("leases.#d.lease_expires_at > :now")
            .set_expression_attribute_names(Some(names(&[("#d", deployment_id)])))
            .set_expression_attribute_values(Some(values(update_values)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item = output.attributes.unwrap_or_default();
                let mut seats = seats_from_item(license_id, &item)?;
                seats
                    .leases
                    .remove(deployment_id)
                    .map(Some)
                    .ok_or_else(|| ItemReader::new(&item).corrupt(format!("lease {deployment_id} vanished")))
            }
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(None)
            }
            Err(err) => Err(sdk_error("UpdateItem", err)),
        }
    }

    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(license_pk(license_id), SEATS_ITEM_SK)))
            .update_expression("REMOVE leases.#d ADD version :one")
            .condition_expression("attribute_exists(leases.#d)")
            .expression_attribute_names("#d", deployment_id)
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(err) => Err(sdk_error("UpdateItem", err)),
        }
    }

    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>> {
        Ok(self
            .read_seats(license_id)
            .await?
            .map(|seats| seats.leases.into_values().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        let pk = license_pk(&batch.license_id);
        let marker = ItemBuilder::keyed(pk.clone(), &batch_sk(&batch.batch_id))
            .set("license_id", s(&batch.license_id))
            .set("deployment_id", s(&batch.deployment_id))
            .set("batch_id", s(&batch.batch_id))
            .set("record_count", n(batch.records.len()))
            .set("received_at", ts(batch.received_at))
            .build();
        let mut items = vec![self.put(marker, Some("attribute_not_exists(pk)"), vec![])?];
        // One counter item per period; all of a period's metrics go in one ADD (a transaction
        // may touch an item only once).
        let mut by_period: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for ((metric, period), amount) in batch.counter_increments()? {
            by_period.entry(period).or_default().push((metric, amount));
        }
        // Item i + 1 of the transaction is the counter of `periods[i]`.
        let periods: Vec<(String, Vec<String>)> = by_period
            .iter()
            .map(|(period, increments)| (period.clone(), increments.iter().map(|(m, _)| m.clone()).collect()))
            .collect();
        for (period, increments) in by_period {
            let sk = counter_sk(&period).ok_or_else(|| {
                StoreError::Unavailable(format!("usage period {period:?} has no counter item"))
            })?;
            let mut update_names = HashMap::from([("#period".to_owned(), "period".to_owned())]);
            let mut update_values = HashMap::from([(":period".to_owned(), s(&period))]);
            let mut additions = Vec::new();
            // DynamoDB numbers hold 38 digits, so an ADD would pass u64::MAX silently: each
            // counter must still have room for its amount, or the whole batch is refused.
            let mut room = Vec::new();
            for (i, (metric, amount)) in increments.into_iter().enumerate() {
                update_names.insert(format!("#m{i}"), format!("{METRIC_ATTRIBUTE_PREFIX}{metric}"));
                update_values.insert(format!(":v{i}"), n(amount));
                update_values.insert(format!(":room{i}"), n(u64::MAX - amount));
                additions.push(format!("#m{i} :v{i}"));
                room.push(format!("(attribute_not_exists(#m{i}) OR #m{i} <= :room{i})"));
            }
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(item_key(pk.clone(), &sk)))
                .update_expression(format!("SET #period = :period ADD {}", additions.join(", ")))
                .condition_expression(room.join(" AND "))
                .set_expression_attribute_names(Some(update_names))
                .set_expression_attribute_values(Some(update_values))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        match self.transact(items).await? {
            TransactionResult::Committed => Ok(BatchOutcome::Recorded),
            TransactionResult::ConditionFailed(0) => Ok(BatchOutcome::Duplicate),
            TransactionResult::ConditionFailed(index) => match periods.get(index - 1) {
                Some((period, metrics)) => Err(StoreError::CounterOverflow(CounterOverflow {
                    metric: metrics.join(","),
                    period: period.clone(),
                })),
                None => {
                    Err(StoreError::Unavailable(format!("usage transaction item {index} failed a condition")))
                }
            },
        }
    }

    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>> {
        let Some(sk) = counter_sk(period) else { return Ok(BTreeMap::new()) };
        match self.get_item(license_pk(license_id), &sk).await? {
            Some(item) => counter_totals_from_item(&item),
            None => Ok(BTreeMap::new()),
        }
    }
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.get_item(api_key_pk(id), API_KEY_ITEM_SK).await?.as_ref().map(api_key_from_item).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let query = KeyQuery {
            index: Some(GSI_BY_KIND),
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", KIND_PK)]),
            values: values(vec![(":pk", s(KIND_API_KEY))]),
            forward: true,
        };
        self.query_all(&query).await?.iter().map(api_key_from_item).collect()
    }
}

#[async_trait]
impl AuditStore for DynamoStore {
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        // Newest first on the kind index (sort key `<at>#<id>`); the cursor is the sort key of
        // the last entry returned. Key bounds narrow the time range, the filter does the rest.
        if let Some(cursor) = &page.cursor {
            let well_formed = cursor
                .split_once('#')
                .is_some_and(|(at, id)| !id.is_empty() && parse_timestamp_key(at).is_some());
            if !well_formed {
                return Err(StoreError::InvalidCursor(cursor.clone()));
            }
        }
        let upper = match (&page.cursor, filter.until) {
            (Some(cursor), Some(until)) => Some(cursor.clone().min(timestamp_key(until))),
            (Some(cursor), None) => Some(cursor.clone()),
            (None, Some(until)) => Some(timestamp_key(until)),
            (None, None) => None,
        };
        let lower = filter.since.map(timestamp_key);
        let mut query_values = vec![(":pk", s(KIND_AUDIT))];
        let key_condition = match (lower, upper) {
            (Some(lower), Some(upper)) => {
                query_values.push((":lower", s(lower)));
                query_values.push((":upper", s(upper)));
                "#pk = :pk AND #sk BETWEEN :lower AND :upper"
            }
            (Some(lower), None) => {
                query_values.push((":lower", s(lower)));
                "#pk = :pk AND #sk >= :lower"
            }
            (None, Some(upper)) => {
                query_values.push((":upper", s(upper)));
                "#pk = :pk AND #sk < :upper"
            }
            (None, None) => "#pk = :pk",
        };
        let mut query_names = vec![("#pk", KIND_PK)];
        if key_condition.contains("#sk") {
            query_names.push(("#sk", KIND_SK));
        }
        let query = KeyQuery {
            index: Some(GSI_BY_KIND),
            key_condition: key_condition.into(),
            names: names(&query_names),
            values: values(query_values),
            forward: false,
        };
        let limit = page.effective_limit();
        let cursor = page.cursor.as_deref();
        let mut items = self
            .query_matching(&query, limit, audit_from_item, |e| {
                filter.matches(e) && cursor != Some(audit_kind_sk(e.at, &e.id).as_str())
            })
            .await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| audit_kind_sk(e.at, &e.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

#[async_trait]
impl NotificationStore for DynamoStore {
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome> {
        // New, or a pending claim whose owner went quiet for `stale_after`: take it.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(notification_item(record)))
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :pending AND claimed_at <= :stale_before)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":pending", s(NOTICE_STATE_PENDING))
            .expression_attribute_values(":stale_before", ts(now - stale_after))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let held = match result {
            Ok(_) => return Ok(ClaimOutcome::Claimed),
            Err(SdkError::ServiceError(service)) => match service.err() {
                PutItemError::ConditionalCheckFailedException(failed) => failed.item().cloned(),
                _ => return Err(sdk_error("PutItem", SdkError::ServiceError(service))),
            },
            Err(err) => return Err(sdk_error("PutItem", err)),
        };
        let key = &record.key;
        let held = match held {
            Some(item) => Some(item),
            // Not every DynamoDB-compatible server returns the old item; read it.
            None => self.get_item(notices_pk(&key.license_id), &notice_sk(&key.notice, &key.window)).await?,
        };
        match held.as_ref().map(notification_from_item).transpose()? {
            Some(NotificationRecord { state: NotificationState::Sent { .. }, .. }) => {
                Ok(ClaimOutcome::AlreadySent)
            }
            _ => Ok(ClaimOutcome::HeldByOther),
        }
    }

    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        sent_at: Timestamp,
        message_id: &str,
    ) -> StoreResult<()> {
        let (pk, sk) = (notices_pk(&key.license_id), notice_sk(&key.notice, &key.window));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(pk.clone(), &sk)))
            .update_expression("SET #state = :sent, sent_at = :sent_at, message_id = :message_id REMOVE claimed_by, claimed_at")
            // Only the claim holder marks; repeating one's own mark is a no-op.
            .condition_expression(
                "(#state = :pending AND claimed_by = :claimant) OR (#state = :sent AND message_id = :message_id)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sent", s(NOTICE_STATE_SENT))
            .expression_attribute_values(":pending", s(NOTICE_STATE_PENDING))
            .expression_attribute_values(":claimant", s(claimant))
            .expression_attribute_values(":sent_at", ts(sent_at))
            .expression_attribute_values(":message_id", s(message_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                match self.get_item(pk, &sk).await? {
                    None => Err(StoreError::NotFound(format!("notification {key:?}"))),
                    Some(_) => {
                        Err(StoreError::Conflict(format!("notification {key:?} is held by another run")))
                    }
                }
            }
            Err(err) => Err(sdk_error("UpdateItem", err)),
        }
    }

    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>> {
        let query = KeyQuery {
            index: None,
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", PK)]),
            values: values(vec![(":pk", s(notices_pk(license_id)))]),
            forward: true,
        };
        let mut records: Vec<NotificationRecord> =
            self.query_all(&query).await?.iter().map(notification_from_item).collect::<StoreResult<_>>()?;
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }
}

#[async_trait]
impl ValidationLogStore for DynamoStore {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()> {
        for chunk in entries.chunks(MAX_BATCH_WRITE_ITEMS) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|entry| {
                    let expires = (entry.at + VALIDATION_LOG_RETENTION).timestamp();
                    let item = validation_log_item(entry, self.next_validation_log_sk(entry.at), expires);
                    let put = PutRequest::builder().set_item(Some(item)).build().map_err(build_error)?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<StoreResult<_>>()?;
            let mut attempt = 0;
            while !requests.is_empty() {
                if attempt > 0 {
                    pause_before_retry(attempt).await;
                }
                attempt += 1;
                if attempt > TRANSACTION_ATTEMPTS {
                    return Err(StoreError::Unavailable(format!(
                        "BatchWriteItem: {} validation logs still unprocessed",
                        requests.len()
                    )));
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem", e))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = KeyQuery {
            index: None,
            key_condition: "#pk = :pk AND begins_with(#sk, :prefix)".into(),
            names: names(&[("#pk", PK), ("#sk", SK)]),
            values: values(vec![
                (":pk", s(license_pk(license_id))),
                (":prefix", s(VALIDATION_LOG_SK_PREFIX)),
            ]),
            forward: false,
        };
        let mut entries = self.query_matching(&query, limit, validation_log_from_item, |_| true).await?;
        entries.truncate(limit);
        Ok(entries)
    }
}

#[async_trait]
impl StaffStore for DynamoStore {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>> {
        self.get_item(staff_user_pk(id), STAFF_USER_ITEM_SK)
            .await?
            .as_ref()
            .map(staff_user_from_item)
            .transpose()
    }

    /// Two consistent reads (the email claim, then the user), not the eventually consistent
    /// `by_kind` index: a user can sign in the moment they are created.
    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>> {
        let email = email.to_lowercase();
        let Some(claim) = self.get_item(staff_email_claim_pk(&email), STAFF_EMAIL_CLAIM_ITEM_SK).await?
        else {
            return Ok(None);
        };
        let user_id = staff_email_claim_user_id(&claim)?;
        Ok(self.get_staff_user(&user_id).await?.filter(|u| u.email == email))
    }

    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        // `kind_sk` is the email, so the index returns them in listing order.
        let query = KeyQuery {
            index: Some(GSI_BY_KIND),
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", KIND_PK)]),
            values: values(vec![(":pk", s(KIND_STAFF_USER))]),
            forward: true,
        };
        self.query_all(&query).await?.iter().map(staff_user_from_item).collect()
    }

    async fn create_session(&self, session: &StaffSession) -> StoreResult<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(staff_session_item(session)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Err(StoreError::AlreadyExists("staff session".into()))
            }
            Err(err) => Err(sdk_error("PutItem", err)),
        }
    }

    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
        self.get_item(staff_session_pk(token_sha256), STAFF_SESSION_ITEM_SK)
            .await?
            .as_ref()
            .map(staff_session_from_item)
            .transpose()
    }

    /// One conditional UpdateItem: timestamps are fixed-width strings, so `<` is time order and
    /// `last_seen_at` only moves forward; a failed condition (older time, no session) is a no-op.
    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(staff_session_pk(token_sha256), STAFF_SESSION_ITEM_SK)))
            .update_expression("SET last_seen_at = :seen")
            .condition_expression("attribute_exists(pk) AND last_seen_at < :seen")
            .expression_attribute_values(":seen", ts(last_seen_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(())
            }
            Err(err) => Err(sdk_error("UpdateItem", err)),
        }
    }

    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key(staff_session_pk(token_sha256), STAFF_SESSION_ITEM_SK)))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem", e))?;
        Ok(())
    }
}

mod validation_stats;
