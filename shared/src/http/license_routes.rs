//! Admin: licenses. Reads need `read`, changes `write`. Every status change goes through
//! `issuing::apply_event` (the lifecycle table), every change is one conditional write on the
//! license version with its audit entry in the same commit; right after, this process's cached
//! snapshot of the license is dropped and the fresh one is pushed to the edges.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Duration;

use crate::http::AppState;
use crate::http::admin_auth::Caller;
use crate::http::app_error::{AppError, JsonBody, QueryParams};
use crate::http::audit_routes::{audit, page_request};
use crate::http::wire::{
    CreateLicenseRequest, DeploymentList, DeploymentView, HistoryQuery, LicenseEnvelope, LicenseListQuery,
    LicensePage, LicenseView, NotificationList, NotificationView, OfflineFileIssued, OfflineFileRequest,
    OfflineFileView, RegistryGrantBody, RenewLicenseRequest, UpdateLicenseRequest, UsageQuery, UsageView,
    ValidationHistory, ValidationLogView,
};
use crate::issuing::{
    LicenseTerms, apply_event, check_expiry, check_term_bounds, issue_key, license_claims, new_id,
    new_license,
};
use crate::lifecycle::{LicenseStatus, LifecycleEvent};
use crate::model::{License, Scope, UsagePeriod};
use crate::ports::{CommitOutcome, LicenseFilter, OnceGuard, StoreError, Write};
use crate::receipt::{OfflineFileClaims, issue_offline_file};

pub fn event_past_tense(event: LifecycleEvent) -> &'static str {
    match event {
        LifecycleEvent::Suspend => "suspended",
        LifecycleEvent::Reactivate => "reactivated",
        LifecycleEvent::Renew => "renewed",
        LifecycleEvent::Revoke => "revoked",
        LifecycleEvent::PaymentFailed => "marked past due",
        LifecycleEvent::PaymentRecovered => "recovered",
        LifecycleEvent::Expire => "expired",
        LifecycleEvent::GraceEnded => "ended its grace",
        LifecycleEvent::BillingSuspend => "suspended for billing",
    }
}

fn target(id: &str) -> String {
    format!("license:{id}")
}

const MAX_LIST_ITEMS: usize = crate::http::wire::MAX_TERM_ITEMS;
const MAX_NAME: usize = crate::http::wire::MAX_TERM_NAME;

