//! The license list (store search, sort links, paging) and its bulk operations through the
//! router: each item audited as the staff user, partial failures listed, a re-posted form
//! applying nothing, and the role table refusing what a role may not do.

use super::*;

use crate::issuing::new_license;
use crate::lifecycle::LicenseStatus;
use crate::model::{Customer, License};

impl Answer {
    /// The value of the list form's one-time `bulk_token`.
    fn bulk_token(&self) -> String {
        let at = self.body.find("name=\"bulk_token\" value=\"").expect("a bulk form") + 25;
        self.body[at..].split('"').next().unwrap().to_owned()
    }

    /// The license ids in the list's rows, in page order.
    fn listed_ids(&self) -> Vec<String> {
        self.body
            .split("name=\"license\" value=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect()
    }
}

/// A customer with one license per `(tier, days to expiry)`; returns the licenses in order.
async fn given_licenses(p: &Portal, name: &str, rows: &[(&str, Option<i64>)]) -> Vec<License> {
    let now = p.clock.now();
    let customer = Customer {
        id: crate::issuing::new_id("cus"),
        name: name.to_owned(),
        email: format!("billing@{}.test", name.to_lowercase()),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let mut writes = vec![Write::CreateCustomer(customer.clone())];
    let mut made = Vec::new();
    for (i, (tier, days)) in rows.iter().enumerate() {
        let mut l = new_license(&customer.id, Default::default(), now + Duration::minutes(i as i64));
        l.tier = (*tier).to_owned();
        l.expires_at = days.map(|d| now + Duration::days(d));
        made.push(l.clone());
        writes.push(Write::CreateLicense(l));
    }
    p.store.commit(None, writes).await.unwrap();
    made
}

fn bulk_fields<'a>(token: &'a str, action: &'a str, ids: &'a [String]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![("bulk_token", token), ("action", action), ("days", "30")];
    fields.extend(ids.iter().map(|id| ("license", id.as_str())));
    fields
}

#[tokio::test]
async fn bulk_renew_applies_each_item_once_per_form_audited_and_lists_failures() {
    let p = portal();
    let billing = p.staff("bea@nectar.example", StaffRole::Billing).await;
    let cookie = p.session("bea@nectar.example").await;
    let licenses = given_licenses(
        &p,
        "Renewco",
        &[("bulk", Some(10)), ("bulk", Some(20)), ("bulk", Some(-5)), ("bulk", None)],
    )
    .await;
    given_licenses(&p, "Other", &[("other", Some(10))]).await;
    let list = p.get("/admin/licenses?tier=bulk&sort=expires_at&dir=asc", &cookie).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let ids = list.listed_ids();
    let expected: Vec<String> = [2, 0, 1, 3].iter().map(|i| licenses[*i].id.clone()).collect();
    assert_eq!(ids, expected, "the filter keeps the tier, the sort puts the soonest expiry first");

    let token = list.bulk_token();
    let fields = bulk_fields(&token, "renew", &ids);
    let first = p.post("/admin/licenses/bulk", &cookie, &list.csrf(), &fields).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.body.contains("3 applied, 0 already applied by this form, 1 failed."), "{}", first.body);
    assert!(first.body.contains("perpetual"), "the failure says why");
    let now = p.clock.now();
    let expiry = |l: &License| l.expires_at.unwrap();
    let after_first: Vec<License> = {
        let mut got = Vec::new();
        for l in &licenses {
            got.push(p.store.get_license(&l.id).await.unwrap().unwrap());
        }
        got
    };
    assert_eq!(expiry(&after_first[0]), expiry(&licenses[0]) + Duration::days(30));
    assert_eq!(expiry(&after_first[1]), expiry(&licenses[1]) + Duration::days(30));
    assert_eq!(expiry(&after_first[2]), now + Duration::days(30), "a lapsed license renews from today");
    assert_eq!(after_first[3].expires_at, None);

    // The same form posted again (a reload): nothing is applied twice.
    let again = p.post("/admin/licenses/bulk", &cookie, &list.csrf(), &fields).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body.contains("0 applied, 3 already applied by this form, 1 failed."), "{}", again.body);
    for (before, l) in after_first.iter().zip(&licenses) {
        assert_eq!(p.store.get_license(&l.id).await.unwrap().unwrap(), *before);
    }

    // Each renewal is audited once, as the staff user.
    let actor = format!("staff:{}", billing.id);
    let log = p
        .store
        .list_audit(&AuditFilter { actor: Some(actor), ..AuditFilter::default() }, &PageRequest::first(50))
        .await
        .unwrap();
    let mut renewed: Vec<String> = log
        .items
        .iter()
        .filter(|e| e.action == "license.renew")
        .map(|e| e.target.trim_start_matches("license:").to_owned())
        .collect();
    renewed.sort();
    let mut want: Vec<String> = licenses[..3].iter().map(|l| l.id.clone()).collect();
    want.sort();
    assert_eq!(renewed, want);

    // A new rendering of the list is a new form: it renews again.
    let fresh = p.get("/admin/licenses?tier=bulk", &cookie).await;
    assert_ne!(fresh.bulk_token(), token);
    let one = [licenses[0].id.clone()];
    let third = p
        .post(
            "/admin/licenses/bulk",
            &cookie,
            &fresh.csrf(),
            &bulk_fields(&fresh.bulk_token(), "renew", &one),
        )
        .await;
    assert!(third.body.contains("1 applied, 0 already applied by this form, 0 failed."), "{}", third.body);
}

