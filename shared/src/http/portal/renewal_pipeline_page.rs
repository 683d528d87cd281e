//! The renewal pipeline: licenses by week of expiry for the next 12 weeks, and for each the
//! notices already sent about that expiry (the renewals job keys them by the expiry instant,
//! `email::expiry_window`). Backed by the store's expiry index
//! (`licenses_expiring_between`), never a scan of every license.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Datelike, Duration, TimeZone, Utc};
use maud::html;

use crate::email::expiry_window;
use crate::http::AppState;
use crate::http::portal::access::PortalAction;
use crate::http::portal::layout::{Section, date, date_time, html_response, page, status_badge};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::portal::svg_chart::{Series, stacked_bars};
use crate::model::{Customer, NotificationState, Timestamp};

pub const WEEKS: i64 = 12;
/// Licenses listed with their notices (two store reads each); past it, weeks show counts only.
const DETAIL_ROWS: usize = 300;

/// Monday 00:00 UTC of the week holding `now`.
pub fn week_start(now: Timestamp) -> Timestamp {
    let day = now.date_naive() - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

pub async fn pipeline(State(state): State<AppState>, staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let now = state.now();
    let start = week_start(now);
    let end = start + Duration::weeks(WEEKS);
    let mut licenses = state.store().licenses_expiring_between(start, end).await?;
    licenses.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.id.cmp(&b.id)));
    let week_of = |at: Timestamp| ((at - start).num_days() / 7).clamp(0, WEEKS - 1) as usize;
    let mut per_week = vec![0u64; WEEKS as usize];
    for l in &licenses {
        if let Some(at) = l.expires_at {
            per_week[week_of(at)] += 1;
        }
    }
    let labels: Vec<String> =
        (0..WEEKS).map(|w| (start + Duration::weeks(w)).format("%b %d").to_string()).collect();
    // Notices and customers for the first DETAIL_ROWS licenses.
    let mut customers: HashMap<String, Option<Customer>> = HashMap::new();
    let mut rows = Vec::new();
    for l in licenses.iter().take(DETAIL_ROWS) {
        if !customers.contains_key(&l.customer_id) {
            customers.insert(l.customer_id.clone(), state.store().get_customer(&l.customer_id).await?);
        }
        let window = expiry_window(l.expires_at);
        let notices: Vec<(String, Option<Timestamp>)> = state
            .store()
            .list_notifications(&l.id)
            .await?
            .into_iter()
            .filter(|n| n.key.window == window)
            .map(|n| {
                let sent = match n.state {
                    NotificationState::Sent { sent_at, .. } => Some(sent_at),
                    NotificationState::Pending { .. } => None,
                };
                (n.key.notice, sent)
            })
            .collect();
        rows.push((l, notices));
    }
    let body = html! {
        h1 { "Renewal pipeline" }
        p { "Licenses expiring in the " (WEEKS) " weeks from Monday " (date(Some(start), "")) " (UTC), and the notices sent about each expiry." }
        (stacked_bars("pipeline-chart", "Licenses expiring per week", &labels, &[Series { name: String::new(), values: per_week.clone() }]))
        @let empty_weeks: Vec<&str> =
            labels.iter().zip(&per_week).filter(|(_, n)| **n == 0).map(|(l, _)| l.as_str()).collect();
        @if !empty_weeks.is_empty() {
            p.muted #empty-weeks { "No license expires in the weeks of " (empty_weeks.join(", ")) "." }
        }
        @for (w, label) in labels.iter().enumerate().filter(|(w, _)| per_week[*w] > 0) {
            @let in_week: Vec<_> = rows.iter().filter(|(l, _)| l.expires_at.map(week_of) == Some(w)).collect();
            section.week aria-labelledby={ "week-" (w) } {
                h2 #{ "week-" (w) } { "Week of " (label) " " span.muted { "(" (per_week[w]) " licenses)" } }
                @if in_week.is_empty() {
                    p.muted { "Too many licenses to list here; filter the license list by expiry." }
                } @else {
                    table {
                        thead { tr {
                            th scope="col" { "Expires" } th scope="col" { "License" } th scope="col" { "Customer" }
                            th scope="col" { "Status" } th scope="col" { "Tier" } th scope="col" { "Notices sent" }
                        } }
                        tbody { @for (l, notices) in &in_week { tr {
                            td { (l.expires_at.map(date_time).unwrap_or_default()) }
                            td { a.mono href={ "/admin/licenses/" (l.id) } { (l.id) } }
                            td { @match customers.get(&l.customer_id).and_then(Option::as_ref) {
                                Some(c) => {
                                    a href={ "/admin/customers/" (c.id) } { (c.name) }
                                    @if c.reminders_opt_out { " " span.muted { "(no reminders)" } }
                                }
                                None => { span.mono { (l.customer_id) } }
                            } }
                            td { (status_badge(l.status.as_str())) }
                            td { (l.tier) }
                            td {
                                @if notices.is_empty() { span.muted { "none yet" } }
                                @for (notice, sent) in notices {
                                    span.pill { (notice) @match sent { Some(at) => { " " (date(Some(*at), "")) } None => { " (pending)" } } } " "
                                }
                            }
                        } } }
                    }
                }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Renewals, "Renewal pipeline", body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_midnight() {
        let thursday = Utc.with_ymd_and_hms(2026, 12, 3, 15, 30, 0).unwrap();
        assert_eq!(week_start(thursday), Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap());
        let monday = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        assert_eq!(week_start(monday), monday);
    }
}
