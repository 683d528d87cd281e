//! The admin pages through the whole router over the in-memory store: API keys (the secret
//! once, revoked keys refused by the API), staff users (create, disable and reset end
//! sessions, role changes), the TOTP second factor (enrol, sign in with a code, no replay) and
//! the System page.

use super::*;
use crate::ports::{ApiKeyStore, StaffStore};
use crate::totp::{DIGITS, base32_decode, code_for_step, step_at};

impl Portal {
    async fn sign_in_with_code(&self, email: &str, password: &str, code: &str) -> Answer {
        let form_page = self.send("GET", "/admin/login", None, None, None).await;
        let login_cookie = form_page.cookie("nls_login_csrf").expect("login CSRF cookie");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &form_page.csrf())
            .append_pair("email", email)
            .append_pair("password", password)
            .append_pair("code", code)
            .finish();
        self.send("POST", "/admin/login", Some(&login_cookie), Some(&body), Some("http://127.0.0.1:8080"))
            .await
    }

    async fn actions_by(&self, actor: &str) -> Vec<(String, String)> {
        let filter = AuditFilter { actor: Some(actor.to_owned()), ..AuditFilter::default() };
        let log = self.store.list_audit(&filter, &PageRequest::first(50)).await.unwrap();
        log.items.into_iter().map(|e| (e.action, e.target)).collect()
    }
}

/// The text of the `<pre id="{id}">` block.
fn pre_text(body: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let at = body.find(&marker).unwrap_or_else(|| panic!("no #{id} in {body}"));
    let from = at + body[at..].find('>').unwrap() + 1;
    body[from..].split('<').next().unwrap().to_owned()
}

fn code_at(secret: &str, at: chrono::DateTime<Utc>) -> String {
    code_for_step(&base32_decode(secret).unwrap(), step_at(at.timestamp()), DIGITS)
}

