//! The authorization matrix: every route of the real `nls serve` × every kind of credential,
//! one expected status per cell. The routes come from the server's own `/openapi.json`, so a
//! route added to the route table without a row in [`MATRIX`] fails this test, and so does a
//! row for a route that no longer exists.
//!
//! A cell presents its credential where the route takes credentials: the `Authorization`
//! header for API-key routes (and for public, internal and webhook routes, which must ignore
//! or refuse it), the `key` for license-key routes (`X-License-Key` for the release). Every
//! other part of the request is valid, and every resource it names exists in a state that lets
//! the call succeed, so a cell's status is decided by its credential alone. Each observed status
//! must also be one the document lists for the operation.

use nls_tests::http_client::{HttpResponse, request};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The columns of the matrix, in order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Credential {
    None,
    /// Not a bearer token (`Basic ...`); for license-key routes, not an NLS key.
    Malformed,
    /// Well formed and unknown: `nls_ak_<unknown>_<secret>`; a license key whose signature no
    /// key of the ring made.
    Unknown,
    RevokedApiKey,
    Read,
    Write,
    Admin,
    /// A license key where an API key goes; on license-key routes, the license key where it
    /// belongs (the one cell that succeeds there).
    LicenseKeyAsApiKey,
    /// An API key (admin scope) where a license key goes: in the body, no `Authorization`.
    ApiKeyAsLicenseKey,
    /// The edges' service token (an `edge` API key).
    ServiceToken,
    /// `NLS_BOOTSTRAP_ADMIN_KEY`.
    Bootstrap,
    /// A cloud service's metering key (a `meter` API key).
    MeterKey,
}

const COLUMNS: [Credential; 12] = [
    Credential::None,
    Credential::Malformed,
    Credential::Unknown,
    Credential::RevokedApiKey,
    Credential::Read,
    Credential::Write,
    Credential::Admin,
    Credential::LicenseKeyAsApiKey,
    Credential::ApiKeyAsLicenseKey,
    Credential::ServiceToken,
    Credential::Bootstrap,
    Credential::MeterKey,
];

// Rows by kind of route. Columns:         none mal unk rev read writ adm lic→ api→ svc boot mtr
const READ: [u16; 12] = /*            */ [401, 401, 401, 401, 200, 200, 200, 401, 401, 403, 200, 403];
const fn write(ok: u16) -> [u16; 12] {
    /*                                  */
    [401, 401, 401, 401, 403, ok, ok, 401, 401, 403, ok, 403]
}
const fn admin(ok: u16) -> [u16; 12] {
    [401, 401, 401, 401, 403, 403, ok, 401, 401, 403, ok, 403]
}
/// Internal routes: only the service token (and, for one release, a `read`-only key).
const EDGE: [u16; 12] = /*            */ [401, 401, 401, 401, 200, 403, 403, 401, 401, 200, 403, 403];
/// Internal routes added with the `edge` scope: the service token only (no legacy `read` key).
const EDGE_ONLY: [u16; 12] = /*       */ [401, 401, 401, 401, 403, 403, 403, 401, 401, 200, 403, 403];
/// Public routes ignore the `Authorization` header.
const OPEN: [u16; 12] = [200; 12];
/// A validation answers 200 whatever the key; only a missing key is a bad request.
const VALIDATE: [u16; 12] = [400, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200];
const fn license_key(ok: u16, missing: u16) -> [u16; 12] {
    [missing, 401, 401, 401, 401, 401, 401, ok, 401, 401, 401, 401]
}
/// The webhook is authenticated by `Stripe-Signature` alone: no bearer token stands in for it.
const STRIPE: [u16; 12] = [400; 12];
/// The registry token service takes HTTP Basic only (password: a license key or a
/// `registry:push` key; tests/tests/registry_tokens.rs drives those): every bearer token, no
/// credentials and a Basic password that is neither are the protocol's 401.
const REGISTRY: [u16; 12] = [401; 12];
/// A cloud service's metering route: the `meter` key only.
const METER: [u16; 12] = /*           */ [401, 401, 401, 401, 403, 403, 403, 401, 401, 403, 403, 202];

