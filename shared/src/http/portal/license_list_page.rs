//! The license list: search, filters and sort through one store query
//! (`LicenseStore::search_licenses`), cursor paging, sortable column headers (plain links,
//! no script needed), and the selection form of the bulk operations (`license_bulk`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::license_routes::parse_status_filter;
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::hidden_field;
use crate::http::portal::layout::{Section, date, html_response, non_empty, page, status_badge};
use crate::http::portal::license_pages::{PAGE_ROWS, parse_date};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::{Staff, random_token};
use crate::license_search::{LicenseQuery, LicenseSort, LicenseSortField, MAX_TEXT_LEN, SortDirection};
use crate::model::{Customer, License};
use crate::ports::PageRequest;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub feature: Option<String>,
    #[serde(default)]
    pub expires_before: Option<String>,
    #[serde(default)]
    pub sort: Option<String>,
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
}

impl ListParams {
    fn sort(&self) -> Result<LicenseSort, AppError> {
        let field = match non_empty(&self.sort) {
            None => LicenseSortField::default(),
            Some(s) => LicenseSortField::parse(s).ok_or_else(|| {
                AppError::InvalidQuery(format!("unknown sort {s:?}: use created, expires_at or customer"))
            })?,
        };
        let direction = match non_empty(&self.dir) {
            None => SortDirection::default(),
            Some(d) => SortDirection::parse(d)
                .ok_or_else(|| AppError::InvalidQuery(format!("unknown direction {d:?}: use asc or desc")))?,
        };
        Ok(LicenseSort { field, direction })
    }

    /// The store query: `q` is a subscription id (`sub_…`), a customer id (`cus_…`), or text.
    pub fn query(&self) -> Result<LicenseQuery, AppError> {
        let q = non_empty(&self.q).map(str::trim);
        if q.is_some_and(|q| q.len() > MAX_TEXT_LEN) {
            return Err(AppError::InvalidQuery(format!(
                "the search is longer than {MAX_TEXT_LEN} characters"
            )));
        }
        let prefixed =
            |prefix: &str| q.filter(|q| q.starts_with(prefix) && !q.contains(' ')).map(str::to_owned);
        let stripe_subscription_id = prefixed("sub_");
        let customer_id = prefixed("cus_");
        let text = q.filter(|_| stripe_subscription_id.is_none() && customer_id.is_none()).map(str::to_owned);
        Ok(LicenseQuery {
            status: non_empty(&self.status).map(parse_status_filter).transpose()?,
            tier: non_empty(&self.tier).map(str::to_owned),
            feature: non_empty(&self.feature).map(str::to_owned),
            expires_before: non_empty(&self.expires_before)
                .map(|d| parse_date("expires_before", d))
                .transpose()?,
            customer_id,
            stripe_subscription_id,
            text,
            sort: self.sort()?,
        })
    }

    /// The list's query string with `sort`/`dir` and `cursor` replaced (filters kept).
    pub fn href(&self, sort: Option<LicenseSort>, cursor: Option<&str>) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("status", &self.status),
            ("tier", &self.tier),
            ("feature", &self.feature),
            ("expires_before", &self.expires_before),
        ] {
            if let Some(v) = non_empty(value) {
                out.append_pair(name, v);
            }
        }
        let sort = sort.or_else(|| self.sort().ok()).unwrap_or_default();
        if sort != LicenseSort::default() {
            out.append_pair("sort", sort.field.as_str());
            out.append_pair("dir", sort.direction.as_str());
        }
        if let Some(c) = cursor {
            out.append_pair("cursor", c);
        }
        format!("/admin/licenses?{}", out.finish())
    }
}

/// One page for `params`: an exact license id is looked up directly; everything else is one
/// store query.
async fn license_page(
    state: &AppState,
    params: &ListParams,
    query: &LicenseQuery,
) -> Result<(Vec<License>, Option<String>), AppError> {
    if let Some(id) = non_empty(&params.q).map(str::trim).filter(|q| q.starts_with("lic_")) {
        if let Some(found) = state.store().get_license(id).await? {
            return Ok((vec![found], None));
        }
    }
    let request =
        PageRequest { limit: PAGE_ROWS as u32, cursor: non_empty(&params.cursor).map(str::to_owned) };
    let got = state.store().search_licenses(query, &request).await?;
    Ok((got.items, got.next_cursor))
}

