//! Bulk operations on the licenses selected in the list: suspend, reactivate, renew by N days,
//! or export CSV.
//!
//! Each item goes through `license_routes::change_status_once`, the JSON API's own rules and
//! audit entry, as the staff user, with a once-guard `portal_bulk:<form token>:<license id>`
//! recorded in the same commit (the store's webhook-event guard, conformance-tested for
//! concurrent replays). The token is a random id the list page puts in its form, so posting
//! the same form again (a reload, a double click, a second tab) applies nothing twice. Items
//! fail or succeed on their own; the result page lists each.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use maud::html;

use crate::http::AppState;
use crate::http::app_error::AppError;
use crate::http::license_routes::{self, StaffStatusChange};
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::StaffForm;
use crate::http::portal::layout::{Section, date, html_response, page};
use crate::http::portal::license_list_page::customers_of;
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::model::{License, WebhookEventRecord};
use crate::ports::OnceGuard;

/// Most licenses one bulk form may name (two list pages).
pub const MAX_BULK_ITEMS: usize = 100;
/// Longest renewal one bulk renew may add.
pub const MAX_RENEW_DAYS: i64 = 3650;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkAction {
    Suspend,
    Reactivate,
    Renew { days: i64 },
    Export,
}

impl BulkAction {
    fn from_form(f: &StaffForm) -> Result<Self, AppError> {
        Ok(match f.form.require("action")? {
            "suspend" => Self::Suspend,
            "reactivate" => Self::Reactivate,
            "renew" => {
                let days = f.form.require("days")?;
                let days = days.parse::<i64>().ok().filter(|d| (1..=MAX_RENEW_DAYS).contains(d)).ok_or_else(
                    || AppError::invalid(format!("`days` must be a whole number from 1 to {MAX_RENEW_DAYS}")),
                )?;
                Self::Renew { days }
            }
            "export" => Self::Export,
            other => return Err(AppError::invalid(format!("unknown bulk action {other:?}"))),
        })
    }

    /// The role table's action for this bulk action.
    fn portal_action(self) -> PortalAction {
        match self {
            Self::Suspend => PortalAction::SuspendLicense,
            Self::Reactivate => PortalAction::ReactivateLicense,
            Self::Renew { .. } => PortalAction::RenewLicense,
            Self::Export => PortalAction::Read,
        }
    }

    fn title(self) -> String {
        match self {
            Self::Suspend => "Bulk suspend".to_owned(),
            Self::Reactivate => "Bulk reactivate".to_owned(),
            Self::Renew { days } => format!("Bulk renew by {days} days"),
            Self::Export => "Export".to_owned(),
        }
    }
}

/// What happened to one selected license.
#[derive(Debug)]
enum ItemOutcome {
    Applied(String),
    /// This form's guard for the license was already recorded: applied by an earlier post.
    AlreadyApplied,
    Failed(String),
}

/// A form token is what `random_token` makes: 64 hex digits.
fn bulk_token(f: &StaffForm) -> Result<&str, AppError> {
    let token = f.form.require("bulk_token")?;
    if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(token)
    } else {
        Err(AppError::invalid("the form's `bulk_token` is not one the list page made; reload the list"))
    }
}

/// The selected ids, each once, in form order.
fn selected_ids(f: &StaffForm) -> Result<Vec<String>, AppError> {
    let mut ids: Vec<String> = Vec::new();
    for id in f.form.all("license") {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(AppError::invalid("select at least one license"));
    }
    if ids.len() > MAX_BULK_ITEMS {
        return Err(AppError::invalid(format!("select at most {MAX_BULK_ITEMS} licenses at once")));
    }
    Ok(ids)
}

/// The list page to go back to: only ever a list URL.
fn back_link(f: &StaffForm) -> String {
    match f.form.get("back") {
        Some(back) if back == "/admin/licenses" || back.starts_with("/admin/licenses?") => back.to_owned(),
        _ => "/admin/licenses".to_owned(),
    }
}

fn failure_text(error: &AppError) -> String {
    match error {
        // Logged where it happened; the page names nothing internal.
        AppError::Internal(_) | AppError::Unavailable(_) => "the store failed; try this one again".to_owned(),
        other => other.to_string(),
    }
}

