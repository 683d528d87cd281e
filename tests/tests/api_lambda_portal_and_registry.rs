//! The api Lambda (the release `nls-api` under cargo-lambda's Runtime API emulator, on
//! DynamoDB in moto) serves what `nls serve` serves:
//! - the admin portal: a staff user made by `nls staff create` on the function's own table
//!   signs in, loads the licenses page, suspends a license through its form with the page's
//!   CSRF token, and the change is in the audit log as that user;
//! - the registry token service (issue 13), its key read from Secrets Manager as
//!   template.yaml deploys it: a live license key gets a token with its pull grant, which the
//!   real CNCF registry (Debian's `docker-registry`) accepts against the certificate `nls
//!   registry cert` wrote; a suspended license gets no access.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nls_tests::api_lambda::ApiLambda;
use nls_tests::http_client::{HttpResponse, request};
use nls_tests::nls_host::{HostOptions, NlsHost};
use nls_tests::nls_server::{TempDir, run_nls};
use serde_json::{Value, json};

/// `name=value` of the response's `Set-Cookie` for `name`.
fn set_cookie(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap_or("").to_owned())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The value of the page's first hidden `csrf` field.
fn csrf_field(page: &HttpResponse) -> String {
    let body = page.text();
    let at = body.find("name=\"csrf\" value=\"").unwrap_or_else(|| panic!("no CSRF field in {body}")) + 19;
    body[at..].split('"').next().unwrap().to_owned()
}

/// An `application/x-www-form-urlencoded` body.
fn form(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect::<Vec<_>>().join("&")
}

struct Browser<'a> {
    lambda: &'a ApiLambda,
    cookies: Vec<String>,
}

impl Browser<'_> {
    fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let (port, prefix) = self.lambda.endpoint();
        let cookie = self.cookies.join("; ");
        let mut headers = vec![("cookie", cookie.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let r = request(port, method, &format!("{prefix}{path}"), &headers, body.unwrap_or("").as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.lambda.log_text()));
        for (_, value) in r.headers.iter().filter(|(n, _)| n == "set-cookie") {
            let pair = value.split(';').next().unwrap_or("").to_owned();
            let cookie_name = pair.split('=').next().unwrap_or("").to_owned();
            self.cookies.retain(|c| !c.starts_with(&format!("{cookie_name}=")));
            if !value.contains("Max-Age=0") {
                self.cookies.push(pair);
            }
        }
        r
    }
}

#[test]
fn the_portal_signs_in_lists_and_suspends_on_the_lambda() {
    let lambda = ApiLambda::start("portal", HostOptions::default());
    let (table, aws) = lambda.store_env();
    let made = run_nls(
        &[
            "staff",
            "create",
            "--email",
            "ops@nectar.test",
            "--name",
            "Ops",
            "--role",
            "support",
            "--generate-password",
            "--store",
            "dynamodb",
            "--table",
            &table,
        ],
        &aws,
    );
    let made: Value = serde_json::from_str(&made).expect("nls staff create prints JSON");
    let password = made["generated_password"].as_str().expect("a generated password").to_owned();
    let staff_id = made["id"].as_str().unwrap().to_owned();

    let customer =
        lambda.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let created = lambda.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"], "tier": "pro"})),
    );
    let license_id = created["license"]["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();

    let mut browser = Browser { lambda: &lambda, cookies: vec![] };
    let login = browser.send("GET", "/admin/login", None);
    assert_eq!(login.status, 200, "{}", login.text());
    assert!(set_cookie(&login, "nls_login_csrf").is_some(), "the sign-in form's cookie comes through");
    let body = form(&[("csrf", &csrf_field(&login)), ("email", "ops@nectar.test"), ("password", &password)]);
    let signed_in = browser.send("POST", "/admin/login", Some(&body));
    assert_eq!(
        (signed_in.status, signed_in.header("location")),
        (303, Some("/admin/")),
        "{}",
        signed_in.text()
    );
    assert!(set_cookie(&signed_in, "nls_session").is_some());

    let list = browser.send("GET", "/admin/licenses", None);
    assert_eq!(list.status, 200, "{}", list.text());
    assert!(list.text().contains(&license_id), "the licenses page lists the license");
    let detail = browser.send("GET", &format!("/admin/licenses/{license_id}"), None);
    assert_eq!(detail.status, 200);
    let suspend = form(&[("csrf", &csrf_field(&detail))]);
    let forged = browser.send("POST", &format!("/admin/licenses/{license_id}/suspend"), Some("csrf=guess"));
    assert_eq!(forged.status, 403, "a wrong CSRF token is refused");
    let suspended = browser.send("POST", &format!("/admin/licenses/{license_id}/suspend"), Some(&suspend));
    assert_eq!(suspended.status, 303, "{}", suspended.text());

    let validated = lambda.validate(&json!({"key": key, "deployment_id": "lambda-portal-1"}));
    assert_eq!(validated["code"], "SUSPENDED");
    let audit = lambda.admin("GET", &format!("/v1/audit-log?target=license:{license_id}"), None);
    let entries = audit["items"].as_array().expect("audit items");
    assert!(
        entries.iter().any(|e| e["action"] == "license.suspend" && e["actor"] == format!("staff:{staff_id}")),
        "{audit}"
    );
}