/// Lengths in characters, as the OpenAPI document's `maxLength` counts them.
fn check_terms(
    tier: Option<&str>,
    features: &[String],
    limits: &std::collections::BTreeMap<String, u64>,
) -> Result<(), AppError> {
    let too_long = |s: &str| s.chars().count() > MAX_NAME;
    if tier.is_some_and(|t| t.trim().is_empty() || too_long(t)) {
        return Err(AppError::invalid(format!("`tier` must be 1 to {MAX_NAME} characters")));
    }
    if features.len() > MAX_LIST_ITEMS || limits.len() > MAX_LIST_ITEMS {
        return Err(AppError::invalid(format!(
            "at most {MAX_LIST_ITEMS} features and {MAX_LIST_ITEMS} limits"
        )));
    }
    let bad_name = features.iter().chain(limits.keys()).find(|n| n.is_empty() || too_long(n));
    if let Some(name) = bad_name {
        return Err(AppError::invalid(format!(
            "feature or metric name {name:?} must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

pub async fn load(state: &AppState, id: &str) -> Result<License, AppError> {
    state
        .store()
        .get_license(id)
        .await?
        .ok_or_else(|| AppError::not_found("license_not_found", format!("license {id}")))
}

fn sign_key(state: &AppState, license: &License) -> Result<String, AppError> {
    issue_key(state.key_ring(), license, state.now())
        .map_err(|e| AppError::Internal(format!("signing a license key: {e}")))
}

pub async fn create_license(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateLicenseRequest>,
) -> Result<(StatusCode, Json<LicenseEnvelope>), AppError> {
    caller.require(Scope::Write)?;
    Ok((StatusCode::CREATED, Json(create(&state, &caller, body).await?)))
}

/// Issues a license and its key, audited as `caller` (the API and the portal both call this).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    body: CreateLicenseRequest,
) -> Result<LicenseEnvelope, AppError> {
    check_terms(body.tier.as_deref(), &body.features, &body.limits)?;
    check_term_bounds(body.offline_days, body.grace_days, body.expires_at)?;
    if let Some(expires_at) = body.expires_at {
        check_in_the_future(state, expires_at)?;
    }
    if state.store().get_customer(&body.customer_id).await?.is_none() {
        return Err(AppError::not_found("customer_not_found", format!("customer {}", body.customer_id)));
    }
    let registry = body.registry.map(RegistryGrantBody::into_grant).transpose()?;
    let cloud = body.cloud.map(crate::http::access_token_routes::parse_cloud_grant).transpose()?;
    let now = state.now();
    let terms = LicenseTerms {
        tier: body.tier,
        features: body.features,
        limits: body.limits,
        max_deployments: body.max_deployments,
        expires_at: body.expires_at,
        offline_days: body.offline_days,
        grace_days: body.grace_days,
        registry,
    };
    let mut license = new_license(&body.customer_id, terms, now);
    license.cloud = cloud;
    let key = sign_key(state, &license)?;
    let view = LicenseView::from(&license);
    let entry =
        audit::<LicenseView, _>(caller, "license.create", target(&license.id), None, Some(&view), now);
    // The customer may be deleted between the check above and this commit; the store
    // refuses the license then (no license outlives its customer).
    let customer_id = license.customer_id.clone();
    match state.store().commit(None, vec![Write::CreateLicense(license), entry]).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => {
            return Err(AppError::not_found("customer_not_found", format!("customer {customer_id}")));
        }
        Err(other) => return Err(other.into()),
    }
    Ok(LicenseEnvelope { license: view, key: Some(key) })
}

/// A `status` filter value, refused as `invalid_query` when unknown.
pub fn parse_status_filter(status: &str) -> Result<LicenseStatus, AppError> {
    LicenseStatus::parse(status).ok_or_else(|| {
        AppError::InvalidQuery(format!(
            "unknown status {status:?}: use active, past_due, suspended, expired or revoked"
        ))
    })
}

pub async fn list_licenses(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<LicenseListQuery>,
) -> Result<Json<LicensePage>, AppError> {
    caller.require(Scope::Read)?;
    let status = query.status.as_deref().map(parse_status_filter).transpose()?;
    let filter =
        LicenseFilter { customer_id: query.customer_id, status, expires_before: query.expires_before };
    let page = state.store().list_licenses(&filter, &page_request(query.limit, query.cursor)).await?;
    Ok(Json(LicensePage {
        items: page.items.iter().map(LicenseView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    caller.require(Scope::Read)?;
    let license = load(&state, &id).await?;
    Ok(Json(LicenseEnvelope { license: LicenseView::from(&license), key: None }))
}

/// Writes `after` over `before` (conditional on the version) with its audit entry.
async fn commit_change(
    state: &AppState,
    caller: &Caller,
    action: &str,
    before: &License,
    after: License,
) -> Result<LicenseView, AppError> {
    let (before_view, after_view) = (LicenseView::from(before), LicenseView::from(&after));
    let entry =
        audit(caller, action, target(&before.id), Some(&before_view), Some(&after_view), after.updated_at);
    let write = Write::UpdateLicense { license: after, expected_version: before.version };
    state.store().commit(None, vec![write, entry]).await?;
    state.license_changed(&before.id).await;
    Ok(after_view)
}

/// `PATCH /v1/licenses/{id}`: changes terms; when the key's claims change, a new key is
/// issued (new `jti`) and returned. Earlier keys still verify; the stored terms win anyway.
pub async fn update_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateLicenseRequest>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    caller.require(Scope::Write)?;
    Ok(Json(update(&state, &caller, &id, body).await?))
}

/// Changes a license's terms, audited as `caller`; `key` is set when the key was re-issued.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: UpdateLicenseRequest,
) -> Result<LicenseEnvelope, AppError> {
    check_terms(
        body.tier.as_deref(),
        body.features.as_deref().unwrap_or_default(),
        body.limits.as_ref().unwrap_or(&Default::default()),
    )?;
    let registry = match body.registry {
        Some(Some(grant)) => Some(Some(grant.into_grant()?)),
        Some(None) => Some(None),
        None => None,
    };
    let cloud = match body.cloud {
        Some(Some(value)) => Some(Some(crate::http::access_token_routes::parse_cloud_grant(value)?)),
        Some(None) => Some(None),
        None => None,
    };
    check_term_bounds(body.offline_days, body.grace_days, body.expires_at.flatten())?;
    let before = load(state, id).await?;
    if before.status == LicenseStatus::Revoked {
        return Err(AppError::InvalidTransition("a revoked license cannot be changed".to_owned()));
    }
    let now = state.now();
    let mut after = before.clone();
    if let Some(registry) = registry {
        after.registry = registry;
    }
    if let Some(cloud) = cloud {
        after.cloud = cloud;
    }
    if let Some(tier) = body.tier {
        after.tier = tier;
    }
    if let Some(features) = body.features {
        after.features = features;
    }
    if let Some(limits) = body.limits {
        after.limits = limits;
    }
    if let Some(max) = body.max_deployments {
        after.max_deployments = max;
    }
    if let Some(expires_at) = body.expires_at {
        after.expires_at = expires_at;
    }
    if let Some(days) = body.offline_days {
        after.offline_days = days;
    }
    if let Some(days) = body.grace_days {
        after.grace_days = days;
    }
    let reissue = license_claims(&before) != license_claims(&after) || before.expires_at != after.expires_at;
    if reissue {
        after.key_id = new_id("key");
    }
    if after == before {
        return Ok(LicenseEnvelope { license: LicenseView::from(&before), key: None });
    }
    after.version += 1;
    after.updated_at = now;
    let key = if reissue { Some(sign_key(state, &after)?) } else { None };
    let view = commit_change(state, caller, "license.update", &before, after).await?;
    Ok(LicenseEnvelope { license: view, key })
}

/// A status change staff make by hand (admin API or portal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffStatusChange {
    Suspend,
    Reactivate,
    Revoke,
    /// Sets a new expiry. Keys already issued keep working: the stored expiry wins at validation.
    Renew {
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

/// Applies `change` through the lifecycle table, audited as `caller`, and pushes the result.
pub async fn change_status(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: StaffStatusChange,
) -> Result<LicenseView, AppError> {
    let (action, before, after) = plan_status_change(state, id, change).await?;
    commit_change(state, caller, action, &before, after).await
}

/// [`change_status`] at most once per `guard`: the guard is recorded in the same commit as the
/// change and its audit entry, so `Ok(None)` (nothing written) when it already was. The
/// portal's bulk operations use it so a re-posted form applies nothing twice.
pub async fn change_status_once(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: StaffStatusChange,
    guard: OnceGuard,
) -> Result<Option<LicenseView>, AppError> {
    let (action, before, after) = plan_status_change(state, id, change).await?;
    let (before_view, after_view) = (LicenseView::from(&before), LicenseView::from(&after));
    let entry =
        audit(caller, action, target(&before.id), Some(&before_view), Some(&after_view), after.updated_at);
    let write = Write::UpdateLicense { license: after, expected_version: before.version };
    match state.store().commit(Some(guard), vec![write, entry]).await? {
        CommitOutcome::Duplicate => Ok(None),
        CommitOutcome::Applied => {
            state.license_changed(&before.id).await;
            Ok(Some(after_view))
        }
    }
}

/// Create and renew agree: a license is never issued or renewed already expired (400
/// `invalid_request`). An update may still move the expiry to the past, to end a license now.
fn check_in_the_future(state: &AppState, expires_at: chrono::DateTime<chrono::Utc>) -> Result<(), AppError> {
    if expires_at <= state.now() {
        return Err(AppError::invalid("`expires_at` must be in the future"));
    }
    Ok(())
}

/// The audit action and the license before and after `change`, through the lifecycle table.
async fn plan_status_change(
    state: &AppState,
    id: &str,
    change: StaffStatusChange,
) -> Result<(&'static str, License, License), AppError> {
    let (event, action, renew_to) = match change {
        StaffStatusChange::Suspend => (LifecycleEvent::Suspend, "license.suspend", None),
        StaffStatusChange::Reactivate => (LifecycleEvent::Reactivate, "license.reactivate", None),
        StaffStatusChange::Revoke => (LifecycleEvent::Revoke, "license.revoke", None),
        StaffStatusChange::Renew { expires_at } => {
            check_in_the_future(state, expires_at)?;
            check_expiry(Some(expires_at))?;
            (LifecycleEvent::Renew, "license.renew", Some(expires_at))
        }
    };
    let before = load(state, id).await?;
    let mut after = apply_event(&before, event, state.now())?;
    if let Some(expires_at) = renew_to {
        after.expires_at = Some(expires_at);
    }
    Ok((action, before, after))
}

async fn change_status_answer(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: StaffStatusChange,
) -> Result<Json<LicenseEnvelope>, AppError> {
    caller.require(Scope::Write)?;
    let view = change_status(state, caller, id, change).await?;
    Ok(Json(LicenseEnvelope { license: view, key: None }))
}

pub async fn suspend_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    change_status_answer(&state, &caller, &id, StaffStatusChange::Suspend).await
}

pub async fn reactivate_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    change_status_answer(&state, &caller, &id, StaffStatusChange::Reactivate).await
}

pub async fn renew_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenewLicenseRequest>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    let change = StaffStatusChange::Renew { expires_at: body.expires_at };
    change_status_answer(&state, &caller, &id, change).await
}

pub async fn revoke_license(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LicenseEnvelope>, AppError> {
    change_status_answer(&state, &caller, &id, StaffStatusChange::Revoke).await
}

pub async fn license_deployments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeploymentList>, AppError> {
    caller.require(Scope::Read)?;
    load(&state, &id).await?;
    let now = state.now();
    let deployments = state.store().list_deployments(&id).await?;
    Ok(Json(DeploymentList { items: deployments.iter().map(|d| DeploymentView::new(d, now)).collect() }))
}

fn valid_period(period: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = period.split('-').collect();
    match parts.as_slice() {
        [y, m] => digits(y, 4) && digits(m, 2),
        [y, m, d] => digits(y, 4) && digits(m, 2) && digits(d, 2),
        _ => false,
    }
}

pub async fn license_usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<UsageQuery>,
) -> Result<Json<UsageView>, AppError> {
    caller.require(Scope::Read)?;
    let period = query.period.unwrap_or_else(|| UsagePeriod::month_of(state.now()).key());
    if !valid_period(&period) {
        return Err(AppError::InvalidQuery("`period` must be YYYY-MM or YYYY-MM-DD".to_owned()));
    }
    load(&state, &id).await?;
    let counters = state.store().usage_counters(&id, &period).await?;
    Ok(Json(UsageView { license_id: id, period, counters }))
}

pub async fn license_validations(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<ValidationHistory>, AppError> {
    caller.require(Scope::Read)?;
    load(&state, &id).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let entries = validation_history(&state, &id, limit).await?;
    Ok(Json(ValidationHistory {
        license_id: id,
        items: entries.iter().map(ValidationLogView::from).collect(),
    }))
}

/// A license's latest validations, newest first. Reads its own writes: whatever this process
/// buffered is flushed first.
pub async fn validation_history(
    state: &AppState,
    id: &str,
    limit: usize,
) -> Result<Vec<crate::model::ValidationLogEntry>, AppError> {
    if let Err(e) = state.flush_validation_log().await {
        tracing::warn!(error = %e, "could not flush the validation log before reading it");
    }
    Ok(state.store().list_validation_logs(id, limit).await?)
}

/// `GET /v1/licenses/{id}/notifications`: every email sent (or claimed) about this license.
pub async fn license_notifications(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<NotificationList>, AppError> {
    caller.require(Scope::Read)?;
    load(&state, &id).await?;
    let records = state.store().list_notifications(&id).await?;
    Ok(Json(NotificationList { license_id: id, items: records.iter().map(NotificationView::from).collect() }))
}

pub const DEFAULT_OFFLINE_FILE_DAYS: u32 = 30;
pub const MAX_OFFLINE_FILE_DAYS: u32 = 3650;

/// `POST /v1/licenses/{id}/offline-file`: a signed file with a TTL for an air-gapped site
/// (docs/offline-license-file.md). It carries a freshly signed key for the license as it is
/// now, so it needs a license that validates today.
pub async fn issue_offline_license_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<OfflineFileRequest>,
) -> Result<(StatusCode, Json<OfflineFileIssued>), AppError> {
    caller.require(Scope::Write)?;
    Ok((StatusCode::CREATED, Json(offline_file(&state, &caller, &id, body).await?)))
}

/// Signs an offline license file for license `id`, audited as `caller` (the API and the
/// portal's download both call this).
pub async fn offline_file(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: OfflineFileRequest,
) -> Result<OfflineFileIssued, AppError> {
    crate::http::public_routes::check_client_text("fingerprint", body.fingerprint.as_deref())?;
    let days = body.ttl_days.unwrap_or(DEFAULT_OFFLINE_FILE_DAYS);
    if days == 0 || days > MAX_OFFLINE_FILE_DAYS {
        return Err(AppError::invalid(format!("`ttl_days` must be 1 to {MAX_OFFLINE_FILE_DAYS}")));
    }
    let license = load(state, id).await?;
    if !matches!(license.status, LicenseStatus::Active | LicenseStatus::PastDue) {
        return Err(AppError::InvalidTransition(format!(
            "a {} license cannot get an offline file",
            license.status.as_str()
        )));
    }
    let now = state.now();
    let key = sign_key(state, &license)?;
    let claims = OfflineFileClaims {
        sub: license.id.clone(),
        license_key: key,
        fingerprint: body.fingerprint.clone(),
    };
    let ttl = Duration::days(i64::from(days));
    let file = issue_offline_file(state.key_ring(), &claims, now, ttl)
        .map_err(|e| AppError::Internal(format!("signing an offline file: {e}")))?;
    let detail =
        serde_json::json!({ "ttl_days": days, "fingerprint": body.fingerprint, "expires_at": now + ttl });
    let entry = audit::<(), _>(caller, "license.offline_file", target(id), None, Some(&detail), now);
    state.store().commit(None, vec![entry]).await?;
    Ok(OfflineFileIssued {
        file: OfflineFileView { format: file.format, token: file.token },
        expires_at: now + ttl,
    })
}
