//! [`ValidationStatsStore`] on DynamoDB (docs/dynamodb.md, "Validation aggregates").
//!
//! ```text
//! VEBATCH#<batch id> / VEBATCH             the batch's once-guard (TTL 30 days)
//! VSTATS#<license>   / DAY#<yyyy-mm-dd>    day counters: code:<CODE>, kept:<kind>, untracked:<kind>
//! VSTATS#<license>   / FLAGS#<yyyy-mm-dd>  the day's compliance record (JSON)
//! VSTATS#<license>#<yyyy-mm-dd> / <kind>#<value>   one distinct value: total, first/last seen
//! COMPLIANCE#<yyyy-mm-dd> / <license>      a flagged day, for the fleet-wide list
//! ```
//!
//! A batch is one TransactWriteItems: the guard (`attribute_not_exists`) and an `ADD` of the
//! code counters of each (license, day) it touches (99 at most; more are added in further
//! transactions right after). Distinct values follow, once the guard is recorded: an existing
//! value's row gets `ADD total` (one UpdateItem, the common case); a new one is a transaction
//! of `ADD kept:<kind> 1` on the day item, conditioned on the bound, and the value row's put,
//! conditioned on its absence, so concurrent writers never count a value twice or pass the
//! bound. If the process dies between the guard and the values, that batch's distinct values
//! are missing (under-counted, never over-counted); the code counters are exact.
//!
//! First and last sightings only widen (an edge's outbox may deliver an older batch after a
//! newer one): the common in-order write moves `last_seen` under a condition that the batch is
//! no earlier than what is stored; a late batch's sightings are widened after it by
//! compare-and-set updates ([`DynamoStore::widen_sightings`]).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{Duration, NaiveDate};
use nls_core::validation_stats::*;

use super::*;

/// Batch guards are kept this long: an edge's outbox gives up on an item long before.
const BATCH_GUARD_RETENTION: Duration = Duration::days(30);
/// Guard plus day counters in one transaction.
const DAYS_PER_TRANSACTION: usize = MAX_TRANSACTION_ITEMS - 1;
/// Tries of the new-value transaction before giving up (each lost try means another writer
/// created the value or took a slot, so the next try takes the cheaper path).
const NEW_VALUE_ATTEMPTS: u32 = 8;

const CODE_PREFIX: &str = "code:";
const KEPT_PREFIX: &str = "kept:";
const UNTRACKED_PREFIX: &str = "untracked:";

fn stats_pk(license_id: &str) -> String {
    format!("VSTATS#{license_id}")
}
fn values_pk(license_id: &str, day: NaiveDate) -> String {
    format!("VSTATS#{license_id}#{}", day_key(day))
}
fn day_sk(day: NaiveDate) -> String {
    format!("DAY#{}", day_key(day))
}
fn flags_sk(day: NaiveDate) -> String {
    format!("FLAGS#{}", day_key(day))
}
fn fleet_pk(day: NaiveDate) -> String {
    format!("COMPLIANCE#{}", day_key(day))
}

