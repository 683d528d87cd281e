//! Bad input over every route of the real `nls serve`: each gets the documented 4xx and error
//! code (docs/api.md), never a 5xx. The routes are read from the server's own
//! `/openapi.json`, so a new route is covered without touching this file.

use nls_tests::http_client::{HttpResponse, request};
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::{Value, json};

struct Fixture {
    server: NlsServer,
    reader: String,
    /// An `edge`-scoped key: the only credential the edges' internal write routes take.
    edge: String,
    /// A `meter`-scoped key: the only credential `POST /v1/cloud-usage` takes.
    meter: String,
    license_id: String,
    customer_id: String,
    key: String,
}

fn fixture(dir: &TempDir) -> Fixture {
    let server = NlsServer::start(dir.path(), &[]);
    let created = server.admin("POST", "/v1/api-keys", Some(&json!({"name": "viewer", "scopes": ["read"]})));
    let reader = created["secret"].as_str().unwrap().to_owned();
    let created = server.admin("POST", "/v1/api-keys", Some(&json!({"name": "edge", "scopes": ["edge"]})));
    let edge = created["secret"].as_str().unwrap().to_owned();
    let created = server.admin("POST", "/v1/api-keys", Some(&json!({"name": "meter", "scopes": ["meter"]})));
    let meter = created["secret"].as_str().unwrap().to_owned();
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let customer_id = customer["customer"]["id"].as_str().unwrap().to_owned();
    let license = server.admin("POST", "/v1/licenses", Some(&json!({"customer_id": customer_id})));
    let license_id = license["license"]["id"].as_str().unwrap().to_owned();
    let key = license["key"].as_str().unwrap().to_owned();
    Fixture { server, reader, edge, meter, license_id, customer_id, key }
}

fn send(f: &Fixture, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> HttpResponse {
    let bearer = auth.map(|a| format!("Bearer {a}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    request(f.server.port, method, path, &headers, body).expect("HTTP request")
}

/// One row of a table: what was sent and what must come back.
fn check(f: &Fixture, method: &str, path: &str, auth: Option<&str>, body: &[u8], status: u16, code: &str) {
    let r = send(f, method, path, auth, body);
    let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (status, Some(code)),
        "{method} {path} with {shown:?}: {} {}",
        r.status,
        r.text()
    );
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

/// Every (method, concrete path, operation) of the served OpenAPI document.
fn routes(f: &Fixture) -> Vec<(String, String, Value)> {
    let doc = f.server.call("GET", "/openapi.json", None, None).json();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let id = if path.starts_with("/v1/customers") { &f.customer_id } else { &f.license_id };
        let concrete = path.replace("{id}", id).replace("{deployment_id}", "dep-1");
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_ascii_uppercase(), concrete.clone(), op.clone()));
        }
    }
    assert!(out.len() >= 30, "expected every route in /openapi.json, got {}", out.len());
    out
}

#[test]
fn every_route_refuses_bad_credentials_bad_json_oversize_bodies_and_wrong_methods() {
    let dir = TempDir::new("bad-input");
    let f = fixture(&dir);
    let oversize = format!("{{\"key\":\"{}\"}}", "x".repeat(65 * 1024)).into_bytes();
    let admin = f.server.admin_key.clone();
    for (method, path, op) in routes(&f) {
        let scope = op["x-required-scope"].as_str();
        let has_body = op.get("requestBody").is_some();
        let auth = scope.map(|s| match s {
            "edge" => f.edge.as_str(),
            "meter" => f.meter.as_str(),
            _ => admin.as_str(),
        });
        if let Some(scope) = scope {
            check(&f, &method, &path, None, b"", 401, "missing_credentials");
            check(&f, &method, &path, Some("nls_ak_unknown_0000"), b"", 401, "invalid_credentials");
            check(&f, &method, &path, Some("not-a-key-at-all"), b"", 401, "invalid_credentials");
            if scope != "read" && scope != "edge" {
                check(&f, &method, &path, Some(&f.reader), b"{}", 403, "insufficient_scope");
            }
        }
        if has_body {
            check(&f, &method, &path, auth, b"{not json", 400, "malformed_json");
            check(&f, &method, &path, auth, b"[1, 2", 400, "malformed_json");
            check(&f, &method, &path, auth, &oversize, 413, "payload_too_large");
        }
        let wrong = if method == "PUT" { "PATCH" } else { "PUT" };
        check(&f, wrong, &path, auth, b"", 405, "method_not_allowed");
    }
    check(&f, "GET", "/v1/nothing-here", None, b"", 404, "route_not_found");
    check(&f, "POST", "/v2/licenses/validate", None, b"{}", 404, "route_not_found");
}

