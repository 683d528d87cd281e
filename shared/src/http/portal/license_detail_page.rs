//! One license: status and terms, its actions, deployments (release one), usage by metric
//! with a chart per month, validations, compliance flags, the emails sent and the audit trail. The actions call
//! the same functions as the JSON API (`license_routes`), or `staff_license_actions` for the
//! two the license-key API has no admin form of; each is audited as the staff user.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Datelike, Months, NaiveDate};
use maud::{Markup, html};

use crate::http::AppState;
use crate::http::app_error::{AppError, QueryParams};
use crate::http::license_routes::{self, DEFAULT_OFFLINE_FILE_DAYS, MAX_OFFLINE_FILE_DAYS};
use crate::http::portal::access::PortalAction;
use crate::http::portal::audit_pages::audit_table;
use crate::http::portal::compliance_sections;
use crate::http::portal::csrf::{StaffForm, hidden_field};
use crate::http::portal::layout::{
    DoneParams, Section, date, date_time, html_response, notice, page, status_badge,
};
use crate::http::portal::portal_error::PortalResult;
use crate::http::portal::session_auth::Staff;
use crate::http::portal::svg_chart::{Series, stacked_bars};
use crate::http::staff_license_actions;
use crate::http::wire::{DeploymentView, NotificationView, OfflineFileRequest};
use crate::lifecycle::LicenseStatus;
use crate::model::{License, Timestamp, UsagePeriod};
use crate::ports::{AuditFilter, PageRequest};

/// Months of usage the charts show (one store read each).
pub const USAGE_MONTHS: u32 = 6;

/// The notice after a change; a fixed text per action, never the query's own text.
fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "suspend" => "License suspended.",
        "reactivate" => "License reactivated.",
        "renew" => "License renewed.",
        "revoke" => "License revoked.",
        "edit" => "License updated.",
        "release" => "Deployment released: its seat is free.",
        "resend" => "Key email sent to the customer.",
        _ => return None,
    })
}

fn action_form(
    staff: &Staff,
    id: &str,
    action: &str,
    label: &str,
    confirm: Option<&str>,
    class: &str,
) -> Markup {
    html! {
        form method="post" action={ "/admin/licenses/" (id) "/" (action) } data-confirm=[confirm] {
            (hidden_field(staff))
            button class=(class) type="submit" { (label) }
        }
    }
}

