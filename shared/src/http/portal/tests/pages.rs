//! The license detail actions, customer edits, dashboard and renewal pipeline through the
//! whole router: each action is refused for the role below the one the table names, refused
//! without the form's CSRF token, and audited as the staff user when it runs.

use super::*;

use crate::billing::PlanCatalogue;
use crate::billing::scenarios::{MailFailure, RecordingMailer};
use crate::email::expiry_window;
use crate::http::ClientIp;
use crate::lifecycle::LicenseStatus;
use crate::model::{NotificationKey, NotificationRecord, NotificationState};
use crate::ports::{DeploymentStore, NotificationStore};
use crate::receipt::{OfflineLicenseFile, verify_offline_file};

const PLANS: &str = r#"{"plans":[{"stripe_price":"price_pro","tier":"pro","amount":4900,"currency":"eur"}]}"#;

/// A portal whose host has a (recording) mailer and a priced plan catalogue.
fn portal_with_mailer() -> (Portal, Arc<RecordingMailer>, Arc<KeyRing>) {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()));
    let ring = Arc::new(KeyRing::with_signer(SigningKey::from_seed([7; 32], None), vec![]).unwrap());
    let mailer = Arc::new(RecordingMailer::new());
    let state = AppState::new(AppDeps {
        store: store.clone(),
        key_ring: ring.clone(),
        clock: clock.clone(),
        config: HttpConfig::default(),
    })
    .with_mailer(mailer.clone())
    .with_plans(PlanCatalogue::parse(PLANS).unwrap());
    (Portal { app: router(state), store, clock }, mailer, ring)
}

impl Portal {
    /// `POST /v1/licenses/validate`; returns the code.
    async fn validate(&self, key: &str, deployment_id: &str) -> String {
        let body = serde_json::json!({ "key": key, "deployment_id": deployment_id }).to_string();
        let mut req = Request::post("/v1/licenses/validate")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
        let response = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        answer["code"].as_str().unwrap().to_owned()
    }

    /// Whether the audit log holds `action` on `target` by `user`.
    async fn audited(&self, user: &StaffUser, action: &str, target: &str) -> bool {
        let filter = AuditFilter {
            actor: Some(format!("staff:{}", user.id)),
            target: Some(target.to_owned()),
            ..AuditFilter::default()
        };
        let log = self.store.list_audit(&filter, &PageRequest::first(100)).await.unwrap();
        log.items.iter().any(|e| e.action == action)
    }

    async fn live_deployments(&self, license_id: &str) -> Vec<String> {
        let now = self.clock.now();
        let all = self.store.list_deployments(license_id).await.unwrap();
        all.into_iter().filter(|d| d.is_live(now)).map(|d| d.deployment_id).collect()
    }

    /// Changes a stored license directly (a state the portal cannot make by itself).
    async fn alter_license(&self, id: &str, change: impl FnOnce(&mut crate::model::License)) {
        let before = self.store.get_license(id).await.unwrap().unwrap();
        let mut after = before.clone();
        change(&mut after);
        after.version += 1;
        let write = Write::UpdateLicense { license: after, expected_version: before.version };
        self.store.commit(None, vec![write]).await.unwrap();
    }
}

/// Checks a POST that `allowed` may make and `below` may not: `below` is refused with 403,
/// `allowed` with a wrong token is refused with 403, and neither leaves an audit entry.
async fn refused_below_and_without_token(
    p: &Portal,
    path: &str,
    fields: &[(&str, &str)],
    below: &str,
    allowed: &str,
) {
    let detail_of = |cookie: &str| {
        let cookie = cookie.to_owned();
        async move { p.get("/admin/", &cookie).await.csrf() }
    };
    let below_csrf = detail_of(below).await;
    let refused = p.post(path, below, &below_csrf, fields).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}: the role below is refused");
    let forged = p.post(path, allowed, "not-the-token", fields).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{path}: a wrong CSRF token is refused");
}

