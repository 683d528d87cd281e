//! The audit log: filters by actor, target, action and time, and each entry's before/after
//! shown as a field-by-field diff.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::http::AppState;
use crate::http::app_error::QueryParams;
use crate::http::portal::access::PortalAction;
use crate::http::portal::layout::{Section, date_time, html_response, non_empty, page};
use crate::http::portal::license_pages::{PAGE_ROWS, parse_date};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::model::AuditEntry;
use crate::ports::{AuditFilter, PageRequest};

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

fn short(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fields that differ between `before` and `after` (top level), old and new.
fn diff(entry: &AuditEntry) -> Markup {
    let empty = serde_json::Map::new();
    let before = entry.before.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let after = entry.after.as_ref().and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<&String> = keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).collect();
    html! {
        @if changed.is_empty() { span.muted { "no field changed" } } @else {
            details {
                summary { (changed.len()) " field(s): " (changed.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")) }
                table.diff {
                    thead { tr { th scope="col" { "Field" } th scope="col" { "Before" } th scope="col" { "After" } } }
                    tbody { @for k in &changed { tr {
                        td { (k) }
                        td { del { (short(before.get(*k))) } }
                        td { ins { (short(after.get(*k))) } }
                    } } }
                }
            }
        }
    }
}

fn target_link(target: &str) -> Markup {
    let href = match target.split_once(':') {
        Some(("license", id)) => Some(format!("/admin/licenses/{id}")),
        Some(("customer", id)) => Some(format!("/admin/customers/{id}")),
        _ => None,
    };
    html! { @match href { Some(h) => { a.mono href=(h) { (target) } } None => { span.mono { (target) } } } }
}

pub fn audit_table(entries: &[AuditEntry]) -> Markup {
    html! {
        @if entries.is_empty() { p.muted { "No entries." } } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Change" } } }
                tbody { @for e in entries { tr {
                    td { (date_time(e.at)) } td.mono { (e.actor) } td { code { (e.action) } }
                    td { (target_link(&e.target)) } td { (diff(e)) }
                } } }
            }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<AuditParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let filter = AuditFilter {
        actor: non_empty(&params.actor).map(str::to_owned),
        target: non_empty(&params.target).map(str::to_owned),
        since: non_empty(&params.since).map(|d| parse_date("since", d)).transpose()?,
        until: non_empty(&params.until).map(|d| parse_date("until", d)).transpose()?,
    };
    let request =
        PageRequest { limit: PAGE_ROWS as u32, cursor: non_empty(&params.cursor).map(str::to_owned) };
    let page_of = state.store().list_audit(&filter, &request).await?;
    // The store filters by actor, target and time; the action is matched on the page.
    let action = non_empty(&params.action);
    let entries: Vec<AuditEntry> =
        page_of.items.into_iter().filter(|e| action.is_none_or(|a| e.action.starts_with(a))).collect();
    let mut next_query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("actor", &params.actor),
        ("target", &params.target),
        ("action", &params.action),
        ("since", &params.since),
        ("until", &params.until),
    ] {
        if let Some(v) = non_empty(value) {
            next_query.append_pair(name, v);
        }
    }
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/admin/audit" role="search" {
            div { label for="actor" { "Actor" } input #actor type="text" name="actor" value=(non_empty(&params.actor).unwrap_or("")) placeholder="staff:stf_…, bootstrap, stripe"; }
            div { label for="target" { "Target" } input #target type="text" name="target" value=(non_empty(&params.target).unwrap_or("")) placeholder="license:lic_…"; }
            div { label for="action" { "Action" } input #action type="text" name="action" value=(non_empty(&params.action).unwrap_or("")) placeholder="license.suspend"; }
            div { label for="since" { "Since" } input #since type="date" name="since" value=(non_empty(&params.since).unwrap_or("")); }
            div { label for="until" { "Until" } input #until type="date" name="until" value=(non_empty(&params.until).unwrap_or("")); }
            button type="submit" { "Filter" }
        }
        (audit_table(&entries))
        nav.pager aria-label="Pages" {
            @if let Some(next) = &page_of.next_cursor {
                a href={ "/admin/audit?" (next_query.append_pair("cursor", next).finish()) } rel="next" { "Next page" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Audit, "Audit log", body)))
}
