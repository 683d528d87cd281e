//! The audit log (read) and the stats route, plus [`audit`], which every admin mutation uses
//! to put its audit entry in the same commit as its change.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::http::AppState;
use crate::http::admin_auth::Caller;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::wire::{AuditEntryView, AuditPage, AuditQuery, HourlyCount, StatsView};
use crate::issuing::new_id;
use crate::lifecycle::LicenseStatus;
use crate::model::{AuditEntry, Scope, Timestamp};
use crate::ports::{AuditFilter, LicenseFilter, PageRequest, Write};

/// The audit write for one mutation: who, what, when, and the wire views before and after.
pub fn audit<B: Serialize, A: Serialize>(
    caller: &Caller,
    action: &str,
    target: String,
    before: Option<&B>,
    after: Option<&A>,
    now: Timestamp,
) -> Write {
    Write::Audit(AuditEntry {
        id: new_id("aud"),
        at: now,
        actor: caller.actor.clone(),
        action: action.to_owned(),
        target,
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: after.and_then(|a| serde_json::to_value(a).ok()),
    })
}

pub fn page_request(limit: Option<u32>, cursor: Option<String>) -> PageRequest {
    PageRequest { limit: limit.unwrap_or(50).clamp(1, PageRequest::MAX_LIMIT), cursor }
}

pub async fn list_audit_log(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditPage>, AppError> {
    caller.require(Scope::Read)?;
    let filter =
        AuditFilter { actor: query.actor, target: query.target, since: query.since, until: query.until };
    let page = state.store().list_audit(&filter, &page_request(query.limit, query.cursor)).await?;
    Ok(Json(AuditPage {
        items: page.items.iter().map(AuditEntryView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub const ALL_STATUSES: [LicenseStatus; 5] = [
    LicenseStatus::Active,
    LicenseStatus::PastDue,
    LicenseStatus::Suspended,
    LicenseStatus::Expired,
    LicenseStatus::Revoked,
];

/// Licenses counted page by page through the store's filter. Fine for the local server's
/// scale; a cloud store would keep counters instead.
pub async fn licenses_by_status(state: &AppState) -> Result<BTreeMap<String, u64>, AppError> {
    let mut licenses_by_status = BTreeMap::new();
    for status in ALL_STATUSES {
        let filter = LicenseFilter { status: Some(status), ..LicenseFilter::default() };
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let mut count = 0u64;
        loop {
            let got = state.store().list_licenses(&filter, &page).await?;
            count += got.items.len() as u64;
            match got.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        licenses_by_status.insert(status.as_str().to_owned(), count);
    }
    Ok(licenses_by_status)
}

pub async fn stats(State(state): State<AppState>, caller: Caller) -> Result<Json<StatsView>, AppError> {
    caller.require(Scope::Read)?;
    let licenses_by_status = licenses_by_status(&state).await?;
    let now = state.now();
    let validations_per_hour = state
        .metrics()
        .validations_per_hour(now)
        .into_iter()
        .map(|(hour, count)| HourlyCount {
            hour: DateTime::<Utc>::from_timestamp(hour * 3600, 0).unwrap_or(now),
            count,
        })
        .collect();
    let validations_by_code = state.metrics().validations_by_code().map(|(c, n)| (c.to_owned(), n)).collect();
    let edge_validations_by_code = state.validation_events().edge_validations_by_code();
    Ok(Json(StatsView {
        licenses_by_status,
        validations_per_hour,
        validations_by_code,
        edge_validations_by_code,
    }))
}