/// (operation, expected status per column).
const MATRIX: &[(&str, [u16; 12])] = &[
    ("POST /v1/licenses/validate", VALIDATE),
    ("POST /v1/heartbeat", license_key(200, 400)),
    ("POST /v1/usage", license_key(202, 400)),
    ("DELETE /v1/deployments/{deployment_id}", license_key(200, 401)),
    ("GET /.well-known/jwks.json", OPEN),
    ("GET /health", OPEN),
    ("GET /metrics", OPEN),
    ("GET /openapi.json", OPEN),
    ("GET /v1/internal/snapshots/{id}", EDGE),
    ("POST /v1/internal/validation-events", EDGE_ONLY),
    ("GET /v1/licenses/{id}/compliance", READ),
    ("GET /v1/compliance", READ),
    ("POST /v1/customers", write(201)),
    ("GET /v1/customers", READ),
    ("GET /v1/customers/{id}", READ),
    ("PATCH /v1/customers/{id}", write(200)),
    ("DELETE /v1/customers/{id}", write(204)),
    ("POST /v1/licenses", write(201)),
    ("GET /v1/licenses", READ),
    ("GET /v1/licenses/{id}", READ),
    ("PATCH /v1/licenses/{id}", write(200)),
    ("DELETE /v1/licenses/{id}", write(200)),
    ("POST /v1/licenses/{id}/suspend", write(200)),
    ("POST /v1/licenses/{id}/reactivate", write(200)),
    ("POST /v1/licenses/{id}/renew", write(200)),
    ("POST /v1/licenses/{id}/offline-file", write(201)),
    ("GET /v1/licenses/{id}/deployments", READ),
    ("GET /v1/licenses/{id}/usage", READ),
    ("GET /v1/licenses/{id}/validations", READ),
    ("GET /v1/licenses/{id}/notifications", READ),
    ("POST /v1/api-keys", admin(201)),
    ("GET /v1/api-keys", admin(200)),
    ("DELETE /v1/api-keys/{id}", admin(200)),
    ("GET /v1/audit-log", READ),
    ("GET /v1/stats", READ),
    ("POST /v1/webhooks/stripe", STRIPE),
    ("GET /v1/registry/token", REGISTRY),
    ("POST /v1/access-tokens", license_key(200, 400)),
    ("POST /v1/cloud-usage", METER),
];

struct Keys {
    revoked: String,
    read: String,
    write: String,
    admin: String,
    edge: String,
    meter: String,
}

