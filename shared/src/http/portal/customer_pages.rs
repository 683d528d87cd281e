//! Customers: the list (paged by the store's cursor, with a search), the new-customer and edit forms, the
//! reminder opt-out toggle, and the detail page with the customer's licenses, Stripe links
//! and communication log. Changes go through `customer_routes::{create, update}`, as in the
//! JSON API, audited as the staff user.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::customer_routes;
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::layout::{DoneParams, Section, date_time, html_response, notice, page};
use crate::http::portal::license_pages::{PAGE_ROWS, license_table};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::wire::{CreateCustomerRequest, NotificationView, UpdateCustomerRequest};
use crate::model::{Customer, License};
use crate::ports::{LicenseFilter, PageRequest};

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    cursor: Option<String>,
    /// A customer id or Stripe customer id (`cus_…`, looked up directly), or any part of a
    /// name, email or Stripe id (ignoring case).
    #[serde(default)]
    q: Option<String>,
}

/// Customers read per search page at most: a text search walks the store's own pages (its
/// `list_customers` cursor), so a page costs a bounded read however many customers there are,
/// and a narrow search over a large store can give a short page with a "Next page".
const CUSTOMER_SEARCH_READ_BUDGET: usize = 1_000;
/// Store calls per search page at most: near a full page each call asks for few rows.
const CUSTOMER_SEARCH_CALL_BUDGET: usize = 20;
/// Longest search text taken (a longer one is a 400, not a slow page).
const MAX_SEARCH_LEN: usize = 200;

/// One page of customers matching `needle`, from `cursor`, with the store cursor to go on from.
async fn search_customers(
    state: &AppState,
    needle: &str,
    cursor: Option<String>,
) -> Result<(Vec<Customer>, Option<String>), AppError> {
    if cursor.is_none() && needle.starts_with("cus_") {
        let exact = match state.store().get_customer(needle).await? {
            Some(c) => Some(c),
            None => state.store().find_customer_by_stripe_id(needle).await?,
        };
        if let Some(c) = exact {
            return Ok((vec![c], None));
        }
    }
    let needle = needle.to_lowercase();
    let matches = |c: &Customer| {
        c.name.to_lowercase().contains(&needle)
            || c.email.to_lowercase().contains(&needle)
            || c.stripe_customer_id.as_deref().is_some_and(|s| s.to_lowercase().contains(&needle))
    };
    let (mut found, mut read, mut calls, mut cursor) = (Vec::new(), 0, 0, cursor);
    loop {
        calls += 1;
        // Never more store rows than the page has room for, so every match read is shown.
        let limit = (PAGE_ROWS - found.len()) as u32;
        let page = state.store().list_customers(&PageRequest { limit, cursor: cursor.clone() }).await?;
        read += page.items.len();
        for c in page.items {
            if matches(&c) {
                found.push(c);
            }
        }
        cursor = page.next_cursor;
        // Stopping between store pages keeps the cursor exact: no match is skipped or repeated.
        let spent = read >= CUSTOMER_SEARCH_READ_BUDGET || calls >= CUSTOMER_SEARCH_CALL_BUDGET;
        if cursor.is_none() || found.len() >= PAGE_ROWS || spent {
            return Ok((found, cursor));
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<ListParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let cursor = params.cursor.filter(|c| !c.is_empty());
    let needle = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
    if needle.as_ref().is_some_and(|q| q.chars().count() > MAX_SEARCH_LEN) {
        return Err(AppError::invalid(format!("`q` must be at most {MAX_SEARCH_LEN} characters")).into());
    }
    let (customers, next_cursor) = match &needle {
        Some(q) => search_customers(&state, q, cursor.clone()).await?,
        None => {
            let request = PageRequest { limit: PAGE_ROWS as u32, cursor: cursor.clone() };
            let page = state.store().list_customers(&request).await?;
            (page.items, page.next_cursor)
        }
    };
    let page_link = |next: Option<&str>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(q) = &needle {
            query.append_pair("q", q);
        }
        if let Some(next) = next {
            query.append_pair("cursor", next);
        }
        format!("/admin/customers?{}", query.finish())
    };
    let body = html! {
        h1 { "Customers" }
        @if staff.can(PortalAction::CreateCustomer) {
            p { a.button href="/admin/customers/new" { "New customer" } }
        }
        form.filters method="get" action="/admin/customers" role="search" {
            div { label for="q" { "Search" }
                input #q type="search" name="q" value=(needle.as_deref().unwrap_or(""))
                    maxlength=(MAX_SEARCH_LEN) placeholder="name, email, cus_…"; }
            button type="submit" { "Search" }
        }
        @if needle.is_some() && customers.is_empty() {
            p.muted { "No customer on this page of the search matches." }
        }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Stripe customer" } th scope="col" { "Created" } } }
            tbody { @for c in &customers { tr {
                td { a href={ "/admin/customers/" (c.id) } { (c.name) } }
                td { (c.email) }
                td.mono { (c.stripe_customer_id.as_deref().unwrap_or("")) }
                td { (date_time(c.created_at)) }
            } } }
        }
        nav.pager aria-label="Pages" {
            @if cursor.is_some() { a href=(page_link(None)) { "First page" } }
            @if let Some(next) = &next_cursor {
                a href=(page_link(Some(next))) rel="next" { "Next page" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Customers, "Customers", body)))
}

pub async fn new_form(staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::CreateCustomer)?;
    let body = html! {
        h1 { "New customer" }
        form.stack method="post" action="/admin/customers" {
            (hidden_field(&staff))
            label for="name" { "Name" } input #name type="text" name="name" required;
            label for="email" { "Email" } input #email type="email" name="email" required;
            label for="stripe_customer_id" { "Stripe customer id (optional)" }
            input #stripe_customer_id type="text" name="stripe_customer_id";
            label { input type="checkbox" name="reminders_opt_out" value="yes"; " No renewal reminders" }
            button type="submit" { "Create customer" }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Customers, "New customer", body)))
}

