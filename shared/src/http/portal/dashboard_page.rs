//! The dashboard: licenses by status; validations per hour by code for the last 48 hours (a
//! server-drawn chart from the same in-process counters as `GET /v1/stats`); active
//! deployments; licenses expiring in the next 7, 30 and 90 days; `past_due` licenses with the
//! days left in their grace; licenses with compliance flags lately; failed webhook deliveries
//! and emails; and monthly recurring revenue by tier from the plan catalogue.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use crate::http::AppState;
use crate::http::app_error::AppError;
use crate::http::audit_routes::licenses_by_status;
use crate::http::metrics::HOURS_BY_CODE;
use crate::http::portal::access::PortalAction;
use crate::http::portal::layout::{Section, date_time, html_response, page, status_badge};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::portal::svg_chart::{Series, stacked_bars};
use crate::lifecycle::LicenseStatus;
use crate::model::{License, Timestamp};
use crate::ports::{LicenseFilter, PageRequest};

/// Licenses whose deployments are counted (one store read each); past it the count is a
/// lower bound and the page says so.
const DEPLOYMENT_SCAN_BUDGET: usize = 500;
/// `past_due` licenses listed.
const PAST_DUE_ROWS: usize = 50;
/// Stripe's zero-decimal currencies: their minor unit is the unit.
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof",
    "xpf",
];

/// Monthly recurring revenue of one (tier, currency).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TierRevenue {
    pub licenses: u64,
    pub amount: u64,
}

/// What one pass over the live (`active` and `past_due`) licenses finds.
#[derive(Debug, Default)]
pub struct LiveLicenses {
    /// (tier, lower-case currency) → revenue.
    pub revenue: BTreeMap<(String, String), TierRevenue>,
    /// Live licenses whose price is not in the catalogue or has no amount.
    pub unpriced: u64,
    pub live_deployments: u64,
    /// Whether every live license's deployments were counted.
    pub deployments_complete: bool,
    /// `past_due` licenses, soonest grace end first (at most [`PAST_DUE_ROWS`]).
    pub past_due: Vec<License>,
}

/// Reads the live licenses page by page through the store's status filter (as
/// `licenses_by_status` does), pricing each from the plan catalogue.
pub async fn live_licenses(state: &AppState, now: Timestamp) -> Result<LiveLicenses, AppError> {
    let mut out = LiveLicenses { deployments_complete: true, ..LiveLicenses::default() };
    let mut deployments_read = 0;
    for status in [LicenseStatus::Active, LicenseStatus::PastDue] {
        let filter = LicenseFilter { status: Some(status), ..LicenseFilter::default() };
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = state.store().list_licenses(&filter, &page).await?;
            for l in got.items {
                let plan = l.stripe_price_id.as_deref().and_then(|p| state.plans()?.plan_for_price(p));
                match plan.and_then(|p| Some((p.amount?, p.currency.as_deref()?))) {
                    Some((amount, currency)) => {
                        let entry = out.revenue.entry((l.tier.clone(), currency.to_lowercase())).or_default();
                        entry.licenses += 1;
                        entry.amount = entry.amount.saturating_add(amount);
                    }
                    None => out.unpriced += 1,
                }
                if deployments_read < DEPLOYMENT_SCAN_BUDGET {
                    deployments_read += 1;
                    let deployments = state.store().list_deployments(&l.id).await?;
                    out.live_deployments += deployments.iter().filter(|d| d.is_live(now)).count() as u64;
                } else {
                    out.deployments_complete = false;
                }
                if status == LicenseStatus::PastDue {
                    out.past_due.push(l);
                }
            }
            match got.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
    }
    out.past_due.sort_by_key(|l| l.grace_ends_at);
    out.past_due.truncate(PAST_DUE_ROWS);
    Ok(out)
}

/// `amount` minor units as `123.45 EUR` (`1200 JPY` for zero-decimal currencies).
pub fn money(amount: u64, currency: &str) -> String {
    let code = currency.to_uppercase();
    if ZERO_DECIMAL.contains(&currency.to_lowercase().as_str()) {
        format!("{amount} {code}")
    } else {
        format!("{}.{:02} {code}", amount / 100, amount % 100)
    }
}

/// Whole days from `now` to `end` (0 once it passed), rounded up: "1 day left" until the end.
fn days_left(now: Timestamp, end: Timestamp) -> i64 {
    let secs = (end - now).num_seconds().max(0);
    (secs + 86_399) / 86_400
}

