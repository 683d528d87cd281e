//! What this machine knows, read without changing anything: the CLI runs beside a live app (a
//! health check, an operator's shell) that owns the cache and holds the usage spool's lock, so
//! it reads the same files and never writes them.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use nls_client::deployment_lease::{self, LeaseRecord};
use nls_client::env_config::OFFLINE_FILE_NAME;
use nls_client::usage_spool::UsageRecord;
use nls_client::{LicenseState, Policy};
use nls_client_core::fleet_usage::{FleetView, period_of};
use nls_client_core::{CacheLoad, LicenseMachine};
use nls_core::key_ring::KeyRing;
use nls_core::receipt::verify_receipt;
use serde::Serialize;

pub const CACHE_FILE: &str = "license-cache.json";
pub const DEPLOYMENT_FILE: &str = "deployment-id";
const MONTH_FILE: &str = "usage-month.json";

/// The key as it may be shown: never the key itself.
#[derive(Debug, Clone, Serialize, Default)]
pub struct KeySummary {
    /// The key's last 8 characters: its public checksum, enough to tell two keys apart.
    pub checksum: Option<String>,
    pub jti: Option<String>,
    pub kid: Option<String>,
    pub license_id: Option<String>,
}

pub fn key_summary(key: &str) -> KeySummary {
    let checksum = nls_core::key_format::split_key(key.trim()).ok().map(|(_, sum)| sum.to_owned());
    let (kid, jti, license_id) = match nls_core::license_token::inspect_license_key(key.trim()) {
        Ok((header, claims, _)) => {
            let text = |v: &serde_json::Value, name: &str| v[name].as_str().map(str::to_owned);
            (text(&header, "kid"), text(&claims, "jti"), text(&claims, "sub"))
        }
        Err(_) => (None, None, None),
    };
    KeySummary { checksum, jti, kid, license_id }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "cache", rename_all = "snake_case")]
