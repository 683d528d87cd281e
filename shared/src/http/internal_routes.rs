//! Internal routes for the edges (docs/edge.md): an edge fetches a license's status snapshot
//! here when neither its memory nor its KV holds a fresh one.
//!
//! Authentication: the edge's service token is an API key with the `edge` scope (create one
//! per edge fleet with `POST /v1/api-keys`), so it is stored hashed, rate-limited, revocable
//! and audited like any other key, and it reaches nothing but these routes. Admin keys and the
//! bootstrap key do not reach them; a `read`-only key still does, for one release, with a
//! warning (`admin_auth`). The answer is the core's `StatusSnapshot` JSON, a promise
//! between origin and edge (fields are only ever added).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::admin_auth::Caller;
use crate::http::app_error::AppError;
use crate::model::Scope;

/// `GET /v1/internal/snapshots/{id}` → `StatusSnapshot`, or 404 `license_not_found`.
/// Always one store read: the edge caches, so this process's own snapshot cache is bypassed
/// (an edge must never get a snapshot older than its `as_of` says).
pub async fn license_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    Path(license_id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(Scope::Edge)?;
    let now = state.now();
    let snapshot = state
        .store()
        .license_snapshot(&license_id, now)
        .await?
        .ok_or_else(|| AppError::not_found("license_not_found", format!("license {license_id}")))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(snapshot)).into_response())
}
