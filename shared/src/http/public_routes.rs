//! The public routes, authenticated by the license key: validate, heartbeat, usage, release,
//! plus JWKS, health and metrics.
//!
//! A warm validation (key verified before, snapshot cached) reads no store and writes nothing
//! unless it activates a new deployment; its history entry is buffered, not written inline.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::app_error::{AppError, JsonBody, JsonBytes, parse_json};
use crate::http::snapshot_cache::SnapshotEntry;
use crate::http::wire::{
    DeploymentRef, DeploymentReleased, DeploymentView, HealthAnswer, HeartbeatAnswer, HeartbeatRequest,
    UsageAccepted, UsageRequest, ValidateRequest, ValidationAnswer, usage_view,
};
use crate::http::{ACTIVATION_RATE_LIMITED, AppState, ClientIp};
use crate::key_ring::Jwks;
use crate::license_token::{KeyRejection, VerifiedLicense};
use crate::model::{Deployment, Timestamp, UsageBatch, UsageRecord, ValidationLogEntry};
use crate::ports::{Activation, BatchOutcome};
use crate::receipt::sign_receipt;
use crate::validation::{ValidationCode, ValidationRequest, decide};
use crate::validation_stats::SeenValidation;

/// Every code a validation can answer with.
pub fn all_validation_codes() -> Vec<&'static str> {
    ValidationCode::ALL.iter().map(|c| c.as_str()).chain([ACTIVATION_RATE_LIMITED]).collect()
}

const MAX_ID_LEN: usize = 256;

/// The most characters a client-reported `fingerprint` or `app_version` may have. Both are
/// stored with each seat and logged with each validation, so their size is the store's.
pub const MAX_CLIENT_TEXT_CHARS: usize = 256;

/// Refuses a client-reported text over [`MAX_CLIENT_TEXT_CHARS`] with `invalid_request`.
pub(crate) fn check_client_text(field: &str, value: Option<&str>) -> Result<(), AppError> {
    match value {
        Some(text) if text.chars().count() > MAX_CLIENT_TEXT_CHARS => {
            Err(AppError::invalid(format!("`{field}` must be at most {MAX_CLIENT_TEXT_CHARS} characters")))
        }
        _ => Ok(()),
    }
}

/// Lengths in characters, as the OpenAPI document's `maxLength` counts them.
fn check_id(field: &str, value: &str) -> Result<(), AppError> {
    if value.is_empty() || value.chars().count() > MAX_ID_LEN {
        return Err(AppError::invalid(format!("`{field}` must be 1 to {MAX_ID_LEN} characters")));
    }
    Ok(())
}

/// The snapshot for a license: from this process's cache when fresh, else one store read.
pub(crate) async fn snapshot_for(
    state: &AppState,
    license_id: &str,
    now: Timestamp,
) -> Result<Option<Arc<SnapshotEntry>>, AppError> {
    if let Some(entry) = state.snapshots().get(license_id, now) {
        state.metrics().snapshot_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !state.snapshots().claim_refresh(&entry, now) {
            return Ok(Some(entry));
        }
        // This request re-reads ahead of the expiry (snapshot_cache.rs); the others go on with
        // the entry, which is still fresh, and so does this one if the store fails.
        return match state.store().license_snapshot(license_id, now).await {
            Ok(Some(snapshot)) => Ok(Some(state.snapshots().put_refreshed(&entry, snapshot, now))),
            Ok(None) => {
                state.snapshots().invalidate(license_id);
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refreshing a status snapshot failed; serving it until its TTL");
                Ok(Some(entry))
            }
        };
    }
    state.metrics().snapshot_misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let snapshot = state.store().license_snapshot(license_id, now).await?;
    Ok(snapshot.map(|s| state.snapshots().put(s, now)))
}

pub(crate) const NOT_ON_RECORD: &str = "this license is not on record";

