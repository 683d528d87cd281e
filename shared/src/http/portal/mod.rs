//! The admin portal (docs/portal.md): server-rendered HTML at `/admin/`, served by the same
//! router as the JSON API, so every host of the API serves it with nothing extra to build.
//!
//! Pages call the same functions and store ports as the JSON handlers (no second copy of a
//! rule); every change is audited with the staff user as actor (`staff:<id>`). Layout:
//! `access` is the role → action table (the one place roles are decided); `session_auth`
//! the session cookie and its checks; `csrf` the form tokens; `login_pages` login, logout and
//! their rate limits; `layout` the page frame and the HTML response (with its CSP);
//! `static_assets` the hand-written CSS and JS; `form_body` form parsing; `portal_error` the
//! error pages; the `*_pages` modules the pages themselves (`license_list_page` the license
//! list with its store search, `license_bulk` the bulk operations on its selection).

pub mod access;
pub mod audit_pages;
pub mod csrf;
pub mod customer_pages;
pub mod dashboard_page;
pub mod form_body;
pub mod layout;
pub mod license_bulk;
pub mod license_list_page;
pub mod license_pages;
pub mod login_pages;
pub mod portal_error;
pub mod session_auth;
pub mod static_assets;

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
        (M::GET, "/admin/licenses/{id}", get(license_pages::detail)),
        (M::GET, "/admin/licenses/{id}/edit", get(license_pages::edit_form)),
        (M::POST, "/admin/licenses/{id}/edit", post(license_pages::edit)),
        (M::POST, "/admin/licenses/{id}/suspend", post(license_pages::suspend)),
        (M::POST, "/admin/licenses/{id}/reactivate", post(license_pages::reactivate)),
        (M::POST, "/admin/licenses/{id}/renew", post(license_pages::renew)),
        (M::POST, "/admin/licenses/{id}/revoke", post(license_pages::revoke)),
        (M::GET, "/admin/customers", get(customer_pages::list)),
        (M::GET, "/admin/customers/new", get(customer_pages::new_form)),
        (M::POST, "/admin/customers", post(customer_pages::create)),
        (M::GET, "/admin/customers/{id}", get(customer_pages::detail)),
        (M::GET, "/admin/audit", get(audit_pages::list)),
    ]
}

#[cfg(test)]
mod tests;
