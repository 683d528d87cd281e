//! Customers: the list (paged by the store's cursor), the new-customer and edit forms, the
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
use crate::model::License;
use crate::ports::{LicenseFilter, PageRequest};

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<ListParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let cursor = params.cursor.filter(|c| !c.is_empty());
    let request = PageRequest { limit: PAGE_ROWS as u32, cursor: cursor.clone() };
    let customers = state.store().list_customers(&request).await?;
    let body = html! {
        h1 { "Customers" }
        @if staff.can(PortalAction::CreateCustomer) {
            p { a.button href="/admin/customers/new" { "New customer" } }
        }
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Stripe customer" } th scope="col" { "Created" } } }
            tbody { @for c in &customers.items { tr {
                td { a href={ "/admin/customers/" (c.id) } { (c.name) } }
                td { (c.email) }
                td.mono { (c.stripe_customer_id.as_deref().unwrap_or("")) }
                td { (date_time(c.created_at)) }
            } } }
        }
        nav.pager aria-label="Pages" {
            @if cursor.is_some() { a href="/admin/customers" { "First page" } }
            @if let Some(next) = &customers.next_cursor {
                a href={ "/admin/customers?" (form_urlencoded::Serializer::new(String::new()).append_pair("cursor", next).finish()) } rel="next" { "Next page" }
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
