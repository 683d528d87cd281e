//! The edge's routes and behaviour, platform-free: a host turns its request into an
//! [`EdgeRequest`], calls [`Edge::handle`], sends the [`EdgeResponse`], and then runs the
//! returned [`BackgroundTask`]s without holding the response (`ctx.wait_until` on Workers).
//!
//! Served here: `POST /v1/licenses/validate`, `POST /v1/heartbeat`, `POST /v1/usage`,
//! `POST /v1/access-tokens` (`access_tokens`), `DELETE /v1/deployments/{id}`, `GET /.well-known/jwks.json`, `GET /health`, and, with the
//! service token, the push target `PUT /v1/internal/snapshots/{license_id}` and
//! `POST /v1/internal/outbox/drain`.
//!
//! Receipts: an edge holds only the public JWKS, so it cannot sign. Receipts come from the
//! origin: a validation the edge cannot answer with a receipt it already holds for exactly that
//! key, deployment, code and license version (cached at most `receipt_reuse`) is forwarded to
//! the origin once, and its signed answer is relayed and remembered. Degraded answers carry no
//! new receipt: the customer app keeps the one it has (valid for offline + grace days).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use nls_core::license_token::{KeyRejection, VerifiedLicense};
use nls_core::model::Timestamp;
use nls_core::validation::{ValidationCode, ValidationRequest, decide};
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::access_tokens::AccessTokenCache;
use crate::edge_config::{ConfigError, EdgeConfig};
use crate::edge_keys::{EdgeKeys, JWKS_KV_KEY, JwksSync, KvJwksRecord, unverified_kid};
use crate::edge_ports::{EdgeKv, Origin, OriginError, OriginReply};
use crate::edge_wire::*;
use crate::outbox::{DEAD_LETTER_PREFIX, DrainReport, OUTBOX_PREFIX, OutboxItem, OutboxRecord, sha_hex};
use crate::snapshot_layers::{Lookup, MemoryEntry, MemoryLayer, SnapshotSource, snapshot_key};
use crate::validation_events::{ClientInfo, EventBuffer, ValidationEventBody};

pub const BODY_LIMIT: usize = 64 * 1024;
const MAX_ID_LEN: usize = 256;
const MAX_USAGE_RECORDS: usize = 1000;
const DRAIN_BATCH: usize = 100;
/// Provisional seats one isolate remembers, over all licenses. Past it a seat is still
/// admitted and queued (the KV queue counts it), just not remembered in memory.
pub const MAX_PROVISIONAL_SEATS: usize = 10_000;
/// Items held in memory when even KV refused them. Past it a new item is dropped (counted),
/// and a usage batch is answered 503 so the client keeps it and resends.
pub const MAX_MEMORY_OUTBOX: usize = 1_000;
/// The longest wait between two tries of an item the origin answered with a 5xx.
const MAX_SERVER_ERROR_BACKOFF_SECS: i64 = 3600;

/// A request as the edge sees it. Header names are lower case.
#[derive(Debug, Clone, Default)]
pub struct EdgeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Who called, as the platform says (never from the client's own headers).
    pub client: ClientInfo,
}

impl EdgeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeResponse {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl EdgeResponse {
    pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> Self {
        let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
        Self { status, body, content_type: "application/json", headers: Vec::new() }
    }

    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(status, &ErrorBody { error: ErrorDetail { code, message: message.into() } })
    }

    /// 413 `payload_too_large`: the body passes [`BODY_LIMIT`].
    pub fn payload_too_large() -> Self {
        Self::error(413, "payload_too_large", format!("the body limit is {BODY_LIMIT} bytes"))
    }

    /// The origin's answer, passed on unchanged.
    pub(crate) fn relay(reply: OriginReply) -> Self {
        Self { status: reply.status, body: reply.body, content_type: "application/json", headers: Vec::new() }
    }
}

/// Work to run after the response is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackgroundTask {
    /// Refresh a snapshot: from KV if a newer one was pushed there, else from the origin.
    Revalidate { license_id: String, origin_only: bool },
    /// Write a snapshot fetched from the origin to KV for the other isolates.
    StoreSnapshot(Box<KvSnapshotRecord>),
    /// Deliver queued writes.
    DrainOutbox,
    /// Write a value to KV (a receipt the origin signed).
    KvPut { key: String, value: String, ttl_secs: i64 },
    /// Adopt KV's JWKS if another isolate or a push changed it (edge_keys).
    RefreshJwks,
    /// Send the waiting validation events to the origin (or the outbox).
    ShipEvents,
}

#[derive(Debug, Clone)]
pub struct EdgeOutcome {
    pub response: EdgeResponse,
    pub background: Vec<BackgroundTask>,
}

/// What an isolate keeps between requests. Build it once (per isolate or process).
pub struct EdgeState {
    pub config: EdgeConfig,
    /// Swapped whole when a new JWKS arrives (edge_keys).
    keys: Mutex<Arc<EdgeKeys>>,
    jwks_sync: Mutex<JwksSync>,
    pub(crate) memory: MemoryLayer,
    /// Deployments this isolate admitted while the origin was down, per license.
    provisional: Mutex<HashMap<String, Vec<String>>>,
    /// Items that could not even be written to KV: retried from memory (lost only if the
    /// isolate dies while both KV and the origin are down).
    memory_outbox: Mutex<Vec<OutboxRecord>>,
    health: Mutex<OriginHealth>,
    counters: EdgeCounters,
    /// Validation events waiting to be shipped (`validation_events`).
    events: EventBuffer,
    /// Cloud access tokens the origin signed, handed out again (`access_tokens`).
    pub(crate) access_tokens: AccessTokenCache,
}

/// What this isolate counted since it started: `GET /v1/internal/metrics`.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Queued writes moved to `deadletter/` (4xx, unreadable, or out of 5xx tries).
    pub dead_letters: AtomicU64,
    /// Writes dropped because KV refused them and the memory outbox was full.
    pub outbox_dropped: AtomicU64,
    /// Provisional seats admitted but not remembered in memory (the map was full).
    pub provisional_untracked: AtomicU64,
    /// Validation events dropped because `events_max` were waiting.
    pub events_dropped: AtomicU64,
    /// Validation events the origin (or the KV outbox) took.
    pub events_shipped: AtomicU64,
}

impl EdgeCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters.
    pub fn prometheus_text(&self) -> String {
        [
            ("nls_edge_dead_letters_total", &self.dead_letters),
            ("nls_edge_outbox_dropped_total", &self.outbox_dropped),
            ("nls_edge_provisional_untracked_total", &self.provisional_untracked),
            ("nls_edge_events_dropped_total", &self.events_dropped),
            ("nls_edge_events_shipped_total", &self.events_shipped),
        ]
        .iter()
        .map(|(name, value)| format!("# TYPE {name} counter\n{name} {}\n", value.load(Ordering::Relaxed)))
        .collect()
    }
}

