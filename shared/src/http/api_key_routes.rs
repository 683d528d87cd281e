//! Admin: API keys. All of it needs the `admin` scope. The secret is returned once, at
//! creation; only its hash is stored.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::http::AppState;
use crate::http::admin_auth::{Caller, mint_api_key};
use crate::http::app_error::{AppError, JsonBody};
use crate::http::audit_routes::audit;
use crate::http::wire::{
    ApiKeyCreated, ApiKeyEnvelope, ApiKeyList, ApiKeyView, CreateApiKeyRequest, MAX_API_KEY_NAME,
};
use crate::model::Scope;
use crate::ports::Write;

fn target(id: &str) -> String {
    format!("api_key:{id}")
}

pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), AppError> {
    let created = create(&state, &caller, &body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a key and its audit entry: the JSON route and the portal's API keys page.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    body: &CreateApiKeyRequest,
) -> Result<ApiKeyCreated, AppError> {
    caller.require(Scope::Admin)?;
    if body.name.trim().is_empty() || body.name.chars().count() > MAX_API_KEY_NAME {
        return Err(AppError::invalid(format!("`name` must be 1 to {MAX_API_KEY_NAME} characters")));
    }
    if body.scopes.is_empty() {
        return Err(AppError::invalid(
            "`scopes` must name at least one of read, write, admin, registry:push, edge, meter",
        ));
    }
    let scopes = body
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                AppError::invalid(format!(
                    "unknown scope {s:?}: use read, write, admin, registry:push, edge or meter"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The edges' token reaches only the internal routes: it shares a key with nothing else.
    if scopes.contains(&Scope::Edge) && scopes.iter().any(|s| *s != Scope::Edge) {
        return Err(AppError::invalid("the `edge` scope cannot be combined with other scopes"));
    }
    // A cloud service's metering key posts usage and nothing else.
    if scopes.contains(&Scope::Meter) && scopes.iter().any(|s| *s != Scope::Meter) {
        return Err(AppError::invalid("the `meter` scope cannot be combined with other scopes"));
    }
    let now = state.now();
    let (record, secret) = mint_api_key(&body.name, scopes, now);
    let view = ApiKeyView::from(&record);
    let entry = audit::<ApiKeyView, _>(caller, "api_key.create", target(&record.id), None, Some(&view), now);
    state.store().commit(None, vec![Write::PutApiKey(record), entry]).await?;
    Ok(ApiKeyCreated { api_key: view, secret })
}

pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ApiKeyList>, AppError> {
    caller.require(Scope::Admin)?;
    let keys = state.store().list_api_keys().await?;
    Ok(Json(ApiKeyList { items: keys.iter().map(ApiKeyView::from).collect() }))
}

pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyEnvelope>, AppError> {
    Ok(Json(ApiKeyEnvelope { api_key: revoke(&state, &caller, &id).await? }))
}

/// Revokes a key (a revoked key stays revoked; no second audit entry): the JSON route and the
/// portal's API keys page.
pub async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<ApiKeyView, AppError> {
    caller.require(Scope::Admin)?;
    let before = state
        .store()
        .get_api_key(id)
        .await?
        .ok_or_else(|| AppError::not_found("api_key_not_found", format!("API key {id}")))?;
    if before.revoked_at.is_some() {
        return Ok(ApiKeyView::from(&before));
    }
    let now = state.now();
    let mut after = before.clone();
    after.revoked_at = Some(now);
    let (before_view, after_view) = (ApiKeyView::from(&before), ApiKeyView::from(&after));
    let entry = audit(caller, "api_key.revoke", target(id), Some(&before_view), Some(&after_view), now);
    state.store().commit(None, vec![Write::PutApiKey(after), entry]).await?;
    Ok(after_view)
}