impl DynamoStore {
    /// The day item's counters. `in_order`: conditioned on the batch being no earlier than the
    /// day's sightings, so `last_seen` moves forward in this write; otherwise the sightings are
    /// only set if absent, and widened after the commit.
    fn day_counter_update(&self, inc: &DayIncrement, in_order: bool) -> StoreResult<TransactWriteItem> {
        let mut update_names = HashMap::from([
            ("#first".to_owned(), "first_seen".to_owned()),
            ("#last".to_owned(), "last_seen".to_owned()),
        ]);
        let mut update_values =
            HashMap::from([(":first".to_owned(), ts(inc.first_at)), (":last".to_owned(), ts(inc.last_at))]);
        let mut additions = Vec::new();
        for (i, (code, total)) in inc.by_code.iter().enumerate() {
            update_names.insert(format!("#c{i}"), format!("{CODE_PREFIX}{code}"));
            update_values.insert(format!(":c{i}"), n(*total));
            additions.push(format!("#c{i} :c{i}"));
        }
        let (last, condition) = if in_order {
            (":last", Some("attribute_not_exists(#last) OR (#first <= :first AND #last <= :last)"))
        } else {
            ("if_not_exists(#last, :last)", None)
        };
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key(stats_pk(&inc.license_id), &day_sk(inc.day))))
            .update_expression(format!(
                "SET #first = if_not_exists(#first, :first), #last = {last} ADD {}",
                additions.join(", ")
            ))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_names(Some(update_names))
            .set_expression_attribute_values(Some(update_values))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// One transaction: the batch's guard (when given) and the counters of `days`. `None`
    /// when the guard finds the batch recorded before; else which days arrived late (their
    /// sightings are to be widened).
    async fn add_day_counters(
        &self,
        guard: Option<&Item>,
        days: &[DayIncrement],
    ) -> StoreResult<Option<Vec<bool>>> {
        let mut late = vec![false; days.len()];
        let offset = usize::from(guard.is_some());
        loop {
            let mut items = Vec::with_capacity(days.len() + offset);
            if let Some(guard) = guard {
                items.push(self.put(guard.clone(), Some("attribute_not_exists(pk)"), vec![])?);
            }
            for (inc, late) in days.iter().zip(&late) {
                items.push(self.day_counter_update(inc, !late)?);
            }
            match self.transact(items).await? {
                TransactionResult::Committed => return Ok(Some(late)),
                TransactionResult::ConditionFailed(0) if guard.is_some() => return Ok(None),
                // That day holds later sightings: write it the late way (each day once at most).
                TransactionResult::ConditionFailed(index) => match late.get_mut(index - offset) {
                    Some(day_late) if !*day_late => *day_late = true,
                    _ => {
                        return Err(StoreError::Unavailable(format!(
                            "validation day counters: transaction item {index} failed a condition"
                        )));
                    }
                },
            }
        }
    }

    /// Moves an item's `first_seen` earlier and `last_seen` later where `first`/`last` are; each
    /// a compare-and-set, so concurrent writers only ever widen.
    async fn widen_sightings(&self, key: &Item, first: Timestamp, last: Timestamp) -> StoreResult<()> {
        for (attribute, at, condition) in
            [("first_seen", first, "#at > :at"), ("last_seen", last, "#at < :at")]
        {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("SET #at = :at")
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names(&[("#at", attribute)])))
                .set_expression_attribute_values(Some(values(vec![(":at", ts(at))])))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // Already as wide (or no such item).
                Err(SdkError::ServiceError(service))
                    if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {}
                Err(err) => return Err(sdk_error("UpdateItem", err)),
            }
        }
        Ok(())
    }

    /// Adds to a value row that exists; false if there is none yet.
    async fn add_to_existing_value(
        &self,
        pk: &str,
        sk: &str,
        increment: &ValueIncrement,
    ) -> StoreResult<bool> {
        let key = item_key(pk.to_owned(), sk);
        let add = |in_order: bool| {
            // DynamoDB refuses names and values an expression does not use.
            let mut attribute_names = vec![("#pk", PK), ("#total", "total")];
            let mut attribute_values = vec![(":n", n(increment.count))];
            let (update, condition) = if in_order {
                attribute_names.extend([("#first", "first_seen"), ("#last", "last_seen")]);
                attribute_values
                    .extend([(":first", ts(increment.first_at)), (":last", ts(increment.last_at))]);
                (
                    "SET #last = :last ADD #total :n",
                    "attribute_exists(#pk) AND #first <= :first AND #last <= :last",
                )
            } else {
                ("ADD #total :n", "attribute_exists(#pk)")
            };
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names(&attribute_names)))
                .set_expression_attribute_values(Some(values(attribute_values)))
                // Tells "no row" from "a late batch" without another request.
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
        };
        // The common case, one write: the row exists and this batch is no earlier than it.
        match add(true).await {
            Ok(_) => return Ok(true),
            Err(SdkError::ServiceError(service)) => match service.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) if failed.item().is_none() => {
                    return Ok(false);
                }
                UpdateItemError::ConditionalCheckFailedException(_) => {}
                _ => return Err(sdk_error("UpdateItem", SdkError::ServiceError(service))),
            },
            Err(err) => return Err(sdk_error("UpdateItem", err)),
        }
        // A late batch: add the count, then widen the sightings.
        match add(false).await {
            Ok(_) => {
                self.widen_sightings(&key, increment.first_at, increment.last_at).await?;
                Ok(true)
            }
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(err) => Err(sdk_error("UpdateItem", err)),
        }
    }

    async fn add_value(
        &self,
        inc: &DayIncrement,
        kind: DistinctKind,
        value: &str,
        increment: &ValueIncrement,
    ) -> StoreResult<()> {
        let pk = values_pk(&inc.license_id, inc.day);
        let sk = format!("{}#{value}", kind.as_str());
        if pk.len() > MAX_PARTITION_KEY_BYTES || sk.len() > MAX_SORT_KEY_BYTES {
            return Ok(()); // ids are bounded well below; nothing this long can be kept
        }
        let day_key_item = item_key(stats_pk(&inc.license_id), &day_sk(inc.day));
        for attempt in 0..NEW_VALUE_ATTEMPTS {
            if self.add_to_existing_value(&pk, &sk, increment).await? {
                return Ok(());
            }
            let take_slot = Update::builder()
                .table_name(&self.table)
                .set_key(Some(day_key_item.clone()))
                .update_expression("ADD #kept :one")
                .condition_expression("attribute_not_exists(#kept) OR #kept < :cap")
                .set_expression_attribute_names(Some(names(&[(
                    "#kept",
                    &format!("{KEPT_PREFIX}{}", kind.as_str()),
                )])))
                .set_expression_attribute_values(Some(values(vec![
                    (":one", n(1)),
                    (":cap", n(DISTINCT_VALUES_KEPT)),
                ])))
                .build()
                .map_err(build_error)?;
            let row = ItemBuilder::keyed(pk.clone(), &sk)
                .set("kind", s(kind.as_str()))
                .set("value", s(value))
                .set("total", n(increment.count))
                .set("first_seen", ts(increment.first_at))
                .set("last_seen", ts(increment.last_at))
                .set(TTL_ATTRIBUTE, n((inc.last_at + VALIDATION_LOG_RETENTION).timestamp()))
                .build();
            let items = vec![
                TransactWriteItem::builder().update(take_slot).build(),
                self.put(row, Some("attribute_not_exists(pk)"), vec![])?,
            ];
            match self.transact(items).await? {
                TransactionResult::Committed => return Ok(()),
                // The bound is reached: count the events, keep no value.
                TransactionResult::ConditionFailed(0) => {
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(day_key_item.clone()))
                        .update_expression("ADD #untracked :n")
                        .set_expression_attribute_names(Some(names(&[(
                            "#untracked",
                            &format!("{UNTRACKED_PREFIX}{}", kind.as_str()),
                        )])))
                        .set_expression_attribute_values(Some(values(vec![(":n", n(increment.count))])))
                        .send()
                        .await
                        .map_err(|e| sdk_error("UpdateItem", e))?;
                    return Ok(());
                }
                // Another writer created the value meanwhile: add to it.
                TransactionResult::ConditionFailed(_) => pause_before_retry(attempt).await,
            }
        }
        Err(StoreError::Unavailable(format!("validation value {sk} of {pk}: too many concurrent writers")))
    }
}

