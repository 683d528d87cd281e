//! The registry token service against the real CNCF registry (Debian's `docker-registry`,
//! distribution 2.8) driven by `skopeo`: `nls serve` issues the tokens, the registry trusts
//! the certificate `nls registry cert` wrote, and every scenario of docs/distribution.md is
//! played with real pushes and pulls. tests/run.sh installs both tools.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use nls_core::registry_token::{RegistryClaims, RegistrySigningKey, ResourceActions};
use nls_tests::docker_registry::{Registry, build_oci_layout, skopeo};
use nls_tests::http_client::{HttpResponse, request};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::{Value, json};

const SERVICE: &str = "nectar-registry-e2e";
const ISSUER: &str = "nls-e2e";

struct Scene {
    server: NlsServer,
    registry: Registry,
    dir: TempDir,
    layout: PathBuf,
}

impl Scene {
    fn push(&self, creds: &str, repository: &str) -> (bool, String) {
        let src = format!("oci:{}:v1", self.layout.display());
        let dest = self.registry.url(repository);
        skopeo(
            self.dir.path(),
            &["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", creds, &src, &dest],
        )
    }
    fn inspect(&self, creds: &str, repository: &str) -> (bool, String) {
        skopeo(
            self.dir.path(),
            &["inspect", "--tls-verify=false", "--creds", creds, &self.registry.url(repository)],
        )
    }
    fn pull(&self, creds: &str, repository: &str, out: &str) -> (bool, String) {
        let dest = format!("dir:{}", self.dir.path().join(out).display());
        skopeo(
            self.dir.path(),
            &[
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                creds,
                &self.registry.url(repository),
                &dest,
            ],
        )
    }
    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.server.admin(method, path, body)
    }
    /// A license for a new customer; (license id, key).
    fn license(&self, extra: Value) -> (String, String) {
        let customer =
            self.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
        let mut body = json!({"customer_id": customer["customer"]["id"],
            "registry": {"repositories": ["nectar/app", "nectar/worker-*"], "actions": ["pull"]}});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let created = self.admin("POST", "/v1/licenses", Some(&body));
        (created["license"]["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
    }
    fn token_request(&self, query: &str, basic: Option<&str>) -> HttpResponse {
        let auth =
            basic.map(|creds| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds)));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        request(self.server.port, "GET", &format!("/v1/registry/token?{query}"), &headers, b"").unwrap()
    }
    fn token(&self, creds: &str, scope: &str) -> String {
        let r = self.token_request(&format!("service={SERVICE}&scope={scope}"), Some(creds));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    }
}

