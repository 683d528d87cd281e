//! The admin portal (docs/portal.md): server-rendered HTML at `/admin/`, served by the same
//! router as the JSON API, so every host of the API serves it with nothing extra to build.
//!
//! Pages call the same functions and store ports as the JSON handlers (no second copy of a
//! rule); every change is audited with the staff user as actor (`staff:<id>`). Layout:
//! `access` is the role → action table (the one place roles are decided); `session_auth`
//! the session cookie and its checks; `csrf` the form tokens; `login_pages` login, logout and
//! their rate limits; `layout` the page frame and the HTML response (with its CSP);
//! `static_assets` the hand-written CSS and JS; `form_body` form parsing; `portal_error` the
//! error pages; `svg_chart` the server-drawn charts; the `*_page(s)` modules the pages themselves (`api_key_pages`, `staff_pages`,
//! `account_pages` with the TOTP second factor, and `system_page` are the admin and system
//! pages; `license_list_page` the license list with its store search, `license_bulk` the bulk
//! operations on its selection; `compliance_sections` the key-sharing flags on the license page
//! and the dashboard).

pub mod access;
pub mod account_pages;
pub mod api_key_pages;
pub mod audit_pages;
pub mod compliance_sections;
pub mod csrf;
pub mod customer_pages;
pub mod dashboard_page;
pub mod form_body;
pub mod layout;
pub mod license_bulk;
pub mod license_detail_page;
pub mod license_list_page;
pub mod license_pages;
pub mod login_pages;
pub mod portal_error;
pub mod renewal_pipeline_page;
pub mod session_auth;
pub mod staff_pages;
pub mod static_assets;
pub mod svg_chart;
pub mod system_page;

use axum::http::Method;
use axum::response::Redirect;
use axum::routing::{MethodRouter, get, post};

use crate::http::AppState;

/// Where the portal lives. Every portal path starts with it.
pub const PORTAL_ROOT: &str = "/admin/";

/// Every portal route: (method, path, handler). Not in `/openapi.json` (HTML, not the API);
/// the router and the metrics registry take them from here.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    use Method as M;
    vec![
        (M::GET, "/admin", get(|| async { Redirect::permanent(PORTAL_ROOT) })),
        (M::GET, "/admin/", get(dashboard_page::dashboard)),
        (M::GET, "/admin/static/portal.css", get(static_assets::stylesheet)),
        (M::GET, "/admin/static/portal.js", get(static_assets::script)),
        (M::GET, "/admin/login", get(login_pages::login_form)),
        (M::POST, "/admin/login", post(login_pages::login)),
        (M::POST, "/admin/logout", post(login_pages::logout)),
        (M::GET, "/admin/licenses", get(license_list_page::list)),
        (M::POST, "/admin/licenses/bulk", post(license_bulk::bulk)),
        (M::GET, "/admin/licenses/new", get(license_pages::new_form)),
        (M::POST, "/admin/licenses", post(license_pages::create)),
        (M::GET, "/admin/licenses/{id}", get(license_detail_page::detail)),
        (M::GET, "/admin/licenses/{id}/edit", get(license_pages::edit_form)),
        (M::POST, "/admin/licenses/{id}/edit", post(license_pages::edit)),
        (M::POST, "/admin/licenses/{id}/suspend", post(license_pages::suspend)),
        (M::POST, "/admin/licenses/{id}/reactivate", post(license_pages::reactivate)),
        (M::POST, "/admin/licenses/{id}/renew", post(license_pages::renew)),
        (M::POST, "/admin/licenses/{id}/revoke", post(license_pages::revoke)),
        (M::POST, "/admin/licenses/{id}/deployments/release", post(license_detail_page::release_deployment)),
        (M::POST, "/admin/licenses/{id}/resend-key", post(license_detail_page::resend_key_email)),
        (M::POST, "/admin/licenses/{id}/offline-file", post(license_detail_page::offline_file)),
        (M::GET, "/admin/customers", get(customer_pages::list)),
        (M::GET, "/admin/customers/new", get(customer_pages::new_form)),
        (M::POST, "/admin/customers", post(customer_pages::create)),
        (M::GET, "/admin/customers/{id}", get(customer_pages::detail)),
        (M::GET, "/admin/customers/{id}/edit", get(customer_pages::edit_form)),
        (M::POST, "/admin/customers/{id}/edit", post(customer_pages::edit)),
        (M::POST, "/admin/customers/{id}/reminders", post(customer_pages::set_reminders)),
        (M::GET, "/admin/renewals", get(renewal_pipeline_page::pipeline)),
        (M::GET, "/admin/audit", get(audit_pages::list)),
        (M::GET, "/admin/api-keys", get(api_key_pages::list)),
        (M::POST, "/admin/api-keys", post(api_key_pages::create)),
        (M::POST, "/admin/api-keys/{id}/revoke", post(api_key_pages::revoke)),
        (M::GET, "/admin/staff", get(staff_pages::list)),
        (M::POST, "/admin/staff", post(staff_pages::create)),
        (M::GET, "/admin/staff/{id}", get(staff_pages::detail)),
        (M::POST, "/admin/staff/{id}/role", post(staff_pages::change_role)),
        (M::POST, "/admin/staff/{id}/disable", post(staff_pages::disable)),
        (M::POST, "/admin/staff/{id}/enable", post(staff_pages::enable)),
        (M::POST, "/admin/staff/{id}/reset-password", post(staff_pages::reset_password)),
        (M::GET, "/admin/account", get(account_pages::show)),
        (M::POST, "/admin/account/totp/setup", post(account_pages::setup)),
        (M::POST, "/admin/account/totp/confirm", post(account_pages::confirm)),
        (M::POST, "/admin/account/totp/disable", post(account_pages::disable)),
        (M::GET, "/admin/system", get(system_page::system)),
    ]
}

#[cfg(test)]
mod tests;
