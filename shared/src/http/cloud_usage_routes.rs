//! `POST /v1/cloud-usage`: a cloud service meters the calls it allowed (docs/cloud-access.md).
//!
//! The caller is the service, with an API key whose only scope is `meter`: it can add
//! `cloud.<audience>.calls` to licenses' usage and nothing else (no reads, no other metric).
//! Each license's share of a batch goes through the same store operation as an app's usage
//! batch (`record_usage_batch`, once per (license, batch id)), so the monthly quota checked at
//! token issue sees it, and a batch resent after a lost answer is counted once. The stored
//! batch id is `cloud.<audience>:<batch_id>`: a service's ids never meet an app's.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access_token::{is_audience_name, usage_metric};
use crate::http::AppState;
use crate::http::access_token_routes::AUDIENCE_PATTERN;
use crate::http::admin_auth::Caller;
use crate::http::app_error::{AppError, JsonBody};
use crate::http::public_routes::{MAX_USAGE_RECORDS, snapshot_for};
use crate::model::{MAX_USAGE_VALUE, Scope, UsageBatch, UsageRecord};
use crate::ports::BatchOutcome;

const MAX_ID_LEN: usize = 256;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CloudUsageRequest {
    /// Chosen by the service; resend the same batch with the same id until it is acknowledged.
    #[schema(min_length = 1, max_length = 256)]
    pub batch_id: String,
    /// The service (the tokens' `aud`); the calls count as `cloud.<audience>.calls`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$", max_length = 64)]
    pub audience: String,
    /// At most 99 distinct counter periods (UTC days plus months) per license.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<CloudCallsRecord>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CloudCallsRecord {
    /// The token's `sub`.
    #[schema(min_length = 1, max_length = 256)]
    pub license_id: String,
    /// Calls allowed for this license, at least 1.
    #[serde(deserialize_with = "crate::http::wire::whole_number")]
    #[schema(format = "uint64", minimum = 1, maximum = 9_007_199_254_740_991_u64)]
    pub calls: u64,
    /// When the calls were made (the counters' day and month); within the usage window.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CloudUsageAccepted {
    pub batch_id: String,
    /// Licenses whose share was counted now.
    pub recorded: u32,
    /// Licenses whose share of this batch had already been counted; nothing changed for them.
    pub duplicates: u32,
    /// Licenses NLS has no record of: not counted (the service can drop them).
    pub unknown_license_ids: Vec<String>,
}

fn check_len(field: &str, value: &str) -> Result<(), AppError> {
    if value.is_empty() || value.chars().count() > MAX_ID_LEN {
        return Err(AppError::invalid(format!("`{field}` must be 1 to {MAX_ID_LEN} characters")));
    }
    Ok(())
}

pub async fn record_cloud_usage(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CloudUsageRequest>,
) -> Result<Response, AppError> {
    caller.require(Scope::Meter)?;
    check_len("batch_id", &body.batch_id)?;
    if !is_audience_name(&body.audience) {
        return Err(AppError::invalid(format!("`audience` must match {AUDIENCE_PATTERN}")));
    }
    if body.records.is_empty() || body.records.len() > MAX_USAGE_RECORDS {
        return Err(AppError::invalid(format!("`records` must hold 1 to {MAX_USAGE_RECORDS} records")));
    }
    let now = state.now();
    let metric = usage_metric(&body.audience);
    let mut by_license: BTreeMap<String, Vec<UsageRecord>> = BTreeMap::new();
    for record in body.records {
        check_len("license_id", &record.license_id)?;
        if record.calls == 0 || record.calls > MAX_USAGE_VALUE {
            return Err(AppError::invalid(format!("`calls` must be 1 to {MAX_USAGE_VALUE}")));
        }
        by_license.entry(record.license_id).or_default().push(UsageRecord {
            metric: metric.clone(),
            value: record.calls,
            at: record.at,
        });
    }
    let stored_batch_id = format!("cloud.{}:{}", body.audience, body.batch_id);
    let batches: Vec<UsageBatch> = by_license
        .into_iter()
        .map(|(license_id, records)| UsageBatch {
            license_id,
            deployment_id: format!("cloud.{}", body.audience),
            batch_id: stored_batch_id.clone(),
            records,
            received_at: now,
        })
        .collect();
    // Every share is checked before any is written: a 400 changes nothing.
    for batch in &batches {
        batch
            .check_bounds(now, &state.config().usage_window)
            .map_err(|e| AppError::UsageOutOfBounds(format!("license {}: {e}", batch.license_id)))?;
    }
    let mut answer = CloudUsageAccepted {
        batch_id: body.batch_id,
        recorded: 0,
        duplicates: 0,
        unknown_license_ids: Vec::new(),
    };
    for batch in &batches {
        // Calls made under a valid token count whatever the license's state is now; a license
        // NLS never issued is not counted.
        if snapshot_for(&state, &batch.license_id, now).await?.is_none() {
            answer.unknown_license_ids.push(batch.license_id.clone());
            continue;
        }
        // One store operation per license: a retry after a partial failure counts only the
        // shares that were not recorded yet.
        match state.store().record_usage_batch(batch).await? {
            BatchOutcome::Recorded => {
                answer.recorded += 1;
                state.invalidate_license(&batch.license_id);
            }
            BatchOutcome::Duplicate => answer.duplicates += 1,
        }
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
