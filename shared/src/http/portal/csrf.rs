//! CSRF: every portal form carries a token and every POST is checked before its handler runs.
//!
//! Signed in, the token is the session's own random `csrf_token` ([`StaffForm`] checks it).
//! Before sign-in there is no session, so the sign-in form uses a double-submit token: a random
//! value both in an `HttpOnly`, `SameSite=Strict` cookie and in the form. Both comparisons are
//! constant-time. A request whose `Origin` (or `Sec-Fetch-Site`) says it came from another
//! site is refused whatever it carries.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header};
use maud::{Markup, html};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::portal::form_body::FormBody;
use crate::http::portal::portal_error::PortalError;
use crate::http::portal::session_auth::Staff;

/// The form field every portal form carries.
pub const CSRF_FIELD: &str = "csrf";
/// The sign-in form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "nls_login_csrf";

pub fn hidden_field(staff: &Staff) -> Markup {
    token_field(&staff.session.csrf_token)
}

pub fn token_field(token: &str) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(token); }
}

pub fn tokens_match(expected: &str, presented: Option<&str>) -> bool {
    match presented {
        Some(p) if !expected.is_empty() => bool::from(expected.as_bytes().ct_eq(p.as_bytes())),
        _ => false,
    }
}

/// Refuses a request a browser marked as coming from another site. Browsers send `Origin` on
/// every cross-origin POST; it must name the host the request was sent to.
pub fn check_same_origin(headers: &HeaderMap) -> Result<(), PortalError> {
    // Browsers that send `Sec-Fetch-Site` say it outright. They send `Origin: null` on our own
    // forms (the pages' `Referrer-Policy: no-referrer`), so `Origin` is for older browsers.
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"same-origin" | b"none") => return Ok(()),
        Some(_) => return Err(PortalError::ForgedForm),
        None => {}
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host =
        origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(PortalError::ForgedForm),
    }
}

/// A signed-in user's POSTed form, after the origin and the CSRF token were checked.
pub struct StaffForm {
    pub staff: Staff,
    pub form: FormBody,
}

impl FromRequest<AppState> for StaffForm {
    type Rejection = PortalError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PortalError> {
        let (mut parts, body) = req.into_parts();
        check_same_origin(&parts.headers)?;
        let staff = Staff::from_request_parts(&mut parts, state).await?;
        let form = FormBody::from_request(Request::from_parts(parts, body), state).await?;
        if !tokens_match(&staff.session.csrf_token, form.get(CSRF_FIELD)) {
            return Err(PortalError::ForgedForm);
        }
        Ok(StaffForm { staff, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins_and_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_same_origin(&headers).is_ok(), "no Origin: a same-origin form or a non-browser");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(check_same_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_same_origin(&headers).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_origin(&headers).is_err());
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(check_same_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_same_origin(&headers).is_ok(), "Chromium's own forms under no-referrer");
        assert!(tokens_match("abc", Some("abc")));
        assert!(!tokens_match("abc", Some("abd")));
        assert!(!tokens_match("abc", None));
        assert!(!tokens_match("", Some("")));
    }
}