fn actions(staff: &Staff, l: &License, can_mail: bool) -> Markup {
    let live = matches!(l.status, LicenseStatus::Active | LicenseStatus::PastDue);
    let revoked = l.status == LicenseStatus::Revoked;
    let resendable = !matches!(l.status, LicenseStatus::Revoked | LicenseStatus::Expired);
    html! {
        div.actions {
            @if live && staff.can(PortalAction::SuspendLicense) {
                (action_form(staff, &l.id, "suspend", "Suspend", Some("Suspend this license? Its installs stop validating."), "secondary"))
            }
            @if l.status == LicenseStatus::Suspended && staff.can(PortalAction::ReactivateLicense) {
                (action_form(staff, &l.id, "reactivate", "Reactivate", None, "secondary"))
            }
            @if can_mail && resendable && staff.can(PortalAction::ResendKeyEmail) {
                (action_form(staff, &l.id, "resend-key", "Resend key email", Some("Email the license key to the customer again?"), "secondary"))
            }
            @if !revoked && staff.can(PortalAction::RenewLicense) {
                form method="post" action={ "/admin/licenses/" (l.id) "/renew" } {
                    (hidden_field(staff))
                    div { label for="renew-until" { "New expiry" }
                        input #renew-until type="date" name="expires_on" required; }
                    button.secondary type="submit" { "Renew" }
                }
            }
            @if !revoked && staff.can(PortalAction::EditLicense) {
                a.button href={ "/admin/licenses/" (l.id) "/edit" } { "Edit terms" }
            }
            @if !revoked && staff.can(PortalAction::RevokeLicense) {
                form method="post" action={ "/admin/licenses/" (l.id) "/revoke" }
                    data-confirm="Revoke this license for good? This cannot be undone." {
                    (hidden_field(staff))
                    label { input type="checkbox" name="confirm" value="yes" required; " I understand revoking is final" }
                    button.danger type="submit" { "Revoke" }
                }
            }
        }
        @if live && staff.can(PortalAction::DownloadOfflineFile) {
            form.offline method="post" action={ "/admin/licenses/" (l.id) "/offline-file" } {
                (hidden_field(staff))
                div { label for="ttl_days" { "Offline file valid for (days)" }
                    input #ttl_days type="number" name="ttl_days" min="1" max=(MAX_OFFLINE_FILE_DAYS) value=(DEFAULT_OFFLINE_FILE_DAYS); }
                div { label for="fingerprint" { "Bind to machine fingerprint (optional)" }
                    input #fingerprint type="text" name="fingerprint"; }
                button.secondary type="submit" { "Download offline license file" }
            }
        }
    }
}

/// The first day of the month `back` months before the month of `now`, as a period key.
fn month_key(now: Timestamp, back: u32) -> String {
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default();
    let month = first.checked_sub_months(Months::new(back)).unwrap_or(first);
    format!("{:04}-{:02}", month.year(), month.month())
}

/// Usage per metric over the last [`USAGE_MONTHS`] months (oldest first): one bar chart per
/// metric, its limit in the title.
async fn usage_section(state: &AppState, l: &License, now: Timestamp) -> Result<Markup, AppError> {
    let months: Vec<String> = (0..USAGE_MONTHS).rev().map(|back| month_key(now, back)).collect();
    let mut by_metric: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for (i, month) in months.iter().enumerate() {
        for (metric, used) in state.store().usage_counters(&l.id, month).await? {
            by_metric.entry(metric).or_insert_with(|| vec![0; months.len()])[i] = used;
        }
    }
    let current = UsagePeriod::month_of(now).key();
    Ok(html! {
        @if by_metric.is_empty() { p.muted { "No usage reported in the last " (USAGE_MONTHS) " months." } } @else {
            table {
                caption.muted { "This month (" (current) ")" }
                thead { tr { th scope="col" { "Metric" } th scope="col" { "Used" } th scope="col" { "Limit" } } }
                tbody { @for (metric, per_month) in &by_metric { tr {
                    td { (metric) } td { (per_month.last().copied().unwrap_or(0)) }
                    td { (l.limits.get(metric).map_or("none".to_owned(), |n| n.to_string())) }
                } } }
            }
            div.charts {
                @for (i, (metric, per_month)) in by_metric.iter().enumerate() {
                    @let title = match l.limits.get(metric) {
                        Some(limit) => format!("{metric} per month (limit {limit})"),
                        None => format!("{metric} per month"),
                    };
                    (stacked_bars(&format!("usage-{i}"), &title, &months, &[Series { name: String::new(), values: per_month.clone() }]))
                }
            }
        }
    })
}

pub async fn detail(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    QueryParams(params): QueryParams<DoneParams>,
) -> PortalResult<Response> {
    staff.require(PortalAction::Read)?;
    let l = license_routes::load(&state, &id).await?;
    let now = state.now();
    let customer = state.store().get_customer(&l.customer_id).await?;
    let deployments: Vec<DeploymentView> =
        state.store().list_deployments(&id).await?.iter().map(|d| DeploymentView::new(d, now)).collect();
    let usage = usage_section(&state, &l, now).await?;
    let validations = license_routes::validation_history(&state, &id, 20).await?;
    let compliance = compliance_sections::license_section(&state, &id).await?;
    let notifications: Vec<NotificationView> =
        state.store().list_notifications(&id).await?.iter().map(NotificationView::from).collect();
    let trail_filter = AuditFilter { target: Some(format!("license:{id}")), ..AuditFilter::default() };
    let trail = state.store().list_audit(&trail_filter, &PageRequest::first(20)).await?;
    let can_mail = state.mailer().is_some();
    let release = staff.can(PortalAction::ReleaseDeployment);
    let body = html! {
        (notice(done_notice(params.done.as_deref())))
        h1 { "License " span.mono { (l.id) } " " (status_badge(l.status.as_str())) }
        (actions(&staff, &l, can_mail))
        dl.facts {
            dt { "Customer" }
            dd { @match &customer {
                Some(c) => { a href={ "/admin/customers/" (c.id) } { (c.name) } " " span.muted { (c.email) } }
                None => { span.mono { (l.customer_id) } }
            } }
            dt { "Tier" } dd { (l.tier) }
            dt { "Features" } dd { @if l.features.is_empty() { span.muted { "none" } } @else { (l.features.join(", ")) } }
            dt { "Limits" } dd {
                @if l.limits.is_empty() { span.muted { "none" } }
                @for (metric, n) in &l.limits { code { (metric) "=" (n) } " " }
            }
            dt { "Max deployments" } dd { (l.max_deployments.map_or("unlimited".to_owned(), |n| n.to_string())) }
            dt { "Expires" } dd { (date(l.expires_at, "never (perpetual)")) }
            @if let Some(grace) = l.grace_ends_at { dt { "Grace ends" } dd { (date_time(grace)) } }
            dt { "Offline / grace days" } dd { (l.offline_days) " / " (l.grace_days) }
            dt { "Key" } dd {
                span.mono { (l.key_id) }
                p.hint #key-hint {
                    "NLS keeps only the key's id, never the key: it was shown once, when it was issued. "
                    @if can_mail { "To give the customer their key again, use " strong { "Resend key email" } "." }
                    @else { "This host has no mailer, so the key cannot be emailed from here." }
                }
            }
            @if let Some(sub) = &l.stripe_subscription_id {
                dt { "Stripe subscription" }
                dd { a.mono href={ "https://dashboard.stripe.com/subscriptions/" (sub) } rel="noopener noreferrer" { (sub) } }
            }
            dt { "Created" } dd { (date_time(l.created_at)) }
            dt { "Updated" } dd { (date_time(l.updated_at)) " (version " (l.version) ")" }
        }
        h2 { "Deployments" }
        @if deployments.is_empty() { p.muted { "No deployments." } } @else {
            table #deployments {
                thead { tr { th scope="col" { "Deployment" } th scope="col" { "Seat" } th scope="col" { "Version" }
                    th scope="col" { "Activated" } th scope="col" { "Last heartbeat" } th scope="col" { "Lease ends" }
                    @if release { th scope="col" { "Action" } } } }
                tbody { @for d in &deployments { tr {
                    td.mono { (d.deployment_id) }
                    td { @if d.live { "live" } @else { "released" } }
                    td { (d.app_version.as_deref().unwrap_or("")) }
                    td { (date_time(d.activated_at)) } td { (date_time(d.last_heartbeat_at)) } td { (date_time(d.lease_expires_at)) }
                    @if release { td { @if d.live {
                        form method="post" action={ "/admin/licenses/" (l.id) "/deployments/release" }
                            data-confirm="Release this deployment? Its seat becomes free; the install must validate again." {
                            (hidden_field(&staff))
                            input type="hidden" name="deployment_id" value=(d.deployment_id);
                            button.secondary type="submit" aria-label={ "Release deployment " (d.deployment_id) } { "Release" }
                        }
                    } } }
                } } }
            }
        }
        h2 { "Usage" }
        (usage)
        h2 { "Latest validations" }
        @if validations.is_empty() { p.muted { "No validations yet." } } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Code" } th scope="col" { "Deployment" } th scope="col" { "Client IP" } } }
                tbody { @for v in &validations { tr {
                    td { (date_time(v.at)) } td { code { (v.code) } }
                    td.mono { (v.deployment_id.as_deref().unwrap_or("")) } td.mono { (v.client_ip.as_deref().unwrap_or("")) }
                } } }
            }
        }
        (compliance)
        h2 { "Emails sent" }
        @if notifications.is_empty() { p.muted { "No emails." } } @else {
            table #notifications {
                thead { tr { th scope="col" { "Notice" } th scope="col" { "Subject" } th scope="col" { "To" } th scope="col" { "State" } th scope="col" { "Sent" } } }
                tbody { @for n in &notifications { tr {
                    td { (n.notice) } td { (n.subject) } td { (n.recipient) } td { (n.state) }
                    td { (n.sent_at.map(date_time).unwrap_or_default()) }
                } } }
            }
        }
        h2 { "Audit trail" }
        (audit_table(&trail.items))
        p { a href={ "/admin/audit?target=license:" (l.id) } { "Full audit trail" } }
    };
    let title = format!("License {}", l.id);
    Ok(html_response(StatusCode::OK, page(Some(&staff), Section::Licenses, &title, body)))
}

