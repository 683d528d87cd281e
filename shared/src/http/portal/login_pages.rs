//! Sign-in and sign-out. One answer for an unknown email, a disabled account and a wrong
//! password (and the same argon2 work for each), and attempts are rate limited per account
//! and per client IP before any password is checked. The buckets live in this process, like
//! the API's rate limits (docs/portal.md says what that means with several instances).

use std::net::IpAddr;

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::http::portal::csrf::{self, LOGIN_CSRF_COOKIE, StaffForm};
use crate::http::portal::form_body::FormBody;
use crate::http::portal::layout::{Section, error_box, html_response, page};
use crate::http::portal::portal_error::{PortalError, PortalResult};
use crate::http::portal::session_auth::{
    SESSION_COOKIE, cookie, random_token, set_cookie, start_session, token_hash,
};
use crate::http::rate_limit::{RateLimit, TokenBuckets};
use crate::http::{AppState, ClientIp};
use crate::staff_accounts::{normalize_email, verify_password, verify_password_against_nobody};
use crate::staff_changes::{StaffChangeError, accept_totp_code};

/// Per account: 5 attempts, then one a minute.
pub const PER_ACCOUNT: RateLimit = RateLimit { per_second: 1.0 / 60.0, burst: 5.0 };
/// Per client IP: 20 attempts, then one every 5 s (a shared office NAT still gets in).
pub const PER_IP: RateLimit = RateLimit { per_second: 0.2, burst: 20.0 };

/// One answer for every refusal: unknown email, wrong password, disabled account, and a
/// missing, wrong or already used second-factor code.
const WRONG_CREDENTIALS: &str = "The email, the password or the code is not right.";

/// The sign-in rate limits of this process.
pub struct LoginLimits {
    by_account: TokenBuckets<String>,
    by_ip: TokenBuckets<IpAddr>,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self { by_account: TokenBuckets::new(PER_ACCOUNT, 10_000), by_ip: TokenBuckets::new(PER_IP, 10_000) }
    }
}

impl LoginLimits {
    /// Forgets refilled buckets ([`TokenBuckets::sweep`]); returns how many.
    pub(crate) fn sweep(&self, now: crate::model::Timestamp) -> usize {
        self.by_account.sweep(now) + self.by_ip.sweep(now)
    }
}

fn form(token: &str, email: &str, error: Option<&str>) -> Markup {
    let body = html! {
        div.signin {
            h1 { "Sign in" }
            (error_box(error))
            form method="post" action="/admin/login" {
                (csrf::token_field(token))
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username" required;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                label for="code" { "Code from your authenticator app (only if you set up two-step sign-in)" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="8";
                button type="submit" { "Sign in" }
            }
        }
    };
    page(None, Section::SignIn, "Sign in", body)
}

/// The sign-in page, with a fresh double-submit token in a cookie and in the form.
fn form_response(headers: &HeaderMap, status: StatusCode, email: &str, error: Option<&str>) -> Response {
    let token = random_token();
    let mut response = html_response(status, form(&token, email, error));
    let cookie = set_cookie(headers, LOGIN_CSRF_COOKIE, &token, 3600);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

pub async fn login_form(headers: HeaderMap) -> Response {
    form_response(&headers, StatusCode::OK, "", None)
}

pub async fn login(State(state): State<AppState>, req: Request) -> PortalResult<Response> {
    let headers = req.headers().clone();
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    csrf::check_same_origin(&headers)?;
    let form = FormBody::from_request(req, &state).await?;
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if !csrf::tokens_match(expected, form.get(csrf::CSRF_FIELD)) {
        return Err(PortalError::ForgedForm);
    }
    let email_text = form.get("email").unwrap_or("");
    let password = form.0.iter().find(|(n, _)| n == "password").map_or("", |(_, v)| v.as_str());
    let email = normalize_email(email_text).unwrap_or_else(|_| email_text.to_lowercase());

    let now = state.now();
    let limits = state.portal_login_limits();
    let limited = ip
        .map(|ip| limits.by_ip.take(&ip, now))
        .transpose()
        .err()
        .or_else(|| limits.by_account.take(&email, now).err());
    if let Some(retry_after_secs) = limited {
        let message = format!("Too many sign-in attempts. Try again in {retry_after_secs} s.");
        let mut response = form_response(&headers, StatusCode::TOO_MANY_REQUESTS, email_text, Some(&message));
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        return Ok(response);
    }

    let user = state.store().find_staff_user_by_email(&email).await?;
    let signed_in = match &user {
        Some(user) => verify_password(&user.password_hash, password) && !user.disabled,
        None => {
            verify_password_against_nobody(password);
            false
        }
    };
    let refused = || form_response(&headers, StatusCode::UNAUTHORIZED, email_text, Some(WRONG_CREDENTIALS));
    let Some(mut user) = user.filter(|_| signed_in) else { return Ok(refused()) };
    // The second factor, when enrolled: checked after the password (and within the same rate
    // limits), and its step recorded so the code cannot be used again.
    if user.totp_secret.is_some() {
        match accept_totp_code(state.store(), state.clock(), &user, form.get("code").unwrap_or("")).await {
            Ok(after) => user = after,
            Err(StaffChangeError::Store(e)) => return Err(e.into()),
            Err(_) => return Ok(refused()),
        }
    }
    // A session token that came in with the request is dropped: sign-in always starts afresh.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        state.store().delete_session(&token_hash(old)).await?;
    }
    let session_cookie = start_session(&state, &headers, &user).await?;
    let mut response = Redirect::to("/admin/").into_response();
    let set = response.headers_mut();
    set.append(header::SET_COOKIE, session_cookie);
    set.append(header::SET_COOKIE, set_cookie(&headers, LOGIN_CSRF_COOKIE, "", 0));
    tracing::info!(user = %user.id, "staff sign-in");
    Ok(response)
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    staff: StaffForm,
) -> PortalResult<Response> {
    state.store().delete_session(&staff.staff.session.token_sha256).await?;
    let mut response = Redirect::to("/admin/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, "", 0));
    Ok(response)
}
