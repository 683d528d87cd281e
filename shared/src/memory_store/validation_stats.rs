//! [`ValidationStatsStore`] in memory: one lock per operation.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use chrono::NaiveDate;

use super::MemoryStore;
use crate::ports::{BatchOutcome, StoreResult, ValidationStatsStore};
use crate::validation_stats::*;

#[derive(Default)]
pub(super) struct StatsState {
    batches: BTreeSet<String>,
    /// (license, day) → counters.
    days: BTreeMap<(String, NaiveDate), DayCounters>,
    compliance: BTreeMap<(String, NaiveDate), ComplianceRecord>,
}

struct DayCounters {
    by_code: BTreeMap<String, u64>,
    values: BTreeMap<DistinctKind, BTreeMap<String, ValueSeen>>,
    untracked: BTreeMap<DistinctKind, u64>,
    first_seen: crate::model::Timestamp,
    last_seen: crate::model::Timestamp,
}

impl MemoryStore {
    fn stats(&self) -> std::sync::MutexGuard<'_, StatsState> {
        self.validation_stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ValidationStatsStore for MemoryStore {
    async fn record_day_increments(&self, batch: &DayIncrementBatch) -> StoreResult<BatchOutcome> {
        let mut state = self.stats();
        if !state.batches.insert(batch.batch_id.clone()) {
            return Ok(BatchOutcome::Duplicate);
        }
        for inc in &batch.increments {
            let day = state.days.entry((inc.license_id.clone(), inc.day)).or_insert_with(|| DayCounters {
                by_code: BTreeMap::new(),
                values: BTreeMap::new(),
                untracked: BTreeMap::new(),
                first_seen: inc.first_at,
                last_seen: inc.last_at,
            });
            day.first_seen = day.first_seen.min(inc.first_at);
            day.last_seen = day.last_seen.max(inc.last_at);
            for (code, n) in &inc.by_code {
                *day.by_code.entry(code.clone()).or_default() += n;
            }
            for (kind, values) in &inc.values {
                let untracked = merge_kept_values(day.values.entry(*kind).or_default(), values);
                if untracked > 0 {
                    *day.untracked.entry(*kind).or_default() += untracked;
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
        let state = self.stats();
        Ok(state.days.get(&(license_id.to_owned(), day)).map(|c| ValidationDayAggregate {
            license_id: license_id.to_owned(),
            day,
            by_code: c.by_code.clone(),
            distinct: distinct_by_kind(
                c.values.iter().map(|(k, m)| (*k, m.values().cloned().collect())).collect(),
                &c.untracked,
            ),
            first_seen: c.first_seen,
            last_seen: c.last_seen,
        }))
    }

    async fn put_compliance_record(&self, record: &ComplianceRecord) -> StoreResult<()> {
        self.stats().compliance.insert((record.license_id.clone(), record.day), record.clone());
        Ok(())
    }

    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let state = self.stats();
        let mut records: Vec<ComplianceRecord> = state
            .compliance
            .values()
            .filter(|r| r.license_id == license_id && r.day >= since)
            .cloned()
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.day));
        Ok(records)
    }

    async fn list_flagged_compliance(
        &self,
        since: NaiveDate,
        until: NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let state = self.stats();
        let mut records: Vec<ComplianceRecord> = state
            .compliance
            .values()
            .filter(|r| r.flagged() && r.day >= since && r.day <= until)
            .cloned()
            .collect();
        records.sort_by(|a, b| b.day.cmp(&a.day).then_with(|| a.license_id.cmp(&b.license_id)));
        records.truncate(limit);
        Ok(records)
    }
}