#[tokio::test]
async fn bulk_suspend_reports_each_failure_and_the_role_table_refuses_what_a_role_may_not_do() {
    let p = portal();
    p.staff("sue@nectar.example", StaffRole::Support).await;
    p.staff("vic@nectar.example", StaffRole::Viewer).await;
    let support = p.session("sue@nectar.example").await;
    let licenses = given_licenses(&p, "Suspendco", &[("t", Some(30)), ("t", Some(30))]).await;
    let mut revoked = licenses[1].clone();
    revoked.status = LicenseStatus::Revoked;
    revoked.version += 1;
    p.store
        .commit(None, vec![Write::UpdateLicense { license: revoked, expected_version: licenses[1].version }])
        .await
        .unwrap();
    let list = p.get("/admin/licenses", &support).await;
    assert!(list.body.contains("value=\"suspend\"") && !list.body.contains("value=\"renew\""));
    let ids = vec![licenses[0].id.clone(), licenses[1].id.clone(), "lic_doesnotexist".to_owned()];
    let token = list.bulk_token();
    let done =
        p.post("/admin/licenses/bulk", &support, &list.csrf(), &bulk_fields(&token, "suspend", &ids)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("1 applied, 0 already applied by this form, 2 failed."), "{}", done.body);
    assert!(done.body.contains("not found"), "{}", done.body);
    assert_eq!(p.store.get_license(&licenses[0].id).await.unwrap().unwrap().status, LicenseStatus::Suspended);

    // Support may not renew; a viewer may not suspend: refused before anything is read.
    let renew =
        p.post("/admin/licenses/bulk", &support, &list.csrf(), &bulk_fields(&token, "renew", &ids)).await;
    assert_eq!(renew.status, StatusCode::FORBIDDEN);
    let viewer = p.session("vic@nectar.example").await;
    let viewer_list = p.get("/admin/licenses", &viewer).await;
    assert!(!viewer_list.body.contains("value=\"suspend\""), "a viewer is offered only the export");
    let two = vec![licenses[0].id.clone()];
    let refused = p
        .post(
            "/admin/licenses/bulk",
            &viewer,
            &viewer_list.csrf(),
            &bulk_fields(&viewer_list.bulk_token(), "reactivate", &two),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(p.store.get_license(&licenses[0].id).await.unwrap().unwrap().status, LicenseStatus::Suspended);
    // Without the CSRF token the form is refused whatever the role.
    let forged =
        p.post("/admin/licenses/bulk", &support, "wrong", &bulk_fields(&token, "suspend", &two)).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Export only reads: a viewer gets CSV of the selection.
    let csv = p
        .post(
            "/admin/licenses/bulk",
            &viewer,
            &viewer_list.csrf(),
            &bulk_fields(&viewer_list.bulk_token(), "export", &ids),
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 3, "a header and the two licenses that exist: {}", csv.body);
    assert!(
        lines[1].starts_with(&licenses[0].id)
            && lines[1].contains("Suspendco,billing@suspendco.test,suspended")
    );
}

#[tokio::test]
async fn the_list_sorts_by_header_links_pages_by_cursor_and_refuses_bad_parameters() {
    let p = portal();
    p.staff("lia@nectar.example", StaffRole::Viewer).await;
    let cookie = p.session("lia@nectar.example").await;
    let rows: Vec<(&str, Option<i64>)> = (0..55).map(|i| ("paged", Some(100 - i))).collect();
    let licenses = given_licenses(&p, "Pageco", &rows).await;
    let newest_first = p.get("/admin/licenses", &cookie).await;
    let first_ids = newest_first.listed_ids();
    assert_eq!(first_ids.len(), 50);
    assert_eq!(first_ids[0], licenses[54].id, "newest first by default");
    let next_at = newest_first.body.find("rel=\"next\"").map(|_| ()).and_then(|_| {
        let at = newest_first.body.find("cursor=")? + 7;
        Some(newest_first.body[at..].split(['"', '&']).next()?.to_owned())
    });
    let cursor = next_at.expect("a next page link");
    let second = p.get(&format!("/admin/licenses?cursor={cursor}"), &cookie).await;
    assert_eq!(second.listed_ids(), licenses[..5].iter().rev().map(|l| l.id.clone()).collect::<Vec<_>>());

    // The Expires header links to the ascending expiry sort; the sorted page says so.
    assert!(newest_first.body.contains("href=\"/admin/licenses?sort=expires_at&amp;dir=asc\""));
    let by_expiry = p.get("/admin/licenses?sort=expires_at&dir=asc&q=pageco", &cookie).await;
    assert_eq!(by_expiry.listed_ids()[0], licenses[54].id, "the soonest expiry first");
    assert!(by_expiry.body.contains("aria-sort=\"ascending\""));
    assert!(by_expiry.body.contains("href=\"/admin/licenses?q=pageco&amp;sort=expires_at&amp;dir=desc\""));

    for bad in ["sort=price", "dir=up", "cursor=not-a-cursor", "status=sleeping", "expires_before=soon"] {
        let answer = p.get(&format!("/admin/licenses?{bad}"), &cookie).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let too_long = format!("/admin/licenses?q={}", "x".repeat(300));
    assert_eq!(p.get(&too_long, &cookie).await.status, StatusCode::BAD_REQUEST);
}
