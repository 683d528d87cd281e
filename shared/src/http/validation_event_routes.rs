//! Every validation counted wherever it was answered (issue 12, docs/edge.md "Validation
//! events"):
//!
//! - `POST /v1/internal/validation-events` (service token, `edge` scope only): an edge's batch
//!   of the validations it answered itself. Counted once per `batch_id` (the store's
//!   once-guard), then added to this instance's stats, to the validation history (through the
//!   same repeat filter as the origin's own answers) and re-evaluated for compliance flags.
//! - The origin's own answers are buffered here too ([`ValidationEvents::push_own`]) and
//!   flushed with the validation log, as batches with fresh ids, so the daily aggregates count
//!   every validation exactly once: an edge reports only what it answered without the origin.
//! - `GET /v1/licenses/{id}/compliance` and `GET /v1/compliance` (read scope): the flags and
//!   their evidence. A flag never suspends anything.
//! - A forwarded call from an edge carries the caller's address in `X-NLS-Client-IP`, trusted
//!   only with a valid `edge` service token in `X-NLS-Edge-Token` ([`forwarded_client_ip`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::AppState;
use crate::http::admin_auth::{Caller, token_sha256, verify_api_key};
use crate::http::app_error::{AppError, JsonBody, QueryParams};
use crate::http::public_routes::all_validation_codes;
use crate::issuing::new_id;
use crate::model::{Scope, Timestamp, ValidationLogEntry};
use crate::ports::{BatchOutcome, StoreResult};
use crate::validation_stats::*;

/// The header an edge puts the caller's address in.
pub const CLIENT_IP_HEADER: &str = "x-nls-client-ip";
/// The header carrying the edge's service token on a forwarded public call.
pub const EDGE_TOKEN_HEADER: &str = "x-nls-edge-token";
/// How long a verified edge token is trusted without another store read (its revocation
/// reaches forwarded calls within this).
const EDGE_TOKEN_TRUST_SECS: i64 = 60;
/// How far back an edge's event may be dated: its outbox keeps items 7 days.
const MAX_EVENT_AGE_DAYS: i64 = 8;
/// How far ahead of this clock an event may be dated.
const MAX_EVENT_SKEW_SECS: i64 = 300;
/// The oldest day the compliance lists reach back to.
const MAX_COMPLIANCE_DAYS: i64 = 92;
const MAX_TEXT: usize = 256;

/// This instance's side of validation events: the origin's own validations waiting for the
/// next flush, tallied by (license, day) as they are answered (bounded like the validation
/// log, in tally entries), counters, and the flag thresholds.
pub struct ValidationEvents {
    pending: Mutex<DayTally>,
    capacity: usize,
    dropped: AtomicU64,
    /// Edge validations counted here, by code (also in `Metrics`' per-code counts).
    edge_by_code: Mutex<BTreeMap<String, u64>>,
    /// Events the edges dropped (their bound), as they reported them.
    edge_dropped_reported: AtomicU64,
    settings: Mutex<ComplianceSettings>,
    /// SHA-256 of the last edge token that verified, and when.
    trusted_edge_token: Mutex<Option<([u8; 32], Timestamp)>>,
}