#[tokio::test]
async fn support_releases_a_deployment_a_viewer_cannot_and_the_release_is_audited() {
    let p = portal();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    let support = p.staff("sue@nectar.example", StaffRole::Support).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ann@nectar.example").await;
    let (id, key) = p.license_via_wizard(&admin, "Acme").await;
    assert_eq!(p.validate(&key, "host-1").await, "VALID");
    assert_eq!(p.live_deployments(&id).await, ["host-1"]);

    let viewer = p.session("vic@nectar.example").await;
    let seen = p.get(&format!("/admin/licenses/{id}"), &viewer).await;
    assert!(seen.body.contains("host-1") && !seen.body.contains(">Release<"), "a viewer sees no Release");
    let sue = p.session("sue@nectar.example").await;
    let path = format!("/admin/licenses/{id}/deployments/release");
    refused_below_and_without_token(&p, &path, &[("deployment_id", "host-1")], &viewer, &sue).await;
    assert_eq!(p.live_deployments(&id).await, ["host-1"], "nothing was released");

    let page = p.get(&format!("/admin/licenses/{id}"), &sue).await;
    assert!(page.body.contains("aria-label=\"Release deployment host-1\""), "{}", page.body);
    let released = p.post(&path, &sue, &page.csrf(), &[("deployment_id", "host-1")]).await;
    assert_eq!(
        (released.status, released.location()),
        (StatusCode::SEE_OTHER, &*format!("/admin/licenses/{id}?done=release"))
    );
    assert!(p.live_deployments(&id).await.is_empty(), "the seat is free");
    assert!(p.audited(&support, "license.deployment_release", &format!("license:{id}")).await);
    let again = p.post(&path, &sue, &page.csrf(), &[("deployment_id", "host-1")]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "no live seat to release");
    let after = p.get(&format!("/admin/licenses/{id}?done=release"), &sue).await;
    assert!(after.body.contains("Deployment released") && after.body.contains("license.deployment_release"));
}