/// (method, path, API key, body, status, error code)
type Row<'a> = (&'a str, String, Option<&'a str>, Value, u16, &'a str);

#[test]
fn wrong_types_and_missing_fields_are_400_with_a_code() {
    let dir = TempDir::new("bad-fields");
    let f = fixture(&dir);
    let admin = Some(f.server.admin_key.as_str());
    let (lic, key) = (f.license_id.as_str(), f.key.as_str());
    let now = chrono::Utc::now().to_rfc3339();
    let rows: Vec<Row> = vec![
        ("POST", "/v1/licenses/validate".into(), None, json!({}), 400, "invalid_request"),
        ("POST", "/v1/licenses/validate".into(), None, json!({"key": 5}), 400, "invalid_request"),
        (
            "POST",
            "/v1/licenses/validate".into(),
            None,
            json!({"key": key, "features": "sso"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/licenses/validate".into(),
            None,
            json!({"key": key, "metrics": {"m": -1}}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/licenses/validate".into(),
            None,
            json!({"key": key, "deployment_id": ""}),
            400,
            "invalid_request",
        ),
        ("POST", "/v1/heartbeat".into(), None, json!({"key": key}), 400, "invalid_request"),
        (
            "POST",
            "/v1/heartbeat".into(),
            None,
            json!({"key": "NLS-bogus-00000000", "deployment_id": "d"}),
            401,
            "invalid_license_key",
        ),
        (
            "POST",
            "/v1/usage".into(),
            None,
            json!({"key": key, "deployment_id": "d", "records": []}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/usage".into(),
            None,
            json!({"key": key, "deployment_id": "d", "batch_id": "b", "records": "x"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/usage".into(),
            None,
            json!({"key": key, "deployment_id": "d", "batch_id": "b", "records": [{"metric": "m", "value": -5, "at": now}]}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/usage".into(),
            None,
            json!({"key": key, "deployment_id": "d", "batch_id": "b", "records": [{"metric": "m", "value": 1, "at": "yesterday"}]}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/usage".into(),
            None,
            json!({"key": key, "deployment_id": "d", "batch_id": "b", "records": []}),
            400,
            "invalid_request",
        ),
        ("DELETE", "/v1/deployments/d".into(), None, json!({"nokey": true}), 400, "invalid_request"),
        ("DELETE", "/v1/deployments/d".into(), None, json!({"key": "garbage"}), 401, "invalid_license_key"),
        (
            "DELETE",
            "/v1/deployments/never-activated".into(),
            None,
            json!({"key": key}),
            404,
            "deployment_not_found",
        ),
        ("POST", "/v1/customers".into(), admin, json!({"name": "a"}), 400, "invalid_request"),
        (
            "POST",
            "/v1/customers".into(),
            admin,
            json!({"name": 1, "email": "a@b.co"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/customers".into(),
            admin,
            json!({"name": "a", "email": "not-an-email"}),
            400,
            "invalid_request",
        ),
        ("PATCH", "/v1/customers/cus_missing".into(), admin, json!({"name": "b"}), 404, "customer_not_found"),
        (
            "DELETE",
            format!("/v1/customers/{}", f.customer_id),
            admin,
            json!(null),
            409,
            "customer_has_licenses",
        ),
        ("POST", "/v1/licenses".into(), admin, json!({"tier": "pro"}), 400, "invalid_request"),
        (
            "POST",
            "/v1/licenses".into(),
            admin,
            json!({"customer_id": f.customer_id, "max_deployments": "five"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/licenses".into(),
            admin,
            json!({"customer_id": f.customer_id, "expires_at": "tomorrow"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/licenses".into(),
            admin,
            json!({"customer_id": f.customer_id, "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/licenses".into(),
            admin,
            json!({"customer_id": "cus_missing"}),
            404,
            "customer_not_found",
        ),
        (
            "PATCH",
            format!("/v1/licenses/{lic}"),
            admin,
            json!({"max_deployments": -1}),
            400,
            "invalid_request",
        ),
        ("PATCH", format!("/v1/licenses/{lic}"), admin, json!({"features": [1, 2]}), 400, "invalid_request"),
        ("POST", format!("/v1/licenses/{lic}/renew"), admin, json!({}), 400, "invalid_request"),
        (
            "POST",
            format!("/v1/licenses/{lic}/renew"),
            admin,
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        ("POST", format!("/v1/licenses/{lic}/reactivate"), admin, json!(null), 409, "invalid_transition"),
        (
            "POST",
            format!("/v1/licenses/{lic}/offline-file"),
            admin,
            json!({"ttl_days": "x"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            format!("/v1/licenses/{lic}/offline-file"),
            admin,
            json!({"ttl_days": 0}),
            400,
            "invalid_request",
        ),
        ("GET", "/v1/licenses/lic_missing".into(), admin, json!(null), 404, "license_not_found"),
        (
            "POST",
            "/v1/api-keys".into(),
            admin,
            json!({"name": "x", "scopes": ["root"]}),
            400,
            "invalid_request",
        ),
        ("POST", "/v1/api-keys".into(), admin, json!({"name": "x"}), 400, "invalid_request"),
        ("DELETE", "/v1/api-keys/ak_missing".into(), admin, json!(null), 404, "api_key_not_found"),
        ("GET", "/v1/customers?limit=abc".into(), admin, json!(null), 400, "invalid_query"),
        ("GET", "/v1/licenses?status=bogus".into(), admin, json!(null), 400, "invalid_query"),
        ("GET", "/v1/licenses?expires_before=soon".into(), admin, json!(null), 400, "invalid_query"),
        ("GET", "/v1/audit-log?since=yesterday".into(), admin, json!(null), 400, "invalid_query"),
        (
            "GET",
            format!("/v1/licenses/{lic}/usage?period=last-week"),
            admin,
            json!(null),
            400,
            "invalid_query",
        ),
    ];
    let meter = Some(f.meter.as_str());
    let calls = |calls: Value, at: &str| {
        json!({"batch_id": "mb_1", "audience": "workflows",
               "records": [{"license_id": lic, "calls": calls, "at": at}]})
    };
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    let cloud_rows: Vec<Row> = vec![
        ("POST", "/v1/cloud-usage".into(), meter, json!({"batch_id": "mb_1"}), 400, "invalid_request"),
        ("POST", "/v1/cloud-usage".into(), meter, calls(json!(-1), &now), 400, "invalid_request"),
        ("POST", "/v1/cloud-usage".into(), meter, calls(json!(0), &now), 400, "invalid_request"),
        ("POST", "/v1/cloud-usage".into(), meter, calls(json!("3"), &now), 400, "invalid_request"),
        ("POST", "/v1/cloud-usage".into(), meter, calls(json!(1), "tuesday"), 400, "invalid_request"),
        ("POST", "/v1/cloud-usage".into(), meter, calls(json!(1), &long_ago), 400, "usage_out_of_bounds"),
        (
            "POST",
            "/v1/cloud-usage".into(),
            meter,
            json!({"batch_id": "mb_1", "audience": "Work Flows", "records": []}),
            400,
            "invalid_request",
        ),
    ];
    for (method, path, auth, body, status, code) in rows.into_iter().chain(cloud_rows) {
        let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        check(&f, method, &path, auth, &bytes, status, code);
    }
}

#[test]
fn revoked_api_keys_are_refused() {
    let dir = TempDir::new("revoked-key");
    let f = fixture(&dir);
    let created = f.server.admin("POST", "/v1/api-keys", Some(&json!({"name": "temp", "scopes": ["write"]})));
    let (id, secret) = (created["api_key"]["id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    assert_eq!(send(&f, "GET", "/v1/customers", Some(secret), b"").status, 200);
    f.server.admin("DELETE", &format!("/v1/api-keys/{id}"), None);
    check(&f, "GET", "/v1/customers", Some(secret), b"", 401, "invalid_credentials");
    let listed = f.server.admin("GET", "/v1/api-keys", None);
    assert!(!listed.to_string().contains(secret), "secrets are never listed");
}

#[test]
fn rate_limited_clients_get_429_and_retry_after() {
    let dir = TempDir::new("rate-limit");
    let server = NlsServer::start(dir.path(), &["--ip-rate-limit", "1"]);
    let statuses: Vec<HttpResponse> =
        (0..6).map(|_| request(server.port, "GET", "/health", &[], b"").expect("request")).collect();
    let limited = statuses.iter().find(|r| r.status == 429).expect("a 429 after the burst");
    assert_eq!(limited.error_code().as_deref(), Some("rate_limited"));
    assert!(limited.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()));
}