impl ValidationEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::default(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            edge_by_code: Mutex::default(),
            edge_dropped_reported: AtomicU64::new(0),
            settings: Mutex::new(ComplianceSettings::default()),
            trusted_edge_token: Mutex::default(),
        }
    }

    pub fn set_settings(&self, settings: ComplianceSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    pub fn settings(&self) -> ComplianceSettings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One validation the origin answered itself. Counted in place: a repeated check-in
    /// allocates nothing. Past the bound (the store has fallen behind) a validation that needs
    /// a new entry is dropped and counted in `nls_validation_events_dropped_total`.
    pub fn push_own(&self, seen: &SeenValidation<'_>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.add_within(seen, self.capacity) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn edge_validations_by_code(&self) -> BTreeMap<String, u64> {
        self.edge_by_code.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Metric series for `/metrics`.
    pub fn metric_series(&self) -> Vec<(&'static str, &'static str, u64)> {
        let edge_total = self.edge_validations_by_code().values().sum();
        vec![
            (
                "nls_validation_events_dropped_total",
                "The origin's own validation events dropped because the store fell behind.",
                self.dropped.load(Ordering::Relaxed),
            ),
            (
                "nls_edge_validations_ingested_total",
                "Validations answered at the edges and counted by this instance.",
                edge_total,
            ),
            (
                "nls_edge_events_dropped_reported_total",
                "Validation events the edges reported dropping (their per-isolate bound).",
                self.edge_dropped_reported.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// The origin's own events are written once a full batch waits or the oldest has waited this
/// long (or when forced: at shutdown, before a compliance read), so a host that flushes after
/// every request (Lambda) does not add store requests to every validation.
const OWN_EVENTS_FLUSH_SECS: i64 = 10;

/// Writes the origin's own tallied validations as batches of fresh ids, then re-evaluates the
/// flags of the (license, day)s they touched. On failure the rest is put back for next time.
pub async fn flush_own_events(state: &AppState, force: bool) -> StoreResult<usize> {
    let events = state.validation_events();
    let taken = {
        let mut pending = events.pending.lock().unwrap_or_else(|p| p.into_inner());
        let due = pending.events() >= MAX_EVENTS_PER_BATCH as u64
            || pending
                .oldest()
                .is_some_and(|at| state.now() - at >= Duration::seconds(OWN_EVENTS_FLUSH_SECS));
        if !(due || force && pending.events() > 0) {
            return Ok(0);
        }
        pending.take()
    };
    let mut rest = taken.into_iter();
    let mut written = 0;
    let mut touched = BTreeSet::new();
    loop {
        let increments: Vec<DayIncrement> = rest.by_ref().take(MAX_EVENTS_PER_BATCH).collect();
        if increments.is_empty() {
            break;
        }
        let batch = DayIncrementBatch { batch_id: new_id("veb"), received_at: state.now(), increments };
        if let Err(e) = state.store().record_day_increments(&batch).await {
            let mut pending = events.pending.lock().unwrap_or_else(|p| p.into_inner());
            let dropped = pending.restore(batch.increments.into_iter().chain(rest), events.capacity);
            events.dropped.fetch_add(dropped, Ordering::Relaxed);
            return Err(e);
        }
        written += batch.event_count() as usize;
        touched.extend(batch.increments.iter().map(|inc| (inc.license_id.clone(), inc.day)));
    }
    evaluate_touched(state, touched).await;
    Ok(written)
}

/// Recomputes and stores the compliance record of each (license, day). Failures are logged:
/// the counts are committed, and the next batch for that day evaluates again.
async fn evaluate_touched(state: &AppState, touched: BTreeSet<(String, NaiveDate)>) {
    for (license_id, day) in touched {
        if let Err(e) = evaluate_day(state, &license_id, day).await {
            tracing::warn!(license_id, error = %e, "compliance evaluation failed; the next batch retries");
        }
    }
}

async fn evaluate_day(state: &AppState, license_id: &str, day: NaiveDate) -> StoreResult<()> {
    let Some(license) = state.store().get_license(license_id).await? else { return Ok(()) };
    let Some(aggregate) = state.store().validation_day_aggregate(license_id, day).await? else {
        return Ok(());
    };
    let settings = state.validation_events().settings();
    let flags = evaluate_flags(&aggregate, license.max_deployments, &settings);
    let record = ComplianceRecord {
        license_id: license_id.to_owned(),
        day,
        flags,
        evidence: aggregate,
        evaluated_at: state.now(),
    };
    state.store().put_compliance_record(&record).await
}

// ---------------------------------------------------------------------------------------------
// Client IP through the edge

/// The caller's address an edge forwarded, if the request also carries a valid `edge` service
/// token; `None` otherwise (the header alone is ignored, and a bad token is not an error: the
/// request goes on with the peer's address).
pub async fn forwarded_client_ip(state: &AppState, headers: &HeaderMap) -> Option<IpAddr> {
    let ip: IpAddr = headers.get(CLIENT_IP_HEADER)?.to_str().ok()?.trim().parse().ok()?;
    let token = headers.get(EDGE_TOKEN_HEADER)?.to_str().ok()?.trim();
    let presented = token_sha256(token);
    let now = state.now();
    let events = state.validation_events();
    let trusted =
        events.trusted_edge_token.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|(hash, at)| {
            bool::from(subtle::ConstantTimeEq::ct_eq(&hash[..], &presented[..]))
                && now - at < Duration::seconds(EDGE_TOKEN_TRUST_SECS)
                && at <= now
        });
    if !trusted {
        let record = verify_api_key(state, token).await.ok()?;
        if !record.scopes.contains(&Scope::Edge) {
            return None;
        }
        *events.trusted_edge_token.lock().unwrap_or_else(|p| p.into_inner()) = Some((presented, now));
    }
    Some(ip)
}

// ---------------------------------------------------------------------------------------------
// Wire types

/// One validation an edge answered.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationEventWire {
    #[schema(min_length = 1, max_length = 256)]
    pub license_id: String,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub deployment_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256)]
    pub fingerprint: Option<String>,
    /// The caller's address as the edge saw it (IPv4 or IPv6).
    #[serde(default)]
    #[schema(max_length = 45)]
    pub client_ip: Option<String>,
    /// ISO 3166-1 alpha-2, where the platform knows it.
    #[serde(default)]
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// A validation code (`VALID`, `EXPIRED`, ...).
    pub code: ValidationCodeWire,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The edge location that answered (e.g. a Cloudflare colo).
    #[serde(default)]
    #[schema(max_length = 64)]
    pub edge: Option<String>,
}

/// A validation code, as the validation answer carries it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "VALID")]
pub struct ValidationCodeWire(pub String);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationEventsRequest {
    /// Chosen by the edge; a batch is counted once however often it is sent.
    #[schema(min_length = 1, max_length = 256)]
    pub batch_id: String,
    /// Events this edge isolate dropped (its bound) since its previous batch.
    #[serde(default)]
    pub dropped: u64,
    #[schema(max_items = 100)]
    pub events: Vec<ValidationEventWire>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationEventsAccepted {
    pub batch_id: String,
    /// This batch was counted before; nothing changed.
    pub duplicate: bool,
    pub events: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValueSeenView {
    pub value: String,
    pub count: u64,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistinctValuesView {
    /// Distinct values seen that day (exact up to 1,000 per kind; past it, "at least").
    pub distinct: u64,
    /// Events whose value was new after the 1,000th: counted, not kept.
    pub untracked: u64,
    /// The most frequent values, at most 5.
    pub top: Vec<ValueSeenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DayAggregateView {
    pub validations_by_code: BTreeMap<String, u64>,
    /// `deployment`, `fingerprint`, `client_ip`, `country` → what was seen.
    pub distinct: BTreeMap<String, DistinctValuesView>,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceFlagView {
    /// `too_many_fingerprints`, `too_many_client_ips`, `repeated_too_many_deployments`,
    /// `repeated_activation_rate_limited` or `too_many_countries`.
    pub kind: String,
    pub observed: u64,
    pub threshold: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceDayView {
    pub license_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub flagged: bool,
    pub flags: Vec<ComplianceFlagView>,
    pub evidence: DayAggregateView,
    pub evaluated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LicenseCompliance {
    pub license_id: String,
    /// Days with validations, newest first (flagged or not).
    pub items: Vec<ComplianceDayView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceList {
    /// Flagged license-days, newest first, then by license id.
    pub items: Vec<ComplianceDayView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LicenseComplianceQuery {
    /// The first day (UTC) to include; default 30 days ago, at most 92 days back.
    #[serde(default)]
    #[schema(format = Date)]
    pub since: Option<String>,
}

/// Only flagged records are listed fleet-wide.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub enum FlaggedOnly {
    #[serde(rename = "true")]
    True,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ComplianceListQuery {
    #[serde(default)]
    pub flagged: Option<FlaggedOnly>,
    /// The first day (UTC) to include; default 7 days ago, at most 92 days back.
    #[serde(default)]
    #[schema(format = Date)]
    pub since: Option<String>,
    /// At most this many records, 1 to 1000 (default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl From<ComplianceRecord> for ComplianceDayView {
    fn from(r: ComplianceRecord) -> Self {
        let flagged = r.flagged();
        Self {
            license_id: r.license_id,
            day: day_key(r.day),
            flagged,
            flags: r
                .flags
                .into_iter()
                .map(|f| ComplianceFlagView {
                    kind: serde_json::to_value(f.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    observed: f.observed,
                    threshold: f.threshold,
                })
                .collect(),
            evidence: DayAggregateView {
                validations_by_code: r.evidence.by_code,
                distinct: r
                    .evidence
                    .distinct
                    .into_iter()
                    .map(|(kind, d)| {
                        (
                            kind.as_str().to_owned(),
                            DistinctValuesView {
                                distinct: d.distinct,
                                untracked: d.untracked,
                                top: d
                                    .top
                                    .into_iter()
                                    .map(|v| ValueSeenView {
                                        value: v.value,
                                        count: v.count,
                                        first_seen: v.first_seen,
                                        last_seen: v.last_seen,
                                    })
                                    .collect(),
                            },
                        )
                    })
                    .collect(),
                first_seen: r.evidence.first_seen,
                last_seen: r.evidence.last_seen,
            },
            evaluated_at: r.evaluated_at,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn check_text(field: &str, value: Option<&str>, min: usize) -> Result<(), AppError> {
    match value {
        Some(v) if v.chars().count() < min || v.chars().count() > MAX_TEXT => {
            Err(AppError::invalid(format!("`{field}` must be {min} to {MAX_TEXT} characters")))
        }
        _ => Ok(()),
    }
}

fn to_event(wire: ValidationEventWire, now: Timestamp, codes: &[&str]) -> Result<ValidationEvent, AppError> {
    check_text("license_id", Some(&wire.license_id), 1)?;
    check_text("deployment_id", wire.deployment_id.as_deref(), 1)?;
    check_text("fingerprint", wire.fingerprint.as_deref(), 0)?;
    check_text("edge", wire.edge.as_deref(), 0)?;
    if !codes.contains(&wire.code.0.as_str()) {
        return Err(AppError::invalid(format!("`code` {:?} is not a validation code", wire.code.0)));
    }
    let client_ip = match wire.client_ip.as_deref() {
        Some(text) => Some(
            text.parse::<IpAddr>()
                .map_err(|_| AppError::invalid("`client_ip` must be an IP address"))?
                .to_string(),
        ),
        None => None,
    };
    if let Some(c) = &wire.country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(AppError::invalid("`country` must be two capital letters (ISO 3166-1 alpha-2)"));
        }
    }
    if wire.at < now - Duration::days(MAX_EVENT_AGE_DAYS)
        || wire.at > now + Duration::seconds(MAX_EVENT_SKEW_SECS)
    {
        return Err(AppError::invalid(format!(
            "`at` must be within the last {MAX_EVENT_AGE_DAYS} days and not ahead of this clock"
        )));
    }
    Ok(ValidationEvent {
        license_id: wire.license_id,
        deployment_id: wire.deployment_id,
        fingerprint: wire.fingerprint,
        client_ip,
        country: wire.country,
        code: wire.code.0,
        at: wire.at,
        edge: wire.edge,
    })
}

/// `POST /v1/internal/validation-events`.
pub async fn ingest_validation_events(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ValidationEventsRequest>,
) -> Result<Json<ValidationEventsAccepted>, AppError> {
    // The `edge` scope only: the legacy `read` edge token is not accepted on this new route.
    if caller.scope != Scope::Edge {
        return Err(AppError::InsufficientScope { needed: "edge" });
    }
    check_text("batch_id", Some(&body.batch_id), 1)?;
    if body.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(AppError::invalid(format!("`events` holds at most {MAX_EVENTS_PER_BATCH} events")));
    }
    let now = state.now();
    let codes = all_validation_codes();
    let events = body.events.into_iter().map(|e| to_event(e, now, &codes)).collect::<Result<Vec<_>, _>>()?;
    let count = events.len();
    let batch = ValidationEventBatch { batch_id: body.batch_id.clone(), received_at: now, events };
    let outcome = state.store().record_validation_events(&batch).await?;
    if outcome == BatchOutcome::Recorded {
        let ingest = state.validation_events();
        ingest.edge_dropped_reported.fetch_add(body.dropped, Ordering::Relaxed);
        let mut touched = BTreeSet::new();
        {
            let mut by_code = ingest.edge_by_code.lock().unwrap_or_else(|p| p.into_inner());
            for e in &batch.events {
                *by_code.entry(e.code.clone()).or_default() += 1;
            }
        }
        for e in batch.events {
            // Per-hour stats count by arrival: an event delivered late from an outbox must not
            // overwrite an hour slot of the ring.
            state.metrics().record_validation(&e.code, now);
            touched.insert((e.license_id.clone(), e.at.date_naive()));
            let ip: Option<IpAddr> = e.client_ip.as_deref().and_then(|t| t.parse().ok());
            let identity = (
                e.license_id.as_str(),
                e.deployment_id.as_deref(),
                e.fingerprint.as_deref(),
                ip,
                e.code.as_str(),
            );
            state.validation_log().push_unless_repeated(identity, e.at.timestamp(), || ValidationLogEntry {
                license_id: e.license_id.clone(),
                at: e.at,
                code: e.code.clone(),
                deployment_id: e.deployment_id.clone(),
                fingerprint: e.fingerprint.clone(),
                client_ip: e.client_ip.clone(),
                registry: None,
            });
        }
        evaluate_touched(&state, touched).await;
    }
    Ok(Json(ValidationEventsAccepted {
        batch_id: body.batch_id,
        duplicate: outcome == BatchOutcome::Duplicate,
        events: count,
    }))
}

fn since_day(text: Option<&str>, today: NaiveDate, default_days: i64) -> Result<NaiveDate, AppError> {
    let oldest = today - Duration::days(MAX_COMPLIANCE_DAYS);
    match text {
        None => Ok(today - Duration::days(default_days)),
        Some(t) => parse_day(t)
            .map(|d| d.max(oldest))
            .ok_or_else(|| AppError::InvalidQuery("`since` must be a date, YYYY-MM-DD".to_owned())),
    }
}

/// `GET /v1/licenses/{id}/compliance`: the license's days, newest first, with their flags.
pub async fn license_compliance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LicenseComplianceQuery>,
) -> Result<Json<LicenseCompliance>, AppError> {
    caller.require(Scope::Read)?;
    crate::http::license_routes::load(&state, &id).await?;
    // Reads its own writes, as the history does.
    if let Err(e) = state.flush_validation_events().await {
        tracing::warn!(error = %e, "could not flush validation events before reading compliance");
    }
    let since = since_day(query.since.as_deref(), state.now().date_naive(), 30)?;
    let records = state.store().list_compliance_records(&id, since).await?;
    Ok(Json(LicenseCompliance { license_id: id, items: records.into_iter().map(Into::into).collect() }))
}

/// `GET /v1/compliance?flagged=true&since=`: flagged license-days across the fleet.
pub async fn list_compliance(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ComplianceListQuery>,
) -> Result<Json<ComplianceList>, AppError> {
    caller.require(Scope::Read)?;
    let _only_flagged = query.flagged;
    let today = state.now().date_naive();
    let since = since_day(query.since.as_deref(), today, 7)?;
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=1000) => n as usize,
        Some(_) => return Err(AppError::InvalidQuery("`limit` must be 1 to 1000".to_owned())),
    };
    let records = state.store().list_flagged_compliance(since, today, limit).await?;
    Ok(Json(ComplianceList { items: records.into_iter().map(Into::into).collect() }))
}
