//! Every validation counted wherever it was answered (issue 12): validation events (from the
//! edges' batches and the origin's own answers), the per-license daily aggregates stores keep
//! as counters, and the key-sharing / compliance flags computed from them.
//!
//! An aggregate is one (license, UTC day): validations by code, and for deployments,
//! fingerprints, client IPs and countries the distinct values seen, each with its count and
//! first/last sighting. Distinct values are kept as one row (or item) per value, so the counts
//! are exact up to [`DISTINCT_VALUES_KEPT`] values per kind and day; past that bound a value
//! that was not kept yet is only counted in `untracked` (events), so the distinct count reads
//! "at least the bound". That bound keeps what a key-sharer (or an attacker inventing
//! fingerprints) can make a store hold to about 4,000 small rows per license and day.
//!
//! A flag is information for staff, never an automatic suspension.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// Distinct values kept per license, day and kind; beyond it values are counted, not kept.
pub const DISTINCT_VALUES_KEPT: u64 = 1000;
/// The most events one batch may hold (an edge ships at most this many at once).
pub const MAX_EVENTS_PER_BATCH: usize = 100;
/// Values shown as evidence per kind (the most frequent first).
pub const TOP_VALUES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistinctKind {
    Deployment,
    Fingerprint,
    ClientIp,
    Country,
}

impl DistinctKind {
    pub const ALL: [DistinctKind; 4] = [Self::Deployment, Self::Fingerprint, Self::ClientIp, Self::Country];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::Fingerprint => "fingerprint",
            Self::ClientIp => "client_ip",
            Self::Country => "country",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One validation answered by an edge or by the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationEvent {
    pub license_id: String,
    pub deployment_id: Option<String>,
    pub fingerprint: Option<String>,
    pub client_ip: Option<String>,
    /// ISO 3166 alpha-2, where the platform knows it (`request.cf.country`).
    pub country: Option<String>,
    pub code: String,
    pub at: Timestamp,
    /// Which edge answered (e.g. a Cloudflare colo); `None` for the origin itself.
    pub edge: Option<String>,
}

/// Events counted once per `batch_id` however often the batch is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationEventBatch {
    pub batch_id: String,
    pub received_at: Timestamp,
    pub events: Vec<ValidationEvent>,
}

/// What one (license, day) gains from one value in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueIncrement {
    pub count: u64,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

/// What one batch adds to one (license, day) aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayIncrement {
    pub license_id: String,
    pub day: NaiveDate,
    pub by_code: BTreeMap<String, u64>,
    pub values: BTreeMap<DistinctKind, BTreeMap<String, ValueIncrement>>,
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

impl ValidationEventBatch {
    /// The batch grouped by (license, UTC day of `at`), in key order.
    pub fn day_increments(&self) -> Vec<DayIncrement> {
        let mut tally = DayTally::default();
        for e in &self.events {
            tally.add(&SeenValidation::of(e));
        }
        tally.take()
    }

    /// The same batch in the form the stores write.
    pub fn tallied(&self) -> DayIncrementBatch {
        DayIncrementBatch {
            batch_id: self.batch_id.clone(),
            received_at: self.received_at,
            increments: self.day_increments(),
        }
    }
}

/// Increments counted once per `batch_id`: an edge's batch grouped (`tallied`), or the
/// origin's own validations, tallied as they were answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayIncrementBatch {
    pub batch_id: String,
    pub received_at: Timestamp,
    pub increments: Vec<DayIncrement>,
}

impl DayIncrementBatch {
    /// How many validations the batch counts.
    pub fn event_count(&self) -> u64 {
        self.increments.iter().map(DayIncrement::event_count).sum()
    }
}

impl ValueIncrement {
    /// One sighting at `at`.
    pub fn once(at: Timestamp) -> Self {
        Self { count: 1, first_at: at, last_at: at }
    }

    /// Adds `other`'s sightings of the same value.
    fn absorb(&mut self, other: &ValueIncrement) {
        self.count += other.count;
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
    }
}

impl DayIncrement {
    pub fn event_count(&self) -> u64 {
        self.by_code.values().sum()
    }