pub async fn create(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::CreateCustomer)?;
    let request = CreateCustomerRequest {
        name: f.form.require("name")?.to_owned(),
        email: f.form.require("email")?.to_owned(),
        stripe_customer_id: f.form.get("stripe_customer_id").map(str::to_owned),
        reminders_opt_out: f.form.get("reminders_opt_out") == Some("yes"),
    };
    let created = customer_routes::create(&state, &f.staff.caller(), request).await?;
    Ok(Redirect::to(&format!("/admin/customers/{}?done=create", created.id)).into_response())
}

/// Licenses whose emails the communication log gathers (one store read each).
const LOG_LICENSES: usize = 20;

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "create" => "Customer created.",
        "edit" => "Customer updated.",
        "reminders-off" => "Renewal reminders turned off for this customer.",
        "reminders-on" => "Renewal reminders turned on for this customer.",
        _ => return None,
    })
}

/// Every email sent (or claimed) about the customer's first [`LOG_LICENSES`] licenses,
/// newest first; pending ones (claimed, send not confirmed) last.
async fn communication_log(
    state: &AppState,
    licenses: &[License],
) -> Result<Vec<(String, NotificationView)>, AppError> {
    let mut log = Vec::new();
    for l in licenses.iter().take(LOG_LICENSES) {
        for record in state.store().list_notifications(&l.id).await? {
            log.push((l.id.clone(), NotificationView::from(&record)));
        }
    }
    log.sort_by_key(|(_, n)| std::cmp::Reverse(n.sent_at));
    Ok(log)
}

