//! The portal through the whole router over the in-memory store: sign-in, sessions, CSRF,
//! roles and the pages' changes, audited as the staff user. The browser tests
//! (tests/portal/) drive the same pages in Chromium against the real `nls serve`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use chrono::{Duration, TimeZone, Utc};
use tower::ServiceExt;

use crate::http::{AppDeps, AppState, ClientIp, HttpConfig, router};
use crate::key_ring::{KeyRing, SigningKey};
use crate::memory_store::MemoryStore;
use crate::model::{StaffRole, StaffUser};
use crate::ports::{
    AuditFilter, AuditStore, Clock, CustomerStore, LicenseStore, ManualClock, PageRequest, UnitOfWork, Write,
};
use crate::staff_accounts::new_staff_user;

const PASSWORD: &str = "a long enough password";

struct Portal {
    app: Router,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    /// `name=value` of the first `Set-Cookie` for `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap_or("").to_owned())
    }
    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

fn portal() -> Portal {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()));
    let ring = Arc::new(KeyRing::with_signer(SigningKey::from_seed([7; 32], None), vec![]).unwrap());
    let state = AppState::new(AppDeps {
        store: store.clone(),
        key_ring: ring,
        clock: clock.clone(),
        config: HttpConfig::default(),
    });
    Portal { app: router(state), store, clock }
}

impl Portal {
    async fn send(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
        origin: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path).header(header::HOST, "127.0.0.1:8080");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let mut req = req.body(form.map_or(Body::empty(), |f| Body::from(f.to_owned()))).unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn get(&self, path: &str, cookie: &str) -> Answer {
        self.send("GET", path, Some(cookie), None, None).await
    }

    async fn staff(&self, email: &str, role: StaffRole) -> StaffUser {
        let user = new_staff_user(email, "Sam Staff", role, PASSWORD, self.clock.now()).unwrap();
        self.store.commit(None, vec![Write::CreateStaffUser(user.clone())]).await.unwrap();
        user
    }

    /// Signs in; returns the session cookie (`nls_session=...`).
    async fn sign_in(&self, email: &str, password: &str) -> Answer {
        let form_page = self.send("GET", "/admin/login", None, None, None).await;
        let login_cookie = form_page.cookie("nls_login_csrf").expect("login CSRF cookie");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &form_page.csrf())
            .append_pair("email", email)
            .append_pair("password", password)
            .finish();
        self.send("POST", "/admin/login", Some(&login_cookie), Some(&body), Some("http://127.0.0.1:8080"))
            .await
    }

    async fn session(&self, email: &str) -> String {
        let answer = self.sign_in(email, PASSWORD).await;
        assert_eq!((answer.status, answer.location()), (StatusCode::SEE_OTHER, "/admin/"), "{}", answer.body);
        answer.cookie("nls_session").expect("a session cookie")
    }

    /// POSTs `fields` with the page's CSRF token.
    async fn post(&self, path: &str, cookie: &str, csrf: &str, fields: &[(&str, &str)]) -> Answer {
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.append_pair("csrf", csrf);
        for (n, v) in fields {
            body.append_pair(n, v);
        }
        self.send("POST", path, Some(cookie), Some(&body.finish()), None).await
    }

    /// A customer and a license made through the portal's own forms; returns the license id.
    async fn license_via_wizard(&self, cookie: &str, customer_name: &str) -> (String, String) {
        let csrf = self.get("/admin/customers/new", cookie).await.csrf();
        let made = self
            .post("/admin/customers", cookie, &csrf, &[("name", customer_name), ("email", "ops@acme.test")])
            .await;
        assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
        let customer_id =
            made.location().trim_start_matches("/admin/customers/").split('?').next().unwrap().to_owned();
        let created = self
            .post(
                "/admin/licenses",
                cookie,
                &csrf,
                &[
                    ("customer_id", &customer_id),
                    ("tier", "pro"),
                    ("features", "sso, audit"),
                    ("limits", "runs=10"),
                ],
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.body);
        let key_at = created.body.find("NLS-").expect("the key is shown");
        let key = created.body[key_at..].split('<').next().unwrap().to_owned();
        let licenses = self.store.list_licenses(&Default::default(), &PageRequest::first(100)).await.unwrap();
        let license = licenses.items.iter().find(|l| l.customer_id == customer_id).unwrap();
        (license.id.clone(), key)
    }
}