pub async fn release_deployment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ReleaseDeployment)?;
    let deployment_id = f.form.require("deployment_id")?;
    staff_license_actions::release_deployment(&state, &f.staff.caller(), &id, deployment_id).await?;
    Ok(Redirect::to(&format!("/admin/licenses/{id}?done=release")).into_response())
}

pub async fn resend_key_email(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::ResendKeyEmail)?;
    staff_license_actions::resend_key_email(&state, &f.staff.caller(), &id).await?;
    Ok(Redirect::to(&format!("/admin/licenses/{id}?done=resend")).into_response())
}

/// The signed offline license file as a download (`<license id>.nls-offline.json`: the
/// `file` object of `POST /v1/licenses/{id}/offline-file`, docs/offline-license-file.md).
pub async fn offline_file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    f: StaffForm,
) -> PortalResult<Response> {
    f.staff.require(PortalAction::DownloadOfflineFile)?;
    let ttl_days = f
        .form
        .get("ttl_days")
        .map(|v| v.parse::<u32>().map_err(|_| AppError::invalid("`ttl_days` must be a whole number")))
        .transpose()?;
    let request = OfflineFileRequest { ttl_days, fingerprint: f.form.get("fingerprint").map(str::to_owned) };
    let issued = license_routes::offline_file(&state, &f.staff.caller(), &id, request).await?;
    let body = serde_json::to_vec_pretty(&issued.file).map_err(|e| AppError::Internal(e.to_string()))?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The id went through `load`, so it is a stored license id: safe in a header.
    let disposition = format!("attachment; filename=\"{id}.nls-offline.json\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn month_keys_count_back_across_a_year() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 2, 28, 23, 0, 0).unwrap();
        let keys: Vec<String> = (0..4).map(|b| month_key(now, b)).collect();
        assert_eq!(keys, ["2026-02", "2026-01", "2025-12", "2025-11"]);
    }
}
