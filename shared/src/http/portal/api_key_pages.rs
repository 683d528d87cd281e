//! API keys (admin only): the list, a form to create a key with its scopes (the secret is shown
//! once, with a copy button, in the answer to the POST: never in a URL), and revoking. Both
//! changes go through `api_key_routes::{create, revoke}`, as in the JSON API, audited as the
//! staff user.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use crate::http::AppState;
use crate::http::api_key_routes;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::portal::access::PortalAction;
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::layout::{DoneParams, Section, date_time, error_box, html_response, notice, page};
use crate::http::portal::portal_error::{PortalError, PortalResult};
use crate::http::portal::session_auth::Staff;
use crate::http::wire::{ApiKeyView, CreateApiKeyRequest};
use crate::model::Scope;

/// What each scope lets a key do, for the form.
fn scope_hint(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read the admin API",
        Scope::Write => "read and change licenses and customers",
        Scope::Admin => "everything, including API keys",
        Scope::RegistryPush => "push images through the registry token service",
        Scope::Edge => "the edges' service token (alone only)",
        Scope::Meter => "a cloud service's metering key: posts call counts only (alone only)",
    }
}

async fn list_page(
    state: &AppState,
    staff: &Staff,
    status: StatusCode,
    top: Markup,
    name: &str,
) -> PortalResult<Response> {
    let mut keys: Vec<ApiKeyView> =
        state.store().list_api_keys().await?.iter().map(ApiKeyView::from).collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    let body = html! {
        (top)
        h1 { "API keys" }
        p { "Programs call the admin API with these keys. A key's secret is shown once, when it is made; NLS keeps only its hash." }
        table {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Scopes" }
                th scope="col" { "Created" } th scope="col" { "Status" } th scope="col" { "Action" }
            } }
            tbody { @for k in &keys { tr {
                td { (k.name) }
                td.mono { (k.id) }
                td { (k.scopes.join(", ")) }
                td { (date_time(k.created_at)) }
                td { @match k.revoked_at {
                    Some(at) => { span.badge.status-revoked { "revoked" } " " (date_time(at)) }
                    None => { span.badge.status-active { "active" } }
                } }
                td { @if k.revoked_at.is_none() {
                    form method="post" action={ "/admin/api-keys/" (k.id) "/revoke" } data-confirm={ "Revoke the key " (k.name) "? Programs using it stop working at once." } {
                        (hidden_field(staff))
                        button.danger type="submit" aria-label={ "Revoke " (k.name) } { "Revoke" }
                    }
                } }
            } } }
        }
        h2 { "New API key" }
        form.stack method="post" action="/admin/api-keys" {
            (hidden_field(staff))
            label for="name" { "Name (who or what uses it)" }
            input #name type="text" name="name" value=(name) maxlength="100" required;
            fieldset {
                legend { "Scopes" }
                @for scope in Scope::ALL {
                    label { input type="checkbox" name="scopes" value=(scope.as_str()); " " code { (scope.as_str()) } ": " (scope_hint(scope)) }
                }
            }
            button type="submit" { "Create key" }
        }
    };
    Ok(html_response(status, page(Some(staff), Section::ApiKeys, "API keys", body)))
}

pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    QueryParams(params): QueryParams<DoneParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::ManageApiKeys)?;
    let done = (params.done.as_deref() == Some("revoke")).then_some("The key is revoked.");
    list_page(&state, &staff, StatusCode::OK, notice(done), "").await
}

pub async fn create(State(state): State<AppState>, f: StaffForm) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageApiKeys)?;
    let request = CreateApiKeyRequest {
        name: f.form.get("name").unwrap_or("").to_owned(),
        scopes: f.form.all("scopes"),
    };
    let created = match api_key_routes::create(&state, &f.staff.caller(), &request).await {
        Ok(created) => created,
        // A refused form comes back with its message and the name kept.
        Err(AppError::InvalidRequest(message)) => {
            let top = error_box(Some(&message));
            return list_page(&state, &f.staff, StatusCode::BAD_REQUEST, top, &request.name).await;
        }
        Err(e) => return Err(PortalError::App(e)),
    };
    let key = &created.api_key;
    let body = html! {
        h1 { "API key created" }
        div.keybox {
            p { strong { "Copy the secret now: it is shown only once." } " NLS keeps only its hash." }
            pre #api-key-secret.mono { (created.secret) }
            button #copy-secret type="button" data-copy="api-key-secret" hidden { "Copy secret" }
        }
        dl.facts {
            dt { "Name" } dd { (key.name) }
            dt { "Id" } dd.mono { (key.id) }
            dt { "Scopes" } dd { (key.scopes.join(", ")) }
        }
        p { "Programs send it as " code { "Authorization: Bearer <secret>" } "." }
        p { a href="/admin/api-keys" { "Back to the API keys" } }
    };
    Ok(html_response(StatusCode::OK, page(Some(&f.staff), Section::ApiKeys, "API key created", body)))
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ManageApiKeys)?;
    api_key_routes::revoke(&state, &f.staff.caller(), &id).await?;
    Ok(Redirect::to("/admin/api-keys?done=revoke").into_response())
}