fn aggregate_from_items(
    license_id: &str,
    day: NaiveDate,
    day_item: &Item,
    value_items: &[Item],
) -> StoreResult<ValidationDayAggregate> {
    let reader = ItemReader::new(day_item);
    let number = |v: &AttributeValue| match v {
        AttributeValue::N(text) => {
            text.parse::<u64>().map_err(|_| reader.corrupt(format!("bad number {text:?}")))
        }
        _ => Err(reader.corrupt("a counter is not a number")),
    };
    let mut by_code = BTreeMap::new();
    let mut untracked: BTreeMap<DistinctKind, u64> = BTreeMap::new();
    for (name, value) in day_item {
        if let Some(code) = name.strip_prefix(CODE_PREFIX) {
            by_code.insert(code.to_owned(), number(value)?);
        } else if let Some(kind) = name.strip_prefix(UNTRACKED_PREFIX).and_then(DistinctKind::parse) {
            untracked.insert(kind, number(value)?);
        }
    }
    let mut values: BTreeMap<DistinctKind, Vec<ValueSeen>> = BTreeMap::new();
    for item in value_items {
        let r = ItemReader::new(item);
        let kind_text = r.string("kind")?;
        let kind = DistinctKind::parse(&kind_text)
            .ok_or_else(|| r.corrupt(format!("unknown kind {kind_text:?}")))?;
        values.entry(kind).or_default().push(ValueSeen {
            value: r.string("value")?,
            count: r.number("total")?,
            first_seen: r.timestamp("first_seen")?,
            last_seen: r.timestamp("last_seen")?,
        });
    }
    let distinct = distinct_by_kind(values, &untracked);
    Ok(ValidationDayAggregate {
        license_id: license_id.to_owned(),
        day,
        by_code,
        distinct,
        first_seen: reader.timestamp("first_seen")?,
        last_seen: reader.timestamp("last_seen")?,
    })
}

fn record_from_item(item: &Item) -> StoreResult<ComplianceRecord> {
    let r = ItemReader::new(item);
    let json = r.string("record")?;
    serde_json::from_str(&json).map_err(|e| r.corrupt(e.to_string()))
}

