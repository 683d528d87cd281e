//! The registry token service against the real CNCF registry (Debian's `docker-registry`,
//! distribution 2.8) driven by `skopeo`: `nls serve` issues the tokens, the registry trusts
//! the certificate `nls registry cert` wrote, and every scenario of docs/distribution.md is
//! played with real pushes and pulls. tests/run.sh installs both tools.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use nls_core::registry_token::{RegistryClaims, RegistrySigningKey, ResourceActions};
use nls_tests::http_client::{HttpResponse, request};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir, nls_binary};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SERVICE: &str = "nectar-registry-e2e";
const ISSUER: &str = "nls-e2e";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The registry process, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path, nls_port: u16, cert: &Path) -> Self {
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\nauth:\n  token:\n\
                 \x20   realm: http://127.0.0.1:{nls_port}/v1/registry/token\n    service: {SERVICE}\n\
                 \x20   issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
                storage = dir.join("storage").display(),
                secret = random_hex(),
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
            if request(port, "GET", "/v2/", &[], b"").is_ok_and(|r| r.status == 401) {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not start:\n{}", std::fs::read_to_string(&registry.log).unwrap_or_default());
    }

    fn url(&self, repository: &str) -> String {
        format!("docker://127.0.0.1:{}/{repository}:v1", self.port)
    }

    /// `GET /v2/<repository>/tags/list` with a bearer token: 200 only when the registry trusts it.
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

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    (digest, bytes.len())
}

/// An OCI image layout with one small layer, tagged `v1`, written by hand.
fn build_oci_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), format!("hello from nls {}\n", random_hex())).unwrap();
    let tar = dir.join("layer.tar");
    let ok =
        Command::new("tar").arg("-C").arg(&content).arg("-cf").arg(&tar).arg("hello.txt").status().unwrap();
    assert!(ok.success(), "tar");
    let ok = Command::new("gzip").arg("-n").arg("-k").arg("-f").arg(&tar).status().unwrap();
    assert!(ok.success(), "gzip");
    let diff_id = format!("sha256:{}", sha256_hex(&std::fs::read(&tar).unwrap()));
    let (layer_digest, layer_size) = write_blob(&layout, &std::fs::read(dir.join("layer.tar.gz")).unwrap());
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    let (config_digest, config_size) = write_blob(&layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = write_blob(&layout, manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    layout
}

/// Runs skopeo with no stored credentials; (success, stderr).
fn skopeo(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("skopeo")
        .args(args)
        .env("HOME", home)
        .env("REGISTRY_AUTH_FILE", home.join("no-auth.json"))
        .env("XDG_RUNTIME_DIR", home)
        .output()
        .expect("skopeo on PATH (tests/run.sh installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

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
    let registry = Registry::start(dir.path(), server.port, &cert);
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
    let now = chrono::Utc::now();
    let (_, grace_key) = s.license(json!({"expires_at": now - chrono::Duration::days(1), "grace_days": 7}));
    check("in-grace pull", s.inspect(&format!("a:{grace_key}"), "nectar/app"), true, &s.registry);
    let (_, expired_key) =
        s.license(json!({"expires_at": now - chrono::Duration::days(30), "grace_days": 7}));
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