/// A license key, verified and looked up as `POST /v1/licenses/validate` does before it decides.
pub(crate) struct CheckedKey {
    pub key: Arc<VerifiedLicense>,
    pub entry: Option<Arc<SnapshotEntry>>,
    /// The store was unavailable: only the key's own claims can be judged.
    pub degraded: bool,
}

pub(crate) enum KeyCheck {
    /// Not a key of ours: malformed, bad checksum or signature.
    Refused(ValidationCode),
    /// Signed by us, but the store no longer holds the license (it was deleted).
    NotOnRecord(String),
    Checked(CheckedKey),
}

/// The first half of a validation, shared with every route a license key authenticates by
/// status (the registry token service): verify the key, then read its license's snapshot.
pub(crate) async fn check_license_key(
    state: &AppState,
    key: &str,
    now: Timestamp,
) -> Result<KeyCheck, AppError> {
    let key = match state.verifier().verify(key) {
        Ok(key) => key,
        Err(rejection) => return Ok(KeyCheck::Refused(ValidationCode::from(rejection))),
    };
    let (entry, degraded) = match snapshot_for(state, &key.claims.sub, now).await {
        Ok(entry) => (entry, false),
        // Fail soft: the signature still proves the key; say the answer is degraded.
        Err(AppError::Unavailable(why)) => {
            tracing::warn!(error = %why, "store unavailable; validating from the key alone");
            (None, true)
        }
        Err(other) => return Err(other),
    };
    if entry.is_none() && !degraded {
        return Ok(KeyCheck::NotOnRecord(key.claims.sub.clone()));
    }
    Ok(KeyCheck::Checked(CheckedKey { key, entry, degraded }))
}

