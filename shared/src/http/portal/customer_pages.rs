//! Customers: the list (paged by the store's cursor, searchable on the page), the new-customer
//! form and the detail page with the customer's licenses. Creation goes through
//! `customer_routes::create`, as in the JSON API.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::http::AppState;
use crate::http::app_error::QueryParams;
use crate::http::customer_routes;
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::layout::{DoneParams, Section, date_time, html_response, notice, page};
use crate::http::portal::license_pages::{PAGE_ROWS, license_table};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::wire::CreateCustomerRequest;
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
    let customers = HashMap::from([(c.id.clone(), c.clone())]);
    let done = (params.done.as_deref() == Some("create")).then_some("Customer created.");
    let body = html! {
        (notice(done))
        h1 { (c.name) }
        dl.facts {
            dt { "Id" } dd.mono { (c.id) }
            dt { "Email" } dd { (c.email) }
            dt { "Stripe customer" } dd {
                @match &c.stripe_customer_id {
                    Some(s) => { a.mono href={ "https://dashboard.stripe.com/customers/" (s) } rel="noopener noreferrer" { (s) } }
                    None => { span.muted { "none" } }
                }
            }
            dt { "Renewal reminders" } dd { @if c.reminders_opt_out { "opted out" } @else { "sent" } }
            dt { "Created" } dd { (date_time(c.created_at)) }
        }
        h2 { "Licenses" }
        @if staff.can(PortalAction::CreateLicense) {
            p { a.button href={ "/admin/licenses/new?customer_id=" (c.id) } { "New license for this customer" } }
        }
        (license_table(&licenses.items, &customers))
        @if licenses.next_cursor.is_some() {
            p { a href={ "/admin/licenses?q=" (c.id) } { "All licenses of this customer" } }
        }
        p { a href={ "/admin/audit?target=customer:" (c.id) } { "Audit trail" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Customers, &c.name, body)))
}