fn api_key(server: &NlsServer, name: &str, scope: &str) -> (String, String) {
    let created = server.admin("POST", "/v1/api-keys", Some(&json!({"name": name, "scopes": [scope]})));
    (created["api_key"]["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

fn keys(server: &NlsServer) -> Keys {
    let (revoked_id, revoked) = api_key(server, "revoked", "admin");
    server.admin("DELETE", &format!("/v1/api-keys/{revoked_id}"), None);
    Keys {
        revoked,
        read: api_key(server, "reader", "read").1,
        write: api_key(server, "writer", "write").1,
        admin: api_key(server, "administrator", "admin").1,
        edge: api_key(server, "edge fleet", "edge").1,
        meter: api_key(server, "workflows meter", "meter").1,
    }
}

/// What one cell's request targets, created fresh so the cell before cannot have used it up.
struct Target {
    customer_id: String,
    license_id: String,
    license_key: String,
    deployment_id: String,
    api_key_id: String,
}

fn target(server: &NlsServer, operation: &str) -> Target {
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let customer_id = customer["customer"]["id"].as_str().unwrap().to_owned();
    if operation == "DELETE /v1/customers/{id}" {
        // A customer with a license cannot be deleted: this one has none.
        return Target {
            customer_id,
            license_id: String::new(),
            license_key: String::new(),
            deployment_id: String::new(),
            api_key_id: String::new(),
        };
    }
    let mut terms = json!({"customer_id": customer_id});
    if operation == "POST /v1/access-tokens" {
        terms["cloud"] = json!({"workflows": {"requests_per_minute": 60, "burst": 100}});
    }
    let license = server.admin("POST", "/v1/licenses", Some(&terms));
    let license_id = license["license"]["id"].as_str().unwrap().to_owned();
    let license_key = license["key"].as_str().unwrap().to_owned();
    let deployment_id = "host-1".to_owned();
    let validated = server.validate(&json!({"key": license_key, "deployment_id": deployment_id}));
    assert_eq!(validated["valid"], true, "{validated}");
    if operation == "POST /v1/licenses/{id}/reactivate" {
        server.admin("POST", &format!("/v1/licenses/{license_id}/suspend"), None);
    }
    let api_key_id = if operation == "DELETE /v1/api-keys/{id}" {
        api_key(server, "to revoke", "read").0
    } else {
        String::new()
    };
    Target { customer_id, license_id, license_key, deployment_id, api_key_id }
}

/// A key with a valid shape and checksum whose signature no key of the ring made.
fn foreign_license_key(real: &str) -> String {
    let jws = &real["NLS-".len()..real.len() - 9];
    let (signed, signature) = jws.rsplit_once('.').unwrap();
    let mut forged: Vec<char> = signature.chars().collect();
    forged[0] = if forged[0] == 'A' { 'B' } else { 'A' };
    let jws = format!("{signed}.{}", forged.into_iter().collect::<String>());
    let digest = Sha256::digest(jws.as_bytes());
    let checksum: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("NLS-{jws}-{checksum}")
}

/// The credential a column presents where a license key goes; `None`: no key at all.
fn license_key_for(cell: Credential, t: &Target, keys: &Keys, bootstrap: &str) -> Option<String> {
    match cell {
        Credential::None => None,
        Credential::Malformed => Some("NLS-not-a-key-00000000".to_owned()),
        Credential::Unknown => Some(foreign_license_key(&t.license_key)),
        Credential::RevokedApiKey => Some(keys.revoked.clone()),
        Credential::Read => Some(keys.read.clone()),
        Credential::Write => Some(keys.write.clone()),
        Credential::Admin | Credential::ApiKeyAsLicenseKey => Some(keys.admin.clone()),
        Credential::LicenseKeyAsApiKey => Some(t.license_key.clone()),
        Credential::ServiceToken => Some(keys.edge.clone()),
        Credential::Bootstrap => Some(bootstrap.to_owned()),
        Credential::MeterKey => Some(keys.meter.clone()),
    }
}

/// The `Authorization` header a column sends to a route that does not take a license key.
fn authorization_for(cell: Credential, t: &Target, keys: &Keys, bootstrap: &str) -> Option<String> {
    let bearer = |token: &str| Some(format!("Bearer {token}"));
    match cell {
        Credential::None | Credential::ApiKeyAsLicenseKey => None,
        Credential::Malformed => Some("Basic bmxzOm5scw==".to_owned()),
        Credential::Unknown => bearer("nls_ak_0000000000000000_00112233445566778899aabbccddeeff"),
        Credential::RevokedApiKey => bearer(&keys.revoked),
        Credential::Read => bearer(&keys.read),
        Credential::Write => bearer(&keys.write),
        Credential::Admin => bearer(&keys.admin),
        Credential::LicenseKeyAsApiKey => bearer(&t.license_key),
        Credential::ServiceToken => bearer(&keys.edge),
        Credential::Bootstrap => bearer(bootstrap),
        Credential::MeterKey => bearer(&keys.meter),
    }
}

/// The concrete path and a valid body for an operation.
fn request_for(operation: &str, t: &Target) -> (String, Option<Value>) {
    let (_, template) = operation.split_once(' ').unwrap();
    let id = if template.starts_with("/v1/customers") {
        &t.customer_id
    } else if template.starts_with("/v1/api-keys") {
        &t.api_key_id
    } else {
        &t.license_id
    };
    let mut path = template.replace("{id}", id).replace("{deployment_id}", &t.deployment_id);
    if operation == "GET /v1/registry/token" {
        path.push_str("?service=nectar-registry&scope=repository:nectar/app:pull");
    }
    let future = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let body = match operation {
        "POST /v1/licenses/validate" => Some(json!({"deployment_id": t.deployment_id})),
        "POST /v1/heartbeat" => Some(json!({"deployment_id": t.deployment_id})),
        "POST /v1/access-tokens" => Some(json!({"deployment_id": t.deployment_id, "audience": "workflows"})),
        "POST /v1/usage" => Some(json!({
            "deployment_id": t.deployment_id, "batch_id": format!("b-{}", t.license_id),
            "records": [{"metric": "runs", "value": 1, "at": chrono::Utc::now().to_rfc3339()}]
        })),
        "POST /v1/cloud-usage" => Some(json!({
            "batch_id": format!("mb-{}", t.license_id), "audience": "workflows",
            "records": [{"license_id": t.license_id, "calls": 1, "at": chrono::Utc::now().to_rfc3339()}]
        })),
        "POST /v1/customers" => Some(json!({"name": "Beta", "email": "ops@beta.test"})),
        "PATCH /v1/customers/{id}" => Some(json!({"name": "Acme 2"})),
        "POST /v1/licenses" => Some(json!({"customer_id": t.customer_id})),
        "PATCH /v1/licenses/{id}" => Some(json!({"tier": "pro"})),
        "POST /v1/licenses/{id}/renew" => Some(json!({"expires_at": future})),
        "POST /v1/licenses/{id}/offline-file" => Some(json!({})),
        "POST /v1/api-keys" => Some(json!({"name": "new", "scopes": ["read"]})),
        "POST /v1/webhooks/stripe" => Some(json!({"id": "evt_1", "type": "invoice.paid"})),
        "POST /v1/internal/validation-events" => Some(json!({
            "batch_id": format!("veb-{}", t.license_id),
            "events": [{"license_id": t.license_id, "code": "VALID", "at": chrono::Utc::now().to_rfc3339()}]
        })),
        _ => None,
    };
    (path, body)
}

fn send(
    server: &NlsServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> HttpResponse {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(server.port, method, path, &all, body.as_bytes()).expect("HTTP request")
}

fn documented_statuses(doc: &Value, method: &str, template: &str) -> Vec<u16> {
    let responses = &doc["paths"][template][method.to_ascii_lowercase()]["responses"];
    responses.as_object().expect("responses").keys().filter_map(|s| s.parse().ok()).collect()
}

#[test]
fn every_route_answers_every_credential_as_the_matrix_says() {
    let dir = TempDir::new("authz-matrix");
    // No per-IP limit: the matrix sends about a thousand set-up requests in a few seconds.
    let server = NlsServer::start_with_env(
        dir.path(),
        &["--ip-rate-limit", "0"],
        &[("NLS_STRIPE_WEBHOOK_SECRET", "whsec_matrix_test")],
        "warn",
    );
    let doc = server.call("GET", "/openapi.json", None, None).json();
    let mut served: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            served.push(format!("{} {path}", method.to_ascii_uppercase()));
        }
    }
    let missing: Vec<&String> = served.iter().filter(|op| !MATRIX.iter().any(|(m, _)| m == op)).collect();
    assert!(missing.is_empty(), "routes without a row in the authorization matrix: {missing:?}");
    let stale: Vec<&str> =
        MATRIX.iter().map(|(m, _)| *m).filter(|m| !served.iter().any(|s| s == m)).collect();
    assert!(stale.is_empty(), "matrix rows for routes that are not served: {stale:?}");

    let keys = keys(&server);
    let bootstrap = server.admin_key.clone();
    let mut wrong = Vec::new();
    for (operation, expected) in MATRIX {
        let (method, template) = operation.split_once(' ').unwrap();
        let takes_license_key =
            doc["paths"][template][method.to_ascii_lowercase()]["x-authentication"] == "license key";
        let documented = documented_statuses(&doc, method, template);
        for (cell, want) in COLUMNS.iter().zip(expected) {
            let t = target(&server, operation);
            let (path, mut body) = request_for(operation, &t);
            let mut headers: Vec<(&str, String)> = Vec::new();
            if takes_license_key {
                let key = license_key_for(*cell, &t, &keys, &bootstrap);
                match (&mut body, key) {
                    (Some(Value::Object(fields)), Some(key)) => {
                        fields.insert("key".into(), json!(key));
                    }
                    (None, Some(key)) => headers.push(("x-license-key", key)),
                    _ => {}
                }
            } else {
                if let Some(auth) = authorization_for(*cell, &t, &keys, &bootstrap) {
                    headers.push(("authorization", auth));
                }
                if let (Credential::ApiKeyAsLicenseKey, Some(Value::Object(fields))) = (*cell, &mut body) {
                    fields.insert("key".into(), json!(keys.admin));
                }
            }
            let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let r = send(&server, method, &path, &header_refs, body.as_ref());
            if r.status != *want {
                wrong.push(format!("{operation} × {cell:?}: {} (want {want}) {}", r.status, r.text()));
            } else if r.status >= 400 && !documented.contains(&r.status) {
                wrong
                    .push(format!("{operation} × {cell:?}: {} is not in the document's responses", r.status));
            }
            if *operation == "POST /v1/licenses/validate" && r.status == 200 {
                let happy = *cell == Credential::LicenseKeyAsApiKey;
                assert_eq!(r.json()["valid"], happy, "{operation} × {cell:?}: {}", r.text());
            }
        }
    }
    assert!(wrong.is_empty(), "{} cells differ from the matrix:\n{}", wrong.len(), wrong.join("\n"));
    let log = server.log_text();
    assert!(log.contains("legacy_edge_token"), "a read key on an internal route must log a warning:\n{log}");
}