fn setup() -> Scene {
    let dir = TempDir::new("registry");
    let data = dir.path().join("nls-data");
    let cert = dir.path().join("registry-ca.pem");
    let out = Command::new(nls_binary())
        .args(["registry", "cert", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "nls registry cert: {}", String::from_utf8_lossy(&out.stderr));
    let server = NlsServer::start(&data, &["--registry-service", SERVICE, "--registry-issuer", ISSUER]);
    let registry = Registry::start(dir.path(), server.port, &cert, SERVICE, ISSUER);
    let layout = build_oci_layout(dir.path());
    Scene { server, registry, dir, layout }
}

fn check(what: &str, (ok, stderr): (bool, String), expected: bool, registry: &Registry) {
    assert_eq!(
        ok,
        expected,
        "{what}: expected {}; skopeo said:\n{stderr}\nregistry log tail:\n{}",
        if expected { "success" } else { "refusal" },
        std::fs::read_to_string(&registry.log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn skopeo_pushes_and_pulls_exactly_what_each_credential_allows() {
    let s = setup();
    let staff = s.admin("POST", "/v1/api-keys", Some(&json!({"name": "ci", "scopes": ["registry:push"]})));
    let staff = format!("ci:{}", staff["secret"].as_str().unwrap());
    let admin_only = s.admin("POST", "/v1/api-keys", Some(&json!({"name": "ops", "scopes": ["admin"]})));
    let admin_only = format!("ops:{}", admin_only["secret"].as_str().unwrap());
    let (license_id, key) = s.license(json!({}));
    let customer = format!("acme:{key}");

    // Staff push to both repositories; an admin key without registry:push may not.
    check("staff push nectar/app", s.push(&staff, "nectar/app"), true, &s.registry);
    check("staff push nectar/internal", s.push(&staff, "nectar/internal"), true, &s.registry);
    check("admin-only key push", s.push(&admin_only, "nectar/app"), false, &s.registry);

    // The customer pulls what the plan includes, nothing else, and never pushes.
    check("customer inspect nectar/app", s.inspect(&customer, "nectar/app"), true, &s.registry);
    check("customer copy nectar/app", s.pull(&customer, "nectar/app", "pulled"), true, &s.registry);
    assert!(s.dir.path().join("pulled/manifest.json").exists());
    check("customer inspect nectar/internal", s.inspect(&customer, "nectar/internal"), false, &s.registry);
    check("customer push nectar/app", s.push(&customer, "nectar/app"), false, &s.registry);
    check("customer push nectar/worker-x", s.push(&customer, "nectar/worker-x"), false, &s.registry);

    // Suspended: refused; reactivated: pulls again.
    s.admin("POST", &format!("/v1/licenses/{license_id}/suspend"), None);
    check("suspended pull", s.inspect(&customer, "nectar/app"), false, &s.registry);
    s.admin("POST", &format!("/v1/licenses/{license_id}/reactivate"), None);
    check("reactivated pull", s.inspect(&customer, "nectar/app"), true, &s.registry);

    // Expired a day ago with 7 grace days: in grace, still pulls. Past grace, and revoked: refused.
    // A license cannot be created already expired, so these are moved into the past afterwards.
    let now = chrono::Utc::now();
    let expired_since = |days: i64| {
        let (id, _) = s.license(json!({"expires_at": now + chrono::Duration::days(30), "grace_days": 7}));
        let past = json!({"expires_at": now - chrono::Duration::days(days)});
        let updated = s.admin("PATCH", &format!("/v1/licenses/{id}"), Some(&past));
        updated["key"].as_str().expect("a new expiry re-issues the key").to_owned()
    };
    let grace_key = expired_since(1);
    check("in-grace pull", s.inspect(&format!("a:{grace_key}"), "nectar/app"), true, &s.registry);
    let expired_key = expired_since(30);
    check("expired pull", s.inspect(&format!("a:{expired_key}"), "nectar/app"), false, &s.registry);
    let (revoked_id, revoked_key) = s.license(json!({}));
    check("pull before revocation", s.inspect(&format!("a:{revoked_key}"), "nectar/app"), true, &s.registry);
    s.admin("DELETE", &format!("/v1/licenses/{revoked_id}"), None);
    check("revoked pull", s.inspect(&format!("a:{revoked_key}"), "nectar/app"), false, &s.registry);
    // A license without a registry grant validates but pulls nothing.
    let (none_id, none_key) = s.license(json!({"registry": null}));
    s.admin("PATCH", &format!("/v1/licenses/{none_id}"), Some(&json!({"registry": null})));
    check("no-grant pull", s.inspect(&format!("a:{none_key}"), "nectar/app"), false, &s.registry);

    // The license's history shows its pulls and refusals, with repository, actions and IP.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let h = s.admin("GET", &format!("/v1/licenses/{license_id}/validations?limit=100"), None);
        let items = h["items"].as_array().unwrap().clone();
        let has = |code: &str| items.iter().any(|e| e["code"] == code && e["client_ip"] == "127.0.0.1");
        if has("REGISTRY_GRANTED") && has("REGISTRY_DENIED") && has("SUSPENDED") || Instant::now() > deadline
        {
            break items;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let granted =
        history.iter().find(|e| e["code"] == "REGISTRY_GRANTED").expect("a granted pull in the history");
    assert_eq!(granted["registry"]["granted"], json!(["pull"]), "{history:?}");
    let pushed = history
        .iter()
        .find(|e| e["code"] == "REGISTRY_GRANTED" && e["registry"]["requested"].as_array().unwrap().len() > 1)
        .expect("the customer's push attempt asked for pull,push");
    assert_eq!(pushed["registry"]["granted"], json!(["pull"]));
    assert!(
        history
            .iter()
            .any(|e| e["code"] == "REGISTRY_DENIED" && e["registry"]["repository"] == "nectar/internal")
    );
    assert!(history.iter().any(|e| e["code"] == "SUSPENDED" && e["registry"].is_null()), "{history:?}");

    // Staff tokens are in the audit log, under the API key, with what they granted.
    let staff_id = staff_key_id(&staff);
    let audit = s.admin("GET", &format!("/v1/audit-log?target=api_key:{staff_id}&limit=100"), None);
    let pushes: Vec<&Value> =
        audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "registry.token").collect();
    assert!(
        pushes.iter().any(|e| e["actor"] == staff_id.as_str()
            && e["after"]["client_ip"] == "127.0.0.1"
            && e["after"]["access"].as_array().unwrap().iter().any(|a| a["repository"] == "nectar/internal"
                && a["granted"].as_array().unwrap().iter().any(|g| g == "push"))),
        "{audit}"
    );

    let metrics = request(s.server.port, "GET", "/metrics", &[], b"").unwrap().text();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(value("nls_registry_scopes_granted_total") >= 4, "{metrics}");
    assert!(value("nls_registry_scopes_denied_total") >= 1);
    assert!(value("nls_registry_token_requests_refused_total") >= 3);
}

/// `ak_...` out of `user:nls_<key id>_<secret>`.
fn staff_key_id(creds: &str) -> String {
    let token = creds.split_once(':').unwrap().1.strip_prefix("nls_").unwrap();
    token.rsplit_once('_').unwrap().0.to_owned()
}

fn sign_with(key: &RegistrySigningKey, repository: &str, exp_offset: chrono::Duration) -> String {
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: repository.into(),
        actions: vec!["pull".into()],
    }];
    let issued = chrono::Utc::now() + exp_offset - chrono::Duration::minutes(5);
    key.sign(&RegistryClaims::new(ISSUER, "test", SERVICE, access, issued, chrono::Duration::minutes(5)))
}

#[test]
fn the_registry_refuses_expired_and_forged_tokens() {
    let s = setup();
    let staff = s.admin("POST", "/v1/api-keys", Some(&json!({"name": "ci", "scopes": ["registry:push"]})));
    check(
        "staff push",
        s.push(&format!("ci:{}", staff["secret"].as_str().unwrap()), "nectar/app"),
        true,
        &s.registry,
    );
    check(
        "staff push",
        s.push(&format!("ci:{}", staff["secret"].as_str().unwrap()), "nectar/internal"),
        true,
        &s.registry,
    );
    let (_, key) = s.license(json!({}));
    let customer = format!("acme:{key}");

    // A token from the service works; the same key's token for the same access works.
    let issued = s.token(&customer, "repository:nectar/app:pull");
    assert_eq!(s.registry.tags_with_token("nectar/app", &issued).status, 200);
    let jwk = std::fs::read_to_string(s.server.data_dir.join("registry-signing-key.jwk")).unwrap();
    let ours = RegistrySigningKey::parse_jwk_json(&jwk).unwrap();
    assert_eq!(
        s.registry
            .tags_with_token("nectar/app", &sign_with(&ours, "nectar/app", chrono::Duration::minutes(4)))
            .status,
        200
    );

    // Expired two minutes ago (past the registry's 60 s leeway): refused.
    let expired = sign_with(&ours, "nectar/app", -chrono::Duration::minutes(2));
    assert_eq!(s.registry.tags_with_token("nectar/app", &expired).status, 401);

    // Signed by another key, claiming our kid or its own: refused.
    let other = RegistrySigningKey::generate();
    assert_eq!(
        s.registry
            .tags_with_token("nectar/app", &sign_with(&other, "nectar/app", chrono::Duration::minutes(4)))
            .status,
        401
    );
    let parts: Vec<&str> = issued.split('.').collect();
    let other_sig = sign_with(&other, "nectar/app", chrono::Duration::minutes(4));
    let other_sig = other_sig.rsplit('.').next().unwrap();
    assert_eq!(
        s.registry.tags_with_token("nectar/app", &format!("{}.{}.{other_sig}", parts[0], parts[1])).status,
        401
    );

    // alg none, with and without a signature: refused.
    let none_header = B64URL.encode(json!({"typ": "JWT", "alg": "none", "kid": ours.kid()}).to_string());
    assert_eq!(s.registry.tags_with_token("nectar/app", &format!("{none_header}.{}.", parts[1])).status, 401);
    assert_eq!(
        s.registry.tags_with_token("nectar/app", &format!("{none_header}.{}.{}", parts[1], parts[2])).status,
        401
    );

    // The access altered to another repository, the signature kept: refused there.
    let mut claims: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["access"][0]["name"], "nectar/app");
    claims["access"][0]["name"] = json!("nectar/internal");
    let altered = format!("{}.{}.{}", parts[0], B64URL.encode(claims.to_string()), parts[2]);
    assert_eq!(s.registry.tags_with_token("nectar/internal", &altered).status, 401);
    // ...while the staff token for nectar/internal shows the repository is there to read.
    let staff_token =
        s.token(&format!("ci:{}", staff["secret"].as_str().unwrap()), "repository:nectar/internal:pull");
    assert_eq!(s.registry.tags_with_token("nectar/internal", &staff_token).status, 200);
}

#[test]
fn bad_token_requests_get_the_protocols_4xx_never_a_5xx() {
    let s = setup();
    let (_, key) = s.license(json!({}));
    let creds = format!("acme:{key}");
    let cases: Vec<(String, Option<&str>, u16, &str)> = vec![
        (format!("service={SERVICE}&scope=repository:nectar/app:pull"), None, 401, "UNAUTHORIZED"),
        (
            format!("service={SERVICE}&scope=repository:nectar/app:pull"),
            Some("acme:NLS-garbage-00000000"),
            401,
            "UNAUTHORIZED",
        ),
        (
            format!("service={SERVICE}&scope=repository:nectar/app:pull"),
            Some("nobody:nls_ak_x_00"),
            401,
            "UNAUTHORIZED",
        ),
        (
            format!("service={SERVICE}&scope=repository:nectar/app:pull"),
            Some("no-colon"),
            401,
            "UNAUTHORIZED",
        ),
        ("service=other&scope=repository:nectar/app:pull".to_owned(), Some(&creds), 400, "INVALID_SERVICE"),
        ("scope=repository:nectar/app:pull".to_owned(), Some(&creds), 400, "INVALID_SERVICE"),
        (format!("service={SERVICE}&scope=repository:Nectar:pull"), Some(&creds), 400, "INVALID_SCOPE"),
        (format!("service={SERVICE}&scope=nonsense"), Some(&creds), 400, "INVALID_SCOPE"),
        (format!("service={SERVICE}&scope=%FF%FE:x:y"), Some(&creds), 400, "INVALID_SCOPE"),
        (
            format!("service={SERVICE}{}", "&scope=repository:a:pull".repeat(17)),
            Some(&creds),
            400,
            "INVALID_SCOPE",
        ),
    ];
    for (query, basic, status, code) in cases {
        let r = s.token_request(&query, basic);
        assert_eq!(
            (r.status, r.json()["errors"][0]["code"].as_str()),
            (status, Some(code)),
            "{query} {basic:?}: {}",
            r.text()
        );
        if status == 401 {
            assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Basic ")), "{query}");
        }
    }
    // docker login: credentials and no scope give a token with empty access.
    let r = s.token_request(&format!("service={SERVICE}&account=acme"), Some(&creds));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    let claims: Value = serde_json::from_slice(
        &B64URL.decode(body["token"].as_str().unwrap().split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str(), claims["access"].clone()),
        (Some(ISSUER), Some(SERVICE), json!([]))
    );
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
}