    /// Adds what `other` (the same license and day) counted.
    fn absorb(&mut self, other: DayIncrement) {
        for (code, n) in other.by_code {
            *self.by_code.entry(code).or_default() += n;
        }
        for (kind, values) in other.values {
            let mine = self.values.entry(kind).or_default();
            for (value, v) in values {
                match mine.get_mut(&value) {
                    Some(slot) => slot.absorb(&v),
                    None => {
                        mine.insert(value, v);
                    }
                }
            }
        }
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
    }

    /// Rows this increment holds in a [`DayTally`]: itself and each distinct value.
    fn entries(&self) -> usize {
        1 + self.values.values().map(BTreeMap::len).sum::<usize>()
    }
}

/// One validation as a tally counts it, borrowing its texts.
#[derive(Debug, Clone, Copy)]
pub struct SeenValidation<'a> {
    pub license_id: &'a str,
    pub code: &'a str,
    pub at: Timestamp,
    pub deployment_id: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub country: Option<&'a str>,
}

impl<'a> SeenValidation<'a> {
    pub fn of(event: &'a ValidationEvent) -> Self {
        Self {
            license_id: &event.license_id,
            code: &event.code,
            at: event.at,
            deployment_id: event.deployment_id.as_deref(),
            fingerprint: event.fingerprint.as_deref(),
            client_ip: event.client_ip.as_deref(),
            country: event.country.as_deref(),
        }
    }

    fn value(&self, kind: DistinctKind) -> Option<&'a str> {
        match kind {
            DistinctKind::Deployment => self.deployment_id,
            DistinctKind::Fingerprint => self.fingerprint,
            DistinctKind::ClientIp => self.client_ip,
            DistinctKind::Country => self.country,
        }
    }
}

/// Validations grouped by (license, UTC day) as they are counted, without keeping each one:
/// a repeated check-in costs lookups, not allocations. The origin keeps its own answers in one
/// between flushes; [`ValidationEventBatch::day_increments`] groups a batch with one.
#[derive(Debug, Default)]
pub struct DayTally {
    days: BTreeMap<String, BTreeMap<NaiveDate, DayIncrement>>,
    events: u64,
    /// Increments plus their distinct values: what bounds the tally's memory.
    entries: usize,
    oldest: Option<Timestamp>,
}

impl DayTally {
    /// Validations counted since the last [`take`](Self::take).
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// When the earliest validation counted since the last take was answered.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.oldest
    }

    /// Counts `seen`.
    pub fn add(&mut self, seen: &SeenValidation<'_>) {
        self.add_within(seen, usize::MAX);
    }

    /// Counts `seen` unless that would take the tally past `max_entries`; false if refused.
    pub fn add_within(&mut self, seen: &SeenValidation<'_>, max_entries: usize) -> bool {
        let day = seen.at.date_naive();
        let most_added = 1 + DistinctKind::ALL.len();
        if self.entries.saturating_add(most_added) > max_entries
            && self.entries.saturating_add(self.entries_added(seen, day)) > max_entries
        {
            return false;
        }
        self.events += 1;
        self.oldest = Some(self.oldest.map_or(seen.at, |t| t.min(seen.at)));
        let days = match self.days.get_mut(seen.license_id) {
            Some(days) => days,
            None => self.days.entry(seen.license_id.to_owned()).or_default(),
        };
        let inc = days.entry(day).or_insert_with(|| {
            self.entries += 1;
            DayIncrement {
                license_id: seen.license_id.to_owned(),
                day,
                by_code: BTreeMap::new(),
                values: BTreeMap::new(),
                first_at: seen.at,
                last_at: seen.at,
            }
        });
        match inc.by_code.get_mut(seen.code) {
            Some(n) => *n += 1,
            None => {
                inc.by_code.insert(seen.code.to_owned(), 1);
            }
        }
        inc.first_at = inc.first_at.min(seen.at);
        inc.last_at = inc.last_at.max(seen.at);
        for kind in DistinctKind::ALL {
            let Some(value) = seen.value(kind) else { continue };
            let values = inc.values.entry(kind).or_default();
            match values.get_mut(value) {
                Some(slot) => slot.absorb(&ValueIncrement::once(seen.at)),
                None => {
                    values.insert(value.to_owned(), ValueIncrement::once(seen.at));
                    self.entries += 1;
                }
            }
        }
        true
    }

    /// The entries counting `seen` would add: its day, and each value the day lacks.
    fn entries_added(&self, seen: &SeenValidation<'_>, day: NaiveDate) -> usize {
        let values = DistinctKind::ALL.iter().filter_map(|k| seen.value(*k).map(|v| (k, v)));
        match self.days.get(seen.license_id).and_then(|days| days.get(&day)) {
            None => 1 + values.count(),
            Some(inc) => {
                values.filter(|(k, v)| !inc.values.get(k).is_some_and(|kept| kept.contains_key(*v))).count()
            }
        }
    }

    /// Adds increments taken earlier back (a failed write) while the tally holds fewer than
    /// `max_entries`; returns how many validations the ones left out counted.
    pub fn restore(&mut self, increments: impl IntoIterator<Item = DayIncrement>, max_entries: usize) -> u64 {
        let mut dropped = 0;
        for inc in increments {
            if self.entries.saturating_add(inc.entries()) > max_entries {
                dropped += inc.event_count();
                continue;
            }
            self.events += inc.event_count();
            self.oldest = Some(self.oldest.map_or(inc.first_at, |t| t.min(inc.first_at)));
            let days = self.days.entry(inc.license_id.clone()).or_default();
            match days.get_mut(&inc.day) {
                Some(mine) => {
                    self.entries -= mine.entries();
                    mine.absorb(inc);
                    self.entries += mine.entries();
                }
                None => {
                    self.entries += inc.entries();
                    days.insert(inc.day, inc);
                }
            }
        }
        dropped
    }

    /// Everything counted, by (license, day) in key order; the tally is empty after.
    pub fn take(&mut self) -> Vec<DayIncrement> {
        let days = std::mem::take(&mut self.days);
        *self = Self::default();
        days.into_values().flat_map(BTreeMap::into_values).collect()
    }
}

