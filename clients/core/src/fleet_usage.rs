//! Fleet-wide usage for the local limit check, written once for both clients.
//!
//! The server's validation answer and its signed receipt carry `usage: {metric: {used, limit,
//! period}}` from the license's status snapshot, read at `as_of`: every deployment's reports
//! that reached the store by then, through any edge or the origin. A client adds what that
//! figure cannot hold yet:
//!
//! - what this process has spooled but not yet delivered (the caller passes it in);
//! - what it delivered that the snapshot may not show: a batch the server acknowledged at
//!   `delivered_at` counts until a view arrives whose `as_of` is at least one second later
//!   (`delivered_at` is the server's `Date` header when the answer had one, second-resolution,
//!   else this machine's clock).
//!
//! The newest view wins (by `as_of`), wherever it came from: an answer, or a receipt (fresh,
//! or loaded from the on-disk cache, so a restart keeps the fleet view).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use nls_core::validation::MetricUsage;
use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

/// Bounds the delivered-but-unconfirmed list when no newer view comes (a server that never
/// answers with usage): the oldest entries fold into one per (period, metric).
const MAX_UNCONFIRMED: usize = 1024;

/// The UTC month of `at`, as counter periods are named: `2026-12`.
pub fn period_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// A snapshot's fleet-wide usage, as an answer or a receipt carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// Unix seconds (floored): when the snapshot was read from the store.
    pub as_of: UnixSeconds,
    pub metrics: BTreeMap<String, MetricUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    period: String,
    metric: String,
    value: u64,
    delivered_at: UnixSeconds,
}

/// The fleet view and this process's delivered-but-maybe-unseen reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageLedger {
    view: Option<FleetView>,
    unconfirmed: Vec<Delivered>,
}

impl UsageLedger {
    pub fn view(&self) -> Option<&FleetView> {
        self.view.as_ref()
    }

    /// Takes `view` if it is newer than the one held, and forgets the deliveries it shows.
    /// Two views of the same second (`as_of` is whole seconds) are merged by the larger count
    /// per metric: within a period a counter only grows, so the larger is the later.
    pub fn observe(&mut self, view: FleetView) {
        if let Some(held) = self.view.as_mut() {
            if held.as_of > view.as_of {
                return;
            }
            if held.as_of == view.as_of {
                for (metric, seen) in view.metrics {
                    match held.metrics.get_mut(&metric) {
                        Some(m) if m.period == seen.period => {
                            m.used = m.used.max(seen.used);
                            m.limit = seen.limit;
                        }
                        _ => {
                            held.metrics.insert(metric, seen);
                        }
                    }
                }
                return;
            }
        }
        let as_of = view.as_of;
        self.unconfirmed.retain(|d| d.delivered_at.saturating_add(1) > as_of);
        self.view = Some(view);
    }

    /// A batch the server acknowledged at `delivered_at`: `(metric, value, recorded at)` per
    /// record, counted in the month the record was made.
    pub fn note_delivered<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a str, u64, DateTime<Utc>)>,
        delivered_at: UnixSeconds,
    ) {
        for (metric, value, at) in records {
            self.unconfirmed.push(Delivered {
                period: period_of(at),
                metric: metric.to_owned(),
                value,
                delivered_at,
            });
        }
        if self.unconfirmed.len() > MAX_UNCONFIRMED {
            self.fold_unconfirmed();
        }
    }

    fn fold_unconfirmed(&mut self) {
        let mut folded: BTreeMap<(String, String), Delivered> = BTreeMap::new();
        for d in self.unconfirmed.drain(..) {
            let entry = folded.entry((d.period.clone(), d.metric.clone())).or_insert(Delivered {
                value: 0,
                delivered_at: d.delivered_at,
                ..d.clone()
            });
            entry.value = entry.value.saturating_add(d.value);
            // The latest delivery decides when the folded sum is confirmed: never too early.
            entry.delivered_at = entry.delivered_at.max(d.delivered_at);
        }
        self.unconfirmed = folded.into_values().collect();
    }

    /// Fleet-wide use of `metric` in `period` as far as this process knows: the view's count
    /// (when the view is for that period) plus what this process delivered since. `None`
    /// when no view names the metric (no server answer with usage yet, or an unlimited metric).
    pub fn fleet_used(&self, metric: &str, period: &str) -> Option<u64> {
        let view = self.view.as_ref()?;
        let counted = view.metrics.get(metric)?;
        let base = if counted.period == period { counted.used } else { 0 };
        let since: u64 = self
            .unconfirmed
            .iter()
            .filter(|d| d.metric == metric && d.period == period)
            .map(|d| d.value)
            .fold(0, u64::saturating_add);
        Some(base.saturating_add(since))
    }

    /// What this process delivered that no view has shown yet, per metric, in `period`.
    pub fn unconfirmed(&self, period: &str) -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for d in self.unconfirmed.iter().filter(|d| d.period == period) {
            let sum: &mut u64 = sums.entry(d.metric.clone()).or_default();
            *sum = sum.saturating_add(d.value);
        }
        sums
    }
}

