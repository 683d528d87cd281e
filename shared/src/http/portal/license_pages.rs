//! Licenses: the filtered list, the status actions, the create wizard and the edit form (the
//! detail page is `license_detail_page`). Every change goes through the same functions as the JSON API
//! (`license_routes::{create, update, change_status}`), audited as the staff user.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, TimeZone, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::license_routes::{self, StaffStatusChange, parse_status_filter};
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::form_body::FormBody;
use crate::http::portal::layout::{Section, date, html_response, non_empty, page, status_badge};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::wire::{CreateLicenseRequest, UpdateLicenseRequest};
use crate::model::{Customer, License, Timestamp};
use crate::ports::{LicenseFilter, PageRequest};

/// Rows on a list page.
pub const PAGE_ROWS: usize = 50;
/// With a filter the store cannot apply (tier, feature, text), at most this many licenses are
/// read for one page; the page may then be short, and "Next page" continues from there.
const SCAN_BUDGET: usize = 2_000;
/// Customers read to resolve a name or email search.
const CUSTOMER_SCAN_BUDGET: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    feature: Option<String>,
    #[serde(default)]
    expires_before: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `YYYY-MM-DD` as midnight UTC.
pub fn parse_date(field: &str, value: &str) -> Result<Timestamp, AppError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| Utc.from_utc_datetime(&dt))
        .ok_or_else(|| AppError::invalid(format!("`{field}` must be a date (YYYY-MM-DD)")))
}

fn query_string(params: &ListParams, cursor: Option<&str>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("q", &params.q),
        ("status", &params.status),
        ("tier", &params.tier),
        ("feature", &params.feature),
        ("expires_before", &params.expires_before),
    ] {
        if let Some(v) = non_empty(value) {
            out.append_pair(name, v);
        }
    }
    if let Some(c) = cursor {
        out.append_pair("cursor", c);
    }
    out.finish()
}

/// Customer ids whose name or email contains `needle` (lower case), from a bounded scan.
async fn customers_matching(state: &AppState, needle: &str) -> Result<HashSet<String>, AppError> {
    let mut found = HashSet::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    let mut read = 0;
    loop {
        let got = state.store().list_customers(&page).await?;
        read += got.items.len();
        for c in got.items {
            if c.name.to_lowercase().contains(needle) || c.email.to_lowercase().contains(needle) {
                found.insert(c.id);
            }
        }
        match got.next_cursor {
            Some(next) if read < CUSTOMER_SCAN_BUDGET => page.cursor = Some(next),
            _ => return Ok(found),
        }
    }
}

/// One page of licenses for the list's filters: the store applies what it indexes (customer,
/// status, expiry); tier, feature and text are checked here on a bounded scan.
async fn license_page(
    state: &AppState,
    params: &ListParams,
) -> Result<(Vec<License>, Option<String>), AppError> {
    let q = non_empty(&params.q);
    // Exact ids go straight to the store.
    if let Some(id) = q.filter(|q| q.starts_with("lic_")) {
        return Ok((state.store().get_license(id).await?.into_iter().collect(), None));
    }
    if let Some(sub) = q.filter(|q| q.starts_with("sub_")) {
        return Ok((state.store().find_license_by_subscription(sub).await?.into_iter().collect(), None));
    }
    let filter = LicenseFilter {
        customer_id: q.filter(|q| q.starts_with("cus_")).map(str::to_owned),
        status: non_empty(&params.status).map(parse_status_filter).transpose()?,
        expires_before: non_empty(&params.expires_before)
            .map(|d| parse_date("expires_before", d))
            .transpose()?,
    };
    let text = q.filter(|_| filter.customer_id.is_none()).map(str::to_lowercase);
    let customers = match &text {
        Some(t) => customers_matching(state, t).await?,
        None => HashSet::new(),
    };
    let tier = non_empty(&params.tier);
    let feature = non_empty(&params.feature);
    let wanted = |l: &License| {
        tier.is_none_or(|t| l.tier == t)
            && feature.is_none_or(|f| l.features.iter().any(|x| x == f))
            && text.as_ref().is_none_or(|t| {
                customers.contains(&l.customer_id)
                    || l.id.contains(t.as_str())
                    || l.key_id.contains(t.as_str())
                    || l.stripe_subscription_id
                        .as_ref()
                        .is_some_and(|s| s.to_lowercase().contains(t.as_str()))
            })
    };
    let mut rows = Vec::new();
    let mut cursor = non_empty(&params.cursor).map(str::to_owned);
    let mut examined = 0;
    loop {
        // Asking for no more than the rows still missing keeps the store's cursor exact.
        let limit = (PAGE_ROWS - rows.len()) as u32;
        let got = state.store().list_licenses(&filter, &PageRequest { limit, cursor }).await?;
        examined += got.items.len();
        rows.extend(got.items.into_iter().filter(|l| wanted(l)));
        cursor = got.next_cursor;
        if rows.len() >= PAGE_ROWS || cursor.is_none() || examined >= SCAN_BUDGET {
            return Ok((rows, cursor));
        }
    }
}

