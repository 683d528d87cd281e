//! The page frame (header, navigation, flash message) and the HTML response every portal page
//! goes out as, with the portal's Content-Security-Policy: no inline script or style at all,
//! only the portal's own `/admin/static/` files.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf;
use crate::http::portal::session_auth::Staff;
use crate::model::Timestamp;

/// Scripts and styles from this origin only; forms post only here; no framing, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Dashboard,
    Licenses,
    Customers,
    Renewals,
    Audit,
    SignIn,
    ApiKeys,
    Staff,
    System,
    Account,
}

/// `markup` as an HTML answer with the portal's CSP (the router's guard adds the API's other
/// security headers and `Cache-Control: no-store`).
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

/// A whole page: `staff` is `None` on the sign-in and error pages.
pub fn page(staff: Option<&Staff>, section: Section, title: &str, body: Markup) -> Markup {
    let nav = [
        (Section::Dashboard, "/admin/", "Dashboard"),
        (Section::Licenses, "/admin/licenses", "Licenses"),
        (Section::Customers, "/admin/customers", "Customers"),
        (Section::Renewals, "/admin/renewals", "Renewals"),
        (Section::Audit, "/admin/audit", "Audit log"),
        (Section::ApiKeys, "/admin/api-keys", "API keys"),
        (Section::Staff, "/admin/staff", "Staff"),
        (Section::System, "/admin/system", "System"),
    ];
    // Admin-only pages are linked for admins only (the handlers check the role too).
    let shown = |s: Section, staff: &Staff| match s {
        Section::ApiKeys => staff.can(PortalAction::ManageApiKeys),
        Section::Staff => staff.can(PortalAction::ManageStaff),
        _ => true,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · NLS admin" }
                // No icon: spares the browser a 404 for /favicon.ico on every page.
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/admin/static/portal.css";
                script src="/admin/static/portal.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "NLS admin" }
                    @if let Some(staff) = staff {
                        nav aria-label="Main" {
                            ul {
                                @for (s, href, label) in nav.into_iter().filter(|n| shown(n.0, staff)) {
                                    li {
                                        @if s == section {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            a href="/admin/account" aria-current=[(section == Section::Account).then_some("page")] {
                                (staff.user.name) " (" (staff.user.role.as_str()) ")"
                            }
                            form method="post" action="/admin/logout" {
                                (csrf::hidden_field(staff))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// `?done=...`, set by the redirect after a change; pages map it to a fixed notice.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DoneParams {
    #[serde(default)]
    pub done: Option<String>,
}

/// A query or form value, trimmed; `None` when absent or blank.
pub fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A short notice at the top of a page (after a redirect: `?done=...`).
pub fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}

/// An error box (a refused form).
pub fn error_box(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.error role="alert" { (text) }
        }
    }
}

pub fn date_time(at: Timestamp) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn date(at: Option<Timestamp>, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), |t| t.format("%Y-%m-%d").to_string())
}

/// A license status as a labelled badge (colour is never the only signal: the word is there).
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}