/// What one metric looks like to this install: the number the limit check uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricStanding {
    /// The fleet-wide count from the newest view, for its period (`None`: no view names it).
    pub fleet_used: Option<u64>,
    /// Delivered by this process since that view.
    pub delivered_unconfirmed: u64,
    /// Spooled by this process, not delivered yet.
    pub spooled: u64,
    /// What the limit check counts: fleet + unconfirmed + spooled, and never less than this
    /// install's own month total.
    pub used: u64,
}

/// The count [`crate::LicenseState::check_limit`] should use for `metric` this `period`.
/// `spooled`: this process's records not yet delivered; `own_total`: everything this install
/// recorded this month (delivered or not), the fallback when no view names the metric.
pub fn standing(
    ledger: &UsageLedger,
    metric: &str,
    period: &str,
    spooled: u64,
    own_total: u64,
) -> MetricStanding {
    let fleet_used = ledger
        .view()
        .and_then(|v| v.metrics.get(metric))
        .map(|m| if m.period == period { m.used } else { 0 });
    let delivered_unconfirmed = ledger.unconfirmed(period).get(metric).copied().unwrap_or(0);
    let used = match ledger.fleet_used(metric, period) {
        Some(fleet) => fleet.saturating_add(spooled).max(own_total),
        None => own_total,
    };
    MetricStanding { fleet_used, delivered_unconfirmed, spooled, used }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(as_of: i64, used: u64) -> FleetView {
        FleetView {
            as_of,
            metrics: BTreeMap::from([(
                "runs".to_owned(),
                MetricUsage { used, limit: 100, period: "2026-12".to_owned() },
            )]),
        }
    }

    fn dec(day: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-{day:02}T10:00:00Z")).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_delivery_counts_until_a_view_at_least_a_second_later_shows_it() {
        let mut ledger = UsageLedger::default();
        ledger.observe(view(1000, 60));
        ledger.note_delivered([("runs", 30, dec(4))], 1005);
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(90));
        // A view read in the same second as the delivery may predate it: still counted.
        ledger.observe(view(1005, 60));
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(90));
        ledger.observe(view(1006, 90));
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(90));
    }

    #[test]
    fn two_views_of_the_same_second_keep_the_larger_count() {
        let mut ledger = UsageLedger::default();
        ledger.observe(view(1000, 0));
        ledger.observe(view(1000, 3));
        ledger.observe(view(1000, 1));
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(3));
    }

    #[test]
    fn an_older_view_never_replaces_a_newer_one() {
        let mut ledger = UsageLedger::default();
        ledger.observe(view(2000, 120));
        ledger.observe(view(1000, 10));
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(120));
    }

    #[test]
    fn a_view_of_another_month_counts_nothing_for_this_one() {
        let mut ledger = UsageLedger::default();
        ledger.observe(view(1000, 120));
        assert_eq!(ledger.fleet_used("runs", "2027-01"), Some(0));
    }

    #[test]
    fn the_check_uses_fleet_plus_spooled_and_never_less_than_the_own_total() {
        let mut ledger = UsageLedger::default();
        assert_eq!(standing(&ledger, "runs", "2026-12", 5, 7).used, 7, "no view: the own total");
        ledger.observe(view(1000, 60));
        let s = standing(&ledger, "runs", "2026-12", 30, 30);
        assert_eq!((s.fleet_used, s.spooled, s.used), (Some(60), 30, 90));
        assert_eq!(standing(&ledger, "runs", "2026-12", 0, 500).used, 500);
    }

    #[test]
    fn the_unconfirmed_list_stays_bounded_and_keeps_its_sum() {
        let mut ledger = UsageLedger::default();
        ledger.observe(view(10, 0));
        for i in 0..3000 {
            ledger.note_delivered([("runs", 1, dec(4))], 100 + i);
        }
        assert!(ledger.unconfirmed.len() <= MAX_UNCONFIRMED);
        assert_eq!(ledger.fleet_used("runs", "2026-12"), Some(3000));
    }
}
