//! The client an app holds: it validates at start-up and then at the server's `next_check_in`
//! (with jitter), keeps the signed receipt on disk, sends heartbeats, and reports usage from
//! the on-disk spool. All network and disk work happens on one background thread; the app's
//! request path only reads memory (`state`, `has_feature`, `check_limit`) or appends to the
//! spool (`record_usage`).
//!
//! The decisions (what an answer means, offline/grace/fail-closed, clock rollback) are in
//! `nls-client-core`, shared with the Node package.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use nls_client_core::fleet_usage::{MetricStanding, standing};
use nls_client_core::schedule::{backoff_delay, next_check_delay};
use nls_client_core::validation_answer::heartbeat_needs_validation;
use nls_client_core::{AnswerOutcome, CacheLoad, LicenseMachine, LicenseState, LimitCheck, Policy};
use nls_core::key_ring::KeyRing;
use serde::{Deserialize, Serialize};

use crate::deployment_lease::{self, LeaseRecord};
use crate::durable_file::{random_id, random_unit, read_optional, write_atomic};
use crate::http_transport::HttpTransport;
use crate::usage_spool::{SealedBatch, UsageRecord, UsageSpool};

/// The wall clock, injectable for tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Clone)]
pub struct ClientConfig {
    /// NLS base URL, e.g. `https://licenses.nectar.example`. `None` for an air-gapped install.
    pub server_url: Option<String>,
    /// The license key. May be left empty when `offline_file` is set: the key inside it is used.
    pub license_key: String,
    /// The public JWKS the app trusts (ship it with the app; `GET /.well-known/jwks.json`).
    pub jwks_json: String,
    /// Where the receipt cache, the deployment id and the usage spool live.
    pub data_dir: PathBuf,
    /// Default: a random id created once and kept in `data_dir`, so restarts keep their seat.
    pub deployment_id: Option<String>,
    pub fingerprint: Option<String>,
    pub app_version: Option<String>,
    /// The JSON text of an offline license file (air-gapped installs).
    pub offline_file: Option<String>,
    /// Default: when the server says (`next_heartbeat_at`).
    pub heartbeat_interval: Option<Duration>,
    pub usage_flush_interval: Duration,
    pub request_timeout: Duration,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
}