async fn apply_one(
    state: &AppState,
    staff: &Staff,
    action: BulkAction,
    token: &str,
    id: &str,
) -> ItemOutcome {
    let change = match action {
        BulkAction::Suspend => StaffStatusChange::Suspend,
        BulkAction::Reactivate => StaffStatusChange::Reactivate,
        BulkAction::Renew { days } => {
            let license = match license_routes::load(state, id).await {
                Ok(l) => l,
                Err(e) => return ItemOutcome::Failed(failure_text(&e)),
            };
            let Some(expires_at) = license.expires_at else {
                return ItemOutcome::Failed("perpetual: there is no expiry to extend".to_owned());
            };
            // From the later of its expiry and now, so a lapsed license gets the whole period.
            StaffStatusChange::Renew { expires_at: expires_at.max(state.now()) + Duration::days(days) }
        }
        BulkAction::Export => return ItemOutcome::Failed("export changes nothing".to_owned()),
    };
    let guard = OnceGuard::WebhookEvent(WebhookEventRecord {
        event_id: format!("portal_bulk:{token}:{id}"),
        event_type: "portal.bulk_item".to_owned(),
        received_at: state.now(),
    });
    match license_routes::change_status_once(state, &staff.caller(), id, change, guard).await {
        Ok(Some(view)) => ItemOutcome::Applied(match view.expires_at {
            Some(_) if matches!(action, BulkAction::Renew { .. }) => {
                format!("now expires {}", date(view.expires_at, "never"))
            }
            _ => format!("now {}", view.status),
        }),
        Ok(None) => ItemOutcome::AlreadyApplied,
        Err(e) => ItemOutcome::Failed(failure_text(&e)),
    }
}

/// `POST /admin/licenses/bulk`.
pub async fn bulk(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    let action = BulkAction::from_form(&f)?;
    f.staff.require(action.portal_action())?;
    let ids = selected_ids(&f)?;
    if action == BulkAction::Export {
        return export_csv(&state, &ids).await;
    }
    let token = bulk_token(&f)?;
    let mut outcomes = Vec::with_capacity(ids.len());
    for id in &ids {
        outcomes.push((id.clone(), apply_one(&state, &f.staff, action, token, id).await));
    }
    let count = |want: fn(&ItemOutcome) -> bool| outcomes.iter().filter(|(_, o)| want(o)).count();
    let applied = count(|o| matches!(o, ItemOutcome::Applied(_)));
    let repeated = count(|o| matches!(o, ItemOutcome::AlreadyApplied));
    let failed = count(|o| matches!(o, ItemOutcome::Failed(_)));
    let title = action.title();
    let body = html! {
        h1 { (title) }
        p #bulk-summary role="status" {
            (applied) " applied, " (repeated) " already applied by this form, " (failed) " failed."
        }
        @if failed > 0 { p.error role="alert" { "Some licenses were not changed: see below." } }
        table #bulk-results {
            thead { tr { th scope="col" { "License" } th scope="col" { "Result" } th scope="col" { "Detail" } } }
            tbody {
                @for (id, outcome) in &outcomes {
                    tr data-outcome=(match outcome {
                        ItemOutcome::Applied(_) => "applied",
                        ItemOutcome::AlreadyApplied => "already-applied",
                        ItemOutcome::Failed(_) => "failed",
                    }) {
                        td { a.mono href={ "/admin/licenses/" (id) } { (id) } }
                        @match outcome {
                            ItemOutcome::Applied(detail) => { td { "applied" } td { (detail) } }
                            ItemOutcome::AlreadyApplied => { td { "already applied" } td { "this form was posted before; nothing changed" } }
                            ItemOutcome::Failed(why) => { td { "failed" } td { (why) } }
                        }
                    }
                }
            }
        }
        p { a href=(back_link(&f)) { "Back to the list" } " · " a href="/admin/audit?action=license." { "Audit log" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&f.staff), Section::Licenses, &title, body)))
}

/// A CSV field: quoted when it holds a separator, quote or line break; a leading `= + - @`
/// (or tab/CR) is prefixed with `'` so a spreadsheet shows it as text, not a formula.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

async fn export_csv(state: &AppState, ids: &[String]) -> PortalResult<Response> {
    let mut licenses: Vec<License> = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(l) = state.store().get_license(id).await? {
            licenses.push(l);
        }
    }
    let customers = customers_of(state, &licenses).await?;
    let mut csv = String::from(
        "license_id,customer_id,customer_name,customer_email,status,tier,features,expires_at,created_at,stripe_subscription_id\r\n",
    );
    for l in &licenses {
        let customer = customers.get(&l.customer_id);
        let fields = [
            l.id.clone(),
            l.customer_id.clone(),
            customer.map(|c| c.name.clone()).unwrap_or_default(),
            customer.map(|c| c.email.clone()).unwrap_or_default(),
            l.status.as_str().to_owned(),
            l.tier.clone(),
            l.features.join(" "),
            l.expires_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            l.created_at.to_rfc3339(),
            l.stripe_subscription_id.clone().unwrap_or_default(),
        ];
        csv.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        csv.push_str("\r\n");
    }
    let mut response = (StatusCode::OK, csv).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"licenses.csv\""),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