#[tokio::test]
async fn sign_in_starts_a_fresh_http_only_session_and_pages_carry_a_strict_csp() {
    let p = portal();
    let anonymous = p.send("GET", "/admin/licenses", None, None, None).await;
    assert_eq!((anonymous.status, anonymous.location()), (StatusCode::SEE_OTHER, "/admin/login"));
    let form = p.send("GET", "/admin/login", None, None, None).await;
    let csp = form.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(form.headers["x-frame-options"], "DENY");
    p.staff("ann@nectar.example", StaffRole::Admin).await;
    let first = p.sign_in("Ann@Nectar.example", PASSWORD).await;
    let set = first
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let session_set = set.iter().find(|c| c.starts_with("nls_session=")).unwrap();
    assert!(session_set.contains("HttpOnly") && session_set.contains("SameSite=Strict"), "{session_set}");
    let cookie = first.cookie("nls_session").unwrap();
    // Signing in again, even while holding a session, gives a new token and ends the old one.
    let second = p.sign_in("ann@nectar.example", PASSWORD).await.cookie("nls_session").unwrap();
    assert_ne!(cookie, second);
    let old = p.get("/admin/licenses", &cookie).await;
    assert_eq!(old.status, StatusCode::OK, "the first session is still its own session");
    let page = p.get("/admin/licenses", &second).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Licenses</h1>"));
    // Sign-out ends the session.
    let csrf = page.csrf();
    let out = p.post("/admin/logout", &second, &csrf, &[]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/admin/login"));
    assert_eq!(p.get("/admin/licenses", &second).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_one_answer_then_the_account_is_rate_limited() {
    let p = portal();
    p.staff("bo@nectar.example", StaffRole::Viewer).await;
    let wrong = p.sign_in("bo@nectar.example", "not the password at all").await;
    let unknown = p.sign_in("nobody@nectar.example", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let message =
        |a: &Answer| a.body[a.body.find("role=\"alert\"").unwrap()..].split('<').next().unwrap().to_owned();
    assert_eq!(message(&wrong), message(&unknown));
    for _ in 0..4 {
        assert_eq!(
            p.sign_in("bo@nectar.example", "still not the password").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = p.sign_in("bo@nectar.example", PASSWORD).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
    p.clock.advance(Duration::minutes(2));
    assert_eq!(p.sign_in("bo@nectar.example", PASSWORD).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_end_when_idle_too_long_and_when_the_user_is_disabled() {
    let p = portal();
    let user = p.staff("cy@nectar.example", StaffRole::Support).await;
    let cookie = p.session("cy@nectar.example").await;
    p.clock.advance(Duration::minutes(29));
    assert_eq!(p.get("/admin/", &cookie).await.status, StatusCode::OK);
    p.clock.advance(Duration::minutes(29));
    assert_eq!(p.get("/admin/", &cookie).await.status, StatusCode::OK, "each request resets the idle timer");
    p.clock.advance(Duration::minutes(31));
    assert_eq!(p.get("/admin/", &cookie).await.status, StatusCode::SEE_OTHER, "idle too long");

    let cookie = p.session("cy@nectar.example").await;
    let mut disabled = user.clone();
    disabled.disabled = true;
    disabled.version += 1;
    p.store
        .commit(None, vec![Write::UpdateStaffUser { user: disabled, expected_version: user.version }])
        .await
        .unwrap();
    assert_eq!(p.get("/admin/", &cookie).await.status, StatusCode::SEE_OTHER, "disabled: out at once");
    assert_eq!(p.sign_in("cy@nectar.example", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_wizard_issues_a_key_once_and_changes_are_audited_as_the_staff_user() {
    let p = portal();
    let admin = p.staff("di@nectar.example", StaffRole::Admin).await;
    let cookie = p.session("di@nectar.example").await;
    let (license_id, key) = p.license_via_wizard(&cookie, "Acme").await;
    assert!(key.starts_with("NLS-"));
    let detail = p.get(&format!("/admin/licenses/{license_id}"), &cookie).await;
    assert!(!detail.body.contains(&key), "the key is shown once, never again");
    let suspended =
        p.post(&format!("/admin/licenses/{license_id}/suspend"), &cookie, &detail.csrf(), &[]).await;
    assert_eq!(suspended.status, StatusCode::SEE_OTHER, "{}", suspended.body);
    assert_eq!(p.store.get_license(&license_id).await.unwrap().unwrap().status.as_str(), "suspended");
    let refused = p.post(&format!("/admin/licenses/{license_id}/revoke"), &cookie, &detail.csrf(), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "revoking needs the confirmation box");
    let renewed = p
        .post(
            &format!("/admin/licenses/{license_id}/renew"),
            &cookie,
            &detail.csrf(),
            &[("expires_on", "2020-01-01")],
        )
        .await;
    assert_eq!(renewed.status, StatusCode::BAD_REQUEST, "the API's rule: a renewal is in the future");

    let actor = format!("staff:{}", admin.id);
    let filter = AuditFilter { actor: Some(actor.clone()), ..AuditFilter::default() };
    let log = p.store.list_audit(&filter, &PageRequest::first(10)).await.unwrap();
    let actions: Vec<&str> = log.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["license.suspend", "license.create", "customer.create"]);
    let audit_page = p.get(&format!("/admin/audit?actor={actor}"), &cookie).await;
    assert!(audit_page.body.contains("license.suspend") && audit_page.body.contains("<del>active</del>"));
    let list = p.get("/admin/licenses?status=suspended&feature=sso&q=acme", &cookie).await;
    assert!(list.body.contains(&license_id), "{}", list.body);
    let none = p.get("/admin/licenses?status=active", &cookie).await;
    assert!(!none.body.contains(&license_id));
}

#[tokio::test]
async fn viewers_see_no_write_buttons_and_forged_posts_are_refused() {
    let p = portal();
    p.staff("ed@nectar.example", StaffRole::Admin).await;
    p.staff("flo@nectar.example", StaffRole::Viewer).await;
    let admin = p.session("ed@nectar.example").await;
    let (license_id, _) = p.license_via_wizard(&admin, "Acme").await;
    let viewer = p.session("flo@nectar.example").await;
    let detail = p.get(&format!("/admin/licenses/{license_id}"), &viewer).await;
    assert_eq!(detail.status, StatusCode::OK);
    for button in ["Suspend", "Renew", "Revoke", "Edit terms"] {
        assert!(!detail.body.contains(&format!(">{button}<")), "a viewer sees {button}");
    }
    let forged = p.post(&format!("/admin/licenses/{license_id}/suspend"), &viewer, &detail.csrf(), &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(p.get("/admin/licenses/new", &viewer).await.status, StatusCode::FORBIDDEN);

    // CSRF: the admin's own cookie without the token, with a wrong one, or from another site.
    let path = format!("/admin/licenses/{license_id}/suspend");
    let csrf = p.get(&format!("/admin/licenses/{license_id}"), &admin).await.csrf();
    assert_eq!(p.post(&path, &admin, "wrong", &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(p.send("POST", &path, Some(&admin), Some(""), None).await.status, StatusCode::FORBIDDEN);
    let body = format!("csrf={csrf}");
    let cross = p.send("POST", &path, Some(&admin), Some(&body), Some("https://evil.example")).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(p.store.get_license(&license_id).await.unwrap().unwrap().status.as_str(), "active");
}

#[tokio::test]
async fn customer_names_render_as_text() {
    let p = portal();
    p.staff("gus@nectar.example", StaffRole::Billing).await;
    let cookie = p.session("gus@nectar.example").await;
    let (_, _) = p.license_via_wizard(&cookie, "<script>alert(1)</script>").await;
    let customers = p.store.list_customers(&PageRequest::first(10)).await.unwrap();
    let id = &customers.items[0].id;
    for path in
        ["/admin/customers".to_owned(), format!("/admin/customers/{id}"), "/admin/licenses".to_owned()]
    {
        let page = p.get(&path, &cookie).await;
        assert!(!page.body.contains("<script>alert"), "{path}");
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}");
    }
}

/// The customer search: direct lookups by id, text over name, email and Stripe id, and
/// pages that go on through the store's cursor without skipping or repeating a match.
#[tokio::test]
async fn customer_search_finds_by_id_text_and_pages_through_the_store() {
    let p = portal();
    p.staff("vi@nectar.example", StaffRole::Viewer).await;
    let cookie = p.session("vi@nectar.example").await;
    let now = p.clock.now();
    let make = |name: &str, email: &str, stripe: Option<&str>| crate::model::Customer {
        id: crate::issuing::new_id("cus"),
        name: name.to_owned(),
        email: email.to_owned(),
        stripe_customer_id: stripe.map(str::to_owned),
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let acme = make("Acme Corp", "ops@acme.example", None);
    let globex = make("Globex", "it@globex.example", Some("cus_StripeGlobex"));
    let mut writes = vec![Write::CreateCustomer(acme.clone()), Write::CreateCustomer(globex.clone())];
    writes.extend(
        (0..120).map(|i| {
            Write::CreateCustomer(make(&format!("Bulk {i:03}"), &format!("b{i}@bulk.example"), None))
        }),
    );
    p.store.commit(None, writes).await.unwrap();

    let names = |body: &str| -> Vec<String> {
        body.match_indices("<a href=\"/admin/customers/cus_")
            .map(|(at, _)| body[at..].split('>').nth(1).unwrap().split('<').next().unwrap().to_owned())
            .collect()
    };
    let page = p.get("/admin/customers?q=ACME.EXAMPLE", &cookie).await;
    assert_eq!(names(&page.body), ["Acme Corp"]);
    let page = p.get("/admin/customers?q=cus_StripeGlobex", &cookie).await;
    assert_eq!(names(&page.body), ["Globex"], "a Stripe id is looked up directly");
    let page = p.get(&format!("/admin/customers?q={}", acme.id), &cookie).await;
    assert_eq!(names(&page.body), ["Acme Corp"], "an NLS id too");
    let page = p.get("/admin/customers?q=nobody", &cookie).await;
    assert!(names(&page.body).is_empty() && page.body.contains("No customer"), "{}", page.body);
    let long = "x".repeat(201);
    assert_eq!(p.get(&format!("/admin/customers?q={long}"), &cookie).await.status, StatusCode::BAD_REQUEST);

    // 120 matches: pages of at most 50, following "Next page", each match exactly once.
    let (mut seen, mut path) = (Vec::new(), "/admin/customers?q=bulk".to_owned());
    loop {
        let page = p.get(&path, &cookie).await;
        assert_eq!(page.status, StatusCode::OK);
        let rows = names(&page.body);
        assert!(rows.len() <= 50, "{}", rows.len());
        seen.extend(rows);
        let Some(at) = page.body.find("rel=\"next\"") else { break };
        let href_at = page.body[..at].rfind("href=\"").unwrap() + 6;
        path = page.body[href_at..].split('"').next().unwrap().replace("&amp;", "&");
        assert!(path.contains("q=bulk"), "the search stays in the next link: {path}");
    }
    seen.sort();
    let expected: Vec<String> = (0..120).map(|i| format!("Bulk {i:03}")).collect();
    assert_eq!(seen, expected);
}

/// The API keys, staff, account (TOTP) and system pages.
mod admin_pages;
/// The compliance flags on the license page and the dashboard.
mod compliance_tests;
/// The license list's search, sort and bulk operations.
mod license_list_tests;
mod pages;