/// The customers of `licenses`, read once each.
async fn customers_of(state: &AppState, licenses: &[License]) -> Result<HashMap<String, Customer>, AppError> {
    let mut out = HashMap::new();
    for l in licenses {
        if !out.contains_key(&l.customer_id) {
            if let Some(c) = state.store().get_customer(&l.customer_id).await? {
                out.insert(l.customer_id.clone(), c);
            }
        }
    }
    Ok(out)
}

pub fn license_table(licenses: &[License], customers: &HashMap<String, Customer>) -> Markup {
    html! {
        table {
            caption.muted { (licenses.len()) " licenses on this page" }
            thead { tr {
                th scope="col" { "License" } th scope="col" { "Customer" } th scope="col" { "Status" }
                th scope="col" { "Tier" } th scope="col" { "Features" } th scope="col" { "Expires" }
            } }
            tbody {
                @for l in licenses {
                    tr {
                        td { a.mono href={ "/admin/licenses/" (l.id) } { (l.id) } }
                        td {
                            @match customers.get(&l.customer_id) {
                                Some(c) => { a href={ "/admin/customers/" (c.id) } { (c.name) } br; span.muted { (c.email) } }
                                None => { span.mono { (l.customer_id) } }
                            }
                        }
                        td { (status_badge(l.status.as_str())) }
                        td { (l.tier) }
                        td { (l.features.join(", ")) }
                        td { (date(l.expires_at, "never")) }
                    }
                }
            }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<ListParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let (licenses, next) = license_page(&state, &params).await?;
    let customers = customers_of(&state, &licenses).await?;
    let status = non_empty(&params.status).unwrap_or("");
    let body = html! {
        h1 { "Licenses" }
        @if staff.can(PortalAction::CreateLicense) {
            p { a.button href="/admin/licenses/new" { "New license" } }
        }
        form.filters method="get" action="/admin/licenses" role="search" {
            div { label for="q" { "Search" }
                input #q type="search" name="q" value=(non_empty(&params.q).unwrap_or(""))
                    placeholder="id, key id, customer, subscription"; }
            div { label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in crate::http::audit_routes::ALL_STATUSES {
                        option value=(s.as_str()) selected[s.as_str() == status] { (s.as_str()) }
                    }
                } }
            div { label for="tier" { "Tier" } input #tier type="text" name="tier" value=(non_empty(&params.tier).unwrap_or("")); }
            div { label for="feature" { "Feature" } input #feature type="text" name="feature" value=(non_empty(&params.feature).unwrap_or("")); }
            div { label for="expires_before" { "Expires before" }
                input #expires_before type="date" name="expires_before" value=(non_empty(&params.expires_before).unwrap_or("")); }
            button type="submit" { "Filter" }
        }
        (license_table(&licenses, &customers))
        nav.pager aria-label="Pages" {
            @if non_empty(&params.cursor).is_some() {
                a href={ "/admin/licenses?" (query_string(&params, None)) } { "First page" }
            }
            @if let Some(next) = &next {
                a href={ "/admin/licenses?" (query_string(&params, Some(next))) } rel="next" { "Next page" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Licenses, "Licenses", body)))
}

async fn redirect_after(
    state: &AppState,
    staff: &Staff,
    id: &str,
    change: StaffStatusChange,
    done: &str,
) -> PortalResult<Response> {
    license_routes::change_status(state, &staff.caller(), id, change).await?;
    Ok(Redirect::to(&format!("/admin/licenses/{id}?done={done}")).into_response())
}

pub async fn suspend(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::SuspendLicense)?;
    redirect_after(&state, &f.staff, &id, StaffStatusChange::Suspend, "suspend").await
}

pub async fn reactivate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ReactivateLicense)?;
    redirect_after(&state, &f.staff, &id, StaffStatusChange::Reactivate, "reactivate").await
}

pub async fn renew(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::RenewLicense)?;
    let expires_at = parse_date("expires_on", f.form.require("expires_on")?)?;
    redirect_after(&state, &f.staff, &id, StaffStatusChange::Renew { expires_at }, "renew").await
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::RevokeLicense)?;
    if f.form.get("confirm") != Some("yes") {
        return Err(AppError::invalid("tick the box to confirm that revoking is final").into());
    }
    redirect_after(&state, &f.staff, &id, StaffStatusChange::Revoke, "revoke").await
}