fn validations_chart(state: &AppState, now: Timestamp) -> Markup {
    let current = now.timestamp().div_euclid(3600);
    let first = current - (HOURS_BY_CODE as i64 - 1);
    let labels: Vec<String> = (first..=current)
        .map(|hour| {
            DateTime::<Utc>::from_timestamp(hour * 3600, 0)
                .map_or_else(String::new, |t| t.format("%d %H:00").to_string())
        })
        .collect();
    let series: Vec<Series> = state
        .metrics()
        .validations_per_hour_by_code(now)
        .into_iter()
        .map(|(code, values)| Series { name: code.to_owned(), values })
        .collect();
    html! {
        @if series.is_empty() {
            p.muted #validations-chart { "No validations in the last " (HOURS_BY_CODE) " hours on this server." }
        } @else {
            (stacked_bars("validations-chart", "Validations per hour (UTC) by code", &labels, &series))
        }
        p.hint { "Counted by this server process since it started (on AWS, by each API instance), like " code { "GET /v1/stats" } "." }
    }
}

pub async fn dashboard(State(state): State<AppState>, staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let by_status = licenses_by_status(&state).await?;
    let now = state.now();
    let mut expiring = Vec::new();
    for days in [7, 30, 90] {
        let soon = state.store().licenses_expiring_between(now, now + Duration::days(days)).await?;
        expiring.push((days, soon.len()));
    }
    let live = live_licenses(&state, now).await?;
    let failed_webhooks = state.metrics().failed_answers(&Method::POST, "/v1/webhooks/stripe");
    let failed_emails = state.metrics().emails_failed();
    let has_catalogue = state.plans().is_some_and(|p| !p.is_empty());
    let flagged = crate::http::portal::compliance_sections::dashboard_section(&state).await?;
    let body = html! {
        h1 { "Dashboard" }
        h2 { "Licenses by status" }
        div.cards {
            @for (status, count) in &by_status {
                div.card { span.number { (count) } (status_badge(status)) }
            }
        }
        h2 { "Validations, last " (HOURS_BY_CODE) " hours" }
        (validations_chart(&state, now))
        h2 { "Fleet" }
        div.cards {
            div.card #active-deployments {
                span.number { @if !live.deployments_complete { "≥ " } (live.live_deployments) }
                "active deployments"
            }
            div.card #failed-webhooks { span.number { (failed_webhooks) } "failed webhook deliveries" }
            div.card #failed-emails { span.number { (failed_emails) } "failed emails" }
        }
        p.hint {
            "Failed webhook deliveries are Stripe events this server answered with an error (Stripe retries them); "
            "failed emails are sends the mailer refused or could not make. Both count since this server started."
            @if !live.deployments_complete { " Deployments are counted on the first " (DEPLOYMENT_SCAN_BUDGET) " live licenses." }
        }
        (flagged)
        h2 { "Expiring soon" }
        div.cards {
            @for (days, count) in &expiring {
                div.card { span.number { (count) } "in the next " (days) " days" }
            }
        }
        p { a href="/admin/renewals" { "Renewal pipeline" } }
        h2 { "Past due" }
        @if live.past_due.is_empty() { p.muted { "No license is past due." } } @else {
            table #past-due {
                thead { tr { th scope="col" { "License" } th scope="col" { "Tier" } th scope="col" { "Grace ends" } th scope="col" { "Days left" } } }
                tbody { @for l in &live.past_due { tr {
                    td { a.mono href={ "/admin/licenses/" (l.id) } { (l.id) } }
                    td { (l.tier) }
                    td { (l.grace_ends_at.map(date_time).unwrap_or_else(|| "not set".to_owned())) }
                    td { (l.grace_ends_at.map_or("—".to_owned(), |end| days_left(now, end).to_string())) }
                } } }
            }
        }
        h2 { "Monthly recurring revenue" }
        @if live.revenue.is_empty() {
            p.muted {
                @if has_catalogue { "No live license is on a priced plan." }
                @else { "No plan catalogue with prices: set " code { "amount" } " and " code { "currency" } " per plan in " code { "NLS_PLANS_FILE" } "." }
            }
        } @else {
            table #revenue {
                thead { tr { th scope="col" { "Tier" } th scope="col" { "Licenses" } th scope="col" { "Per month" } } }
                tbody { @for ((tier, currency), r) in &live.revenue { tr {
                    td { (tier) } td { (r.licenses) } td { (money(r.amount, currency)) }
                } } }
            }
        }
        @if live.unpriced > 0 {
            p.hint { "Not counted: " (live.unpriced) " live license(s) on no priced plan (made by hand, or a price without an amount)." }
        }
        p { a href="/admin/licenses" { "All licenses" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Dashboard, "Dashboard", body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn money_and_days_left() {
        assert_eq!(money(4900, "eur"), "49.00 EUR");
        assert_eq!(money(123_456, "USD"), "1234.56 USD");
        assert_eq!(money(1200, "jpy"), "1200 JPY");
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        assert_eq!(days_left(now, now + Duration::hours(1)), 1);
        assert_eq!(days_left(now, now + Duration::days(3)), 3);
        assert_eq!(days_left(now, now - Duration::days(1)), 0);
    }
}