/// One distinct value of a day, with how often and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueSeen {
    pub value: String,
    pub count: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl ValueSeen {
    /// A value kept for the first time, from what one batch saw of it.
    pub fn first_kept(value: &str, increment: &ValueIncrement) -> Self {
        Self {
            value: value.to_owned(),
            count: increment.count,
            first_seen: increment.first_at,
            last_seen: increment.last_at,
        }
    }

    /// Adds what one batch saw of a kept value: the counts add up, the sightings widen
    /// (batches may arrive out of order).
    pub fn absorb(&mut self, increment: &ValueIncrement) {
        self.count = self.count.saturating_add(increment.count);
        self.first_seen = self.first_seen.min(increment.first_at);
        self.last_seen = self.last_seen.max(increment.last_at);
    }
}

/// Whether a (license, day, kind) that keeps `kept` values keeps one more; if not, the new
/// value's events are only counted as untracked. The rule of every store (SQLite and DynamoDB
/// apply it inside their own atomic operations).
pub fn keeps_another_value(kept: u64) -> bool {
    kept < DISTINCT_VALUES_KEPT
}

/// Merges one batch's values of one kind into a day's kept values (`value → sighting`): a
/// kept value absorbs its increment, a new one is kept while [`keeps_another_value`], and
/// otherwise its events are untracked. Returns the events untracked by this merge.
pub fn merge_kept_values(
    kept: &mut BTreeMap<String, ValueSeen>,
    increments: &BTreeMap<String, ValueIncrement>,
) -> u64 {
    let mut untracked = 0u64;
    for (value, increment) in increments {
        if let Some(seen) = kept.get_mut(value) {
            seen.absorb(increment);
        } else if keeps_another_value(kept.len() as u64) {
            kept.insert(value.clone(), ValueSeen::first_kept(value, increment));
        } else {
            untracked = untracked.saturating_add(increment.count);
        }
    }
    untracked
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistinctValues {
    /// Distinct values kept (exact while under [`DISTINCT_VALUES_KEPT`]).
    pub distinct: u64,
    /// Events whose value was new after the bound was reached (not kept, not distinct-counted).
    pub untracked: u64,
    /// The most frequent values, at most [`TOP_VALUES`].
    pub top: Vec<ValueSeen>,
}

impl DistinctValues {
    /// From every kept value: the count and the top values.
    pub fn from_values(mut values: Vec<ValueSeen>, untracked: u64) -> Self {
        values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        let distinct = values.len() as u64;
        values.truncate(TOP_VALUES);
        Self { distinct, untracked, top: values }
    }
}

/// Every kind with kept values or untracked events, from what a store read back.
pub fn distinct_by_kind(
    mut values: BTreeMap<DistinctKind, Vec<ValueSeen>>,
    untracked: &BTreeMap<DistinctKind, u64>,
) -> BTreeMap<DistinctKind, DistinctValues> {
    DistinctKind::ALL
        .into_iter()
        .filter_map(|k| {
            let kept = values.remove(&k);
            let lost = untracked.get(&k).copied();
            (kept.is_some() || lost.is_some())
                .then(|| (k, DistinctValues::from_values(kept.unwrap_or_default(), lost.unwrap_or(0))))
        })
        .collect()
}

/// Everything counted for one license on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationDayAggregate {
    pub license_id: String,
    pub day: NaiveDate,
    pub by_code: BTreeMap<String, u64>,
    pub distinct: BTreeMap<DistinctKind, DistinctValues>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl ValidationDayAggregate {
    pub fn validations(&self) -> u64 {
        self.by_code.values().sum()
    }
    pub fn distinct_count(&self, kind: DistinctKind) -> u64 {
        self.distinct.get(&kind).map_or(0, |d| d.distinct)
    }
}

/// The thresholds of the flags. Hosts parse them once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComplianceSettings {
    /// Flag more distinct fingerprints or client IPs in a day than `max_deployments × this`.
    pub sharing_factor: u32,
    /// Flag a day with at least this many `TOO_MANY_DEPLOYMENTS` (or `ACTIVATION_RATE_LIMITED`).
    pub repeated_refusals: u64,
    /// Flag validations from more than this many countries in a day.
    pub max_countries: u32,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        Self { sharing_factor: 3, repeated_refusals: 3, max_countries: 3 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplianceFlagKind {
    TooManyFingerprints,
    TooManyClientIps,
    RepeatedTooManyDeployments,
    RepeatedActivationRateLimited,
    TooManyCountries,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceFlag {
    pub kind: ComplianceFlagKind,
    /// What was counted that day.
    pub observed: u64,
    /// The threshold it passed (`observed > threshold`, or `>=` for repeated refusals).
    pub threshold: u64,
}

/// One license's day as staff see it: the flags and the aggregate that is their evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceRecord {
    pub license_id: String,
    pub day: NaiveDate,
    pub flags: Vec<ComplianceFlag>,
    pub evidence: ValidationDayAggregate,
    pub evaluated_at: Timestamp,
}

impl ComplianceRecord {
    pub fn flagged(&self) -> bool {
        !self.flags.is_empty()
    }
}

/// The flags a day's aggregate raises for a license with `max_deployments` seats (`None`:
/// unlimited, so no sharing threshold).
pub fn evaluate_flags(
    aggregate: &ValidationDayAggregate,
    max_deployments: Option<u32>,
    settings: &ComplianceSettings,
) -> Vec<ComplianceFlag> {
    let mut flags = Vec::new();
    if let Some(max) = max_deployments {
        let threshold = u64::from(max.max(1)) * u64::from(settings.sharing_factor);
        for (kind, flag) in [
            (DistinctKind::Fingerprint, ComplianceFlagKind::TooManyFingerprints),
            (DistinctKind::ClientIp, ComplianceFlagKind::TooManyClientIps),
        ] {
            let observed = aggregate.distinct_count(kind);
            if observed > threshold {
                flags.push(ComplianceFlag { kind: flag, observed, threshold });
            }
        }
    }
    for (code, flag) in [
        ("TOO_MANY_DEPLOYMENTS", ComplianceFlagKind::RepeatedTooManyDeployments),
        ("ACTIVATION_RATE_LIMITED", ComplianceFlagKind::RepeatedActivationRateLimited),
    ] {
        let observed = aggregate.by_code.get(code).copied().unwrap_or(0);
        if settings.repeated_refusals > 0 && observed >= settings.repeated_refusals {
            flags.push(ComplianceFlag { kind: flag, observed, threshold: settings.repeated_refusals });
        }
    }
    let countries = aggregate.distinct_count(DistinctKind::Country);
    if countries > u64::from(settings.max_countries) {
        flags.push(ComplianceFlag {
            kind: ComplianceFlagKind::TooManyCountries,
            observed: countries,
            threshold: u64::from(settings.max_countries),
        });
    }
    flags
}

/// `YYYY-MM-DD`, the day format of store keys and query parameters.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub fn parse_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().filter(|_| text.len() == 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(license: &str, fp: &str, ip: &str, code: &str, hour: u32) -> ValidationEvent {
        ValidationEvent {
            license_id: license.into(),
            deployment_id: Some("d1".into()),
            fingerprint: Some(fp.into()),
            client_ip: Some(ip.into()),
            country: None,
            code: code.into(),
            at: Utc.with_ymd_and_hms(2026, 12, 4, hour, 0, 0).unwrap(),
            edge: None,
        }
    }

    #[test]
    fn increments_group_by_license_and_day() {
        let batch = ValidationEventBatch {
            batch_id: "b".into(),
            received_at: Utc::now(),
            events: vec![
                event("a", "f1", "1.1.1.1", "VALID", 1),
                event("a", "f1", "1.1.1.2", "VALID", 2),
                event("b", "f2", "1.1.1.1", "EXPIRED", 3),
            ],
        };
        let incs = batch.day_increments();
        assert_eq!(incs.len(), 2);
        assert_eq!(incs[0].by_code.get("VALID"), Some(&2));
        assert_eq!(incs[0].values[&DistinctKind::ClientIp].len(), 2);
        assert_eq!(incs[0].values[&DistinctKind::Fingerprint]["f1"].count, 2);
        assert_eq!(incs[0].first_at.format("%H").to_string(), "01");
        assert_eq!(incs[0].last_at.format("%H").to_string(), "02");
    }

    #[test]
    fn a_full_tally_still_counts_what_it_holds_and_refuses_new_values() {
        let mut tally = DayTally::default();
        let first = event("a", "f1", "1.1.1.1", "VALID", 1);
        // The day, the fingerprint, the IP and the deployment: 4 entries.
        assert!(tally.add_within(&SeenValidation::of(&first), 4));
        assert_eq!(tally.entries(), 4);
        assert!(
            tally.add_within(&SeenValidation::of(&event("a", "f1", "1.1.1.1", "VALID", 2)), 4),
            "a repeat"
        );
        assert!(
            !tally.add_within(&SeenValidation::of(&event("a", "f2", "1.1.1.1", "VALID", 3)), 4),
            "a new value"
        );
        assert!(
            !tally.add_within(&SeenValidation::of(&event("b", "f1", "1.1.1.1", "VALID", 3)), 4),
            "a new day"
        );
        assert_eq!((tally.events(), tally.entries()), (2, 4));
        let taken = tally.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].by_code["VALID"], 2);
        assert_eq!(taken[0].values[&DistinctKind::Fingerprint]["f1"].count, 2);
        assert_eq!((tally.events(), tally.entries(), tally.oldest()), (0, 0, None));
    }

    #[test]
    fn restored_increments_merge_with_newer_counts_within_the_bound() {
        let mut tally = DayTally::default();
        for (fp, hour) in [("f1", 1), ("f2", 2)] {
            tally.add(&SeenValidation::of(&event("a", fp, "1.1.1.1", "VALID", hour)));
        }
        tally.add(&SeenValidation::of(&event("b", "f9", "2.2.2.2", "EXPIRED", 5)));
        let taken = tally.take();
        tally.add(&SeenValidation::of(&event("a", "f1", "1.1.1.1", "VALID", 3)));
        assert_eq!(tally.restore(taken.clone(), usize::MAX), 0);
        assert_eq!(tally.events(), 4);
        let merged = tally.take();
        assert_eq!(merged.len(), 2);
        let a = &merged[0];
        assert_eq!(a.by_code["VALID"], 3);
        assert_eq!(a.values[&DistinctKind::Fingerprint]["f1"].count, 2);
        assert_eq!(a.first_at.format("%H").to_string(), "01");
        assert_eq!(a.last_at.format("%H").to_string(), "03");
        // Past the bound, what is put back is dropped and its validations reported.
        let b_entries = taken[1].entries();
        assert_eq!(tally.restore(taken, b_entries), 2, "license a's increment did not fit");
        assert_eq!(tally.events(), 1);
    }

    fn aggregate(fingerprints: u64, ips: u64, countries: u64, refusals: u64) -> ValidationDayAggregate {
        let distinct = |n: u64| DistinctValues { distinct: n, untracked: 0, top: Vec::new() };
        ValidationDayAggregate {
            license_id: "a".into(),
            day: NaiveDate::from_ymd_opt(2026, 12, 4).unwrap(),
            by_code: BTreeMap::from([("VALID".into(), 10), ("TOO_MANY_DEPLOYMENTS".into(), refusals)]),
            distinct: BTreeMap::from([
                (DistinctKind::Fingerprint, distinct(fingerprints)),
                (DistinctKind::ClientIp, distinct(ips)),
                (DistinctKind::Country, distinct(countries)),
            ]),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
        }
    }

    #[test]
    fn flags_follow_the_thresholds() {
        let s = ComplianceSettings::default();
        let kinds = |a: &ValidationDayAggregate, max| {
            evaluate_flags(a, max, &s).into_iter().map(|f| f.kind).collect::<Vec<_>>()
        };
        assert!(kinds(&aggregate(6, 6, 3, 2), Some(2)).is_empty(), "at the thresholds: no flag");
        assert_eq!(
            kinds(&aggregate(7, 7, 4, 3), Some(2)),
            vec![
                ComplianceFlagKind::TooManyFingerprints,
                ComplianceFlagKind::TooManyClientIps,
                ComplianceFlagKind::RepeatedTooManyDeployments,
                ComplianceFlagKind::TooManyCountries,
            ]
        );
        assert!(kinds(&aggregate(700, 700, 1, 0), None).is_empty(), "unlimited seats share nothing");
    }

    #[test]
    fn merging_adds_counts_widens_sightings_and_stops_keeping_at_the_bound() {
        let at = |hour| Utc.with_ymd_and_hms(2026, 12, 4, hour, 0, 0).unwrap();
        let inc = |count, first, last| ValueIncrement { count, first_at: at(first), last_at: at(last) };
        let mut kept = BTreeMap::new();
        let first = BTreeMap::from([("a".to_owned(), inc(2, 5, 6))]);
        assert_eq!(merge_kept_values(&mut kept, &first), 0);
        // A later batch with earlier events (an outbox retry): the sightings widen.
        let late = BTreeMap::from([("a".to_owned(), inc(3, 1, 2)), ("b".to_owned(), inc(1, 3, 3))]);
        assert_eq!(merge_kept_values(&mut kept, &late), 0);
        assert_eq!((kept["a"].count, kept["a"].first_seen, kept["a"].last_seen), (5, at(1), at(6)));
        assert_eq!(kept["b"], ValueSeen { value: "b".into(), count: 1, first_seen: at(3), last_seen: at(3) });

        let mut full: BTreeMap<String, ValueSeen> = (0..DISTINCT_VALUES_KEPT)
            .map(|i| (format!("v{i}"), ValueSeen::first_kept(&format!("v{i}"), &inc(1, 1, 1))))
            .collect();
        let more = BTreeMap::from([("v0".to_owned(), inc(4, 2, 2)), ("new".to_owned(), inc(7, 2, 2))]);
        assert_eq!(merge_kept_values(&mut full, &more), 7, "a new value past the bound is untracked");
        assert_eq!(full["v0"].count, 5, "a kept value still counts past the bound");
        assert!(!full.contains_key("new"));
        assert!(keeps_another_value(DISTINCT_VALUES_KEPT - 1) && !keeps_another_value(DISTINCT_VALUES_KEPT));
    }

    #[test]
    fn days_parse_strictly() {
        assert_eq!(parse_day("2026-12-04").map(day_key).as_deref(), Some("2026-12-04"));
        assert!(parse_day("2026-12-4").is_none());
        assert!(parse_day("yesterday").is_none());
    }
}
