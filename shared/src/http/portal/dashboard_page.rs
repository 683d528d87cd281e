//! The dashboard: licenses by status and licenses expiring in the next 7, 30 and 90 days.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Duration;
use maud::html;

use crate::http::AppState;
use crate::http::audit_routes::licenses_by_status;
use crate::http::portal::access::PortalAction;
use crate::http::portal::layout::{Section, html_response, page, status_badge};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;

pub async fn dashboard(State(state): State<AppState>, staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let by_status = licenses_by_status(&state).await?;
    let now = state.now();
    let mut expiring = Vec::new();
    for days in [7, 30, 90] {
        let soon = state.store().licenses_expiring_between(now, now + Duration::days(days)).await?;
        expiring.push((days, soon.len()));
    }
    let body = html! {
        h1 { "Dashboard" }
        h2 { "Licenses by status" }
        div.cards {
            @for (status, count) in &by_status {
                div.card { span.number { (count) } (status_badge(status)) }
            }
        }
        h2 { "Expiring soon" }
        div.cards {
            @for (days, count) in &expiring {
                div.card { span.number { (count) } "in the next " (days) " days" }
            }
        }
        p { a href="/admin/licenses" { "All licenses" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Dashboard, "Dashboard", body)))
}
