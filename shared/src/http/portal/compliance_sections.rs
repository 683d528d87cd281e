//! The compliance flags (issue 12) in the portal: on a license's page its flagged days with
//! the evidence, on the dashboard the licenses flagged lately. Information for staff only: a
//! flag never suspends anything, and these sections offer no action. They read the same store
//! records as `GET /v1/licenses/{id}/compliance` and `GET /v1/compliance`.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use maud::{Markup, html};

use crate::http::AppState;
use crate::http::app_error::AppError;
use crate::http::portal::layout::date_time;
use crate::validation_stats::{ComplianceFlag, ComplianceFlagKind, ComplianceRecord, DistinctKind, day_key};

/// Days of a license's history its page shows flags for.
pub const LICENSE_FLAG_DAYS: i64 = 30;
/// Days the dashboard's list reaches back, and the most licenses it shows.
pub const DASHBOARD_FLAG_DAYS: i64 = 7;
pub const DASHBOARD_FLAGGED_LICENSES: usize = 10;
/// Flagged license-days read for the dashboard (several days of one license fold into a row).
const DASHBOARD_RECORDS_READ: usize = 200;

fn flag_label(kind: ComplianceFlagKind) -> &'static str {
    match kind {
        ComplianceFlagKind::TooManyFingerprints => "More machine fingerprints than seats allow",
        ComplianceFlagKind::TooManyClientIps => "More client addresses than seats allow",
        ComplianceFlagKind::RepeatedTooManyDeployments => "Repeated TOO_MANY_DEPLOYMENTS refusals",
        ComplianceFlagKind::RepeatedActivationRateLimited => "Repeated ACTIVATION_RATE_LIMITED refusals",
        ComplianceFlagKind::TooManyCountries => "Validations from too many countries",
    }
}

fn kind_label(kind: DistinctKind) -> &'static str {
    match kind {
        DistinctKind::Deployment => "Deployment",
        DistinctKind::Fingerprint => "Fingerprint",
        DistinctKind::ClientIp => "Client IP",
        DistinctKind::Country => "Country",
    }
}

/// The heading of a kind's distinct count ("Distinct client IPs").
fn distinct_label(kind: DistinctKind) -> &'static str {
    match kind {
        DistinctKind::Deployment => "Distinct deployments",
        DistinctKind::Fingerprint => "Distinct fingerprints",
        DistinctKind::ClientIp => "Distinct client IPs",
        DistinctKind::Country => "Distinct countries",
    }
}

/// "at least" when values past the store's bound were counted but not kept.
fn distinct_text(record: &ComplianceRecord, kind: DistinctKind) -> String {
    let d = record.evidence.distinct.get(&kind);
    let n = d.map_or(0, |d| d.distinct);
    if d.is_some_and(|d| d.untracked > 0) { format!("at least {n}") } else { n.to_string() }
}

/// The flags of one day, as a table.
fn flags_table(day: &str, flags: &[ComplianceFlag]) -> Markup {
    html! {
        table.compliance-flags {
            caption { "Flags on " (day) }
            thead { tr { th scope="col" { "Flag" } th scope="col" { "Observed" } th scope="col" { "Threshold" } } }
            tbody { @for f in flags { tr {
                td { (flag_label(f.kind)) } td { (f.observed) } td { (f.threshold) }
            } } }
        }
    }
}

/// One flagged day: its flags, the day's counts and the most frequent values.
fn flagged_day(record: &ComplianceRecord) -> Markup {
    let day = day_key(record.day);
    let e = &record.evidence;
    html! {
        section.compliance-day aria-labelledby={ "compliance-" (day) } {
            h3 #{ "compliance-" (day) } { (day) }
            (flags_table(&day, &record.flags))
            dl.facts {
                dt { "Validations" } dd {
                    (e.validations())
                    @for (code, n) in &e.by_code { " " code { (code) "=" (n) } }
                }
                @for kind in DistinctKind::ALL {
                    dt { (distinct_label(kind)) } dd { (distinct_text(record, kind)) }
                }
                dt { "First seen" } dd { (date_time(e.first_seen)) }
                dt { "Last seen" } dd { (date_time(e.last_seen)) }
            }
            table.compliance-evidence {
                caption { "Most frequent values on " (day) }
                thead { tr { th scope="col" { "Kind" } th scope="col" { "Value" } th scope="col" { "Validations" }
                    th scope="col" { "First seen" } th scope="col" { "Last seen" } } }
                tbody {
                    @for kind in [DistinctKind::ClientIp, DistinctKind::Fingerprint, DistinctKind::Country, DistinctKind::Deployment] {
                        @if let Some(values) = e.distinct.get(&kind) { @for v in &values.top { tr {
                            td { (kind_label(kind)) } td.mono { (v.value) } td { (v.count) }
                            td { (date_time(v.first_seen)) } td { (date_time(v.last_seen)) }
                        } } }
                    }
                }
            }
        }
    }
}