#[tokio::test]
async fn api_keys_are_made_with_scopes_shown_once_and_revoked_keys_are_refused() {
    let p = portal();
    let admin = p.staff("ann@nectar.example", StaffRole::Admin).await;
    let cookie = p.session("ann@nectar.example").await;
    let page = p.get("/admin/api-keys", &cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = page.csrf();

    let refused = p.post("/admin/api-keys", &cookie, &csrf, &[("name", "ci")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "no scope: the API's rule");
    assert!(refused.body.contains("scopes"), "{}", refused.body);
    let made = p
        .post("/admin/api-keys", &cookie, &csrf, &[("name", "ci"), ("scopes", "read"), ("scopes", "write")])
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let secret = pre_text(&made.body, "api-key-secret");
    assert!(secret.starts_with("nls_"), "{secret}");
    let list = p.get("/admin/api-keys", &cookie).await;
    assert!(list.body.contains(">ci<") && !list.body.contains(&secret), "the secret is shown once");

    let with_key = |key: &str| {
        let req = Request::builder()
            .uri("/v1/licenses")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        p.app.clone().oneshot(req)
    };
    assert_eq!(with_key(&secret).await.unwrap().status(), StatusCode::OK);
    let key_id = p.store.list_api_keys().await.unwrap()[0].id.clone();
    let revoked = p.post(&format!("/admin/api-keys/{key_id}/revoke"), &cookie, &csrf, &[]).await;
    assert_eq!((revoked.status, revoked.location()), (StatusCode::SEE_OTHER, "/admin/api-keys?done=revoke"));
    assert_eq!(with_key(&secret).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let actor = format!("staff:{}", admin.id);
    let target = format!("api_key:{key_id}");
    assert_eq!(
        p.actions_by(&actor).await,
        [("api_key.revoke".to_owned(), target.clone()), ("api_key.create".to_owned(), target)]
    );

    // Not for billing: no link, and the page and its forms answer 403.
    p.staff("bill@nectar.example", StaffRole::Billing).await;
    let billing = p.session("bill@nectar.example").await;
    let dashboard = p.get("/admin/", &billing).await;
    assert!(!dashboard.body.contains("/admin/api-keys") && !dashboard.body.contains("/admin/staff\""));
    assert_eq!(p.get("/admin/api-keys", &billing).await.status, StatusCode::FORBIDDEN);
    let forged =
        p.post("/admin/api-keys", &billing, &dashboard.csrf(), &[("name", "x"), ("scopes", "admin")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(p.store.list_api_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn staff_users_are_made_disabled_reset_and_changed_and_lose_their_sessions() {
    let p = portal();
    let admin = p.staff("ann@nectar.example", StaffRole::Admin).await;
    let cookie = p.session("ann@nectar.example").await;
    let csrf = p.get("/admin/staff", &cookie).await.csrf();

    let made = p
        .post(
            "/admin/staff",
            &cookie,
            &csrf,
            &[
                ("email", "Vi@Nectar.example"),
                ("name", "Vi Viewer"),
                ("role", "viewer"),
                ("password_mode", "generate"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let one_time = pre_text(&made.body, "staff-password");
    let vi = p.store.find_staff_user_by_email("vi@nectar.example").await.unwrap().unwrap();
    assert_eq!(vi.role, StaffRole::Viewer);
    let dup = p
        .post(
            "/admin/staff",
            &cookie,
            &csrf,
            &[
                ("email", "vi@nectar.example"),
                ("name", "Again"),
                ("role", "viewer"),
                ("password_mode", "generate"),
            ],
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);
    let short = p
        .post(
            "/admin/staff",
            &cookie,
            &csrf,
            &[
                ("email", "x@nectar.example"),
                ("name", "X"),
                ("role", "viewer"),
                ("password_mode", "set"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);

    // The new viewer signs in with the one-time password; disabling ends that session.
    let vi_session = p.sign_in("vi@nectar.example", &one_time).await.cookie("nls_session").unwrap();
    assert_eq!(p.get("/admin/", &vi_session).await.status, StatusCode::OK);
    assert_eq!(p.get("/admin/staff", &vi_session).await.status, StatusCode::FORBIDDEN);
    let page = p.get(&format!("/admin/staff/{}", vi.id), &cookie).await;
    assert!(page.body.contains(">Disable<"));
    p.clock.advance(Duration::seconds(1));
    let disabled = p.post(&format!("/admin/staff/{}/disable", vi.id), &cookie, &csrf, &[]).await;
    assert_eq!(disabled.status, StatusCode::SEE_OTHER, "{}", disabled.body);
    assert_eq!(p.get("/admin/", &vi_session).await.status, StatusCode::SEE_OTHER, "out at once");
    assert_eq!(p.sign_in("vi@nectar.example", &one_time).await.status, StatusCode::UNAUTHORIZED);
    p.post(&format!("/admin/staff/{}/enable", vi.id), &cookie, &csrf, &[]).await;
    let vi_session = p.sign_in("vi@nectar.example", &one_time).await.cookie("nls_session").unwrap();

    // A role change applies at once; a reset password ends the session and the old password.
    let promoted =
        p.post(&format!("/admin/staff/{}/role", vi.id), &cookie, &csrf, &[("role", "support")]).await;
    assert_eq!(promoted.status, StatusCode::SEE_OTHER);
    assert!(p.get("/admin/", &vi_session).await.body.contains("(support)"));
    p.clock.advance(Duration::seconds(1));
    let reset = p
        .post(
            &format!("/admin/staff/{}/reset-password", vi.id),
            &cookie,
            &csrf,
            &[("password_mode", "set"), ("password", "a brand new password")],
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert!(!reset.body.contains("a brand new password"), "a typed password is not echoed");
    assert_eq!(p.get("/admin/", &vi_session).await.status, StatusCode::SEE_OTHER);
    assert_eq!(p.sign_in("vi@nectar.example", &one_time).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(p.sign_in("vi@nectar.example", "a brand new password").await.status, StatusCode::SEE_OTHER);

    // The admin cannot lock themselves out here.
    let own = p.post(&format!("/admin/staff/{}/disable", admin.id), &cookie, &csrf, &[]).await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);

    let actions: Vec<String> =
        p.actions_by(&format!("staff:{}", admin.id)).await.into_iter().map(|a| a.0).collect();
    assert_eq!(
        actions,
        [
            "staff_user.reset_password",
            "staff_user.change_role",
            "staff_user.enable",
            "staff_user.disable",
            "staff_user.create"
        ]
    );
    let log = p.store.list_audit(&AuditFilter::default(), &PageRequest::first(50)).await.unwrap();
    let text =
        serde_json::to_string(&log.items.iter().map(|e| (&e.before, &e.after)).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("argon2") && !text.contains("password_hash"), "no hash in the audit log");
}

#[tokio::test]
async fn totp_enrols_with_a_confirmed_code_then_sign_in_needs_a_fresh_code() {
    let p = portal();
    let user = p.staff("ann@nectar.example", StaffRole::Support).await;
    let cookie = p.session("ann@nectar.example").await;
    let account = p.get("/admin/account", &cookie).await;
    assert!(account.body.contains("Set up two-step sign-in"), "{}", account.body);
    let setup = p.post("/admin/account/totp/setup", &cookie, &account.csrf(), &[]).await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
    let secret = pre_text(&setup.body, "totp-secret");
    let uri = pre_text(&setup.body, "totp-uri");
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("algorithm=SHA1&amp;digits=6&amp;period=30"), "{uri}");

    let csrf = account.csrf();
    let wrong = p
        .post("/admin/account/totp/confirm", &cookie, &csrf, &[("secret", &secret), ("code", "000000")])
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(
        p.store.get_staff_user(&user.id).await.unwrap().unwrap().totp_secret.is_none(),
        "not before a code"
    );
    let code = code_at(&secret, p.clock.now());
    let on =
        p.post("/admin/account/totp/confirm", &cookie, &csrf, &[("secret", &secret), ("code", &code)]).await;
    assert_eq!(
        (on.status, on.location()),
        (StatusCode::SEE_OTHER, "/admin/account?done=totp-on"),
        "{}",
        on.body
    );
    let stored = p.store.get_staff_user(&user.id).await.unwrap().unwrap();
    assert_eq!(stored.totp_secret.as_deref(), Some(secret.as_str()));

    // The confirming code cannot sign in; a wrong one gets the same answer. (Every attempt
    // counts against the account's 5 sign-ins, then one a minute.)
    for code in [code.as_str(), "123456"] {
        let refused = p.sign_in_with_code("ann@nectar.example", PASSWORD, code).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "code {code:?}");
    }
    p.clock.advance(Duration::seconds(30));
    let fresh = code_at(&secret, p.clock.now());
    let signed_in = p.sign_in_with_code("ann@nectar.example", PASSWORD, &fresh).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
    let replay = p.sign_in_with_code("ann@nectar.example", PASSWORD, &fresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "a used code is refused within its window");
    p.clock.advance(Duration::seconds(60));
    let late =
        p.sign_in_with_code("ann@nectar.example", "not the password", &code_at(&secret, p.clock.now())).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED, "a right code never replaces the password");

    let actions: Vec<String> =
        p.actions_by(&format!("staff:{}", user.id)).await.into_iter().map(|a| a.0).collect();
    assert_eq!(actions, ["staff_user.totp_enable"]);
    let log = p.store.list_audit(&AuditFilter::default(), &PageRequest::first(50)).await.unwrap();
    assert!(
        !serde_json::to_string(&log.items[0].after).unwrap().contains(&secret),
        "the secret is not audited"
    );

    // Turning it off takes a current code.
    let session = signed_in.cookie("nls_session").unwrap();
    let csrf = p.get("/admin/account", &session).await.csrf();
    let off = p.post("/admin/account/totp/disable", &session, &csrf, &[("code", "000000")]).await;
    assert_eq!(off.status, StatusCode::BAD_REQUEST);
    p.clock.advance(Duration::seconds(30));
    let now_code = code_at(&secret, p.clock.now());
    let off = p.post("/admin/account/totp/disable", &session, &csrf, &[("code", &now_code)]).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER, "{}", off.body);
    assert!(p.store.get_staff_user(&user.id).await.unwrap().unwrap().totp_secret.is_none());
    p.clock.advance(Duration::seconds(60));
    assert_eq!(p.sign_in("ann@nectar.example", PASSWORD).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_system_page_shows_the_store_keys_pushes_last_renewals_run_and_version() {
    let p = portal();
    p.staff("vi@nectar.example", StaffRole::Viewer).await;
    let cookie = p.session("vi@nectar.example").await;
    let page = p.get("/admin/system", &cookie).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let kid = SigningKey::from_seed([7; 32], None).kid;
    assert!(page.body.contains(&format!("{kid} (current)")), "{}", page.body);
    assert!(page.body.contains(">yes<"), "store reachable");
    assert!(page.body.contains("no run recorded"));
    assert!(page.body.contains(env!("CARGO_PKG_VERSION")));

    struct NoMail;
    #[async_trait::async_trait]
    impl crate::ports::Mailer for NoMail {
        async fn send(&self, _: &crate::ports::OutgoingEmail) -> Result<String, crate::ports::MailError> {
            Ok("m".into())
        }
    }
    let config = crate::renewals::RenewalsConfig::new("run_system_page");
    crate::renewals::run_renewals(&*p.store, &NoMail, &*p.clock, &config).await.unwrap();
    let page = p.get("/admin/system", &cookie).await;
    assert!(page.body.contains("0 licenses examined, 0 notices sent, 0 failures"), "{}", page.body);
}