/// The CNCF registry, trusting `cert`, sending clients to the Lambda's token route.
struct Registry {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Registry {
    fn start(dir: &Path, realm: &str, cert: &Path) -> Self {
        let port = nls_tests::free_port::free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: {realm}\n\
                 \x20   service: nectar-registry\n    issuer: nls\n    rootcertbundle: {cert}\n",
                storage = dir.join("storage").display(),
                cert = cert.display(),
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("docker-registry on PATH (tests/run.sh installs it)");
        let registry = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if request(port, "GET", "/v2/", &[], b"").is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the registry did not start:\n{}", std::fs::read_to_string(&registry.log).unwrap_or_default());
    }

    /// `GET /v2/<repository>/tags/list` with a bearer token: 401 unless the registry trusts it.
    fn tags_with_token(&self, repository: &str, token: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        request(self.port, "GET", &format!("/v2/{repository}/tags/list"), &[("authorization", &auth)], b"")
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token_request(lambda: &ApiLambda, scope: &str, key: &str) -> HttpResponse {
    let (port, prefix) = lambda.endpoint();
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("customer:{key}")));
    let path = format!("{prefix}/v1/registry/token?service=nectar-registry&scope={scope}");
    request(port, "GET", &path, &[("authorization", &basic)], b"").unwrap()
}

/// What a token answer grants: its `access` claim, or nothing for a 401 (the protocol allows
/// either for a refusal).
fn granted(r: &HttpResponse) -> Value {
    match r.status {
        200 => access_of(r.json()["token"].as_str().expect("a token")),
        401 => json!([]),
        other => panic!("unexpected {other}: {}", r.text()),
    }
}

fn access_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS");
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    claims["access"].clone()
}

#[test]
fn registry_tokens_on_the_lambda_come_from_the_secrets_manager_key() {
    // What a deployer does (docs/distribution.md): `nls registry cert` in a scratch data dir
    // makes the key and its certificate; the key goes into Secrets Manager.
    let scratch = TempDir::new("lambda-registry");
    let cert = scratch.path().join("registry-ca.pem");
    run_nls(
        &[
            "registry",
            "cert",
            "--data-dir",
            scratch.path().to_str().unwrap(),
            "--out",
            cert.to_str().unwrap(),
        ],
        &[],
    );
    let jwk = std::fs::read_to_string(scratch.path().join("registry-signing-key.jwk")).expect("the key");
    std::fs::remove_file(scratch.path().join("registry-signing-key.jwk")).unwrap();
    let lambda = ApiLambda::start_with_secrets(
        "registry",
        HostOptions::default(),
        &[("NLS_REGISTRY_KEY_SECRET_ID", &jwk)],
    );
    let (port, prefix) = lambda.endpoint();
    let registry =
        Registry::start(scratch.path(), &format!("http://127.0.0.1:{port}{prefix}/v1/registry/token"), &cert);

    let customer =
        lambda.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let created = lambda.admin(
        "POST",
        "/v1/licenses",
        Some(&json!({"customer_id": customer["customer"]["id"],
            "registry": {"repositories": ["nectar/app", "nectar/worker-*"], "actions": ["pull"]}})),
    );
    let license_id = created["license"]["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();

    // Pull is granted; push (never for customers) and other repositories are not.
    let r = token_request(&lambda, "repository:nectar/app:pull,push", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().expect("a token").to_owned();
    assert_eq!(access_of(&token), json!([{"type": "repository", "name": "nectar/app", "actions": ["pull"]}]));
    // The registry verifies it against the certificate: past auth, the repository is simply
    // empty (404), where an untrusted token is 401.
    let trusted = registry.tags_with_token("nectar/app", &token);
    assert_eq!(
        trusted.status,
        404,
        "{}\n{}",
        trusted.text(),
        std::fs::read_to_string(&registry.log).unwrap()
    );
    let mut forged = token.clone();
    forged.push('A');
    assert_eq!(registry.tags_with_token("nectar/app", &forged).status, 401);
    let other = token_request(&lambda, "repository:nectar/internal:pull", &key);
    assert_eq!(granted(&other), json!([]), "not in the license's grant");

    // Suspended: no access at all.
    lambda.admin("POST", &format!("/v1/licenses/{license_id}/suspend"), Some(&json!({})));
    let refused = token_request(&lambda, "repository:nectar/app:pull", &key);
    assert_eq!(granted(&refused), json!([]), "a suspended license gets no access");
}