/// The license page's section: its flagged days of the last [`LICENSE_FLAG_DAYS`], newest first.
pub async fn license_section(state: &AppState, license_id: &str) -> Result<Markup, AppError> {
    // Reads the origin's own events too, as the JSON route does.
    if let Err(e) = state.flush_validation_events().await {
        tracing::warn!(error = %e, "could not flush validation events before reading compliance");
    }
    let since = state.now().date_naive() - Duration::days(LICENSE_FLAG_DAYS);
    let records = state.store().list_compliance_records(license_id, since).await?;
    let flagged: Vec<&ComplianceRecord> = records.iter().filter(|r| r.flagged()).collect();
    Ok(html! {
        section #compliance aria-labelledby="compliance-heading" {
            h2 #compliance-heading { "Compliance flags" }
            p.hint { "Signals of possible key sharing, for staff to look into. A flag never suspends a license." }
            @if flagged.is_empty() { p.muted { "No flags in the last " (LICENSE_FLAG_DAYS) " days." } }
            @for record in &flagged { (flagged_day(record)) }
        }
    })
}

/// One dashboard row: a license's newest flagged day and how many days were flagged.
struct FlaggedLicense<'a> {
    newest: &'a ComplianceRecord,
    days: usize,
}

/// The dashboard's section: licenses flagged in the last [`DASHBOARD_FLAG_DAYS`], most recent
/// first, at most [`DASHBOARD_FLAGGED_LICENSES`].
pub async fn dashboard_section(state: &AppState) -> Result<Markup, AppError> {
    let today: NaiveDate = state.now().date_naive();
    let since = today - Duration::days(DASHBOARD_FLAG_DAYS);
    let records = state.store().list_flagged_compliance(since, today, DASHBOARD_RECORDS_READ).await?;
    // Newest day first from the store: the first record of a license is its newest.
    let mut order: Vec<&str> = Vec::new();
    let mut by_license: BTreeMap<&str, FlaggedLicense> = BTreeMap::new();
    for r in &records {
        by_license.entry(&r.license_id).and_modify(|f| f.days += 1).or_insert_with(|| {
            order.push(&r.license_id);
            FlaggedLicense { newest: r, days: 1 }
        });
    }
    let shown: Vec<&FlaggedLicense> =
        order.iter().take(DASHBOARD_FLAGGED_LICENSES).filter_map(|id| by_license.get(id)).collect();
    Ok(html! {
        h2 #flagged-heading { "Flagged licenses" }
        @if shown.is_empty() { p.muted { "No license flagged in the last " (DASHBOARD_FLAG_DAYS) " days." } } @else {
            table #flagged-licenses aria-labelledby="flagged-heading" {
                thead { tr { th scope="col" { "License" } th scope="col" { "Latest flagged day" }
                    th scope="col" { "Flags that day" } th scope="col" { "Days flagged" } } }
                tbody { @for f in &shown { tr {
                    td { a.mono href={ "/admin/licenses/" (f.newest.license_id) "#compliance" } { (f.newest.license_id) } }
                    td { (day_key(f.newest.day)) }
                    td { @for (i, flag) in f.newest.flags.iter().enumerate() {
                        @if i > 0 { "; " } (flag_label(flag.kind))
                    } }
                    td { (f.days) }
                } } }
            }
            @if order.len() > shown.len() {
                p.hint { (order.len() - shown.len()) " more flagged license(s) in the last " (DASHBOARD_FLAG_DAYS) " days." }
            }
        }
        p.hint { "Flags are information for staff, never an automatic suspension." }
    })
}