#[async_trait]
impl ValidationStatsStore for DynamoStore {
    async fn record_day_increments(&self, batch: &DayIncrementBatch) -> StoreResult<BatchOutcome> {
        let increments = &batch.increments;
        let guard = ItemBuilder::keyed(format!("VEBATCH#{}", batch.batch_id), "VEBATCH")
            .set("batch_id", s(&batch.batch_id))
            .set("event_count", n(batch.event_count()))
            .set("received_at", ts(batch.received_at))
            .set(TTL_ATTRIBUTE, n((batch.received_at + BATCH_GUARD_RETENTION).timestamp()))
            .build();
        let mut chunks: Vec<&[DayIncrement]> = increments.chunks(DAYS_PER_TRANSACTION).collect();
        if chunks.is_empty() {
            chunks.push(&[]); // still record the guard
        }
        let mut late_days = Vec::new();
        for (index, chunk) in chunks.into_iter().enumerate() {
            // The guard goes with the first chunk: a replayed batch adds nothing.
            let guard = (index == 0).then_some(&guard);
            let Some(late) = self.add_day_counters(guard, chunk).await? else {
                return Ok(BatchOutcome::Duplicate);
            };
            late_days.extend(chunk.iter().zip(late).filter(|(_, late)| *late).map(|(inc, _)| inc));
        }
        for inc in late_days {
            let key = item_key(stats_pk(&inc.license_id), &day_sk(inc.day));
            self.widen_sightings(&key, inc.first_at, inc.last_at).await?;
        }
        for inc in increments {
            for (kind, values) in &inc.values {
                for (value, increment) in values {
                    self.add_value(inc, *kind, value, increment).await?;
                }
            }
        }
        Ok(BatchOutcome::Recorded)
    }

    async fn validation_day_aggregate(
        &self,
        license_id: &str,
        day: NaiveDate,
    ) -> StoreResult<Option<ValidationDayAggregate>> {
        let Some(day_item) = self.get_item(stats_pk(license_id), &day_sk(day)).await? else {
            return Ok(None);
        };
        let query = KeyQuery {
            index: None,
            key_condition: "#pk = :pk".into(),
            names: names(&[("#pk", PK)]),
            values: values(vec![(":pk", s(values_pk(license_id, day)))]),
            forward: true,
        };
        let value_items = self.query_all(&query).await?;
        aggregate_from_items(license_id, day, &day_item, &value_items).map(Some)
    }

    async fn put_compliance_record(&self, record: &ComplianceRecord) -> StoreResult<()> {
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode a compliance record: {e}")))?;
        let expires = n((record.evaluated_at + VALIDATION_LOG_RETENTION).timestamp());
        let own = ItemBuilder::keyed(stats_pk(&record.license_id), &flags_sk(record.day))
            .set("record", s(&json))
            .set(TTL_ATTRIBUTE, expires.clone())
            .build();
        let mut items = vec![self.put(own, None, vec![])?];
        if record.flagged() {
            let fleet = ItemBuilder::keyed(fleet_pk(record.day), &record.license_id)
                .set("record", s(&json))
                .set(TTL_ATTRIBUTE, expires)
                .build();
            items.push(self.put(fleet, None, vec![])?);
        } else {
            items.push(self.delete(item_key(fleet_pk(record.day), &record.license_id), None, vec![])?);
        }
        match self.transact(items).await? {
            TransactionResult::Committed => Ok(()),
            TransactionResult::ConditionFailed(i) => {
                Err(StoreError::Unavailable(format!("compliance write item {i} failed a condition")))
            }
        }
    }

    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let query = KeyQuery {
            index: None,
            key_condition: "#pk = :pk AND #sk BETWEEN :from AND :to".into(),
            names: names(&[("#pk", PK), ("#sk", SK)]),
            values: values(vec![
                (":pk", s(stats_pk(license_id))),
                (":from", s(flags_sk(since))),
                (":to", s("FLAGS#~")),
            ]),
            forward: false,
        };
        self.query_all(&query).await?.iter().map(record_from_item).collect()
    }

    async fn list_flagged_compliance(
        &self,
        since: NaiveDate,
        until: NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        // One partition per day, newest first; the caller bounds the range.
        let mut records = Vec::new();
        let mut day = until;
        while day >= since && records.len() < limit {
            let query = KeyQuery {
                index: None,
                key_condition: "#pk = :pk".into(),
                names: names(&[("#pk", PK)]),
                values: values(vec![(":pk", s(fleet_pk(day)))]),
                forward: true,
            };
            for item in self.query_all(&query).await? {
                records.push(record_from_item(&item)?);
            }
            let Some(previous) = day.pred_opt() else { break };
            day = previous;
        }
        records.truncate(limit);
        Ok(records)
    }
}
