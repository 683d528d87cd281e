//! System (every role): is the store reachable (one cheap read, timed), the license-signing
//! key ids (the signer and every key still trusted) and the registry token key's, the status
//! push to the edges as this process saw it, the renewals job's last run (its `renewals.run`
//! record in the audit log), and the version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use crate::http::AppState;
use crate::http::portal::access::PortalAction;
use crate::http::portal::layout::{Section, date_time, html_response, page};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::ports::{AuditFilter, PageRequest};
use crate::renewals::RUN_RECORD_TARGET;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub async fn system(State(state): State<AppState>, staff: Staff) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    // A point read of an id no license has: the cheapest call every store answers.
    let probe = state.store().get_license("lic_system_page_probe").await;
    let store_error = probe.err().map(|e| e.to_string());

    let ring = state.key_ring();
    let signer_kid = ring.signer().map(|k| k.kid.clone());
    let trusted: Vec<String> = ring.jwks().keys.into_iter().filter_map(|k| k.kid).collect();
    let registry_kid = state.registry().map(|r| r.key().kid().to_owned());
    let (pushes_configured, last_push) = state.edge_push_status();
    let (pushed, push_failed) = state.metrics().snapshot_pushes();

    let run_filter = AuditFilter { target: Some(RUN_RECORD_TARGET.to_owned()), ..AuditFilter::default() };
    // A store that does not answer is already shown above.
    let last_run = state
        .store()
        .list_audit(&run_filter, &PageRequest::first(1))
        .await
        .ok()
        .and_then(|p| p.items.into_iter().next());

    let body = html! {
        h1 { "System" }
        h2 { "Store" }
        dl.facts #store-status {
            dt { "Reachable" }
            dd { @match &store_error {
                None => { span.badge.status-active { "yes" } }
                Some(e) => { span.badge.status-suspended { "no" } " " (e) }
            } }
        }
        h2 { "Signing keys" }
        dl.facts #signing-keys {
            dt { "License keys are signed with" }
            dd.mono { (signer_kid.as_deref().unwrap_or("no signing key: this host only verifies")) }
            dt { "Trusted to verify" }
            dd { ul { @for kid in &trusted { li.mono { (kid) @if Some(kid) == signer_kid.as_ref() { " (current)" } } } } }
            dt { "Registry tokens" }
            dd.mono { (registry_kid.as_deref().unwrap_or("the registry token service is off on this host")) }
        }
        h2 { "Status push to the edges" }
        dl.facts #edge-push {
            dt { "Pushes" }
            dd { @if pushes_configured { "on" } @else { "off: no edge push target is configured on this host" } }
            @if pushes_configured {
                dt { "This process so far" } dd { (pushed) " pushed, " (push_failed) " failed" }
                dt { "Last push" }
                dd { @match &last_push {
                    None => { "none since this process started" }
                    Some(p) => {
                        (date_time(p.at)) ", license " span.mono { (p.license_id) } ": "
                        @match &p.error { None => { "pushed" } Some(e) => { "failed (" (e) ")" } }
                    }
                } }
            }
        }
        p.muted { "Pushes are counted per server process (each Lambda instance keeps its own); " code { "/metrics" } " and the logs have them all." }
        h2 { "Renewals job" }
        dl.facts #renewals-run {
            dt { "Last run" }
            dd { @match &last_run {
                None => { "no run recorded" }
                Some(entry) => {
                    (date_time(entry.at))
                    @if let Some(after) = &entry.after {
                        ": " (after.get("examined").and_then(|v| v.as_u64()).unwrap_or(0)) " licenses examined, "
                        (after.get("sent").and_then(|v| v.as_u64()).unwrap_or(0)) " notices sent, "
                        (after.get("failures").and_then(|v| v.as_u64()).unwrap_or(0)) " failures"
                    }
                }
            } }
        }
        h2 { "Version" }
        p #version { "NLS " (VERSION) }
    };
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::System, "System", body)))
}
