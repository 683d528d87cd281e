//! A staff user's own page (every role): who they are, and the optional second factor (TOTP,
//! RFC 6238; `crate::totp`). Enrolling shows a fresh secret and its `otpauth://` URI; the
//! secret is kept only in the page's confirm form until a code from the app proves the app
//! has it, and only then stored (audited `staff_user.totp_enable`, with that code's step
//! recorded so it cannot also sign in). Turning it off asks for a current code. The secret is
//! never logged and never in a URL; `nls staff disable-totp` is the lockout recovery.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::portal::access::{PortalAction, staff_actor};
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::layout::{DoneParams, Section, error_box, html_response, notice, page};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::portal::staff_pages::change_error;
use crate::staff_changes::{Sessions, StaffChangeError, StaffLookup, update_staff_user};
use crate::totp::{self, SECRET_BYTES, TotpError};

/// The issuer name authenticator apps show next to the account.
const TOTP_ISSUER: &str = "NLS admin";

pub async fn show(staff: Staff, QueryParams(params): QueryParams<DoneParams>) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let done = match params.done.as_deref() {
        Some("totp-on") => Some("Two-step sign-in is on: sign-in now asks for a code from your app."),
        Some("totp-off") => Some("Two-step sign-in is off."),
        _ => None,
    };
    let user = &staff.user;
    let body = html! {
        (notice(done))
        h1 { "Your account" }
        dl.facts {
            dt { "Name" } dd { (user.name) }
            dt { "Email" } dd { (user.email) }
            dt { "Role" } dd { (user.role.as_str()) }
            dt { "Two-step sign-in" } dd #totp-status { @if user.totp_secret.is_some() { "on" } @else { "off" } }
        }
        h2 { "Two-step sign-in" }
        @if user.totp_secret.is_some() {
            p { "Sign-in asks for a 6-digit code from your authenticator app. To turn it off, enter a current code." }
            form.stack method="post" action="/admin/account/totp/disable" {
                (hidden_field(&staff))
                label for="code" { "Code from your app" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required;
                button.danger type="submit" { "Turn off two-step sign-in" }
            }
        } @else {
            p { "Add a second step to sign-in: a 6-digit code from an authenticator app (any app that speaks TOTP, RFC 6238)." }
            form method="post" action="/admin/account/totp/setup" {
                (hidden_field(&staff))
                button type="submit" { "Set up two-step sign-in" }
            }
        }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Account, "Your account", body)))
}

/// The enrolment page for `secret`: the secret, its URI, and the form that confirms a code.
fn setup_page(staff: &Staff, secret: &str, status: StatusCode, error: Option<&str>) -> Response {
    let uri = totp::otpauth_uri(TOTP_ISSUER, &staff.user.email, secret);
    let body = html! {
        h1 { "Set up two-step sign-in" }
        (error_box(error))
        p { "In your authenticator app, add an account with this setup key (or paste the link):" }
        div.keybox {
            p { "Setup key" }
            pre #totp-secret.mono { (secret) }
            button #copy-totp-secret type="button" data-copy="totp-secret" hidden { "Copy key" }
            p { "Link for apps that take one" }
            pre #totp-uri.mono { (uri) }
            button #copy-totp-uri type="button" data-copy="totp-uri" hidden { "Copy link" }
        }
        form.stack method="post" action="/admin/account/totp/confirm" {
            (hidden_field(staff))
            input type="hidden" name="secret" value=(secret);
            label for="code" { "Then enter the 6-digit code the app shows" }
            input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required;
            button type="submit" { "Turn on two-step sign-in" }
        }
        p { a href="/admin/account" { "Cancel" } }
    };
    html_response(status, page(Some(staff), Section::Account, "Set up two-step sign-in", body))
}

pub async fn setup(f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::Read)?;
    if f.staff.user.totp_secret.is_some() {
        return Err(AppError::invalid("two-step sign-in is already on; turn it off first").into());
    }
    Ok(setup_page(&f.staff, &totp::new_secret(), StatusCode::OK, None))
}

pub async fn confirm(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::Read)?;
    let secret = f.form.require("secret")?.to_ascii_uppercase();
    if totp::base32_decode(&secret).is_none_or(|bytes| bytes.len() != SECRET_BYTES) {
        return Err(AppError::invalid("the setup key is not one this portal made").into());
    }
    let step = match totp::check_code(&secret, f.form.get("code").unwrap_or(""), state.now(), None) {
        Ok(step) => step,
        Err(e) => {
            let message = format!("{e}: check the app's clock, and enter the code it shows now.");
            return Ok(setup_page(&f.staff, &secret, StatusCode::BAD_REQUEST, Some(&message)));
        }
    };
    let actor = staff_actor(&f.staff.user.id);
    let who = StaffLookup::Id(&f.staff.user.id);
    update_staff_user(
        state.store(),
        state.clock(),
        who,
        &actor,
        "staff_user.totp_enable",
        Sessions::Keep,
        |u| {
            if u.totp_secret.is_some() {
                return Err(StaffChangeError::Refused("two-step sign-in is already on".into()));
            }
            u.totp_secret = Some(secret.clone());
            u.totp_last_step = Some(step);
            Ok(())
        },
    )
    .await
    .map_err(change_error)?;
    Ok(Redirect::to("/admin/account?done=totp-on").into_response())
}

pub async fn disable(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::Read)?;
    let code = f.form.get("code").unwrap_or("").to_owned();
    let actor = staff_actor(&f.staff.user.id);
    let who = StaffLookup::Id(&f.staff.user.id);
    let now = state.now();
    update_staff_user(
        state.store(),
        state.clock(),
        who,
        &actor,
        "staff_user.totp_disable",
        Sessions::Keep,
        |u| {
            let secret = u.totp_secret.as_deref().ok_or(StaffChangeError::Totp(TotpError::Wrong))?;
            totp::check_code(secret, &code, now, u.totp_last_step)?;
            u.totp_secret = None;
            u.totp_last_step = None;
            Ok(())
        },
    )
    .await
    .map_err(change_error)?;
    Ok(Redirect::to("/admin/account?done=totp-off").into_response())
}