/// The license terms a form holds (the wizard and the edit form share the fields).
struct TermsFields {
    tier: Option<String>,
    features: Vec<String>,
    limits: BTreeMap<String, u64>,
    max_deployments: Option<u32>,
    expires_at: Option<Timestamp>,
    offline_days: Option<u32>,
    grace_days: Option<u32>,
}

fn optional_number(form: &FormBody, field: &str) -> Result<Option<u32>, AppError> {
    form.get(field)
        .map(|v| v.parse::<u32>().map_err(|_| AppError::invalid(format!("`{field}` must be a whole number"))))
        .transpose()
}

fn read_terms(form: &FormBody) -> Result<TermsFields, AppError> {
    let mut features: Vec<String> = Vec::new();
    for f in form.get("features").unwrap_or("").split([',', '\n']).map(str::trim).filter(|f| !f.is_empty()) {
        if !features.iter().any(|x| x == f) {
            features.push(f.to_owned());
        }
    }
    let mut limits = BTreeMap::new();
    for line in form.get("limits").unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (metric, n) = line
            .split_once('=')
            .ok_or_else(|| AppError::invalid(format!("limit {line:?} must look like metric=number")))?;
        let n = n
            .trim()
            .parse::<u64>()
            .map_err(|_| AppError::invalid(format!("limit {line:?}: not a number")))?;
        limits.insert(metric.trim().to_owned(), n);
    }
    Ok(TermsFields {
        tier: form.get("tier").map(str::to_owned),
        features,
        limits,
        max_deployments: optional_number(form, "max_deployments")?,
        expires_at: form.get("expires_on").map(|d| parse_date("expires_on", d)).transpose()?,
        offline_days: optional_number(form, "offline_days")?,
        grace_days: optional_number(form, "grace_days")?,
    })
}

/// The terms fields, filled from `license` when editing.
fn terms_fields(license: Option<&License>) -> Markup {
    let limits = license.map_or(String::new(), |l| {
        l.limits.iter().map(|(m, n)| format!("{m}={n}")).collect::<Vec<_>>().join("\n")
    });
    html! {
        label for="tier" { "Tier" }
        input #tier type="text" name="tier" value=(license.map_or("standard", |l| l.tier.as_str()));
        label for="features" { "Features" }
        input #features type="text" name="features" aria-describedby="features-hint"
            value=(license.map(|l| l.features.join(", ")).unwrap_or_default());
        p.hint #features-hint { "Comma separated, e.g. sso, audit_log." }
        label for="limits" { "Limits" }
        textarea #limits name="limits" aria-describedby="limits-hint" { (limits) }
        p.hint #limits-hint { "One per line: metric=number, e.g. workflow_runs=10000." }
        label for="max_deployments" { "Max deployments" }
        input #max_deployments type="number" min="0" name="max_deployments" aria-describedby="max-hint"
            value=(license.and_then(|l| l.max_deployments).map(|n| n.to_string()).unwrap_or_default());
        p.hint #max-hint { "Empty: unlimited." }
        label for="expires_on" { "Expires on (UTC)" }
        input #expires_on type="date" name="expires_on" aria-describedby="expiry-hint"
            value=(license.and_then(|l| l.expires_at).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default());
        p.hint #expiry-hint { "Empty: perpetual." }
        label for="offline_days" { "Offline days" }
        input #offline_days type="number" min="0" name="offline_days" value=(license.map(|l| l.offline_days.to_string()).unwrap_or_default());
        label for="grace_days" { "Grace days" }
        input #grace_days type="number" min="0" name="grace_days" value=(license.map(|l| l.grace_days.to_string()).unwrap_or_default());
    }
}