#[tokio::test]
async fn support_resends_the_key_email_through_the_mailer_and_failures_reach_the_dashboard() {
    let (p, mailer, ring) = portal_with_mailer();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    let support = p.staff("sue@nectar.example", StaffRole::Support).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ann@nectar.example").await;
    let (id, first_key) = p.license_via_wizard(&admin, "Acme").await;
    let viewer = p.session("vic@nectar.example").await;
    let sue = p.session("sue@nectar.example").await;
    let path = format!("/admin/licenses/{id}/resend-key");
    refused_below_and_without_token(&p, &path, &[], &viewer, &sue).await;
    assert_eq!(mailer.count(), 0);

    let page = p.get(&format!("/admin/licenses/{id}"), &sue).await;
    assert!(page.body.contains(">Resend key email<") && page.body.contains("NLS keeps only the key"));
    assert!(!page.body.contains(&first_key), "the key is never on the page");
    let sent = p.post(&path, &sue, &page.csrf(), &[]).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let emails = mailer.sent();
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].to, "ops@acme.test");
    let at = emails[0].text_body.find("NLS-").expect("the email carries a key");
    let emailed_key: String = emails[0].text_body[at..].split_whitespace().next().unwrap().to_owned();
    let verified = crate::license_token::verify_license_key(&ring, &emailed_key).expect("a key NLS signed");
    assert_eq!(verified.claims.sub, id);
    assert_eq!(p.validate(&emailed_key, "host-1").await, "VALID");
    assert!(p.audited(&support, "license.key_email_resend", &format!("license:{id}")).await);
    // A second resend is a new notice, not "already sent"; both are in the communication log.
    assert_eq!(p.post(&path, &sue, &page.csrf(), &[]).await.status, StatusCode::SEE_OTHER);
    assert_eq!(mailer.count(), 2);
    let shown = p.get(&format!("/admin/licenses/{id}"), &sue).await;
    assert_eq!(shown.body.matches("<td>key_delivery</td>").count(), 2, "{}", shown.body);

    mailer.fail_next(MailFailure::Unavailable);
    let failed = p.post(&path, &sue, &page.csrf(), &[]).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let dashboard = p.get("/admin/", &sue).await;
    assert!(
        dashboard.body.contains("id=\"failed-emails\"><span class=\"number\">1</span>"),
        "{}",
        dashboard.body
    );

    // A host without a mailer shows no button and refuses the POST.
    let plain = portal();
    plain.staff("ann@nectar.example", StaffRole::Admin).await;
    let cookie = plain.session("ann@nectar.example").await;
    let (other, _) = plain.license_via_wizard(&cookie, "Acme").await;
    let page = plain.get(&format!("/admin/licenses/{other}"), &cookie).await;
    assert!(!page.body.contains(">Resend key email<"));
    let refused =
        plain.post(&format!("/admin/licenses/{other}/resend-key"), &cookie, &page.csrf(), &[]).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn support_downloads_a_signed_offline_file_and_a_viewer_cannot() {
    let (p, _, ring) = portal_with_mailer();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    let support = p.staff("sue@nectar.example", StaffRole::Support).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ann@nectar.example").await;
    let (id, _) = p.license_via_wizard(&admin, "Acme").await;
    let viewer = p.session("vic@nectar.example").await;
    let sue = p.session("sue@nectar.example").await;
    let path = format!("/admin/licenses/{id}/offline-file");
    refused_below_and_without_token(&p, &path, &[("ttl_days", "7")], &viewer, &sue).await;
    assert!(!p.audited(&support, "license.offline_file", &format!("license:{id}")).await);

    let csrf = p.get(&format!("/admin/licenses/{id}"), &sue).await.csrf();
    let bad = p.post(&path, &sue, &csrf, &[("ttl_days", "0")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "the API's bound: 1 to 3650 days");
    let file = p.post(&path, &sue, &csrf, &[("ttl_days", "7"), ("fingerprint", "fp-1")]).await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    let disposition = file.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert_eq!(disposition, format!("attachment; filename=\"{id}.nls-offline.json\""));
    let parsed: OfflineLicenseFile = serde_json::from_str(&file.body).unwrap();
    let now = p.clock.now();
    let claims = verify_offline_file(&ring, &parsed, Some("fp-1"), now).expect("a valid file");
    assert_eq!(claims.sub, id);
    assert!(verify_offline_file(&ring, &parsed, Some("fp-1"), now + Duration::days(8)).is_err(), "7 days");
    assert!(p.audited(&support, "license.offline_file", &format!("license:{id}")).await);
}

#[tokio::test]
async fn billing_edits_a_customer_and_toggles_reminders_support_cannot() {
    let (p, _, _) = portal_with_mailer();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    p.staff("sue@nectar.example", StaffRole::Support).await;
    let billing = p.staff("bea@nectar.example", StaffRole::Billing).await;
    let admin = p.session("ann@nectar.example").await;
    let (license_id, _) = p.license_via_wizard(&admin, "Acme").await;
    let customer_id = p.store.get_license(&license_id).await.unwrap().unwrap().customer_id;
    let sue = p.session("sue@nectar.example").await;
    let bea = p.session("bea@nectar.example").await;
    let detail = format!("/admin/customers/{customer_id}");

    let seen = p.get(&detail, &sue).await;
    assert!(!seen.body.contains("Edit customer") && !seen.body.contains("Turn renewal reminders"));
    assert_eq!(p.get(&format!("{detail}/edit"), &sue).await.status, StatusCode::FORBIDDEN);
    refused_below_and_without_token(&p, &format!("{detail}/reminders"), &[("reminders", "off")], &sue, &bea)
        .await;
    let edit_fields =
        [("name", "Acme GmbH"), ("email", "billing@acme.test"), ("stripe_customer_id", "cus_stripe1")];
    refused_below_and_without_token(&p, &format!("{detail}/edit"), &edit_fields, &sue, &bea).await;
    let untouched = p.store.get_customer(&customer_id).await.unwrap().unwrap();
    assert!(!untouched.reminders_opt_out && untouched.name == "Acme");

    let page = p.get(&detail, &bea).await;
    assert!(page.body.contains(">Turn renewal reminders off<"));
    let off = p.post(&format!("{detail}/reminders"), &bea, &page.csrf(), &[("reminders", "off")]).await;
    assert_eq!(off.location(), format!("{detail}?done=reminders-off"));
    assert!(p.store.get_customer(&customer_id).await.unwrap().unwrap().reminders_opt_out);
    assert!(p.audited(&billing, "customer.update", &format!("customer:{customer_id}")).await);
    assert!(p.get(&detail, &bea).await.body.contains(">Turn renewal reminders on<"));
    let bogus = p.post(&format!("{detail}/reminders"), &bea, &page.csrf(), &[("reminders", "maybe")]).await;
    assert_eq!(bogus.status, StatusCode::BAD_REQUEST);

    let form = p.get(&format!("{detail}/edit"), &bea).await;
    assert!(form.body.contains("value=\"ops@acme.test\"") && form.body.contains("checked"));
    let saved = p.post(&format!("{detail}/edit"), &bea, &form.csrf(), &edit_fields).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let edited = p.store.get_customer(&customer_id).await.unwrap().unwrap();
    assert_eq!((edited.name.as_str(), edited.email.as_str()), ("Acme GmbH", "billing@acme.test"));
    assert!(!edited.reminders_opt_out, "the unticked box turns reminders back on");
    let bad = p
        .post(&format!("{detail}/edit"), &bea, &form.csrf(), &[("name", "X"), ("email", "not an email")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "the API's email rule");

    // The detail page: the Stripe link and the communication log (a resent key email).
    let csrf = p.get(&format!("/admin/licenses/{license_id}"), &admin).await.csrf();
    p.post(&format!("/admin/licenses/{license_id}/resend-key"), &admin, &csrf, &[]).await;
    let shown = p.get(&detail, &bea).await;
    assert!(shown.body.contains("href=\"https://dashboard.stripe.com/customers/cus_stripe1\""));
    let log = &shown.body[shown.body.find("id=\"communication-log\"").expect("a communication log")..];
    assert!(log.contains("key_delivery") && log.contains("billing@acme.test"), "{log}");
}

#[tokio::test]
async fn the_dashboard_charts_validations_by_code_and_shows_revenue_past_due_and_failures() {
    let (p, _, _) = portal_with_mailer();
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    let admin = p.session("ann@nectar.example").await;
    let (active, active_key) = p.license_via_wizard(&admin, "Acme").await;
    let (suspended, suspended_key) = p.license_via_wizard(&admin, "Beta").await;
    let (past_due, _) = p.license_via_wizard(&admin, "Gamma").await;
    p.license_via_wizard(&admin, "Delta").await;
    assert_eq!(p.validate(&active_key, "host-1").await, "VALID");
    assert_eq!(p.validate(&active_key, "host-1").await, "VALID");
    let csrf = p.get(&format!("/admin/licenses/{suspended}"), &admin).await.csrf();
    p.post(&format!("/admin/licenses/{suspended}/suspend"), &admin, &csrf, &[]).await;
    assert_eq!(p.validate(&suspended_key, "host-2").await, "SUSPENDED");
    let now = p.clock.now();
    p.alter_license(&active, |l| l.stripe_price_id = Some("price_pro".into())).await;
    p.alter_license(&past_due, |l| {
        l.status = LicenseStatus::PastDue;
        l.stripe_price_id = Some("price_pro".into());
        l.grace_ends_at = Some(now + Duration::days(3));
    })
    .await;
    // A Stripe delivery this host refuses (no webhook secret here): a failed delivery.
    let refused = p.send("POST", "/v1/webhooks/stripe", None, Some("{}"), None).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);

    let viewer = p.session("vic@nectar.example").await;
    let page = p.get("/admin/", &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    let chart = &page.body[page.body.find("id=\"validations-chart\"").expect("the chart")..];
    assert!(chart.contains("<svg") && chart.contains("role=\"img\""));
    assert!(chart.contains(", VALID: 2</title>") && chart.contains(", SUSPENDED: 1</title>"), "{chart}");
    assert!(page.body.contains("id=\"active-deployments\"><span class=\"number\">1</span>"), "{}", page.body);
    assert!(page.body.contains("id=\"failed-webhooks\"><span class=\"number\">1</span>"));
    let revenue = &page.body[page.body.find("id=\"revenue\"").expect("revenue")..];
    assert!(revenue.contains("<td>pro</td><td>2</td><td>98.00 EUR</td>"), "{revenue}");
    assert!(page.body.contains("Not counted: 1 live license(s) on no priced plan"), "Delta's, made by hand");
    let table = &page.body[page.body.find("id=\"past-due\"").expect("past due")..];
    assert!(table.contains(&past_due) && table.contains("<td>3</td>"), "{table}");
    assert!(!page.body.contains("style="), "no inline style (the CSP)");
}

#[tokio::test]
async fn the_renewal_pipeline_lists_licenses_by_week_with_the_notices_sent() {
    let p = portal();
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ann@nectar.example").await;
    let (soon, _) = p.license_via_wizard(&admin, "Acme").await;
    let (later, _) = p.license_via_wizard(&admin, "Beta").await;
    let (far, _) = p.license_via_wizard(&admin, "Gamma").await;
    // The clock is Monday 2026-11-30 12:00 UTC.
    let at = |d: u32| Utc.with_ymd_and_hms(2026, 12, d, 9, 0, 0).unwrap();
    p.alter_license(&soon, |l| l.expires_at = Some(at(10))).await;
    p.alter_license(&later, |l| l.expires_at = Some(at(30))).await;
    p.alter_license(&far, |l| l.expires_at = Some(at(1) + Duration::days(120))).await;
    let now = p.clock.now();
    let key = NotificationKey {
        license_id: soon.clone(),
        notice: "renewal_reminder_30d".into(),
        window: expiry_window(Some(at(10))),
    };
    let record = NotificationRecord {
        key: key.clone(),
        recipient: "ops@acme.test".into(),
        subject: "Your license expires".into(),
        state: NotificationState::Pending { claimed_by: "run-1".into(), claimed_at: now },
    };
    p.store.claim_notification(&record, now, Duration::minutes(5)).await.unwrap();
    p.store.mark_notification_sent(&key, "run-1", now, "msg-1").await.unwrap();

    let viewer = p.session("vic@nectar.example").await;
    let page = p.get("/admin/renewals", &viewer).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"pipeline-chart\""));
    let week = |label: &str| {
        let from = page.body.find(&format!("Week of {label}")).unwrap_or_else(|| panic!("week {label}"));
        let rest = &page.body[from..];
        rest[..rest[1..].find("<section").map_or(rest.len(), |i| i + 1)].to_owned()
    };
    let dec07 = week("Dec 07");
    assert!(dec07.contains(&soon) && dec07.contains("renewal_reminder_30d 2026-11-30"), "{dec07}");
    let dec28 = week("Dec 28");
    assert!(dec28.contains(&later) && dec28.contains("none yet"), "{dec28}");
    let empty = &page.body[page.body.find("id=\"empty-weeks\"").expect("the empty weeks")..];
    assert!(
        empty.starts_with("id=\"empty-weeks\">No license expires in the weeks of Nov 30, Dec 14, Dec 21,"),
        "{empty}"
    );
    assert!(!page.body.contains("Week of Nov 30"));
    assert!(!page.body.contains(&far), "past the 12 weeks");
}
