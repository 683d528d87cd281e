//! Prometheus text metrics, hand-written: request counts and a latency histogram per route,
//! validations by code, and a few internals. Everything is a pre-registered atomic, so
//! recording costs no lock and no allocation.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use axum::http::Method;

use crate::model::Timestamp;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Default)]
struct RouteStats {
    by_status_class: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
}

pub struct Metrics {
    routes: Vec<(Method, &'static str, RouteStats)>,
    /// path → indexes into `routes`, one per method.
    index: HashMap<&'static str, Vec<usize>>,
    unmatched: RouteStats,
    validation_codes: Vec<(&'static str, AtomicU64)>,
    /// Per UTC hour, a ring of 24: (hour number since the epoch, count).
    hourly: [(AtomicI64, AtomicU64); 24],
    pub snapshot_hits: AtomicU64,
    pub snapshot_misses: AtomicU64,
    snapshot_pushes_ok: AtomicU64,
    snapshot_pushes_failed: AtomicU64,
    /// Per validation code (same order as `validation_codes`), a ring of [`HOURS_BY_CODE`]
    /// UTC hours: (hour number since the epoch, count). Fixed size: codes are a fixed set.
    hourly_by_code: Vec<[(AtomicI64, AtomicU64); HOURS_BY_CODE]>,
    /// Emails the mailer refused or could not send (the portal's dashboard).
    emails_failed: AtomicU64,
}

/// How far back the per-code hourly counts reach (the portal's dashboard chart).
pub const HOURS_BY_CODE: usize = 48;

impl Metrics {
    pub fn new(routes: &[(Method, &'static str)], validation_codes: &[&'static str]) -> Self {
        let mut index: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for (i, (_, path)) in routes.iter().enumerate() {
            index.entry(path).or_default().push(i);
        }
        Self {
            routes: routes.iter().map(|(m, p)| (m.clone(), *p, RouteStats::default())).collect(),
            index,
            unmatched: RouteStats::default(),
            validation_codes: validation_codes.iter().map(|c| (*c, AtomicU64::new(0))).collect(),
            hourly: std::array::from_fn(|_| (AtomicI64::new(-1), AtomicU64::new(0))),
            snapshot_hits: AtomicU64::new(0),
            snapshot_misses: AtomicU64::new(0),
            snapshot_pushes_ok: AtomicU64::new(0),
            snapshot_pushes_failed: AtomicU64::new(0),
            hourly_by_code: validation_codes
                .iter()
                .map(|_| std::array::from_fn(|_| (AtomicI64::new(-1), AtomicU64::new(0))))
                .collect(),
            emails_failed: AtomicU64::new(0),
        }
    }

    fn stats(&self, method: &Method, route: Option<&str>) -> &RouteStats {
        route
            .and_then(|r| self.index.get(r))
            .and_then(|ids| ids.iter().find(|i| self.routes[**i].0 == *method))
            .map_or(&self.unmatched, |i| &self.routes[*i].2)
    }

    pub fn record_request(&self, method: &Method, route: Option<&str>, status: u16, micros: u64) {
        let stats = self.stats(method, route);
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        stats.by_status_class[class].fetch_add(1, Relaxed);
        let seconds = micros as f64 / 1e6;
        if let Some(bucket) = LATENCY_BOUNDS.iter().position(|b| seconds <= *b) {
            stats.latency_buckets[bucket].fetch_add(1, Relaxed);
        }
        stats.latency_sum_micros.fetch_add(micros, Relaxed);
        stats.latency_count.fetch_add(1, Relaxed);
    }

    pub fn record_validation(&self, code: &str, now: Timestamp) {
        let hour = now.timestamp().div_euclid(3600);
        if let Some(i) = self.validation_codes.iter().position(|(c, _)| *c == code) {
            self.validation_codes[i].1.fetch_add(1, Relaxed);
            count_in_hour(&self.hourly_by_code[i][hour.rem_euclid(HOURS_BY_CODE as i64) as usize], hour);
        }
        count_in_hour(&self.hourly[hour.rem_euclid(24) as usize], hour);
    }

    /// For each validation code seen in the last [`HOURS_BY_CODE`] hours: the code and its
    /// count per hour, oldest hour first (the hour numbers are `first_hour(now) + index`).
    pub fn validations_per_hour_by_code(&self, now: Timestamp) -> Vec<(&'static str, Vec<u64>)> {
        let current = now.timestamp().div_euclid(3600);
        let hours = current - (HOURS_BY_CODE as i64 - 1)..=current;
        self.validation_codes
            .iter()
            .zip(&self.hourly_by_code)
            .map(|((code, _), ring)| {
                let counts = hours
                    .clone()
                    .map(|hour| {
                        let (stamp, count) = &ring[hour.rem_euclid(HOURS_BY_CODE as i64) as usize];
                        if stamp.load(Relaxed) == hour { count.load(Relaxed) } else { 0 }
                    })
                    .collect::<Vec<_>>();
                (*code, counts)
            })
            .filter(|(_, counts)| counts.iter().any(|n| *n > 0))
            .collect()
    }

    /// Answers with a 4xx or 5xx status on one route since start (e.g. refused webhook
    /// deliveries: Stripe sees each as a failed delivery and retries).
    pub fn failed_answers(&self, method: &Method, route: &str) -> u64 {
        let stats = self.stats(method, Some(route));
        stats.by_status_class[3].load(Relaxed) + stats.by_status_class[4].load(Relaxed)
    }

    /// One email the mailer refused or could not send.
    pub fn record_email_failure(&self) {
        self.emails_failed.fetch_add(1, Relaxed);
    }

    pub fn emails_failed(&self) -> u64 {
        self.emails_failed.load(Relaxed)
    }

    /// One status push to the edges after a committed change (see `AppState::license_changed`).
    pub fn record_snapshot_push(&self, ok: bool) {
        let counter = if ok { &self.snapshot_pushes_ok } else { &self.snapshot_pushes_failed };
        counter.fetch_add(1, Relaxed);
    }

    /// (pushed, failed) status pushes so far.
    pub fn snapshot_pushes(&self) -> (u64, u64) {
        (self.snapshot_pushes_ok.load(Relaxed), self.snapshot_pushes_failed.load(Relaxed))
    }

    pub fn validations_by_code(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.validation_codes.iter().map(|(c, n)| (*c, n.load(Relaxed)))
    }

    /// (hour number since the epoch, count) for the last 24 hours, oldest first.
    pub fn validations_per_hour(&self, now: Timestamp) -> Vec<(i64, u64)> {
        let current = now.timestamp().div_euclid(3600);
        (current - 23..=current)
            .map(|hour| {
                let (stamp, count) = &self.hourly[hour.rem_euclid(24) as usize];
                (hour, if stamp.load(Relaxed) == hour { count.load(Relaxed) } else { 0 })
            })
            .collect()
    }

    /// The exposition text; `extra` adds the host's own series as (name, help, value): names
    /// ending in `_total` are counters, others gauges.
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP nls_http_requests_total HTTP requests answered, by route and status class.\n");
        out.push_str("# TYPE nls_http_requests_total counter\n");
        let all = self.routes.iter().map(|(m, p, s)| (m.as_str(), *p, s)).chain([(
            "ANY",
            UNMATCHED_ROUTE,
            &self.unmatched,
        )]);
        for (method, route, stats) in all.clone() {
            for (class, n) in STATUS_CLASSES.iter().zip(&stats.by_status_class) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "nls_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP nls_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE nls_http_request_duration_seconds histogram\n");
        for (method, route, stats) in all {
            let count = stats.latency_count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BOUNDS.iter().zip(&stats.latency_buckets) {
                cumulative += n.load(Relaxed);
                let _ = writeln!(
                    out,
                    "nls_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "nls_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
            let sum = stats.latency_sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "nls_http_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "nls_http_request_duration_seconds_count{{{labels}}} {count}");
        }
        out.push_str("# HELP nls_validations_total Validation answers, by code.\n");
        out.push_str("# TYPE nls_validations_total counter\n");
        for (code, n) in self.validations_by_code() {
            let _ = writeln!(out, "nls_validations_total{{code=\"{code}\"}} {n}");
        }
        out.push_str(
            "# HELP nls_snapshot_pushes_total Status pushes to the edges after a change, by outcome.\n",
        );
        out.push_str("# TYPE nls_snapshot_pushes_total counter\n");
        let (ok, failed) = self.snapshot_pushes();
        let _ = writeln!(out, "nls_snapshot_pushes_total{{outcome=\"ok\"}} {ok}");
        let _ = writeln!(out, "nls_snapshot_pushes_total{{outcome=\"failed\"}} {failed}");
        let counters = [
            (
                "nls_snapshot_cache_hits_total",
                "Validations answered from the in-process snapshot cache.",
                self.snapshot_hits.load(Relaxed),
            ),
            (
                "nls_snapshot_cache_misses_total",
                "Snapshot reads from the store.",
                self.snapshot_misses.load(Relaxed),
            ),
            (
                "nls_emails_failed_total",
                "Emails the mailer refused or could not send (this process).",
                self.emails_failed.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters.iter().copied().chain(extra.iter().copied()) {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

/// Adds one to an hourly slot, first resetting it when it still holds an older hour.
fn count_in_hour((stamp, count): &(AtomicI64, AtomicU64), hour: i64) {
    let seen = stamp.load(Relaxed);
    if seen != hour && stamp.compare_exchange(seen, hour, Relaxed, Relaxed).is_ok() {
        count.store(0, Relaxed);
    }
    count.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn validations_by_code_keep_48_hours_and_roll_off() {
        let metrics = Metrics::new(&[], &["VALID", "EXPIRED"]);
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 10, 30, 0).unwrap();
        metrics.record_validation("VALID", start);
        metrics.record_validation("VALID", start);
        metrics.record_validation("EXPIRED", start + Duration::hours(1));
        metrics.record_validation("NOT_A_CODE", start);
        let now = start + Duration::hours(47);
        let by_code = metrics.validations_per_hour_by_code(now);
        let counts = |code: &str| by_code.iter().find(|(c, _)| *c == code).map(|(_, v)| v.clone());
        let valid = counts("VALID").expect("VALID seen");
        assert_eq!(valid.len(), HOURS_BY_CODE);
        assert_eq!((valid[0], valid.iter().sum::<u64>()), (2, 2), "the oldest hour is still in");
        assert_eq!(counts("EXPIRED").unwrap()[1], 1);
        // An hour later the first hour rolls off; recording into its slot again starts at zero.
        let later = now + Duration::hours(1);
        assert!(metrics.validations_per_hour_by_code(later).iter().all(|(c, _)| *c != "VALID"));
        metrics.record_validation("VALID", start + Duration::hours(48));
        let again = metrics.validations_per_hour_by_code(later);
        assert_eq!(again.iter().find(|(c, _)| *c == "VALID").unwrap().1.iter().sum::<u64>(), 1);
    }
}