/// The key, shown once, with a copy button (the script un-hides it).
fn key_once_page(staff: &Staff, license_id: &str, key: &str, heading: &str) -> Response {
    let body = html! {
        h1 { (heading) }
        div.keybox {
            p { strong { "Copy the license key now: it is shown only once." } " NLS keeps only its id." }
            pre #license-key.mono { (key) }
            button #copy-key type="button" data-copy="license-key" hidden { "Copy key" }
        }
        p { a href={ "/admin/licenses/" (license_id) } { "Go to the license" } }
    };
    html_response(StatusCode::OK, page(Some(staff), Section::Licenses, heading, body))
}

#[derive(Debug, Default, Deserialize)]
pub struct NewParams {
    #[serde(default)]
    customer_id: Option<String>,
}

pub async fn new_form(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<NewParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::CreateLicense)?;
    let customers = state.store().list_customers(&PageRequest::first(PageRequest::MAX_LIMIT)).await?;
    let chosen = non_empty(&params.customer_id);
    let body = html! {
        h1 { "New license" }
        form.stack method="post" action="/admin/licenses" {
            (hidden_field(&staff))
            label for="customer_id" { "Customer" }
            select #customer_id name="customer_id" required {
                @for c in &customers.items {
                    option value=(c.id) selected[Some(c.id.as_str()) == chosen] { (c.name) " (" (c.email) ")" }
                }
            }
            p.hint { a href="/admin/customers/new" { "New customer" } " first if they are not listed." }
            (terms_fields(None))
            button type="submit" { "Create license" }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Licenses, "New license", body)))
}

pub async fn create(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::CreateLicense)?;
    let terms = read_terms(&f.form)?;
    let request = CreateLicenseRequest {
        customer_id: f.form.require("customer_id")?.to_owned(),
        tier: terms.tier,
        features: terms.features,
        limits: terms.limits,
        max_deployments: terms.max_deployments,
        expires_at: terms.expires_at,
        offline_days: terms.offline_days,
        grace_days: terms.grace_days,
        // The portal does not edit registry grants yet: the JSON API does.
        registry: None,
        // Nor cloud grants.
        cloud: None,
    };
    let created = license_routes::create(&state, &f.staff.caller(), request).await?;
    let key = created.key.ok_or_else(|| AppError::Internal("a new license came without its key".into()))?;
    Ok(key_once_page(&f.staff, &created.license.id, &key, "License created"))
}

pub async fn edit_form(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PortalResult<Response> {
    staff.require(PortalAction::EditLicense)?;
    let l = license_routes::load(&state, &id).await?;
    let body = html! {
        h1 { "Edit license " span.mono { (l.id) } }
        p.muted { "Changing features, limits, deployments or expiry issues a new key (shown once)." }
        form.stack method="post" action={ "/admin/licenses/" (l.id) "/edit" } {
            (hidden_field(&staff))
            (terms_fields(Some(&l)))
            button type="submit" { "Save" }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Licenses, "Edit license", body)))
}

pub async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::EditLicense)?;
    let terms = read_terms(&f.form)?;
    let request = UpdateLicenseRequest {
        tier: terms.tier,
        features: Some(terms.features),
        limits: Some(terms.limits),
        max_deployments: Some(terms.max_deployments),
        expires_at: Some(terms.expires_at),
        offline_days: terms.offline_days,
        grace_days: terms.grace_days,
        // Absent: the license keeps its registry grant.
        registry: None,
        // And its cloud grant.
        cloud: None,
    };
    let updated = license_routes::update(&state, &f.staff.caller(), &id, request).await?;
    match updated.key {
        Some(key) => Ok(key_once_page(&f.staff, &id, &key, "License updated: new key")),
        None => Ok(Redirect::to(&format!("/admin/licenses/{id}?done=edit")).into_response()),
    }
}