pub async fn validate(
    State(state): State<AppState>,
    client_ip: Option<axum::Extension<ClientIp>>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, AppError> {
    let mut body: ValidateRequest<'_> = parse_json(&bytes)?;
    let key_text: &str = &body.key;
    if let Some(d) = &body.deployment_id {
        check_id("deployment_id", d)?;
    }
    check_client_text("fingerprint", body.fingerprint.as_deref())?;
    let now = state.now();
    let next_check_in = now + state.config().check_in_interval;
    let rejected = |code: ValidationCode| ValidationAnswer {
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
    let CheckedKey { key, entry, mut degraded } = match check_license_key(&state, key_text, now).await? {
        KeyCheck::Checked(checked) => checked,
        KeyCheck::Refused(code) => {
            state.metrics().record_validation(code.as_str(), now);
            return Ok(Json(rejected(code)).into_response());
        }
        KeyCheck::NotOnRecord(license_id) => {
            let mut answer = rejected(ValidationCode::Revoked);
            answer.warning = Some(NOT_ON_RECORD.to_owned());
            let (deployment_id, fingerprint) = (body.deployment_id.as_deref(), body.fingerprint.as_deref());
            record(
                &state,
                &license_id,
                ValidationCode::Revoked.as_str(),
                deployment_id,
                fingerprint,
                client_ip,
                now,
            );
            return Ok(Json(answer).into_response());
        }
    };
    let license_id = key.claims.sub.as_str();
    // A plain check-in answered from this snapshot before: the same bytes again.
    let plain = body.features.is_empty() && body.metrics.is_empty();
    if let Some(cached) = entry
        .as_ref()
        .filter(|_| plain)
        .and_then(|e| e.cached_answer(key_text, body.deployment_id.as_deref()))
    {
        record(
            &state,
            license_id,
            cached.code,
            body.deployment_id.as_deref(),
            body.fingerprint.as_deref(),
            client_ip,
            now,
        );
        return Ok(json_response(cached.json));
    }
    let request = ValidationRequest {
        deployment_id: body.deployment_id.clone(),
        features: std::mem::take(&mut body.features),
        metrics: std::mem::take(&mut body.metrics),
    };
    let snapshot = entry.as_ref().map(|e| &e.snapshot);
    let decision = decide(&key, &request, snapshot, now);
    let mut code = decision.code.as_str();
    let mut valid = decision.code.is_valid();
    let mut warning = decision.warning.clone();
    let mut deployment =
        body.deployment_id.as_ref().map(|id| DeploymentRef { id: id.clone(), lease_expires_at: None });
    if decision.needs_activation {
        if let Some(deployment_id) = &body.deployment_id {
            let max = decision.license.max_deployments;
            // A store that fails the seat write degrades the answer (no receipt), as a failed
            // read does: a validation is never a 5xx because the store is busy.
            let activation =
                match activate(&state, &key, max, deployment_id, body.fingerprint.as_deref(), now).await {
                    Ok(activation) => Some(activation),
                    Err(AppError::Unavailable(why) | AppError::Conflict(why)) => {
                        tracing::warn!(error = %why, "seat not confirmed; answering degraded");
                        degraded = true;
                        None
                    }
                    Err(other) => return Err(other),
                };
            match activation {
                None => {}
                Some(Activation::Activated(d) | Activation::AlreadyActive(d)) => {
                    deployment = Some(DeploymentRef {
                        id: d.deployment_id,
                        lease_expires_at: Some(d.lease_expires_at),
                    });
                }
                Some(Activation::LimitReached { live }) => {
                    code = ValidationCode::TooManyDeployments.as_str();
                    valid = false;
                    warning = Some(format!("all {live} deployment slots are in use"));
                }
                Some(Activation::ChurnLimited) => {
                    code = ACTIVATION_RATE_LIMITED;
                    valid = false;
                    warning =
                        Some("too many new activations for this license recently; retry later".to_owned());
                }
            }
        }
    }
    // A degraded answer ignored revocation, suspension and seats: signing it would hand out
    // offline + grace days of proof for a decision the store may contradict.
    let receipt = if valid && !degraded {
        let deployment_id = body.deployment_id.as_deref();
        let cached = entry.as_ref().and_then(|e| e.cached_receipt(key_text, deployment_id, decision.code));
        match cached {
            Some(r) => Some(r.to_string()),
            None => {
                let signed = sign_receipt(state.key_ring(), key_text, &decision, deployment_id, now)
                    .map_err(|e| AppError::Internal(format!("signing a receipt: {e}")))?;
                if let Some(e) = &entry {
                    e.remember_receipt(key_text, deployment_id, decision.code, Arc::from(signed.as_str()));
                }
                Some(signed)
            }
        }
    } else {
        None
    };
    record(
        &state,
        license_id,
        code,
        body.deployment_id.as_deref(),
        body.fingerprint.as_deref(),
        client_ip,
        now,
    );
    let answer = ValidationAnswer {
        code,
        valid,
        warning,
        license: Some(decision.license.into()),
        deployment,
        next_check_in,
        receipt,
        degraded,
        usage: usage_view(decision.usage.as_ref()),
    };
    let json = Bytes::from(
        serde_json::to_vec(&answer).map_err(|e| AppError::Internal(format!("serializing an answer: {e}")))?,
    );
    if let Some(e) = entry.as_ref().filter(|_| plain && !decision.needs_activation) {
        e.remember_answer(key_text, body.deployment_id.as_deref(), code, json.clone());
    }
    Ok(json_response(json))
}

fn json_response(json: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
}

async fn activate(
    state: &AppState,
    key: &VerifiedLicense,
    max_deployments: Option<u32>,
    deployment_id: &str,
    fingerprint: Option<&str>,
    now: Timestamp,
) -> Result<Activation, AppError> {
    let license_id = &key.claims.sub;
    let request = Deployment {
        license_id: license_id.clone(),
        deployment_id: deployment_id.to_owned(),
        fingerprint: fingerprint.map(str::to_owned),
        app_version: None,
        activated_at: now,
        last_heartbeat_at: now,
        lease_expires_at: now + state.config().lease,
    };
    let activation = state
        .store()
        .activate_deployment(&request, &state.config().activation_policy(max_deployments), now)
        .await?;
    if matches!(activation, Activation::Activated(_)) {
        state.invalidate_license(license_id);
    }
    Ok(activation)
}

/// Counts a validation in this instance's tally and queues (unless a repeat) its history
/// entry. A warm check-in allocates nothing here: the tally counts it in place, and the client
/// IP is formatted on the stack.
fn record(
    state: &AppState,
    license_id: &str,
    code: &'static str,
    deployment_id: Option<&str>,
    fingerprint: Option<&str>,
    client_ip: Option<axum::Extension<ClientIp>>,
    now: Timestamp,
) {
    state.metrics().record_validation(code, now);
    let ip = client_ip.map(|ip| ip.0.0);
    let mut ip_buffer = IpText::new();
    let client_ip_text = ip.map(|ip| ip_buffer.format(ip));
    let identity = (license_id, deployment_id, fingerprint, ip, code);
    state.validation_log().push_unless_repeated(identity, now.timestamp(), || ValidationLogEntry {
        license_id: license_id.to_owned(),
        at: now,
        code: code.to_owned(),
        deployment_id: deployment_id.map(str::to_owned),
        fingerprint: fingerprint.map(str::to_owned),
        client_ip: client_ip_text.map(str::to_owned),
        registry: None,
    });
    state.validation_events().push_own(&SeenValidation {
        license_id,
        code,
        at: now,
        deployment_id,
        fingerprint,
        client_ip: client_ip_text,
        country: None,
    });
}

/// Room for the longest IPv6 text (45 bytes), so an address is formatted without allocating.
struct IpText([u8; 48]);

impl IpText {
    fn new() -> Self {
        Self([0; 48])
    }

    fn format(&mut self, ip: std::net::IpAddr) -> &str {
        use std::io::Write;
        let mut cursor = std::io::Cursor::new(&mut self.0[..]);
        write!(cursor, "{ip}").expect("an IP address fits in 48 bytes");
        let len = cursor.position() as usize;
        std::str::from_utf8(&self.0[..len]).expect("an IP address formats as ASCII")
    }
}

/// Verifies the key of a non-validation public route: a bad key is bad credentials here.
fn authenticate_key(state: &AppState, key: &str) -> Result<Arc<VerifiedLicense>, AppError> {
    state.verifier().verify(key).map_err(|r| {
        AppError::InvalidLicenseKey(match r {
            KeyRejection::Malformed => "malformed",
            KeyRejection::ChecksumMismatch => "checksum mismatch",
            KeyRejection::BadSignature => "signature rejected",
        })
    })
}

pub async fn heartbeat(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatAnswer>, AppError> {
    check_id("deployment_id", &body.deployment_id)?;
    check_client_text("app_version", body.app_version.as_deref())?;
    let key = authenticate_key(&state, &body.key)?;
    let now = state.now();
    let entry = snapshot_for(&state, &key.claims.sub, now).await?;
    let decision = decide(&key, &ValidationRequest::default(), entry.as_ref().map(|e| &e.snapshot), now);
    let lease_end = now + state.config().lease;
    let deployment = state
        .store()
        .heartbeat(&key.claims.sub, &body.deployment_id, body.app_version.as_deref(), now, lease_end)
        .await?
        .ok_or_else(|| AppError::DeploymentNotActive(body.deployment_id.clone()))?;
    Ok(Json(HeartbeatAnswer {
        code: decision.code.as_str(),
        valid: decision.code.is_valid(),
        deployment: DeploymentView::new(&deployment, now),
        next_heartbeat_at: now + state.config().check_in_interval,
    }))
}

pub const MAX_USAGE_RECORDS: usize = 1000;

pub async fn usage(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<UsageRequest>,
) -> Result<Response, AppError> {
    check_id("deployment_id", &body.deployment_id)?;
    check_id("batch_id", &body.batch_id)?;
    if body.records.is_empty() || body.records.len() > MAX_USAGE_RECORDS {
        return Err(AppError::invalid(format!("`records` must hold 1 to {MAX_USAGE_RECORDS} records")));
    }
    if let Some(bad) =
        body.records.iter().find(|r| r.metric.is_empty() || r.metric.chars().count() > MAX_ID_LEN)
    {
        return Err(AppError::invalid(format!(
            "metric name {:?} must be 1 to {MAX_ID_LEN} characters",
            bad.metric
        )));
    }
    let key = authenticate_key(&state, &body.key)?;
    let now = state.now();
    // A stopped license reports nothing that counts: the state check a validation makes, from
    // the same (usually cached) snapshot.
    let entry = snapshot_for(&state, &key.claims.sub, now).await?;
    let code = match &entry {
        // Signed by us but no longer on record, as a validation answers it.
        None => ValidationCode::Revoked,
        Some(e) => decide(&key, &ValidationRequest::default(), Some(&e.snapshot), now).code,
    };
    if matches!(code, ValidationCode::Revoked | ValidationCode::Suspended) {
        return Err(AppError::LicenseNotUsable(code));
    }
    let batch = UsageBatch {
        license_id: key.claims.sub.clone(),
        deployment_id: body.deployment_id,
        batch_id: body.batch_id,
        records: body
            .records
            .into_iter()
            .map(|r| UsageRecord { metric: r.metric, value: r.value, at: r.at })
            .collect(),
        received_at: now,
    };
    batch
        .check_bounds(now, &state.config().usage_window)
        .map_err(|e| AppError::UsageOutOfBounds(e.to_string()))?;
    let outcome = state.store().record_usage_batch(&batch).await?;
    if outcome == BatchOutcome::Recorded {
        state.invalidate_license(&batch.license_id);
    }
    let answer = UsageAccepted { batch_id: batch.batch_id, duplicate: outcome == BatchOutcome::Duplicate };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

pub const LICENSE_KEY_HEADER: &str = "x-license-key";

/// `DELETE /v1/deployments/{id}`: the key comes in `X-License-Key` or a `{"key"}` body.
pub async fn release_deployment(
    State(state): State<AppState>,
    Path(deployment_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<DeploymentReleased>, AppError> {
    let key_text = match headers.get(LICENSE_KEY_HEADER) {
        Some(value) => value.to_str().map_err(|_| AppError::InvalidLicenseKey("malformed"))?.to_owned(),
        None if body.is_empty() => return Err(AppError::MissingCredentials),
        None => parse_json::<crate::http::wire::ReleaseDeploymentRequest>(&body)?.key,
    };
    check_id("deployment_id", &deployment_id)?;
    let key = authenticate_key(&state, &key_text)?;
    let released = state.store().release_deployment(&key.claims.sub, &deployment_id).await?;
    if !released {
        return Err(AppError::not_found("deployment_not_found", format!("deployment {deployment_id}")));
    }
    state.invalidate_license(&key.claims.sub);
    Ok(Json(DeploymentReleased { deployment_id, released }))
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    let jwks: Jwks = state.key_ring().jwks();
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(jwks)).into_response()
}

pub async fn health() -> Json<HealthAnswer> {
    Json(HealthAnswer { status: "ok" })
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let dropped = state.validation_log().dropped();
    let pending = state.validation_log().len() as u64;
    let mut series = vec![
        (
            "nls_validation_log_dropped_total",
            "Validation history entries dropped because the store fell behind.",
            dropped,
        ),
        ("nls_validation_log_pending", "Validation history entries waiting for the next flush.", pending),
    ];
    series.extend(state.registry().map(|r| r.metric_series()).into_iter().flatten());
    series.extend(state.validation_events().metric_series());
    let text = state.metrics().render(&series);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
