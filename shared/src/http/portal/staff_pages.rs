//! Staff users (admin only): the list, creating a user (a one-time password shown once, or one
//! the admin sets), and on each user's page: change the role, disable or enable, reset the
//! password. Every change is the core's `staff_changes` (the same code as `nls staff`), one
//! audited commit as `staff:<id>`; disabling and resetting end the user's sessions at once.
//! An admin cannot disable themselves or change their own role, so the portal always keeps
//! the admin who is using it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::portal::access::{PortalAction, staff_actor};
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::form_body::FormBody;
use crate::http::portal::layout::{DoneParams, Section, date_time, error_box, html_response, notice, page};
use crate::http::portal::portal_error::{PortalError, PortalResult};
use crate::http::portal::session_auth::Staff;
use crate::model::{StaffRole, StaffUser};
use crate::staff_accounts::{hash_password, new_staff_user};
use crate::staff_changes::{
    Sessions, StaffChangeError, StaffLookup, create_staff_user, generated_password, update_staff_user,
};

/// A refused staff change as a portal answer: bad input is a 4xx, never a 5xx.
pub fn change_error(e: StaffChangeError) -> PortalError {
    let app = match e {
        StaffChangeError::Account(e) => AppError::invalid(e.to_string()),
        StaffChangeError::Refused(message) => AppError::invalid(message),
        StaffChangeError::Totp(e) => AppError::invalid(e.to_string()),
        StaffChangeError::EmailTaken(email) => {
            AppError::AlreadyExists(format!("a staff user with email {email}"))
        }
        StaffChangeError::UnknownUser(id) => {
            AppError::not_found("staff_user_not_found", format!("staff user {id}"))
        }
        StaffChangeError::KeptChanging(id) => {
            AppError::Conflict(format!("staff user {id} kept changing; try again"))
        }
        StaffChangeError::Store(e) => e.into(),
    };
    PortalError::App(app)
}

fn role_options(selected: StaffRole) -> Markup {
    html! {
        @for role in StaffRole::ALL {
            option value=(role.as_str()) selected[role == selected] { (role.as_str()) }
        }
    }
}

/// "Generate a one-time password" (the default) or "set this password".
fn password_choice(prefix: &str) -> Markup {
    let set_id = format!("{prefix}-password");
    html! {
        fieldset {
            legend { "Password" }
            label { input type="radio" name="password_mode" value="generate" checked; " Generate a one-time password (shown once)" }
            label { input type="radio" name="password_mode" value="set"; " Set this password:" }
            label for=(set_id) { "Password (at least 12 characters)" }
            input id=(set_id) type="password" name="password" autocomplete="new-password";
        }
    }
}

/// The password a form asks for: generated (and to be shown once) or the one typed.
fn chosen_password(form: &FormBody) -> Result<(String, bool), AppError> {
    if form.get("password_mode") == Some("set") {
        let typed = form.0.iter().find(|(n, _)| n == "password").map_or("", |(_, v)| v.as_str());
        Ok((typed.to_owned(), false))
    } else {
        Ok((generated_password(), true))
    }
}

fn parse_role(form: &FormBody) -> Result<StaffRole, AppError> {
    let text = form.require("role")?;
    StaffRole::parse(text).ok_or_else(|| AppError::invalid(format!("unknown role {text:?}")))
}

async fn list_page(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    top: Markup,
) -> PortalResult<Response> {
    let users = state.store().list_staff_users().await?;
    let body = html! {
        (top)
        h1 { "Staff users" }
        table {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" }
                th scope="col" { "Status" } th scope="col" { "Two-step sign-in" } th scope="col" { "Created" }
            } }
            tbody { @for u in &users { tr {
                td { a href={ "/admin/staff/" (u.id) } { (u.name) } }
                td { (u.email) }
                td { (u.role.as_str()) }
                td { @if u.disabled { span.badge.status-suspended { "disabled" } } @else { span.badge.status-active { "active" } } }
                td { @if u.totp_secret.is_some() { "on" } @else { "off" } }
                td { (date_time(u.created_at)) }
            } } }
        }
        h2 { "New staff user" }
        form.stack method="post" action="/admin/staff" {
            (hidden_field(staff))
            label for="email" { "Email" } input #email type="email" name="email" required;
            label for="name" { "Name" } input #name type="text" name="name" required;
            label for="role" { "Role" } select #role name="role" { (role_options(StaffRole::Viewer)) }
            (password_choice("new"))
            button type="submit" { "Create staff user" }
        }
    };
    Ok(html_response(status, page(Some(staff), Section::Staff, "Staff users", body)))
}

pub async fn list(State(state): State<AppState>, staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::ManageStaff)?;
    list_page(&state, &staff, StatusCode::OK, html! {}).await
}

/// The answer after a password was made: shown once, never put in a URL.
fn password_once_page(staff: &Staff, user: &StaffUser, heading: &str, generated: Option<&str>) -> Response {
    let body = html! {
        h1 { (heading) }
        @if let Some(password) = generated {
            div.keybox {
                p { strong { "Copy the one-time password now: it is shown only once." } " Give it to " (user.name) " in person or over a safe channel." }
                pre #staff-password.mono { (password) }
                button #copy-password type="button" data-copy="staff-password" hidden { "Copy password" }
            }
        } @else {
            p role="status" { "The password you typed is set." }
        }
        p { a href={ "/admin/staff/" (user.id) } { "Go to " (user.name) } }
    };
    html_response(StatusCode::OK, page(Some(staff), Section::Staff, heading, body))
}

