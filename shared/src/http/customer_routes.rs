//! Admin: customers. Reads need `read`, changes `write`; each change is audited in its commit.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::http::AppState;
use crate::http::admin_auth::Caller;
use crate::http::app_error::{AppError, JsonBody, QueryParams};
use crate::http::audit_routes::{audit, page_request};
use crate::http::wire::{
    CreateCustomerRequest, CustomerEnvelope, CustomerPage, CustomerView, PageQuery, UpdateCustomerRequest,
};
use crate::issuing::new_id;
use crate::model::{Customer, Scope};
use crate::ports::{LicenseFilter, PageRequest, Write};

const MAX_TEXT: usize = crate::http::wire::MAX_CUSTOMER_TEXT;

/// Lengths in characters, as the OpenAPI document's `maxLength` counts them.
fn check_text(field: &str, value: &str) -> Result<(), AppError> {
    if value.trim().is_empty() || value.chars().count() > MAX_TEXT {
        return Err(AppError::invalid(format!("`{field}` must be 1 to {MAX_TEXT} characters")));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), AppError> {
    check_text("email", email)?;
    let shaped =
        email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !shaped {
        return Err(AppError::invalid("`email` is not an email address"));
    }
    Ok(())
}

fn target(id: &str) -> String {
    format!("customer:{id}")
}

pub async fn load(state: &AppState, id: &str) -> Result<Customer, AppError> {
    state
        .store()
        .get_customer(id)
        .await?
        .ok_or_else(|| AppError::not_found("customer_not_found", format!("customer {id}")))
}

pub async fn create_customer(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateCustomerRequest>,
) -> Result<(StatusCode, Json<CustomerEnvelope>), AppError> {
    caller.require(Scope::Write)?;
    let view = create(&state, &caller, body).await?;
    Ok((StatusCode::CREATED, Json(CustomerEnvelope { customer: view })))
}

/// Creates a customer, audited as `caller` (the API and the portal both call this).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    body: CreateCustomerRequest,
) -> Result<CustomerView, AppError> {
    check_text("name", &body.name)?;
    check_email(&body.email)?;
    if let Some(s) = &body.stripe_customer_id {
        check_text("stripe_customer_id", s)?;
    }
    let now = state.now();
    let customer = Customer {
        id: new_id("cus"),
        name: body.name,
        email: body.email,
        stripe_customer_id: body.stripe_customer_id,
        reminders_opt_out: body.reminders_opt_out,
        created_at: now,
        updated_at: now,
    };
    let view = CustomerView::from(&customer);
    let entry =
        audit::<CustomerView, _>(caller, "customer.create", target(&customer.id), None, Some(&view), now);
    state.store().commit(None, vec![Write::CreateCustomer(customer), entry]).await?;
    Ok(view)
}

pub async fn list_customers(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<CustomerPage>, AppError> {
    caller.require(Scope::Read)?;
    let page = state.store().list_customers(&page_request(query.limit, query.cursor)).await?;
    Ok(Json(CustomerPage {
        items: page.items.iter().map(CustomerView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CustomerEnvelope>, AppError> {
    caller.require(Scope::Read)?;
    let customer = load(&state, &id).await?;
    Ok(Json(CustomerEnvelope { customer: CustomerView::from(&customer) }))
}

pub async fn update_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateCustomerRequest>,
) -> Result<Json<CustomerEnvelope>, AppError> {
    caller.require(Scope::Write)?;
    Ok(Json(CustomerEnvelope { customer: update(&state, &caller, &id, body).await? }))
}

/// Changes a customer, audited as `caller`.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: UpdateCustomerRequest,
) -> Result<CustomerView, AppError> {
    let before = load(state, id).await?;
    let mut after = before.clone();
    if let Some(name) = body.name {
        check_text("name", &name)?;
        after.name = name;
    }
    if let Some(email) = body.email {
        check_email(&email)?;
        after.email = email;
    }
    if let Some(stripe) = body.stripe_customer_id {
        if let Some(s) = &stripe {
            check_text("stripe_customer_id", s)?;
        }
        after.stripe_customer_id = stripe;
    }
    if let Some(opt_out) = body.reminders_opt_out {
        after.reminders_opt_out = opt_out;
    }
    let now = state.now();
    after.updated_at = now;
    let (before_view, after_view) = (CustomerView::from(&before), CustomerView::from(&after));
    let entry = audit(caller, "customer.update", target(id), Some(&before_view), Some(&after_view), now);
    state.store().commit(None, vec![Write::UpdateCustomer(after), entry]).await?;
    Ok(after_view)
}

/// Refused while the customer still has licenses, so no license points at nobody.
pub async fn delete_customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require(Scope::Write)?;
    let before = load(&state, &id).await?;
    let filter = LicenseFilter { customer_id: Some(id.clone()), ..LicenseFilter::default() };
    if !state.store().list_licenses(&filter, &PageRequest::first(1)).await?.items.is_empty() {
        return Err(AppError::CustomerHasLicenses);
    }
    let view = CustomerView::from(&before);
    let entry =
        audit::<_, CustomerView>(&caller, "customer.delete", target(&id), Some(&view), None, state.now());
    state.store().commit(None, vec![Write::DeleteCustomer { id }, entry]).await?;
    Ok(StatusCode::NO_CONTENT)
}