impl ClientConfig {
    pub fn new(server_url: &str, license_key: &str, jwks_json: &str, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server_url: Some(server_url.to_owned()),
            license_key: license_key.to_owned(),
            jwks_json: jwks_json.to_owned(),
            data_dir: data_dir.into(),
            deployment_id: None,
            fingerprint: None,
            app_version: None,
            offline_file: None,
            heartbeat_interval: None,
            usage_flush_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// An air-gapped install: no server, the offline license file is the proof.
    pub fn air_gapped(offline_file_json: &str, jwks_json: &str, data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::new("", "", jwks_json, data_dir);
        config.server_url = None;
        config.offline_file = Some(offline_file_json.to_owned());
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the pinned JWKS is not usable: {0}")]
    Jwks(String),
    #[error("the offline license file is rejected: {0}")]
    OfflineFile(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

/// What one usage flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub batches_sent: usize,
    pub records_sent: usize,
    pub batches_rejected: usize,
    /// Set when sending stopped early (offline); the rest stays spooled.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MonthCounters {
    period: String,
    counters: BTreeMap<String, u64>,
}

struct Schedule {
    next_validation: Instant,
    validation_failures: u32,
    next_heartbeat: Instant,
    next_flush: Instant,
    flush_failures: u32,
}

struct Inner {
    config: ClientConfig,
    transport: Option<HttpTransport>,
    machine: Mutex<LicenseMachine>,
    spool: UsageSpool,
    /// This month's usage as far as this install knows (acknowledged + spooled).
    month: Mutex<MonthCounters>,
    /// Spooled, not yet acknowledged: (period, metric) → sum. Kept in memory so the limit
    /// check on the request path reads no file.
    spooled: Mutex<BTreeMap<(String, String), u64>>,
    deployment_id: String,
    stopping: Mutex<bool>,
    wake: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
    schedule: Mutex<Schedule>,
    /// Serialises flushes (the worker and an explicit `flush_usage`).
    flushing: Mutex<()>,
    /// Cloud access tokens by audience (`access_tokens`).
    access_tokens: crate::access_tokens::SharedAccessTokens,
}

/// A cheap handle (`Clone`) to the license client.
///
/// Call [`LicenseClient::shutdown`] when the app stops: it stops the background thread (and so
/// the heartbeats) and flushes usage. Without it the thread runs until the process exits.
/// `start` and the `*_now` methods block on the network (bounded by `request_timeout`); from
/// async code, call them in `spawn_blocking`. `state`, `has_feature`, `check_limit` and
/// `record_usage` never touch the network.
#[derive(Clone)]
pub struct LicenseClient {
    inner: Arc<Inner>,
}

const CACHE_FILE: &str = "license-cache.json";
const DEPLOYMENT_FILE: &str = "deployment-id";
const COUNTERS_FILE: &str = "usage-month.json";
/// How often the worker wakes at least, to persist the clock record.
const TICK: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn period_of(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

impl LicenseClient {
    /// Opens the client without any network call or thread: loads the cached receipt (verified)
    /// and the offline file, if any. Call [`Self::validate_now`] and [`Self::spawn_background`],
    /// or use [`Self::start`] which does both.
    pub fn open(config: ClientConfig) -> Result<Self, ClientError> {
        let ring =
            KeyRing::parse_jwks_json(&config.jwks_json).map_err(|e| ClientError::Jwks(e.to_string()))?;
        std::fs::create_dir_all(&config.data_dir).map_err(io_err("creating the data directory"))?;
        let now = config.clock.now();
        let key = match (&config.offline_file, config.license_key.trim().is_empty()) {
            (Some(file), true) => LicenseMachine::key_from_offline_file(&ring, file)
                .map_err(|e| ClientError::OfflineFile(e.to_string()))?,
            _ => config.license_key.clone(),
        };
        let mut machine = LicenseMachine::new(ring, &key, config.policy);
        let cache_path = config.data_dir.join(CACHE_FILE);
        let cached = read_optional(&cache_path).map_err(io_err("reading the license cache"))?;
        if let Some(CacheLoad::Ignored(why)) = cached.map(|text| machine.load_cache(&text, now)) {
            tracing::warn!(%why, "nls: the cached license receipt is ignored");
        }
        if let Some(file) = &config.offline_file {
            machine
                .load_offline_file(file, config.fingerprint.as_deref(), now)
                .map_err(|e| ClientError::OfflineFile(e.to_string()))?;
        }
        let deployment_id = match &config.deployment_id {
            Some(id) => id.clone(),
            None => {
                let path = config.data_dir.join(DEPLOYMENT_FILE);
                match read_optional(&path).map_err(io_err("reading the deployment id"))? {
                    Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                    _ => {
                        let id = format!("dep-{}", random_id());
                        write_atomic(&path, id.as_bytes()).map_err(io_err("saving the deployment id"))?;
                        id
                    }
                }
            }
        };
        let spool =
            UsageSpool::open(&config.data_dir.join("usage")).map_err(io_err("opening the usage spool"))?;
        let month = load_month(&config, &spool, now);
        let mut spooled: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in spool.pending().unwrap_or_default() {
            *spooled.entry((period_of(r.at), r.metric)).or_default() += r.value;
        }
        let transport = config
            .server_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| HttpTransport::new(u, config.request_timeout));
        let start = Instant::now();
        let client = Self {
            inner: Arc::new(Inner {
                config,
                transport,
                machine: Mutex::new(machine),
                spool,
                month: Mutex::new(month),
                spooled: Mutex::new(spooled),
                deployment_id,
                stopping: Mutex::new(false),
                wake: Condvar::new(),
                worker: Mutex::new(None),
                schedule: Mutex::new(Schedule {
                    next_validation: start,
                    validation_failures: 0,
                    next_heartbeat: start,
                    next_flush: start,
                    flush_failures: 0,
                }),
                flushing: Mutex::new(()),
                access_tokens: Default::default(),
            }),
        };
        client.persist();
        Ok(client)
    }

    /// Opens the client, validates once (an unreachable server is fine: offline mode), and
    /// starts the background thread (check-ins, heartbeats, usage reporting).
    pub fn start(config: ClientConfig) -> Result<Self, ClientError> {
        let client = Self::open(config)?;
        if client.inner.transport.is_some() {
            let outcome = client.validate_now();
            client.schedule_after_validation(&outcome);
        }
        client.log_state();
        client.spawn_background();
        Ok(client)
    }

    pub fn deployment_id(&self) -> &str {
        &self.inner.deployment_id
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.config.clock.now()
    }

    pub(crate) fn transport(&self) -> Option<&HttpTransport> {
        self.inner.transport.as_ref()
    }

    pub(crate) fn license_key(&self) -> String {
        lock(&self.inner.machine).license_key().to_owned()
    }

    pub(crate) fn access_tokens(&self) -> &crate::access_tokens::SharedAccessTokens {
        &self.inner.access_tokens
    }

    pub fn license_id(&self) -> Option<String> {
        lock(&self.inner.machine).license_id().map(str::to_owned)
    }

    /// The license state now. Cheap: no I/O.
    pub fn state(&self) -> LicenseState {
        let now = self.inner.config.clock.now();
        lock(&self.inner.machine).state(now)
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.state().has_feature(feature)
    }

    /// Whether `amount` more of `metric` fits this month's limit, counting the fleet-wide
    /// total from the last answer (every deployment's reports) plus what this process has
    /// reported since or spooled but not yet delivered ([`Self::usage_standing`]). No I/O.
    pub fn check_limit(&self, metric: &str, amount: u64) -> LimitCheck {
        let used = self.usage_standing(metric).used;
        self.state().check_limit(metric, amount, used)
    }

    /// The numbers behind the limit check for `metric` this month: the fleet-wide count of
    /// the newest answer or receipt, this process's deliveries it cannot show yet, the spool,
    /// and the count the check uses (never less than this install's own month total).
    pub fn usage_standing(&self, metric: &str) -> MetricStanding {
        let period = period_of(self.inner.config.clock.now());
        let spooled =
            lock(&self.inner.spooled).get(&(period.clone(), metric.to_owned())).copied().unwrap_or(0);
        let own_total = self.used_this_month(metric);
        standing(lock(&self.inner.machine).usage(), metric, &period, spooled, own_total)
    }

    /// The fleet view (metric → `{used, limit, period}` and when it was read), if the server
    /// sent one.
    pub fn fleet_usage(&self) -> Option<nls_client_core::fleet_usage::FleetView> {
        lock(&self.inner.machine).usage().view().cloned()
    }

    pub fn used_this_month(&self, metric: &str) -> u64 {
        let now = self.inner.config.clock.now();
        let month = lock(&self.inner.month);
        if month.period == period_of(now) { month.counters.get(metric).copied().unwrap_or(0) } else { 0 }
    }

    /// Records usage durably (fsync'd to the spool) before returning; it is sent later in a
    /// batch and removed only once the server acknowledged it.
    pub fn record_usage(&self, metric: &str, value: u64) -> Result<(), ClientError> {
        let at = self.inner.config.clock.now();
        self.inner
            .spool
            .append(&UsageRecord { metric: metric.to_owned(), value, at })
            .map_err(io_err("spooling usage"))?;
        *lock(&self.inner.spooled).entry((period_of(at), metric.to_owned())).or_default() += value;
        let mut month = lock(&self.inner.month);
        let period = period_of(at);
        if month.period != period {
            *month = MonthCounters { period, counters: BTreeMap::new() };
        }
        *month.counters.entry(metric.to_owned()).or_default() += value;
        Ok(())
    }

    /// Usage records not yet acknowledged by the server.
    pub fn pending_usage(&self) -> Result<Vec<UsageRecord>, ClientError> {
        self.inner.spool.pending().map_err(io_err("reading the usage spool"))
    }

    /// Validates now and returns what the answer amounted to; the state and the on-disk cache
    /// are updated.
    pub fn validate_now(&self) -> AnswerOutcome {
        let Some(transport) = &self.inner.transport else {
            return AnswerOutcome::Offline { why: "no server configured (air-gapped)".to_owned() };
        };
        let key = lock(&self.inner.machine).license_key().to_owned();
        let config = &self.inner.config;
        let mut body = serde_json::json!({"key": key, "deployment_id": self.inner.deployment_id});
        if let Some(fp) = &config.fingerprint {
            body["fingerprint"] = fp.clone().into();
        }
        let reply = transport.post_json("/v1/licenses/validate", &body);
        let now = config.clock.now();
        if let Ok(reply) = &reply {
            self.remember_lease(|previous| {
                deployment_lease::from_validation_answer(
                    &self.inner.deployment_id,
                    &reply.body,
                    previous,
                    now,
                )
            });
        }
        let outcome = {
            let mut machine = lock(&self.inner.machine);
            match reply {
                Ok(reply) => machine.apply_validation_response(reply.status, &reply.body, now),
                Err(e) => {
                    let why = e.to_string();
                    machine.record_unreachable(&why, now);
                    AnswerOutcome::Offline { why }
                }
            }
        };
        self.persist();
        outcome
    }

    /// Sends one heartbeat. When the server no longer holds this deployment's seat (or the
    /// license changed), validates at once, which re-activates the seat if there is room.
    pub fn heartbeat_now(&self) -> Result<Option<DateTime<Utc>>, String> {
        let Some(transport) = &self.inner.transport else { return Ok(None) };
        let key = lock(&self.inner.machine).license_key().to_owned();
        let mut body = serde_json::json!({"key": key, "deployment_id": self.inner.deployment_id});
        if let Some(v) = &self.inner.config.app_version {
            body["app_version"] = v.clone().into();
        }
        let reply = transport.post_json("/v1/heartbeat", &body).map_err(|e| e.to_string())?;
        if heartbeat_needs_validation(reply.status, &reply.body) {
            let outcome = self.validate_now();
            tracing::info!(?outcome, "nls: heartbeat asked for a validation");
            return Ok(None);
        }
        if !(200..300).contains(&reply.status) {
            return Err(format!("heartbeat answered HTTP {}", reply.status));
        }
        let now = self.inner.config.clock.now();
        self.remember_lease(|_| {
            deployment_lease::from_heartbeat_answer(&self.inner.deployment_id, &reply.body, now)
        });
        #[derive(Deserialize)]
        struct Beat {
            next_heartbeat_at: Option<DateTime<Utc>>,
        }
        Ok(serde_json::from_str::<Beat>(&reply.body).ok().and_then(|b| b.next_heartbeat_at))
    }

    /// Saves what the server said about this deployment's lease, for `nectar-license status`.
    fn remember_lease(&self, record: impl FnOnce(Option<LeaseRecord>) -> Option<LeaseRecord>) {
        let dir = &self.inner.config.data_dir;
        if let Some(record) = record(deployment_lease::load(dir))
            && let Err(e) = deployment_lease::save(dir, &record)
        {
            tracing::warn!(error = %e, "nls: could not save the deployment lease");
        }
    }

    /// Seals the open spool segment and sends every sealed batch, oldest first. A batch is
    /// deleted only after the server's 202; a retry of an unacknowledged batch sends the same
    /// `batch_id`, which the server counts once.
    pub fn flush_usage(&self) -> FlushReport {
        let _one_at_a_time = lock(&self.inner.flushing);
        let mut report = FlushReport::default();
        let Some(transport) = &self.inner.transport else {
            report.stopped = Some("no server configured".to_owned());
            return report;
        };
        let spool = &self.inner.spool;
        if let Err(e) = spool.seal() {
            report.stopped = Some(format!("sealing the spool: {e}"));
            return report;
        }
        let batches = match spool.sealed() {
            Ok(b) => b,
            Err(e) => {
                report.stopped = Some(format!("reading the spool: {e}"));
                return report;
            }
        };
        let key = lock(&self.inner.machine).license_key().to_owned();
        for batch in batches {
            if batch.records.is_empty() {
                let _ = spool.ack(&batch);
                continue;
            }
            match self.send_batch(transport, &key, &batch) {
                Sent::Accepted { server_date } => {
                    self.note_delivered(&batch, server_date);
                    if let Err(e) = spool.ack(&batch) {
                        report.stopped = Some(format!("removing an acknowledged batch: {e}"));
                        return report;
                    }
                    report.batches_sent += 1;
                    report.records_sent += batch.records.len();
                }
                Sent::Rejected(why) => {
                    tracing::error!(batch_id = %batch.batch_id, %why, "nls: usage batch refused; kept aside");
                    self.unspool(&batch);
                    let _ = spool.reject(&batch);
                    report.batches_rejected += 1;
                }
                Sent::Retry(why) => {
                    report.stopped = Some(why);
                    return report;
                }
            }
        }
        report
    }

    /// An acknowledged batch leaves the spooled sums and counts as delivered until an answer
    /// shows it (at the server's `Date` when it sent one: no clock skew in the comparison).
    fn note_delivered(&self, batch: &SealedBatch, server_date: Option<DateTime<Utc>>) {
        self.unspool(batch);
        let delivered_at = server_date.unwrap_or_else(|| self.inner.config.clock.now()).timestamp();
        let records = batch.records.iter().map(|r| (r.metric.as_str(), r.value, r.at));
        lock(&self.inner.machine).usage_mut().note_delivered(records, delivered_at);
    }

    fn unspool(&self, batch: &SealedBatch) {
        let mut spooled = lock(&self.inner.spooled);
        for r in &batch.records {
            let slot = (period_of(r.at), r.metric.clone());
            if let Some(sum) = spooled.get_mut(&slot) {
                *sum = sum.saturating_sub(r.value);
                if *sum == 0 {
                    spooled.remove(&slot);
                }
            }
        }
    }

    fn send_batch(&self, transport: &HttpTransport, key: &str, batch: &SealedBatch) -> Sent {
        let body = serde_json::json!({
            "key": key,
            "deployment_id": self.inner.deployment_id,
            "batch_id": batch.batch_id,
            "records": batch.records,
        });
        match transport.post_json("/v1/usage", &body) {
            Err(e) => Sent::Retry(e.to_string()),
            Ok(r) if (200..300).contains(&r.status) => Sent::Accepted { server_date: r.date },
            Ok(r) if r.status >= 500 || r.status == 429 || r.status == 408 => {
                Sent::Retry(format!("HTTP {}", r.status))
            }
            Ok(r) => Sent::Rejected(format!("HTTP {}: {}", r.status, r.body)),
        }
    }

    /// Frees this deployment's seat now (instead of waiting for its lease to run out).
    pub fn release_deployment(&self) -> Result<(), String> {
        let Some(transport) = &self.inner.transport else { return Ok(()) };
        let key = lock(&self.inner.machine).license_key().to_owned();
        let path = format!("/v1/deployments/{}", self.inner.deployment_id);
        let reply = transport.delete_with_key(&path, &key).map_err(|e| e.to_string())?;
        if (200..300).contains(&reply.status) || reply.status == 404 {
            Ok(())
        } else {
            Err(format!("HTTP {}: {}", reply.status, reply.body))
        }
    }

    /// Starts the background thread, if not running.
    pub fn spawn_background(&self) {
        let mut worker = lock(&self.inner.worker);
        if worker.is_some() {
            return;
        }
        *lock(&self.inner.stopping) = false;
        let client = self.clone();
        *worker = Some(
            std::thread::Builder::new()
                .name("nls-client".into())
                .spawn(move || client.run_worker())
                .expect("spawning the nls-client thread"),
        );
    }

    /// Stops the background thread (heartbeats stop), tries one last usage flush, and saves the
    /// cache. Records that could not be sent stay in the spool for the next start.
    pub fn shutdown(&self) {
        *lock(&self.inner.stopping) = true;
        self.inner.wake.notify_all();
        let handle = lock(&self.inner.worker).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        if self.inner.transport.is_some() {
            let report = self.flush_usage();
            if let Some(why) = report.stopped {
                tracing::warn!(%why, "nls: usage left in the spool for the next start");
            }
        }
        self.persist();
    }

    fn stopping(&self) -> bool {
        *lock(&self.inner.stopping)
    }

    fn run_worker(&self) {
        loop {
            let due = {
                let s = lock(&self.inner.schedule);
                s.next_validation.min(s.next_heartbeat).min(s.next_flush)
            };
            let wait = due.saturating_duration_since(Instant::now()).min(TICK);
            {
                let stopping = lock(&self.inner.stopping);
                if *stopping {
                    return;
                }
                let (stopping, _) =
                    self.inner.wake.wait_timeout(stopping, wait).unwrap_or_else(|p| p.into_inner());
                if *stopping {
                    return;
                }
            }
            if self.inner.transport.is_none() {
                self.persist();
                continue;
            }
            let now = Instant::now();
            let (validate, beat, flush) = {
                let s = lock(&self.inner.schedule);
                (now >= s.next_validation, now >= s.next_heartbeat, now >= s.next_flush)
            };
            if validate {
                let outcome = self.validate_now();
                self.schedule_after_validation(&outcome);
                self.log_state();
            }
            if beat && !self.stopping() {
                let result = self.heartbeat_now();
                let interval = match (&result, self.inner.config.heartbeat_interval) {
                    (_, Some(fixed)) => fixed,
                    (Ok(Some(next)), None) => {
                        let secs = (*next - self.inner.config.clock.now()).num_seconds().clamp(5, 3600);
                        Duration::from_secs(secs as u64)
                    }
                    (Ok(None), None) => Duration::from_secs(300),
                    (Err(_), None) => Duration::from_secs(backoff_delay(2, random_unit()) as u64),
                };
                if let Err(why) = &result {
                    tracing::warn!(%why, "nls: heartbeat failed");
                }
                lock(&self.inner.schedule).next_heartbeat = Instant::now() + interval;
            }
            if flush && !self.stopping() {
                let report = self.flush_usage();
                let mut s = lock(&self.inner.schedule);
                if report.stopped.is_some() {
                    s.next_flush = Instant::now()
                        + Duration::from_secs(backoff_delay(s.flush_failures, random_unit()) as u64);
                    s.flush_failures += 1;
                } else {
                    s.flush_failures = 0;
                    s.next_flush = Instant::now() + self.inner.config.usage_flush_interval;
                }
            }
            self.persist();
        }
    }

    fn schedule_after_validation(&self, outcome: &AnswerOutcome) {
        let now = self.inner.config.clock.now();
        let mut s = lock(&self.inner.schedule);
        let delay = match outcome {
            AnswerOutcome::Good { next_check_in, .. } | AnswerOutcome::Refused { next_check_in, .. } => {
                s.validation_failures = 0;
                let next = next_check_in.map_or(now.timestamp() + 3600, |t| t.timestamp());
                next_check_delay(next, now.timestamp(), random_unit())
            }
            AnswerOutcome::Offline { .. } => {
                let d = backoff_delay(s.validation_failures, random_unit());
                s.validation_failures += 1;
                d
            }
        };
        s.next_validation = Instant::now() + Duration::from_secs(delay as u64);
    }

    fn log_state(&self) {
        match self.state() {
            LicenseState::Valid { .. } => {}
            LicenseState::Offline { .. } => {
                tracing::warn!(warning = ?self.state().warning(), "nls: working offline");
            }
            state @ LicenseState::Grace { .. } => {
                tracing::error!(warning = ?state.warning(), "nls: LICENSE GRACE PERIOD: fix this before it ends");
            }
            state @ LicenseState::Invalid { .. } => {
                tracing::error!(warning = ?state.warning(), "nls: the license is not valid; licensed features stop");
            }
        }
    }

    /// Saves the receipt cache (with the clock record) and this month's counters.
    fn persist(&self) {
        let now = self.inner.config.clock.now();
        let cache = {
            let mut machine = lock(&self.inner.machine);
            machine.observe_clock(now);
            machine.to_cache()
        };
        let dir = &self.inner.config.data_dir;
        if let Err(e) = write_atomic(&dir.join(CACHE_FILE), cache.as_bytes()) {
            tracing::warn!(error = %e, "nls: could not save the license cache");
        }
        let month = serde_json::to_vec(&*lock(&self.inner.month)).unwrap_or_default();
        if let Err(e) = write_atomic(&dir.join(COUNTERS_FILE), &month) {
            tracing::warn!(error = %e, "nls: could not save the usage counters");
        }
    }
}

enum Sent {
    Accepted { server_date: Option<DateTime<Utc>> },
    Rejected(String),
    Retry(String),
}

/// This month's counters: the saved ones, raised to at least what the spool still holds.
fn load_month(config: &ClientConfig, spool: &UsageSpool, now: DateTime<Utc>) -> MonthCounters {
    let period = period_of(now);
    let saved: Option<MonthCounters> = read_optional(&config.data_dir.join(COUNTERS_FILE))
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(|m: &MonthCounters| m.period == period);
    let mut month = saved.unwrap_or(MonthCounters { period: period.clone(), counters: BTreeMap::new() });
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    for r in spool.pending().unwrap_or_default().into_iter().filter(|r| period_of(r.at) == period) {
        *pending.entry(r.metric).or_default() += r.value;
    }
    for (metric, value) in pending {
        let entry = month.counters.entry(metric).or_default();
        *entry = (*entry).max(value);
    }
    month
}