pub async fn create(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageStaff)?;
    let made = async {
        let role = parse_role(&f.form)?;
        let (password, generated) = chosen_password(&f.form)?;
        let user = new_staff_user(
            f.form.get("email").unwrap_or(""),
            f.form.get("name").unwrap_or(""),
            role,
            &password,
            state.now(),
        )
        .map_err(|e| AppError::invalid(e.to_string()))?;
        create_staff_user(state.store(), &staff_actor(&f.staff.user.id), &user).await.map_err(|e| {
            match change_error(e) {
                PortalError::App(app) => app,
                other => AppError::invalid(other.to_string()),
            }
        })?;
        Ok::<_, AppError>((user, generated.then_some(password)))
    }
    .await;
    match made {
        Ok((user, generated)) => {
            Ok(password_once_page(&f.staff, &user, "Staff user created", generated.as_deref()))
        }
        Err(e @ (AppError::InvalidRequest(_) | AppError::AlreadyExists(_))) => {
            list_page(&state, &f.staff, e.status(), error_box(Some(&e.to_string()))).await
        }
        Err(e) => Err(PortalError::App(e)),
    }
}

fn done_text(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "role" => Some("The role is changed."),
        "disable" => Some("The user is disabled: their sessions have ended."),
        "enable" => Some("The user is enabled again."),
        _ => None,
    }
}

pub async fn detail(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<DoneParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::ManageStaff)?;
    let user = state
        .store()
        .get_staff_user(&id)
        .await?
        .ok_or_else(|| AppError::not_found("staff_user_not_found", format!("staff user {id}")))?;
    let is_self = user.id == staff.user.id;
    let body = html! {
        (notice(done_text(params.done.as_deref())))
        h1 { (user.name) }
        dl.facts {
            dt { "Id" } dd.mono { (user.id) }
            dt { "Email" } dd { (user.email) }
            dt { "Role" } dd { (user.role.as_str()) }
            dt { "Status" } dd { @if user.disabled { "disabled" } @else { "active" } }
            dt { "Two-step sign-in" } dd { @if user.totp_secret.is_some() { "on" } @else { "off" } }
            dt { "Created" } dd { (date_time(user.created_at)) }
        }
        @if is_self {
            p { "This is you: change your own password or two-step sign-in on " a href="/admin/account" { "your account page" } "." }
        } @else {
            h2 { "Role" }
            form.inline method="post" action={ "/admin/staff/" (user.id) "/role" } {
                (hidden_field(&staff))
                label for="role" { "Role" }
                select #role name="role" { (role_options(user.role)) }
                button type="submit" { "Change role" }
            }
            h2 { "Access" }
            @if user.disabled {
                form method="post" action={ "/admin/staff/" (user.id) "/enable" } {
                    (hidden_field(&staff))
                    button type="submit" { "Enable" }
                }
            } @else {
                form method="post" action={ "/admin/staff/" (user.id) "/disable" } data-confirm={ "Disable " (user.name) "? Their sessions end at once." } {
                    (hidden_field(&staff))
                    button.danger type="submit" { "Disable" }
                }
            }
            h2 { "Reset the password" }
            p { "Ends every session of the user." }
            form.stack method="post" action={ "/admin/staff/" (user.id) "/reset-password" } {
                (hidden_field(&staff))
                (password_choice("reset"))
                button type="submit" { "Reset the password" }
            }
        }
        p { a href={ "/admin/audit?target=staff_user:" (user.id) } { "Audit trail" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Staff, &user.name, body)))
}

/// Runs a change to another user (never the admin's own account) and redirects to their page.
async fn change_other(
    state: &AppState,
    f: &StaffForm,
    id: &str,
    action: &str,
    sessions: Sessions,
    change: impl Fn(&mut StaffUser) -> Result<(), StaffChangeError>,
) -> PortalResult<StaffUser> {
    f.staff.require(PortalAction::ManageStaff)?;
    if id == f.staff.user.id {
        return Err(AppError::invalid("change your own account on your account page").into());
    }
    let actor = staff_actor(&f.staff.user.id);
    update_staff_user(state.store(), state.clock(), StaffLookup::Id(id), &actor, action, sessions, change)
        .await
        .map_err(change_error)
}

pub async fn change_role(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageStaff)?;
    let role = parse_role(&f.form)?;
    // The role is read on every request, so the new one applies at once; sessions stay.
    change_other(&state, &f, &id, "staff_user.change_role", Sessions::Keep, |u| {
        u.role = role;
        Ok(())
    })
    .await?;
    Ok(Redirect::to(&format!("/admin/staff/{id}?done=role")).into_response())
}

pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageStaff)?;
    change_other(&state, &f, &id, "staff_user.disable", Sessions::End, |u| {
        u.disabled = true;
        Ok(())
    })
    .await?;
    Ok(Redirect::to(&format!("/admin/staff/{id}?done=disable")).into_response())
}

pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageStaff)?;
    change_other(&state, &f, &id, "staff_user.enable", Sessions::Keep, |u| {
        u.disabled = false;
        Ok(())
    })
    .await?;
    Ok(Redirect::to(&format!("/admin/staff/{id}?done=enable")).into_response())
}

pub async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageStaff)?;
    let (password, generated) = chosen_password(&f.form)?;
    // Hashed once, before the store round trips, so a retried update reuses it.
    let password_hash = hash_password(&password).map_err(|e| AppError::invalid(e.to_string()))?;
    let user = change_other(&state, &f, &id, "staff_user.reset_password", Sessions::End, |u| {
        u.password_hash = password_hash.clone();
        Ok(())
    })
    .await?;
    Ok(password_once_page(&f.staff, &user, "Password reset", generated.then_some(password.as_str())))
}