pub async fn detail(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<DoneParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let c = customer_routes::load(&state, &id).await?;
    let filter = LicenseFilter { customer_id: Some(id.clone()), ..LicenseFilter::default() };
    let licenses = state.store().list_licenses(&filter, &PageRequest::first(PAGE_ROWS as u32)).await?;
    let log = communication_log(&state, &licenses.items).await?;
    let customers = HashMap::from([(c.id.clone(), c.clone())]);
    let subscriptions: Vec<&str> =
        licenses.items.iter().filter_map(|l| l.stripe_subscription_id.as_deref()).collect();
    let body = html! {
        (notice(done_notice(params.done.as_deref())))
        h1 { (c.name) }
        @if staff.can(PortalAction::EditCustomer) {
            div.actions {
                a.button href={ "/admin/customers/" (c.id) "/edit" } { "Edit customer" }
                form method="post" action={ "/admin/customers/" (c.id) "/reminders" } {
                    (hidden_field(&staff))
                    @if c.reminders_opt_out {
                        input type="hidden" name="reminders" value="on";
                        button.secondary type="submit" { "Turn renewal reminders on" }
                    } @else {
                        input type="hidden" name="reminders" value="off";
                        button.secondary type="submit" { "Turn renewal reminders off" }
                    }
                }
            }
        }
        dl.facts {
            dt { "Id" } dd.mono { (c.id) }
            dt { "Email" } dd { (c.email) }
            dt { "Stripe customer" } dd {
                @match &c.stripe_customer_id {
                    Some(s) => { a.mono href={ "https://dashboard.stripe.com/customers/" (s) } rel="noopener noreferrer" { (s) } }
                    None => { span.muted { "none" } }
                }
            }
            @if !subscriptions.is_empty() {
                dt { "Stripe subscriptions" } dd {
                    @for sub in &subscriptions {
                        a.mono href={ "https://dashboard.stripe.com/subscriptions/" (sub) } rel="noopener noreferrer" { (sub) } " "
                    }
                }
            }
            dt { "Renewal reminders" } dd #reminders {
                @if c.reminders_opt_out { "opted out (suspension and payment notices are still sent)" } @else { "sent" }
            }
            dt { "Created" } dd { (date_time(c.created_at)) }
            dt { "Updated" } dd { (date_time(c.updated_at)) }
        }
        h2 { "Licenses" }
        @if staff.can(PortalAction::CreateLicense) {
            p { a.button href={ "/admin/licenses/new?customer_id=" (c.id) } { "New license for this customer" } }
        }
        (license_table(&licenses.items, &customers))
        @if licenses.next_cursor.is_some() {
            p { a href={ "/admin/licenses?q=" (c.id) } { "All licenses of this customer" } }
        }
        h2 { "Communication log" }
        @if log.is_empty() { p.muted { "No emails sent to this customer." } } @else {
            table #communication-log {
                thead { tr { th scope="col" { "Sent" } th scope="col" { "Notice" } th scope="col" { "Subject" }
                    th scope="col" { "To" } th scope="col" { "License" } th scope="col" { "State" } } }
                tbody { @for (license_id, n) in &log { tr {
                    td { (n.sent_at.map(date_time).unwrap_or_default()) }
                    td { (n.notice) } td { (n.subject) } td { (n.recipient) }
                    td { a.mono href={ "/admin/licenses/" (license_id) } { (license_id) } }
                    td { (n.state) }
                } } }
            }
            @if licenses.items.len() > LOG_LICENSES {
                p.muted { "Emails of the first " (LOG_LICENSES) " licenses; each license page lists its own." }
            }
        }
        p { a href={ "/admin/audit?target=customer:" (c.id) } { "Audit trail" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Customers, &c.name, body)))
}

pub async fn edit_form(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    staff.require(PortalAction::EditCustomer)?;
    let c = customer_routes::load(&state, &id).await?;
    let body = html! {
        h1 { "Edit customer" }
        form.stack method="post" action={ "/admin/customers/" (c.id) "/edit" } {
            (hidden_field(&staff))
            label for="name" { "Name" } input #name type="text" name="name" required value=(c.name);
            label for="email" { "Email" } input #email type="email" name="email" required value=(c.email);
            label for="stripe_customer_id" { "Stripe customer id (optional)" }
            input #stripe_customer_id type="text" name="stripe_customer_id" value=(c.stripe_customer_id.as_deref().unwrap_or(""));
            label { input type="checkbox" name="reminders_opt_out" value="yes" checked[c.reminders_opt_out]; " No renewal reminders" }
            button type="submit" { "Save" }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Customers, "Edit customer", body)))
}

/// The edit form through `customer_routes::update`, as `PATCH /v1/customers/{id}`.
pub async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::EditCustomer)?;
    let request = UpdateCustomerRequest {
        name: Some(f.form.require("name")?.to_owned()),
        email: Some(f.form.require("email")?.to_owned()),
        stripe_customer_id: Some(f.form.get("stripe_customer_id").map(str::to_owned)),
        reminders_opt_out: Some(f.form.get("reminders_opt_out") == Some("yes")),
    };
    customer_routes::update(&state, &f.staff.caller(), &id, request).await?;
    Ok(Redirect::to(&format!("/admin/customers/{id}?done=edit")).into_response())
}

/// The reminder opt-out toggle: `reminders=on|off`, through `customer_routes::update`.
pub async fn set_reminders(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::EditCustomer)?;
    let opt_out = match f.form.require("reminders")? {
        "on" => false,
        "off" => true,
        _ => return Err(AppError::invalid("`reminders` must be on or off").into()),
    };
    let request = UpdateCustomerRequest {
        name: None,
        email: None,
        stripe_customer_id: None,
        reminders_opt_out: Some(opt_out),
    };
    customer_routes::update(&state, &f.staff.caller(), &id, request).await?;
    let done = if opt_out { "reminders-off" } else { "reminders-on" };
    Ok(Redirect::to(&format!("/admin/customers/{id}?done={done}")).into_response())
}