pub enum CacheStatus {
    Absent,
    Loaded,
    Ignored { why: String },
    Unreadable { why: String },
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SpoolSummary {
    /// Records recorded but not yet acknowledged by NLS.
    pub pending_records: usize,
    pub pending_by_metric: BTreeMap<String, u64>,
    pub sealed_batches: usize,
    /// Batches NLS refused as malformed, kept for support.
    pub rejected_batches: usize,
}

/// The spool, counted from its files (`usage/open.jsonl`, `batch-*.jsonl`, `rejected-*.jsonl`).
pub fn spool_summary(data_dir: &Path) -> Result<SpoolSummary, String> {
    let dir = data_dir.join("usage");
    let mut summary = SpoolSummary::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(summary),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("rejected-") {
            summary.rejected_batches += 1;
            continue;
        }
        let pending = name == "open.jsonl" || (name.starts_with("batch-") && name.ends_with(".jsonl"));
        if !pending {
            continue;
        }
        if name.starts_with("batch-") {
            summary.sealed_batches += 1;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        for record in text.lines().filter_map(|l| serde_json::from_str::<UsageRecord>(l).ok()) {
            summary.pending_records += 1;
            *summary.pending_by_metric.entry(record.metric).or_default() += record.value;
        }
    }
    Ok(summary)
}

/// The machine as the app would load it, from the files in `data_dir`.
pub struct LocalView {
    pub machine: LicenseMachine,
    pub cache: CacheStatus,
    pub offline_file: Option<Result<(), String>>,
}

/// The key to judge: the one inside an imported offline file (the app loads that file and
/// uses its key, as `ClientConfig::from_env` does), else the configured one.
pub fn effective_key(ring: &KeyRing, configured: Option<&str>, data_dir: Option<&Path>) -> Option<String> {
    let from_file = data_dir
        .and_then(|dir| std::fs::read_to_string(dir.join(OFFLINE_FILE_NAME)).ok())
        .and_then(|file| LicenseMachine::key_from_offline_file(ring, &file).ok());
    from_file.or_else(|| configured.map(str::to_owned))
}

pub fn load_view(
    ring: KeyRing,
    key: &str,
    data_dir: Option<&Path>,
    fingerprint: Option<&str>,
    now: DateTime<Utc>,
) -> LocalView {
    let mut machine = LicenseMachine::new(ring, key, Policy::default());
    let Some(dir) = data_dir else {
        return LocalView { machine, cache: CacheStatus::Absent, offline_file: None };
    };
    let cache = match std::fs::read_to_string(dir.join(CACHE_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::Absent,
        Err(e) => CacheStatus::Unreadable { why: e.to_string() },
        Ok(text) => match machine.load_cache(&text, now) {
            CacheLoad::Loaded => CacheStatus::Loaded,
            CacheLoad::Ignored(why) => CacheStatus::Ignored { why },
        },
    };
    let offline_file = std::fs::read_to_string(dir.join(OFFLINE_FILE_NAME))
        .ok()
        .map(|file| machine.load_offline_file(&file, fingerprint, now).map_err(|e| e.to_string()));
    LocalView { machine, cache, offline_file }
}

pub fn read_deployment_id(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(DEPLOYMENT_FILE))
        .ok()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub usable: bool,
    #[serde(flatten)]
    pub state: LicenseState,
    pub key: KeySummary,
    pub data_dir: Option<String>,
    #[serde(flatten)]
    pub cache: CacheStatus,
    pub offline_file: Option<String>,
    pub last_good_validation_at: Option<DateTime<Utc>>,
    pub receipt_age_seconds: Option<i64>,
    /// Days left before grace starts (valid/offline), or before the app stops (grace).
    pub days_left: Option<f64>,
    pub deployment_id: Option<String>,
    pub spool: Option<SpoolSummary>,
    /// This install's usage this month, as the app counted it (acknowledged + spooled).
    pub month_usage: Option<serde_json::Value>,
    /// Fleet-wide usage of every limited metric (all deployments), from the newest answer or
    /// receipt the app cached, plus what this machine's spool still holds.
    pub fleet_usage: Option<FleetUsageReport>,
    /// This deployment's seat lease as the server last stated it.
    pub lease: Option<LeaseReport>,
}

#[derive(Debug, Serialize)]
pub struct FleetUsageReport {
    /// When the server's snapshot behind these numbers was read.
    pub as_of: DateTime<Utc>,
    pub age_seconds: i64,
    pub metrics: BTreeMap<String, FleetMetricReport>,
}

#[derive(Debug, Serialize)]
pub struct FleetMetricReport {
    /// Fleet-wide count in `period` (every deployment's delivered reports).
    pub used: u64,
    pub limit: u64,
    pub period: String,
    /// Recorded on this machine and not yet delivered (not in `used`).
    pub spooled_here: u64,
    /// `limit - used - spooled_here`, never below 0.
    pub remaining: u64,
}

#[derive(Debug, Serialize)]
pub struct LeaseReport {
    #[serde(flatten)]
    pub record: LeaseRecord,
    /// Seconds until `lease_expires_at` (negative: it ran out); absent when not known.
    pub lease_left_seconds: Option<i64>,
}

fn fleet_usage_report(
    view: Option<&FleetView>,
    spool: Option<&SpoolSummary>,
    now: DateTime<Utc>,
) -> Option<FleetUsageReport> {
    let view = view?;
    let as_of = DateTime::from_timestamp(view.as_of, 0)?;
    let period = period_of(now);
    let metrics = view
        .metrics
        .iter()
        .map(|(metric, m)| {
            // A view from an earlier month counts nothing for this one.
            let used = if m.period == period { m.used } else { 0 };
            let spooled_here = spool.and_then(|s| s.pending_by_metric.get(metric)).copied().unwrap_or(0);
            let remaining = m.limit.saturating_sub(used.saturating_add(spooled_here));
            (
                metric.clone(),
                FleetMetricReport { used, limit: m.limit, period: period.clone(), spooled_here, remaining },
            )
        })
        .collect();
    Some(FleetUsageReport { as_of, age_seconds: (now - as_of).num_seconds(), metrics })
}

pub fn status_report(
    ring: &KeyRing,
    key: &str,
    data_dir: Option<&Path>,
    fingerprint: Option<&str>,
    now: DateTime<Utc>,
) -> StatusReport {
    let mut view = load_view(ring.clone(), key, data_dir, fingerprint, now);
    let state = view.machine.state(now);
    let receipt = view.machine.receipt().and_then(|jws| verify_receipt(ring, jws, key).ok());
    let last_good = receipt.as_ref().map(|r| r.issued_at);
    let deadline = match &state {
        LicenseState::Valid { valid_until, .. } => Some(*valid_until),
        LicenseState::Offline { offline_until, .. } => Some(*offline_until),
        LicenseState::Grace { ends_at, .. } => Some(*ends_at),
        LicenseState::Invalid { .. } => None,
    };
    let spool = data_dir.and_then(|d| spool_summary(d).ok());
    let fleet_usage = fleet_usage_report(view.machine.usage().view(), spool.as_ref(), now);
    let deployment_id = data_dir.and_then(read_deployment_id);
    let lease = data_dir
        .and_then(deployment_lease::load)
        .filter(|r| Some(&r.deployment_id) == deployment_id.as_ref())
        .map(|record| LeaseReport {
            lease_left_seconds: record.lease_expires_at.map(|t| (t - now).num_seconds()),
            record,
        });
    StatusReport {
        usable: state.is_usable(),
        state,
        key: key_summary(key),
        data_dir: data_dir.map(|d| d.display().to_string()),
        cache: view.cache,
        offline_file: view.offline_file.map(|r| match r {
            Ok(()) => "loaded".to_owned(),
            Err(why) => format!("rejected: {why}"),
        }),
        last_good_validation_at: last_good,
        receipt_age_seconds: last_good.map(|t| (now - t).num_seconds()),
        days_left: deadline.map(|d| ((d - now).num_seconds() as f64 / 86_400.0 * 10.0).round() / 10.0),
        deployment_id,
        spool,
        month_usage: data_dir
            .and_then(|d| std::fs::read_to_string(d.join(MONTH_FILE)).ok())
            .and_then(|t| serde_json::from_str(&t).ok()),
        fleet_usage,
        lease,
    }
}

/// The human form of `status`.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<22} {value}\n"));
    let state = &report.state;
    let name = match state {
        LicenseState::Valid { .. } => "VALID".to_owned(),
        LicenseState::Offline { .. } => "OFFLINE (working from the last receipt)".to_owned(),
        LicenseState::Grace { reason, .. } => format!("GRACE ({reason:?})"),
        LicenseState::Invalid { code, .. } => format!("INVALID ({code})"),
    };
    line("license state", name);
    if let Some(warning) = state.warning() {
        line("warning", warning);
    }
    if let Some(license) = state.license() {
        line("license", license.id.clone());
        line("tier", license.tier.clone());
        line("features", if license.features.is_empty() { "-".into() } else { license.features.join(", ") });
        let limits: Vec<String> = license.limits.iter().map(|(m, n)| format!("{m}={n}/month")).collect();
        line("limits", if limits.is_empty() { "none".into() } else { limits.join(", ") });
        line("expires", license.expires_at.map_or("never".into(), |t| t.to_rfc3339()));
        line("offline / grace days", format!("{} / {}", license.offline_days, license.grace_days));
    }
    if let Some(days) = report.days_left {
        line("days left", format!("{days}"));
    }
    let key = &report.key;
    line(
        "key",
        format!(
            "checksum {} jti {}",
            key.checksum.as_deref().unwrap_or("-"),
            key.jti.as_deref().unwrap_or("-")
        ),
    );
    line(
        "last good validation",
        match (report.last_good_validation_at, report.receipt_age_seconds) {
            (Some(at), Some(age)) => format!("{} ({} ago)", at.to_rfc3339(), human_duration(age)),
            _ => "none cached".into(),
        },
    );
    line("deployment id", report.deployment_id.clone().unwrap_or_else(|| "none yet".into()));
    line("deployment lease", render_lease(report.lease.as_ref()));
    if let Some(spool) = &report.spool {
        line(
            "usage not yet sent",
            format!(
                "{} records in {} batches (+ open segment), {} rejected batches",
                spool.pending_records, spool.sealed_batches, spool.rejected_batches
            ),
        );
    }
    if let Some(month) = &report.month_usage {
        line("usage this month", month["counters"].to_string());
    }
    match &report.fleet_usage {
        None => line("fleet usage", "not known yet (no answer with usage cached)".into()),
        Some(fleet) if fleet.metrics.is_empty() => line("fleet usage", "no limited metric".into()),
        Some(fleet) => {
            for (metric, m) in &fleet.metrics {
                line(
                    "fleet usage",
                    format!(
                        "{metric}: {} used of {} in {} by all deployments (+{} spooled here), {} left",
                        m.used, m.limit, m.period, m.spooled_here, m.remaining
                    ),
                );
            }
            line(
                "fleet usage as of",
                format!("{} ({} ago)", fleet.as_of.to_rfc3339(), human_duration(fleet.age_seconds)),
            );
        }
    }
    line("data dir", report.data_dir.clone().unwrap_or_else(|| "not set".into()));
    line(
        "cache",
        match &report.cache {
            CacheStatus::Absent => "none".into(),
            CacheStatus::Loaded => "loaded (signature and seal ok)".into(),
            CacheStatus::Ignored { why } => format!("ignored: {why}"),
            CacheStatus::Unreadable { why } => format!("unreadable: {why}"),
        },
    );
    if let Some(file) = &report.offline_file {
        line("offline license file", file.clone());
    }
    out
}

fn render_lease(lease: Option<&LeaseReport>) -> String {
    let Some(lease) = lease else { return "not known yet (no heartbeat answered)".into() };
    let r = &lease.record;
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let beat = |t: Option<DateTime<Utc>>| t.map_or("-".to_owned(), secs);
    match (r.lease_expires_at, lease.lease_left_seconds) {
        (Some(at), Some(left)) if left >= 0 => format!(
            "until {} ({} left); last heartbeat {}, next {}",
            secs(at),
            human_duration(left),
            beat(r.last_heartbeat_at),
            beat(r.next_heartbeat_at)
        ),
        (Some(at), _) => format!(
            "ran out at {} unless renewed since; last heartbeat {}, next {}",
            secs(at),
            beat(r.last_heartbeat_at),
            beat(r.next_heartbeat_at)
        ),
        _ => format!(
            "expiry not stated (the edge queued the heartbeat); last heartbeat {}, next {}",
            beat(r.last_heartbeat_at),
            beat(r.next_heartbeat_at)
        ),
    }
}

pub fn human_duration(seconds: i64) -> String {
    let s = seconds.abs();
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    };
    if seconds < 0 { format!("-{text}") } else { text }
}