#[derive(Debug, Default)]
struct OriginHealth {
    /// Set when a call failed; calls are skipped until `outbox_retry` has passed.
    last_failure: Option<Timestamp>,
    /// This isolate queued something that is not known to be delivered.
    outbox_pending: bool,
    last_drain: Option<Timestamp>,
}

impl EdgeState {
    pub fn new(config: EdgeConfig) -> Result<Self, ConfigError> {
        let keys = EdgeKeys::from_jwks_json(&config.jwks_json).map_err(|e| ConfigError {
            variable: crate::edge_config::vars::JWKS,
            problem: format!("not a usable JWKS: {e}"),
        })?;
        Ok(Self {
            keys: Mutex::new(Arc::new(keys)),
            jwks_sync: Mutex::default(),
            memory: MemoryLayer::new(50_000),
            provisional: Mutex::default(),
            memory_outbox: Mutex::default(),
            health: Mutex::default(),
            counters: EdgeCounters::default(),
            events: EventBuffer::default(),
            access_tokens: AccessTokenCache::default(),
            config,
        })
    }

    /// The key set in use now.
    pub fn keys(&self) -> Arc<EdgeKeys> {
        Arc::clone(&self.keys.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Switches to `json` when it is a usable JWKS other than the current one; true if it did.
    fn adopt_jwks(&self, json: &str) -> bool {
        let Ok(keys) = EdgeKeys::from_jwks_json(json) else { return false };
        let mut current = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if current.jwks_body == keys.jwks_body {
            return false;
        }
        *current = Arc::new(keys);
        true
    }

    fn jwks_sync(&self) -> std::sync::MutexGuard<'_, JwksSync> {
        self.jwks_sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, OriginHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn origin_may_be_up(&self, now: Timestamp) -> bool {
        self.health().last_failure.is_none_or(|t| now - t >= self.config.outbox_retry || t > now)
    }

    pub fn counters(&self) -> &EdgeCounters {
        &self.counters
    }

    /// Validation events waiting in this isolate.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Records one validation this edge answered itself; never waits, never fails.
    fn record_event(&self, event: ValidationEventBody, now: Timestamp) {
        if self.config.events_max == 0 {
            return;
        }
        if !self.events.push(event, self.config.events_max, now) {
            EdgeCounters::bump(&self.counters.events_dropped);
        }
    }

    /// Only a failure to reach the origin (connect, DNS, timeout) trips the breaker: an
    /// answer, even a 5xx for one request, shows the origin is there.
    pub(crate) fn note_origin<T>(&self, result: &Result<T, OriginError>, now: Timestamp) {
        let mut health = self.health();
        match result {
            Err(OriginError::Unreachable(_)) => health.last_failure = Some(now),
            _ => health.last_failure = None,
        }
    }

    /// True (at most once per `outbox_retry`) when this isolate has queued writes to deliver.
    fn drain_due(&self, now: Timestamp) -> bool {
        let mut health = self.health();
        let due = health.outbox_pending
            && health.last_drain.is_none_or(|t| now - t >= self.config.outbox_retry || t > now);
        if due {
            health.last_drain = Some(now);
        }
        due
    }

    fn provisional_for(&self, license_id: &str) -> Vec<String> {
        self.provisional
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(license_id)
            .cloned()
            .unwrap_or_default()
    }

    fn set_provisional(&self, license_id: &str, deployment_id: &str, admitted: bool) {
        let mut map = self.provisional.lock().unwrap_or_else(|p| p.into_inner());
        if admitted && map.values().map(Vec::len).sum::<usize>() >= MAX_PROVISIONAL_SEATS {
            EdgeCounters::bump(&self.counters.provisional_untracked);
            return;
        }
        let list = map.entry(license_id.to_owned()).or_default();
        list.retain(|d| d != deployment_id);
        if admitted {
            list.push(deployment_id.to_owned());
        }
        if list.is_empty() {
            map.remove(license_id);
        }
    }
}

/// One request's view of the edge: the isolate's state plus this platform's ports.
pub struct Edge<K, O> {
    pub(crate) state: Arc<EdgeState>,
    pub(crate) kv: K,
    pub(crate) origin: O,
}

/// Lengths in characters, as the origin (and the OpenAPI document's `maxLength`) counts them.
fn check_id(field: &str, value: &str) -> Result<(), EdgeResponse> {
    if value.is_empty() || value.chars().count() > MAX_ID_LEN {
        return Err(EdgeResponse::error(
            400,
            "invalid_request",
            format!("`{field}` must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    Ok(())
}

/// The origin's bound on a client-reported `fingerprint` or `app_version`
/// (`nls_core::http::public_routes::MAX_CLIENT_TEXT_CHARS`), refused with the same code, so an
/// edge never queues a write the origin would refuse.
const MAX_CLIENT_TEXT_CHARS: usize = 256;

fn check_client_text(field: &str, value: Option<&str>) -> Result<(), EdgeResponse> {
    match value {
        Some(text) if text.chars().count() > MAX_CLIENT_TEXT_CHARS => Err(EdgeResponse::error(
            400,
            "invalid_request",
            format!("`{field}` must be at most {MAX_CLIENT_TEXT_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, EdgeResponse> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "invalid_request" } else { "malformed_json" };
        EdgeResponse::error(400, code, format!("request body: {e}"))
    })
}

fn invalid_key(r: nls_core::license_token::KeyRejection) -> EdgeResponse {
    use nls_core::license_token::KeyRejection as R;
    let why = match r {
        R::Malformed => "malformed",
        R::ChecksumMismatch => "checksum mismatch",
        R::BadSignature => "signature rejected",
    };
    EdgeResponse::error(401, "invalid_license_key", format!("invalid license key: {why}"))
}

impl<K: EdgeKv, O: Origin> Edge<K, O> {
    pub fn new(state: Arc<EdgeState>, kv: K, origin: O) -> Self {
        Self { state, kv, origin }
    }

    pub fn state(&self) -> &Arc<EdgeState> {
        &self.state
    }

    fn config(&self) -> &EdgeConfig {
        &self.state.config
    }

    /// Answers one request. Never fails: NLS being down is a degraded answer, not a 5xx.
    pub async fn handle(&self, request: EdgeRequest, now: Timestamp) -> EdgeOutcome {
        let mut background = Vec::new();
        let response = self.route(&request, now, &mut background).await;
        if self.state.drain_due(now) {
            background.push(BackgroundTask::DrainOutbox);
        }
        let cfg = self.config();
        if self.state.events.claim_shipment(cfg.events_batch, cfg.events_flush, now) {
            background.push(BackgroundTask::ShipEvents);
        }
        EdgeOutcome { response, background }
    }

    async fn route(&self, req: &EdgeRequest, now: Timestamp, bg: &mut Vec<BackgroundTask>) -> EdgeResponse {
        if req.body.len() > BODY_LIMIT {
            return EdgeResponse::payload_too_large();
        }
        let path = req.path.split('?').next().unwrap_or_default();
        let method = req.method.as_str();
        let result = match path {
            "/v1/licenses/validate" if method == "POST" => self.validate(req, now, bg).await,
            "/v1/heartbeat" if method == "POST" => self.heartbeat(req, now).await,
            "/v1/usage" if method == "POST" => self.usage(req, now).await,
            "/v1/access-tokens" if method == "POST" => self.access_token(req, now, bg).await,
            "/.well-known/jwks.json" if method == "GET" => {
                self.sync_keys(now, bg).await;
                let mut r = EdgeResponse {
                    status: 200,
                    body: self.state.keys().jwks_body.clone(),
                    content_type: "application/json",
                    headers: Vec::new(),
                };
                r.headers.push(("cache-control", "public, max-age=300".to_owned()));
                Ok(r)
            }
            "/health" if method == "GET" => Ok(EdgeResponse::json(200, &serde_json::json!({"status": "ok"}))),
            "/v1/internal/metrics" if method == "GET" => {
                self.check_service_token(req).map(|()| EdgeResponse {
                    status: 200,
                    body: self.state.counters.prometheus_text(),
                    content_type: "text/plain; version=0.0.4",
                    headers: Vec::new(),
                })
            }
            "/v1/licenses/validate"
            | "/v1/heartbeat"
            | "/v1/usage"
            | "/v1/access-tokens"
            | "/.well-known/jwks.json"
            | "/health" => Err(EdgeResponse::error(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => {
                if let Some(id) = path.strip_prefix("/v1/deployments/").filter(|id| !id.contains('/')) {
                    match method {
                        "DELETE" => self.release(id, req, now).await,
                        _ => Err(EdgeResponse::error(
                            405,
                            "method_not_allowed",
                            format!("{method} is not allowed"),
                        )),
                    }
                } else if path == "/v1/internal/jwks" {
                    match method {
                        "PUT" => self.push_jwks(req, now).await,
                        _ => Err(EdgeResponse::error(
                            405,
                            "method_not_allowed",
                            format!("{method} is not allowed"),
                        )),
                    }
                } else if path == "/v1/internal/outbox/drain" {
                    match method {
                        "POST" => self.drain_route(req, now).await,
                        _ => Err(EdgeResponse::error(
                            405,
                            "method_not_allowed",
                            format!("{method} is not allowed"),
                        )),
                    }
                } else if let Some(id) =
                    path.strip_prefix("/v1/internal/snapshots/").filter(|id| !id.contains('/'))
                {
                    match method {
                        "PUT" => self.push_snapshot(id, req, now).await,
                        _ => Err(EdgeResponse::error(
                            405,
                            "method_not_allowed",
                            format!("{method} is not allowed"),
                        )),
                    }
                } else {
                    Err(EdgeResponse::error(404, "route_not_found", format!("no route for {method} {path}")))
                }
            }
        };
        result.unwrap_or_else(|r| r)
    }

    // ---------------------------------------------------------------------------------------
    // Origin calls, behind a breaker: after a failure, skip the origin for `outbox_retry`
    // so a down origin costs one timeout, not one per request.

    fn origin_down(&self) -> OriginError {
        OriginError::Unreachable("origin marked down after a recent failure".to_owned())
    }

    async fn origin_snapshot(
        &self,
        license_id: &str,
        now: Timestamp,
    ) -> Result<Option<nls_core::validation::StatusSnapshot>, OriginError> {
        if !self.state.origin_may_be_up(now) {
            return Err(self.origin_down());
        }
        let result = self.origin.fetch_snapshot(license_id).await;
        self.state.note_origin(&result, now);
        result
    }

    async fn origin_call<'a>(
        &'a self,
        item: &'a OutboxItem,
        client_ip: Option<&'a str>,
        now: Timestamp,
    ) -> Result<OriginReply, OriginError> {
        if !self.state.origin_may_be_up(now) {
            return Err(self.origin_down());
        }
        let result = match item {
            OutboxItem::Activation { body } => self.origin.forward_activation(body, client_ip).await,
            OutboxItem::Heartbeat { body } => self.origin.forward_heartbeat(body, client_ip).await,
            OutboxItem::Usage { body } => self.origin.forward_usage(body, client_ip).await,
            OutboxItem::Release { deployment_id, key } => {
                self.origin.release(deployment_id, key, client_ip).await
            }
            OutboxItem::ValidationEvents { body } => self.origin.ship_validation_events(body).await,
        };
        self.state.note_origin(&result, now);
        result
    }

    // ---------------------------------------------------------------------------------------
    // The three-layer lookup

    /// Memory, then KV, then the origin; never fails (see `snapshot_layers`).
    pub async fn lookup_snapshot(
        &self,
        license_id: &str,
        now: Timestamp,
        allow_origin: bool,
        bg: &mut Vec<BackgroundTask>,
    ) -> Lookup {
        let cfg = self.config();
        let ttl = cfg.snapshot_ttl;
        let mut fallback: Option<Arc<MemoryEntry>> = None;
        if let Some(entry) = self.state.memory.get(license_id) {
            let age = now - entry.record.fetched_at;
            if age < ttl {
                if now - entry.loaded_at < cfg.memory_fresh {
                    return Lookup { entry: Some(entry), source: SnapshotSource::Memory };
                }
                if self.state.memory.claim_revalidation(license_id, now, cfg.memory_fresh) {
                    bg.push(BackgroundTask::Revalidate {
                        license_id: license_id.to_owned(),
                        origin_only: false,
                    });
                }
                return Lookup { entry: Some(entry), source: SnapshotSource::MemoryStale };
            }
            fallback = Some(entry);
        }
        if let Ok(Some(text)) = self.kv.get(&snapshot_key(license_id)).await {
            if let Ok(record) = serde_json::from_str::<KvSnapshotRecord>(&text) {
                if record.snapshot.license.id == license_id {
                    let age = now - record.fetched_at;
                    if age < ttl {
                        let refresh_ahead = age >= ttl / 2;
                        let entry = self.state.memory.put(record, now);
                        if refresh_ahead
                            && self.state.memory.claim_revalidation(license_id, now, cfg.memory_fresh)
                        {
                            bg.push(BackgroundTask::Revalidate {
                                license_id: license_id.to_owned(),
                                origin_only: true,
                            });
                        }
                        return Lookup { entry: Some(entry), source: SnapshotSource::Kv };
                    }
                    if fallback.as_ref().is_none_or(|f| f.record.fetched_at < record.fetched_at) {
                        fallback = Some(Arc::new(MemoryEntry { record, loaded_at: now }));
                    }
                }
            }
        }
        if allow_origin {
            match self.origin_snapshot(license_id, now).await {
                Ok(Some(snapshot)) => {
                    let record = KvSnapshotRecord { snapshot, fetched_at: now };
                    bg.push(BackgroundTask::StoreSnapshot(Box::new(record.clone())));
                    let entry = self.state.memory.put(record, now);
                    return Lookup { entry: Some(entry), source: SnapshotSource::Origin };
                }
                Ok(None) => {
                    self.state.memory.remove(license_id);
                    return Lookup { entry: None, source: SnapshotSource::NotOnRecord };
                }
                Err(_) => {}
            }
        }
        match fallback {
            Some(entry) => Lookup { entry: Some(entry), source: SnapshotSource::LastKnown },
            None => Lookup { entry: None, source: SnapshotSource::Nothing },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Routes

    async fn validate(
        &self,
        req: &EdgeRequest,
        now: Timestamp,
        bg: &mut Vec<BackgroundTask>,
    ) -> Result<EdgeResponse, EdgeResponse> {
        let body: ValidateBody = parse_json(&req.body)?;
        let client_ip = req.client.ip.as_deref();
        // One event per answer this edge gives itself (an answer relayed from the origin is
        // the origin's to log).
        let record = |license_id: &str, code: &str| {
            self.state.record_event(
                ValidationEventBody {
                    license_id: license_id.to_owned(),
                    deployment_id: body.deployment_id.clone(),
                    fingerprint: body.fingerprint.clone(),
                    client_ip: req.client.ip.clone(),
                    country: req.client.country.clone(),
                    code: code.to_owned(),
                    at: now,
                    edge: req.client.edge.clone(),
                },
                now,
            )
        };
        if let Some(d) = &body.deployment_id {
            check_id("deployment_id", d)?;
        }
        check_client_text("fingerprint", body.fingerprint.as_deref())?;
        let next_check_in = now + self.config().check_in_interval;
        let answer = |code: ValidationCode| ValidationAnswer {
            code: code.as_str(),
            valid: false,
            warning: None,
            license: None,
            deployment: None,
            next_check_in,
            receipt: None,
            degraded: false,
            usage: None,
        };
        let key = match self.verify_key(&body.key, now, bg).await {
            Ok(key) => key,
            Err(rejection) => return Ok(EdgeResponse::json(200, &answer(ValidationCode::from(rejection)))),
        };
        let license_id = key.claims.sub.clone();
        let lookup = self.lookup_snapshot(&license_id, now, true, bg).await;
        if lookup.source == SnapshotSource::NotOnRecord {
            let mut not_on_record = answer(ValidationCode::Revoked);
            not_on_record.warning = Some("this license is not on record".to_owned());
            record(&license_id, not_on_record.code);
            return Ok(EdgeResponse::json(200, &not_on_record));
        }
        let mut degraded = lookup.degraded();
        let base = lookup.entry.as_ref().map(|e| e.snapshot());
        let deployment_id = body.deployment_id.as_deref();
        let known_live =
            base.zip(deployment_id).is_some_and(|(s, d)| s.live_deployments.iter().any(|l| l == d));
        let request = ValidationRequest {
            deployment_id: body.deployment_id.clone(),
            features: body.features.clone(),
            metrics: body.metrics.clone(),
        };
        // Seats admitted provisionally while the origin was down count against the limit:
        // this isolate's, and (`kv_provisional`) every queued activation in KV.
        let decide_with = |queued: &[String]| {
            let mut snapshot = base.cloned();
            if let Some(s) = snapshot.as_mut() {
                for d in self.state.provisional_for(&license_id) {
                    if !s.live_deployments.contains(&d) {
                        s.live_deployments.push(d);
                    }
                }
                for hash in queued {
                    if s.live_deployments.iter().any(|l| sha_hex(l) == *hash) {
                        continue; // already counted
                    }
                    let seat = match deployment_id.filter(|d| sha_hex(d) == *hash) {
                        Some(d) => d.to_owned(),
                        None => format!("provisional:{hash}"),
                    };
                    s.live_deployments.push(seat);
                }
            }
            decide(&key, &request, snapshot.as_ref(), now)
        };
        let mut decision = decide_with(&[]);
        let version = base.map_or(0, |s| s.license.version);
        let receipt = if decision.code.is_valid() {
            let not_before = now - self.config().receipt_reuse;
            let key_text = body.key.trim();
            match self.state.memory.receipt(
                &license_id,
                key_text,
                deployment_id,
                decision.code,
                version,
                not_before,
            ) {
                Some(r) => Some(r),
                None => {
                    self.kv_receipt(&license_id, key_text, deployment_id, decision.code, version, not_before)
                        .await
                }
            }
        } else {
            None
        };
        let ask_origin = decision.needs_activation || (decision.code.is_valid() && receipt.is_none());
        if ask_origin && !degraded {
            let item = OutboxItem::Activation { body: body.clone() };
            match self.origin_call(&item, client_ip, now).await {
                Ok(reply) => {
                    if reply.status == 200 {
                        self.learn_from_validation(&license_id, &body, &reply.body, version, now, bg);
                    }
                    return Ok(EdgeResponse::relay(reply));
                }
                Err(_) => degraded = true,
            }
        }
        let mut warning = decision.warning.clone();
        let mut deployment = body.deployment_id.as_ref().map(|id| DeploymentRef {
            id: id.clone(),
            lease_expires_at: None,
            provisional: false,
        });
        if degraded && base.is_some() && deployment_id.is_some() && !known_live {
            // Judge the new seat against the snapshot's limit, counting every provisional
            // seat queued in KV (instances of other isolates, or earlier Spin instances).
            let queued = self.kv_provisional(&license_id).await;
            decision = decide_with(&queued);
        }
        if degraded && base.is_none() && decision.code.is_valid() {
            if let (Some(d), Some(max)) = (deployment_id, key.claims.max_deployments) {
                // No snapshot at all: the key's own seat limit bounds the provisional seats,
                // this isolate's and those queued in KV by any isolate.
                let mut seats: HashSet<String> =
                    self.state.provisional_for(&license_id).iter().map(|p| sha_hex(p)).collect();
                seats.extend(self.kv_provisional(&license_id).await);
                if !seats.contains(&sha_hex(d)) && seats.len() >= max as usize {
                    decision.code = ValidationCode::TooManyDeployments;
                }
            }
        }
        if degraded && decision.code.is_valid() && !known_live {
            if let Some(d) = deployment_id {
                // Admitted within the snapshot's known limit; the origin's conditional write
                // confirms it when the queued activation is delivered.
                self.state.set_provisional(&license_id, d, true);
                self.enqueue(
                    OutboxRecord::new(license_id.clone(), OutboxItem::Activation { body: body.clone() }, now)
                        .with_client_ip(client_ip),
                )
                .await;
                if let Some(dep) = deployment.as_mut() {
                    dep.provisional = true;
                }
                warning = Some(
                    "the licensing service is unreachable: this deployment is admitted provisionally and will be confirmed later"
                        .to_owned(),
                );
            }
        }
        let valid = decision.code.is_valid();
        record(&license_id, decision.code.as_str());
        Ok(EdgeResponse::json(
            200,
            &ValidationAnswer {
                code: decision.code.as_str(),
                valid,
                warning,
                license: Some(decision.license.into()),
                deployment,
                next_check_in,
                receipt: receipt.filter(|_| valid).map(|r| r.to_string()),
                degraded,
                usage: usage_view(decision.usage.as_ref()),
            },
        ))
    }

    /// Hashes of the deployments with an activation queued in the KV outbox for `license_id`.
    async fn kv_provisional(&self, license_id: &str) -> Vec<String> {
        let prefix = OutboxRecord::activation_prefix(license_id);
        match self.kv.list(&prefix, 1000).await {
            Ok(keys) => keys.iter().filter_map(|k| k.rsplit('/').next().map(str::to_owned)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A receipt another isolate (or an earlier Spin instance) cached in KV.
    async fn kv_receipt(
        &self,
        license_id: &str,
        license_key: &str,
        deployment_id: Option<&str>,
        code: ValidationCode,
        version: u64,
        not_before: Timestamp,
    ) -> Option<Arc<str>> {
        let text = self.kv.get(&receipt_key(license_key, deployment_id)).await.ok()??;
        let record: KvReceiptRecord = serde_json::from_str(&text).ok()?;
        if record.code != code || record.license_version != version || record.cached_at < not_before {
            return None;
        }
        self.state.memory.remember_receipt(
            license_id,
            license_key,
            deployment_id,
            code,
            version,
            &record.receipt,
            record.cached_at,
        );
        Some(Arc::from(record.receipt.as_str()))
    }

    /// Remembers what an origin validation answer teaches: its receipt, and a seat it took.
    fn learn_from_validation(
        &self,
        license_id: &str,
        body: &ValidateBody,
        reply: &str,
        version: u64,
        now: Timestamp,
        bg: &mut Vec<BackgroundTask>,
    ) {
        #[derive(serde::Deserialize)]
        struct Seen {
            code: ValidationCode,
            valid: bool,
            #[serde(default)]
            receipt: Option<String>,
        }
        let Ok(seen) = serde_json::from_str::<Seen>(reply) else { return };
        if !seen.valid {
            return;
        }
        let deployment_id = body.deployment_id.as_deref();
        if let Some(receipt) = &seen.receipt {
            self.state.memory.remember_receipt(
                license_id,
                body.key.trim(),
                deployment_id,
                seen.code,
                version,
                receipt,
                now,
            );
            let record = KvReceiptRecord {
                code: seen.code,
                license_version: version,
                cached_at: now,
                receipt: receipt.clone(),
            };
            if let Ok(value) = serde_json::to_string(&record) {
                bg.push(BackgroundTask::KvPut {
                    key: receipt_key(body.key.trim(), deployment_id),
                    value,
                    ttl_secs: self.config().receipt_reuse.num_seconds(),
                });
            }
        }
        if let Some(d) = deployment_id {
            let is_new = self
                .state
                .memory
                .get(license_id)
                .is_some_and(|e| !e.snapshot().live_deployments.iter().any(|l| l == d));
            if is_new {
                self.state.memory.edit_live_deployments(license_id, |live| live.push(d.to_owned()));
                // Other isolates learn of the seat from KV once the origin's snapshot is there.
                bg.push(BackgroundTask::Revalidate { license_id: license_id.to_owned(), origin_only: true });
            }
            self.state.set_provisional(license_id, d, false);
        }
    }

    async fn heartbeat(&self, req: &EdgeRequest, now: Timestamp) -> Result<EdgeResponse, EdgeResponse> {
        let body: HeartbeatBody = parse_json(&req.body)?;
        let client_ip = req.client.ip.as_deref();
        check_id("deployment_id", &body.deployment_id)?;
        check_client_text("app_version", body.app_version.as_deref())?;
        let key = self.verify_key(&body.key, now, &mut Vec::new()).await.map_err(invalid_key)?;
        let item = OutboxItem::Heartbeat { body: body.clone() };
        match self.origin_call(&item, client_ip, now).await {
            Ok(reply) => Ok(EdgeResponse::relay(reply)),
            Err(_) => {
                let license_id = key.claims.sub.clone();
                let mut ignored = Vec::new();
                let lookup = self.lookup_snapshot(&license_id, now, false, &mut ignored).await;
                let snapshot = lookup.entry.as_ref().map(|e| e.snapshot());
                let decision = decide(&key, &ValidationRequest::default(), snapshot, now);
                let live = snapshot.is_some_and(|s| s.live_deployments.contains(&body.deployment_id))
                    || self.state.provisional_for(&license_id).contains(&body.deployment_id);
                self.enqueue(OutboxRecord::new(license_id.clone(), item, now).with_client_ip(client_ip))
                    .await;
                Ok(EdgeResponse::json(
                    200,
                    &EdgeHeartbeatAnswer {
                        code: decision.code.as_str(),
                        valid: decision.code.is_valid(),
                        deployment: EdgeDeploymentView {
                            deployment_id: body.deployment_id,
                            license_id,
                            live,
                        },
                        next_heartbeat_at: now + self.config().check_in_interval,
                        degraded: true,
                        queued: true,
                    },
                ))
            }
        }
    }

    async fn usage(&self, req: &EdgeRequest, now: Timestamp) -> Result<EdgeResponse, EdgeResponse> {
        let body: UsageBody = parse_json(&req.body)?;
        let client_ip = req.client.ip.as_deref();
        check_id("deployment_id", &body.deployment_id)?;
        check_id("batch_id", &body.batch_id)?;
        if body.records.is_empty() || body.records.len() > MAX_USAGE_RECORDS {
            return Err(EdgeResponse::error(
                400,
                "invalid_request",
                format!("`records` must hold 1 to {MAX_USAGE_RECORDS} records"),
            ));
        }
        if let Some(bad) = body.records.iter().find(|r| r.metric.is_empty() || r.metric.len() > MAX_ID_LEN) {
            return Err(EdgeResponse::error(
                400,
                "invalid_request",
                format!("metric name {:?} must be 1 to {MAX_ID_LEN} characters", bad.metric),
            ));
        }
        let key = self.verify_key(&body.key, now, &mut Vec::new()).await.map_err(invalid_key)?;
        let batch_id = body.batch_id.clone();
        let item = OutboxItem::Usage { body };
        match self.origin_call(&item, client_ip, now).await {
            Ok(reply) => Ok(EdgeResponse::relay(reply)),
            Err(_) => {
                let record = OutboxRecord::new(key.claims.sub.clone(), item, now).with_client_ip(client_ip);
                if !self.enqueue(record).await {
                    // Acknowledging would lose the batch: the client keeps it and resends.
                    let mut busy =
                        EdgeResponse::error(503, "unavailable", "the batch could not be queued; retry later");
                    busy.headers.push(("retry-after", self.config().outbox_retry.num_seconds().to_string()));
                    return Err(busy);
                }
                Ok(EdgeResponse::json(202, &UsageAccepted { batch_id, duplicate: false, queued: true }))
            }
        }
    }

    async fn release(
        &self,
        raw_id: &str,
        req: &EdgeRequest,
        now: Timestamp,
    ) -> Result<EdgeResponse, EdgeResponse> {
        let key_text = match req.header("x-license-key") {
            Some(v) => v.to_owned(),
            None if req.body.is_empty() => {
                return Err(EdgeResponse::error(
                    401,
                    "missing_credentials",
                    "send the license key in X-License-Key",
                ));
            }
            None => parse_json::<ReleaseBody>(&req.body)?.key,
        };
        let deployment_id = nls_core::path_segment::decode(raw_id).ok_or_else(|| {
            EdgeResponse::error(400, "invalid_request", "the deployment id is not valid UTF-8")
        })?;
        check_id("deployment_id", &deployment_id)?;
        let key = self.verify_key(&key_text, now, &mut Vec::new()).await.map_err(invalid_key)?;
        let license_id = key.claims.sub.clone();
        let item = OutboxItem::Release { deployment_id: deployment_id.clone(), key: key_text };
        let client_ip = req.client.ip.as_deref();
        let result = self.origin_call(&item, client_ip, now).await;
        self.state.memory.edit_live_deployments(&license_id, |live| live.retain(|d| *d != deployment_id));
        self.state.set_provisional(&license_id, &deployment_id, false);
        match result {
            Ok(reply) => Ok(EdgeResponse::relay(reply)),
            Err(_) => {
                self.enqueue(OutboxRecord::new(license_id, item, now).with_client_ip(client_ip)).await;
                Ok(EdgeResponse::json(
                    202,
                    &DeploymentReleased { deployment_id, released: true, queued: true },
                ))
            }
        }
    }

    fn check_service_token(&self, req: &EdgeRequest) -> Result<(), EdgeResponse> {
        let expected = format!("Bearer {}", self.config().service_token);
        let given = req.header("authorization").unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(EdgeResponse::error(401, "invalid_credentials", "a valid service token is required"));
        }
        Ok(())
    }

    /// `POST /v1/internal/outbox/drain` (service token): delivers queued writes now. For hosts
    /// without a cron trigger (Spin) and for operators; the Worker's cron does the same.
    async fn drain_route(&self, req: &EdgeRequest, now: Timestamp) -> Result<EdgeResponse, EdgeResponse> {
        self.check_service_token(req)?;
        let report = self.drain_outbox(now).await;
        Ok(EdgeResponse::json(200, &report))
    }

    /// `PUT /v1/internal/snapshots/{license_id}`: the origin pushes a status change; it lands
    /// in KV (every isolate) and in this isolate's memory at once.
    async fn push_snapshot(
        &self,
        raw_id: &str,
        req: &EdgeRequest,
        now: Timestamp,
    ) -> Result<EdgeResponse, EdgeResponse> {
        self.check_service_token(req)?;
        let license_id = nls_core::path_segment::decode(raw_id).ok_or_else(|| {
            EdgeResponse::error(400, "invalid_request", "the license id is not valid UTF-8")
        })?;
        let snapshot: nls_core::validation::StatusSnapshot = parse_json(&req.body)?;
        if snapshot.license.id != license_id {
            return Err(EdgeResponse::error(400, "invalid_request", "the snapshot is for another license"));
        }
        let no_content = EdgeResponse {
            status: 204,
            body: String::new(),
            content_type: "application/json",
            headers: Vec::new(),
        };
        // Two changes close together may push out of order. A license's version only grows,
        // so an older snapshot never replaces a newer one (it is acknowledged and dropped).
        let pushed_version = snapshot.license.version;
        let newer_in_memory =
            self.state.memory.get(&license_id).is_some_and(|e| e.snapshot().license.version > pushed_version);
        let newer_in_kv = match self.kv.get(&snapshot_key(&license_id)).await {
            Ok(Some(text)) => serde_json::from_str::<KvSnapshotRecord>(&text)
                .is_ok_and(|known| known.snapshot.license.version > pushed_version),
            _ => false,
        };
        if newer_in_memory || newer_in_kv {
            return Ok(no_content);
        }
        let record = KvSnapshotRecord { fetched_at: snapshot.as_of.min(now), snapshot };
        self.state.memory.remove(&license_id);
        self.state.memory.put(record.clone(), now);
        self.store_snapshot(&record)
            .await
            .map_err(|e| EdgeResponse::error(503, "unavailable", e.to_string()))?;
        Ok(no_content)
    }

    // ---------------------------------------------------------------------------------------
    // Background work and the outbox

    async fn store_snapshot(&self, record: &KvSnapshotRecord) -> Result<(), crate::KvError> {
        let text = serde_json::to_string(record).map_err(|e| crate::KvError(e.to_string()))?;
        let key = snapshot_key(&record.snapshot.license.id);
        self.kv.put(&key, &text, Some(self.config().kv_retention)).await
    }

    /// Runs one task scheduled by [`Edge::handle`]. Failures are absorbed: the next request
    /// or drain retries.
    pub async fn run_background(&self, task: BackgroundTask, now: Timestamp) {
        match task {
            BackgroundTask::StoreSnapshot(record) => {
                let _ = self.store_snapshot(&record).await;
            }
            BackgroundTask::Revalidate { license_id, origin_only } => {
                self.revalidate(&license_id, origin_only, now).await
            }
            BackgroundTask::DrainOutbox => {
                let _ = self.drain_outbox(now).await;
            }
            BackgroundTask::KvPut { key, value, ttl_secs } => {
                let _ = self.kv.put(&key, &value, Some(Duration::seconds(ttl_secs.max(60)))).await;
            }
            BackgroundTask::RefreshJwks => self.adopt_kv_jwks().await,
            BackgroundTask::ShipEvents => {
                self.ship_events(now, 1).await;
                self.state.events.finish_shipping();
            }
        }
    }

    /// Ships up to `batches` batches of waiting validation events. A batch the origin does
    /// not take now (unreachable, 5xx, 429) goes to the KV outbox and is delivered by the next
    /// drains; one it refuses (4xx: a bug, not an outage) is dropped and counted.
    pub async fn ship_events(&self, now: Timestamp, batches: usize) {
        for _ in 0..batches {
            let Some(body) = self.state.events.take_batch(now) else { return };
            let count = body.events.len() as u64;
            let item = OutboxItem::ValidationEvents { body };
            match self.origin_call(&item, None, now).await {
                Ok(reply) if (200..300).contains(&reply.status) => {
                    self.state.counters.events_shipped.fetch_add(count, Ordering::Relaxed);
                }
                Ok(reply) if reply.status != 429 => {
                    self.state.counters.events_dropped.fetch_add(count, Ordering::Relaxed);
                }
                _ => {
                    if self.enqueue(OutboxRecord::new(String::new(), item, now)).await {
                        self.state.counters.events_shipped.fetch_add(count, Ordering::Relaxed);
                    } else {
                        self.state.counters.events_dropped.fetch_add(count, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Keys (edge_keys): a new JWKS without a redeploy

    /// Verifies a license key with the current key set. Before this isolate's first
    /// verification it adopts KV's JWKS (in the request: a fresh isolate must not trust a key
    /// retired since `NLS_JWKS` was set); later it re-reads KV in the background every
    /// `jwks_refresh`. A key whose `kid` is unknown makes it fetch the origin's JWKS, at most
    /// once per `jwks_refresh`, and try again.
    pub(crate) async fn verify_key(
        &self,
        key: &str,
        now: Timestamp,
        bg: &mut Vec<BackgroundTask>,
    ) -> Result<Arc<VerifiedLicense>, KeyRejection> {
        self.sync_keys(now, bg).await;
        let keys = self.state.keys();
        match keys.verifier.verify(key) {
            Err(KeyRejection::BadSignature) => {
                let unknown_kid = unverified_kid(key).is_some_and(|kid| !keys.knows(&kid));
                if unknown_kid && self.fetch_origin_jwks(now).await {
                    return self.state.keys().verifier.verify(key);
                }
                Err(KeyRejection::BadSignature)
            }
            result => result,
        }
    }

    /// KV's JWKS: read now by a fresh isolate, in the background when `jwks_refresh` passed.
    async fn sync_keys(&self, now: Timestamp, bg: &mut Vec<BackgroundTask>) {
        let refresh = self.config().jwks_refresh;
        let kv_checked_at = self.state.jwks_sync().kv_checked_at;
        match kv_checked_at {
            None => self.adopt_kv_jwks_at(now).await,
            Some(at) if now - at >= refresh || at > now => {
                self.state.jwks_sync().kv_checked_at = Some(now);
                bg.push(BackgroundTask::RefreshJwks);
            }
            Some(_) => {}
        }
    }

    async fn adopt_kv_jwks(&self) {
        if let Ok(Some(text)) = self.kv.get(JWKS_KV_KEY).await {
            if let Ok(record) = serde_json::from_str::<KvJwksRecord>(&text) {
                if let Ok(json) = serde_json::to_string(&record.jwks) {
                    self.state.adopt_jwks(&json);
                }
            }
        }
    }

    async fn adopt_kv_jwks_at(&self, now: Timestamp) {
        self.state.jwks_sync().kv_checked_at = Some(now);
        self.adopt_kv_jwks().await;
    }

    /// The origin's JWKS, rate limited per isolate; true when it brought a new key set.
    async fn fetch_origin_jwks(&self, now: Timestamp) -> bool {
        {
            let mut sync = self.state.jwks_sync();
            let due =
                sync.origin_fetched_at.is_none_or(|at| now - at >= self.config().jwks_refresh || at > now);
            if !due || !self.state.origin_may_be_up(now) {
                return false;
            }
            sync.origin_fetched_at = Some(now);
        }
        let result = self.origin.fetch_jwks().await;
        self.state.note_origin(&result, now);
        let Ok(json) = result else { return false };
        if !self.state.adopt_jwks(&json) {
            return false;
        }
        let _ = self.store_jwks(now).await;
        true
    }

    async fn store_jwks(&self, now: Timestamp) -> Result<(), crate::KvError> {
        let jwks = nls_core::key_ring::KeyRing::parse_jwks_json(&self.state.keys().jwks_body)
            .map(|ring| ring.jwks())
            .map_err(|e| crate::KvError(e.to_string()))?;
        let record = KvJwksRecord { jwks, stored_at: now };
        let text = serde_json::to_string(&record).map_err(|e| crate::KvError(e.to_string()))?;
        // No expiry: without it, isolates would fall back to `NLS_JWKS`, maybe older.
        self.kv.put(JWKS_KV_KEY, &text, None).await
    }

    /// `PUT /v1/internal/jwks` (service token): the origin's JWKS after a rotation or a
    /// retirement. This isolate switches at once; the others read it from KV.
    async fn push_jwks(&self, req: &EdgeRequest, now: Timestamp) -> Result<EdgeResponse, EdgeResponse> {
        self.check_service_token(req)?;
        let text = std::str::from_utf8(&req.body)
            .map_err(|_| EdgeResponse::error(400, "invalid_request", "the JWKS is not UTF-8"))?;
        if let Err(e) = EdgeKeys::from_jwks_json(text) {
            return Err(EdgeResponse::error(400, "invalid_request", format!("not a usable JWKS: {e}")));
        }
        self.state.adopt_jwks(text);
        self.state.jwks_sync().kv_checked_at = Some(now);
        self.store_jwks(now).await.map_err(|e| EdgeResponse::error(503, "unavailable", e.to_string()))?;
        Ok(EdgeResponse {
            status: 204,
            body: String::new(),
            content_type: "application/json",
            headers: Vec::new(),
        })
    }

    async fn revalidate(&self, license_id: &str, origin_only: bool, now: Timestamp) {
        let ttl = self.config().snapshot_ttl;
        if !origin_only {
            if let Ok(Some(text)) = self.kv.get(&snapshot_key(license_id)).await {
                if let Ok(record) = serde_json::from_str::<KvSnapshotRecord>(&text) {
                    let young = now - record.fetched_at < ttl / 2;
                    let newer = self
                        .state
                        .memory
                        .get(license_id)
                        .is_none_or(|m| m.record.fetched_at < record.fetched_at);
                    if record.snapshot.license.id == license_id
                        && (young || newer)
                        && now - record.fetched_at < ttl
                    {
                        self.state.memory.put(record, now);
                        if young {
                            return;
                        }
                    }
                }
            }
        }
        match self.origin_snapshot(license_id, now).await {
            Ok(Some(snapshot)) => {
                let record = KvSnapshotRecord { snapshot, fetched_at: now };
                self.state.memory.put(record.clone(), now);
                let _ = self.store_snapshot(&record).await;
            }
            Ok(None) => {
                self.state.memory.remove(license_id);
                let _ = self.kv.delete(&snapshot_key(license_id)).await;
            }
            Err(_) => self.state.memory.touch(license_id, now),
        }
    }

    /// Queues `record` in KV, or in memory when KV refuses it; false when it was dropped
    /// because the memory outbox is full.
    async fn enqueue(&self, record: OutboxRecord) -> bool {
        let stored = match serde_json::to_string(&record) {
            Ok(text) => self.kv.put(&record.key(), &text, Some(self.config().kv_retention)).await.is_ok(),
            Err(_) => false,
        };
        if !stored {
            let mut pending = self.state.memory_outbox.lock().unwrap_or_else(|p| p.into_inner());
            let key = record.key();
            pending.retain(|r| r.key() != key);
            if pending.len() >= MAX_MEMORY_OUTBOX {
                EdgeCounters::bump(&self.state.counters.outbox_dropped);
                return false;
            }
            pending.push(record);
        }
        self.state.health().outbox_pending = true;
        true
    }

    /// Moves a queued item to `deadletter/` (kept `kv_retention`) and counts it.
    async fn dead_letter(&self, key: &str, text: &str) {
        let dead = key.replacen(OUTBOX_PREFIX, DEAD_LETTER_PREFIX, 1);
        let _ = self.kv.put(&dead, text, Some(self.config().kv_retention)).await;
        let _ = self.kv.delete(key).await;
        EdgeCounters::bump(&self.state.counters.dead_letters);
    }

    /// Counts one 5xx for `record`: true when it has used up its tries, else schedules its
    /// next try after an exponential backoff (`outbox_retry` doubled per 5xx, at most an hour).
    fn after_server_error(&self, record: &mut OutboxRecord, now: Timestamp) -> bool {
        record.server_errors = record.server_errors.saturating_add(1);
        if record.server_errors >= self.config().outbox_max_server_errors {
            return true;
        }
        let doubling = 1i64 << (record.server_errors - 1).min(20);
        let backoff_secs = self.config().outbox_retry.num_seconds().saturating_mul(doubling);
        record.retry_at = Some(now + Duration::seconds(backoff_secs.min(MAX_SERVER_ERROR_BACKOFF_SECS)));
        false
    }

    /// Delivers queued writes to the origin, oldest kind first; stops when the origin cannot
    /// be reached. An item the origin refuses (4xx) or answers with a 5xx on every allowed
    /// try is dead-lettered; one waiting out a 5xx backoff is skipped, so no item blocks the
    /// ones behind it. Hosts call this after requests that found work queued, and on a timer
    /// (a Workers cron trigger) so a queue left by a dead isolate is delivered too.
    pub async fn drain_outbox(&self, now: Timestamp) -> DrainReport {
        // This isolate's waiting events first (a queue the cron finds is then delivered too).
        self.ship_events(now, self.config().events_max.div_ceil(100).max(1)).await;
        let mut report = DrainReport::default();
        // 1. Items that never reached KV.
        let from_memory: Vec<OutboxRecord> =
            std::mem::take(&mut *self.state.memory_outbox.lock().unwrap_or_else(|p| p.into_inner()));
        let mut keep = Vec::new();
        for mut record in from_memory {
            if report.origin_unreachable || record.retry_at.is_some_and(|t| t > now) {
                keep.push(record);
                continue;
            }
            match self.deliver(&record, now).await {
                Delivery::Done => report.delivered += 1,
                Delivery::ServerError if !self.after_server_error(&mut record, now) => keep.push(record),
                Delivery::Rejected | Delivery::ServerError => {
                    report.rejected += 1;
                    let text = serde_json::to_string(&record).unwrap_or_default();
                    self.dead_letter(&record.key(), &text).await;
                }
                Delivery::Retry => {
                    report.origin_unreachable = true;
                    keep.push(record);
                }
            }
        }
        report.remaining += keep.len();
        self.state.memory_outbox.lock().unwrap_or_else(|p| p.into_inner()).extend(keep);
        // 2. The KV queue.
        let keys = match self.kv.list(OUTBOX_PREFIX, DRAIN_BATCH).await {
            Ok(keys) => keys,
            Err(_) => {
                report.remaining += 1;
                return self.finish_drain(report);
            }
        };
        for (i, key) in keys.iter().enumerate() {
            if report.origin_unreachable {
                report.remaining += keys.len() - i;
                break;
            }
            let Ok(Some(text)) = self.kv.get(key).await else { continue };
            let Ok(mut record) = serde_json::from_str::<OutboxRecord>(&text) else {
                self.dead_letter(key, &text).await;
                report.rejected += 1;
                continue;
            };
            if record.retry_at.is_some_and(|t| t > now) {
                report.remaining += 1;
                continue;
            }
            match self.deliver(&record, now).await {
                Delivery::Done => {
                    report.delivered += 1;
                    let _ = self.kv.delete(key).await;
                }
                Delivery::Rejected => {
                    report.rejected += 1;
                    self.dead_letter(key, &text).await;
                }
                Delivery::ServerError => {
                    let spent = self.after_server_error(&mut record, now);
                    let text = serde_json::to_string(&record).unwrap_or(text);
                    if spent {
                        report.rejected += 1;
                        self.dead_letter(key, &text).await;
                    } else {
                        report.remaining += 1;
                        let _ = self.kv.put(key, &text, Some(self.config().kv_retention)).await;
                    }
                }
                Delivery::Retry => {
                    report.origin_unreachable = true;
                    report.remaining += 1;
                }
            }
        }
        if keys.len() >= DRAIN_BATCH && !report.origin_unreachable {
            report.remaining += 1; // maybe more: the next drain continues
        }
        self.finish_drain(report)
    }

    fn finish_drain(&self, report: DrainReport) -> DrainReport {
        let mut health = self.state.health();
        health.outbox_pending = report.remaining > 0;
        report
    }

    async fn deliver(&self, record: &OutboxRecord, now: Timestamp) -> Delivery {
        let result = self.origin_call(&record.item, record.client_ip.as_deref(), now).await;
        match result {
            Err(OriginError::ServerError(_)) => Delivery::ServerError,
            Err(_) => Delivery::Retry,
            Ok(reply) if reply.status == 429 => Delivery::Retry,
            Ok(reply) => {
                if let OutboxItem::Activation { body } = &record.item {
                    if let Some(d) = body.deployment_id.as_deref() {
                        // Reconciled: the origin's answer (seat or TOO_MANY_DEPLOYMENTS) now
                        // rules; the next validation of this deployment sees it.
                        self.state.set_provisional(&record.license_id, d, false);
                        self.state.memory.remove(&record.license_id);
                    }
                }
                if (200..300).contains(&reply.status)
                    // A heartbeat for a seat that is gone, or a release of a free seat: done.
                    || matches!(&record.item, OutboxItem::Heartbeat { .. } | OutboxItem::Release { .. }) && reply.status == 404
                {
                    Delivery::Done
                } else {
                    Delivery::Rejected
                }
            }
        }
    }
}

enum Delivery {
    Done,
    /// A 4xx: this item will never be accepted.
    Rejected,
    /// A 5xx for this item: retried with backoff, a bounded number of times.
    ServerError,
    /// The origin could not be reached (or rate-limited the edge): stop this drain.
    Retry,
}

/// Where a receipt the origin signed is cached in KV. Keys and deployment ids are hashed: KV
/// keys are visible to operators, license keys are credentials.
pub fn receipt_key(license_key: &str, deployment_id: Option<&str>) -> String {
    format!("rcpt/{}/{}", sha_hex(license_key), sha_hex(deployment_id.unwrap_or("")))
}

/// How stale an answer can be: the documented propagation bound when no push arrives.
pub fn propagation_bound(config: &EdgeConfig) -> Duration {
    config.snapshot_ttl
}