/// The customers of `licenses`, read once each.
pub async fn customers_of(
    state: &AppState,
    licenses: &[License],
) -> Result<HashMap<String, Customer>, AppError> {
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

/// A column header that sorts by `field`: ascending first, then toggles.
fn sort_header(params: &ListParams, current: LicenseSort, field: LicenseSortField, label: &str) -> Markup {
    let active = current.field == field;
    let next = if active && current.direction == SortDirection::Ascending {
        SortDirection::Descending
    } else {
        SortDirection::Ascending
    };
    let aria = match (active, current.direction) {
        (false, _) => None,
        (true, SortDirection::Ascending) => Some("ascending"),
        (true, SortDirection::Descending) => Some("descending"),
    };
    let arrow = match aria {
        Some("ascending") => " ▲",
        Some(_) => " ▼",
        None => "",
    };
    html! {
        th scope="col" aria-sort=[aria] {
            a.sort href=(params.href(Some(LicenseSort { field, direction: next }), None)) data-sort=(field.as_str()) {
                (label) (arrow)
            }
        }
    }
}

/// Which bulk actions `staff` may start (the role table decides; export only reads).
fn bulk_actions(staff: &Staff) -> Vec<(&'static str, &'static str)> {
    let mut actions = Vec::new();
    if staff.can(PortalAction::SuspendLicense) {
        actions.push(("suspend", "Suspend"));
    }
    if staff.can(PortalAction::ReactivateLicense) {
        actions.push(("reactivate", "Reactivate"));
    }
    if staff.can(PortalAction::RenewLicense) {
        actions.push(("renew", "Renew by N days"));
    }
    actions.push(("export", "Export CSV"));
    actions
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<ListParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let query = params.query()?;
    let (licenses, next) = license_page(&state, &params, &query).await?;
    let customers = customers_of(&state, &licenses).await?;
    let status = non_empty(&params.status).unwrap_or("");
    let sort = query.sort;
    let actions = bulk_actions(&staff);
    let body = html! {
        h1 { "Licenses" }
        @if staff.can(PortalAction::CreateLicense) {
            p { a.button href="/admin/licenses/new" { "New license" } }
        }
        form.filters method="get" action="/admin/licenses" role="search" {
            div { label for="q" { "Search" }
                input #q type="search" name="q" value=(non_empty(&params.q).unwrap_or(""))
                    maxlength=(MAX_TEXT_LEN) placeholder="id, key id, customer, cus_…, sub_…"; }
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
            @if sort != LicenseSort::default() {
                input type="hidden" name="sort" value=(sort.field.as_str());
                input type="hidden" name="dir" value=(sort.direction.as_str());
            }
            button type="submit" { "Filter" }
        }
        form #bulk method="post" action="/admin/licenses/bulk" {
            (hidden_field(&staff))
            // One id per rendering of the list: posting this form again applies nothing twice.
            input type="hidden" name="bulk_token" value=(random_token());
            input type="hidden" name="back" value=(params.href(None, non_empty(&params.cursor)));
            table.licenses {
                caption.muted { (licenses.len()) " licenses on this page" }
                thead { tr {
                    th scope="col" { span.visually-hidden { "Select" } }
                    th scope="col" { "License" }
                    (sort_header(&params, sort, LicenseSortField::Customer, "Customer"))
                    th scope="col" { "Status" }
                    th scope="col" { "Tier" }
                    th scope="col" { "Features" }
                    (sort_header(&params, sort, LicenseSortField::Created, "Created"))
                    (sort_header(&params, sort, LicenseSortField::ExpiresAt, "Expires"))
                } }
                tbody {
                    @for l in &licenses {
                        tr {
                            td { input type="checkbox" name="license" value=(l.id) id={ "select-" (l.id) }
                                aria-label={ "Select " (l.id) }; }
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
                            td { (date(Some(l.created_at), "")) }
                            td { (date(l.expires_at, "never")) }
                        }
                    }
                }
            }
            @if !licenses.is_empty() {
                fieldset.bulk {
                    legend { "With the selected licenses" }
                    div { label for="bulk-action" { "Action" }
                        select #bulk-action name="action" {
                            @for (value, label) in &actions { option value=(value) { (label) } }
                        } }
                    @if staff.can(PortalAction::RenewLicense) {
                        div { label for="bulk-days" { "Days (renew)" }
                            input #bulk-days type="number" name="days" min="1" max="3650" value="30"; }
                    }
                    button type="submit" { "Apply to selected" }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if non_empty(&params.cursor).is_some() {
                a href=(params.href(None, None)) { "First page" }
            }
            @if let Some(next) = &next {
                a href=(params.href(None, Some(next))) rel="next" { "Next page" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Licenses, "Licenses", body)))
}
