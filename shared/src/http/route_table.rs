//! Every route, listed once. The router, the metrics registry and `GET /openapi.json` are all
//! built from [`routes`], and the schemas come from the wire types themselves (utoipa), so the
//! document cannot drift from what is served.

use std::collections::{BTreeSet, HashMap};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::http::validation_event_routes as vevents;
use crate::http::wire::*;
use crate::http::{
    AppState, api_key_routes as keys, audit_routes as audit, customer_routes as customers,
    license_routes as licenses, public_routes as public, request_layers, webhook_routes as webhooks,
};
use crate::model::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    /// The license key in the body (or `X-License-Key`).
    LicenseKey,
    /// `Authorization: Bearer <api key>` with at least this scope.
    ApiKey(&'static str),
    /// A `Stripe-Signature` over the raw body.
    Stripe,
    /// HTTP Basic, the password a license key or an API key with `registry:push`.
    RegistryBasic,
}

type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> String;

/// Registers `T` and everything it refers to; returns its name.
fn schema<T: ToSchema>(components: &mut Vec<(String, RefOr<Schema>)>) -> String {
    let name = T::name().into_owned();
    components.push((name.clone(), T::schema()));
    T::schemas(components);
    name
}

pub struct RouteDoc {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub body: Option<SchemaFn>,
    pub query: Option<SchemaFn>,
    pub status: u16,
    pub answer: Option<SchemaFn>,
    /// Error statuses beyond the ones [`error_statuses`] derives from the route's shape.
    pub errors: &'static [u16],
    /// For a create: the JSON pointer of the new id in the answer. Every route under
    /// `{path}/{id}` gets an OpenAPI link from this one.
    pub creates: Option<&'static str>,
}

fn doc(method: Method, path: &'static str, summary: &'static str, access: Access) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        access,
        body: None,
        query: None,
        status: 200,
        answer: None,
        errors: &[],
        creates: None,
    }
}

impl RouteDoc {
    fn body<T: ToSchema>(mut self) -> Self {
        self.body = Some(schema::<T>);
        self
    }
    fn query<T: ToSchema>(mut self) -> Self {
        self.query = Some(schema::<T>);
        self
    }
    fn answer<T: ToSchema>(mut self, status: u16) -> Self {
        self.status = status;
        self.answer = Some(schema::<T>);
        self
    }
    fn no_content(mut self) -> Self {
        self.status = 204;
        self
    }
    fn errors(mut self, statuses: &'static [u16]) -> Self {
        self.errors = statuses;
        self
    }
    fn creates(mut self, id_pointer: &'static str) -> Self {
        self.creates = Some(id_pointer);
        self
    }
}

const READ: Access = Access::ApiKey("read");
const WRITE: Access = Access::ApiKey("write");
const ADMIN: Access = Access::ApiKey("admin");
/// The edges' service token (`Scope::Edge`).
const EDGE: Access = Access::ApiKey("edge");
/// A cloud service's metering key (`Scope::Meter`).
const METER: Access = Access::ApiKey("meter");

pub fn routes() -> Vec<(RouteDoc, MethodRouter<AppState>)> {
    use Access::{Anyone, LicenseKey, RegistryBasic, Stripe};
    use Method as M;
    vec![
        (
            doc(
                M::POST,
                "/v1/licenses/validate",
                "Validate a license key (always 200 when well formed)",
                LicenseKey,
            )
            .body::<ValidateRequest<'static>>()
            .answer::<ValidationAnswer>(200),
            post(public::validate),
        ),
        (
            doc(M::POST, "/v1/heartbeat", "Renew a deployment's lease", LicenseKey)
                .body::<HeartbeatRequest>()
                .answer::<HeartbeatAnswer>(200)
                .errors(&[401, 409]),
            post(public::heartbeat),
        ),
        (
            doc(M::POST, "/v1/usage", "Report a usage batch (counted once per batch_id)", LicenseKey)
                .body::<UsageRequest>()
                .answer::<UsageAccepted>(202)
                .errors(&[401]),
            post(public::usage),
        ),
        (
            doc(M::DELETE, "/v1/deployments/{deployment_id}", "Release a deployment's seat", LicenseKey)
                .body::<ReleaseDeploymentRequest>()
                .answer::<DeploymentReleased>(200)
                .errors(&[401, 404]),
            delete(public::release_deployment),
        ),
        (
            doc(
                M::POST,
                "/v1/access-tokens",
                "A short-lived cloud access token (nls-access+jwt)",
                LicenseKey,
            )
            .body::<crate::http::access_token_routes::AccessTokenRequest>()
            .answer::<crate::http::access_token_routes::AccessTokenAnswer>(200)
            .errors(&[401, 403, 503]),
            post(crate::http::access_token_routes::issue_access_token),
        ),
        (
            doc(
                M::GET,
                "/v1/registry/token",
                "Docker Registry v2 token (HTTP Basic: license key or a registry:push API key)",
                RegistryBasic,
            )
            .query::<RegistryTokenQuery>()
            .answer::<RegistryTokenAnswer>(200),
            get(crate::http::registry_routes::registry_token),
        ),
        (doc(M::GET, "/.well-known/jwks.json", "Public signing keys (JWKS)", Anyone), get(public::jwks)),
        (doc(M::GET, "/health", "Liveness", Anyone).answer::<HealthAnswer>(200), get(public::health)),
        (doc(M::GET, "/metrics", "Prometheus metrics", Anyone), get(public::metrics)),
        (doc(M::GET, "/openapi.json", "This document", Anyone), get(openapi)),
        (
            doc(M::GET, "/v1/internal/snapshots/{id}", "A status snapshot, for the edges", EDGE),
            get(crate::http::internal_routes::license_snapshot),
        ),
        (
            doc(
                M::POST,
                "/v1/internal/validation-events",
                "An edge's batch of the validations it answered (counted once per batch_id)",
                EDGE,
            )
            .body::<vevents::ValidationEventsRequest>()
            .answer::<vevents::ValidationEventsAccepted>(200),
            post(vevents::ingest_validation_events),
        ),
        (
            doc(
                M::POST,
                "/v1/cloud-usage",
                "A cloud service's batch of allowed calls (cloud.<audience>.calls; once per batch_id)",
                METER,
            )
            .body::<crate::http::cloud_usage_routes::CloudUsageRequest>()
            .answer::<crate::http::cloud_usage_routes::CloudUsageAccepted>(202),
            post(crate::http::cloud_usage_routes::record_cloud_usage),
        ),
        (
            doc(M::POST, "/v1/customers", "Create a customer", WRITE)
                .body::<CreateCustomerRequest>()
                .answer::<CustomerEnvelope>(201)
                .creates("/customer/id"),
            post(customers::create_customer),
        ),
        (
            doc(M::GET, "/v1/customers", "List customers (paged)", READ)
                .query::<PageQuery>()
                .answer::<CustomerPage>(200),
            get(customers::list_customers),
        ),
        (
            doc(M::GET, "/v1/customers/{id}", "Get a customer", READ).answer::<CustomerEnvelope>(200),
            get(customers::get_customer),
        ),
        (
            doc(M::PATCH, "/v1/customers/{id}", "Update a customer", WRITE)
                .body::<UpdateCustomerRequest>()
                .answer::<CustomerEnvelope>(200),
            patch(customers::update_customer),
        ),
        (
            doc(M::DELETE, "/v1/customers/{id}", "Delete a customer without licenses", WRITE).no_content(),
            delete(customers::delete_customer),
        ),
        (
            doc(M::POST, "/v1/licenses", "Issue a license and its key", WRITE)
                .body::<CreateLicenseRequest>()
                .answer::<LicenseEnvelope>(201)
                .errors(&[404])
                .creates("/license/id"),
            post(licenses::create_license),
        ),
        (
            doc(M::GET, "/v1/licenses", "List licenses (filtered, paged)", READ)
                .query::<LicenseListQuery>()
                .answer::<LicensePage>(200),
            get(licenses::list_licenses),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}", "Get a license", READ).answer::<LicenseEnvelope>(200),
            get(licenses::get_license),
        ),
        (
            doc(
                M::PATCH,
                "/v1/licenses/{id}",
                "Change terms; re-issues the key when its claims change",
                WRITE,
            )
            .body::<UpdateLicenseRequest>()
            .answer::<LicenseEnvelope>(200),
            patch(licenses::update_license),
        ),
        (
            doc(M::DELETE, "/v1/licenses/{id}", "Revoke a license", WRITE).answer::<LicenseEnvelope>(200),
            delete(licenses::revoke_license),
        ),
        (
            doc(M::POST, "/v1/licenses/{id}/suspend", "Suspend a license", WRITE)
                .answer::<LicenseEnvelope>(200),
            post(licenses::suspend_license),
        ),
        (
            doc(M::POST, "/v1/licenses/{id}/reactivate", "Reactivate a suspended license", WRITE)
                .answer::<LicenseEnvelope>(200),
            post(licenses::reactivate_license),
        ),
        (
            doc(M::POST, "/v1/licenses/{id}/renew", "Set a new expiry", WRITE)
                .body::<RenewLicenseRequest>()
                .answer::<LicenseEnvelope>(200),
            post(licenses::renew_license),
        ),
        (
            doc(M::POST, "/v1/licenses/{id}/offline-file", "Issue a signed offline license file", WRITE)
                .body::<OfflineFileRequest>()
                .answer::<OfflineFileIssued>(201),
            post(licenses::issue_offline_license_file),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}/deployments", "A license's deployments", READ)
                .answer::<DeploymentList>(200),
            get(licenses::license_deployments),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}/usage", "A license's usage counters for a period", READ)
                .query::<UsageQuery>()
                .answer::<UsageView>(200),
            get(licenses::license_usage),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}/validations", "A license's validation history", READ)
                .query::<HistoryQuery>()
                .answer::<ValidationHistory>(200),
            get(licenses::license_validations),
        ),
        (
            doc(M::POST, "/v1/api-keys", "Create an API key (the secret is shown once)", ADMIN)
                .body::<CreateApiKeyRequest>()
                .answer::<ApiKeyCreated>(201)
                .creates("/api_key/id"),
            post(keys::create_api_key),
        ),
        (
            doc(M::GET, "/v1/api-keys", "List API keys", ADMIN).answer::<ApiKeyList>(200),
            get(keys::list_api_keys),
        ),
        (
            doc(M::DELETE, "/v1/api-keys/{id}", "Revoke an API key", ADMIN).answer::<ApiKeyEnvelope>(200),
            delete(keys::revoke_api_key),
        ),
        (
            doc(M::GET, "/v1/audit-log", "The audit log (filtered, paged, newest first)", READ)
                .query::<AuditQuery>()
                .answer::<AuditPage>(200),
            get(audit::list_audit_log),
        ),
        (
            doc(M::GET, "/v1/stats", "Counts by status, validations per hour", READ).answer::<StatsView>(200),
            get(audit::stats),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}/compliance", "A license's daily usage signals and flags", READ)
                .query::<vevents::LicenseComplianceQuery>()
                .answer::<vevents::LicenseCompliance>(200),
            get(vevents::license_compliance),
        ),
        (
            doc(M::GET, "/v1/compliance", "Flagged license-days (key-sharing signals), newest first", READ)
                .query::<vevents::ComplianceListQuery>()
                .answer::<vevents::ComplianceList>(200),
            get(vevents::list_compliance),
        ),
        (
            doc(M::GET, "/v1/licenses/{id}/notifications", "A license's communication log", READ)
                .answer::<NotificationList>(200),
            get(licenses::license_notifications),
        ),
        (
            doc(M::POST, "/v1/webhooks/stripe", "Stripe events (authenticated by Stripe-Signature)", Stripe)
                .errors(&[400, 404, 413]),
            post(webhooks::stripe_webhook).layer(DefaultBodyLimit::max(webhooks::STRIPE_WEBHOOK_BODY_LIMIT)),
        ),
    ]
}

/// (method, path) of every route, for the metrics registry.
pub fn route_keys() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|(d, _)| (d.method, d.path)).collect()
}

/// (method, path) → scope, for every admin route.
pub fn route_scopes() -> HashMap<(Method, &'static str), Scope> {
    routes()
        .into_iter()
        .filter_map(|(d, _)| match d.access {
            Access::ApiKey(scope) => Scope::parse(scope).map(|s| ((d.method, d.path), s)),
            _ => None,
        })
        .collect()
}

/// The whole API as one router. Hosts run it as a tower service.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (doc, method_router) in routes() {
        router = router.route(doc.path, method_router);
    }
    // The admin portal's HTML pages: same router and middleware, not in /openapi.json.
    for (_, path, method_router) in crate::http::portal::routes() {
        router = router.route(path, method_router);
    }
    router
        .fallback(request_layers::route_not_found)
        .method_not_allowed_fallback(request_layers::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().body_limit_bytes))
        .layer(from_fn_with_state(state.clone(), request_layers::guard))
        .with_state(state)
}

async fn openapi(State(_): State<AppState>) -> Response {
    axum::Json(openapi_document()).into_response()
}

/// What each error status means, for the document.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => "bad input: malformed JSON, a wrong type, a value out of range, a bad query",
        401 => "missing or invalid credentials",
        403 => "the API key lacks the scope this route needs",
        404 => "no such record",
        409 => "the change conflicts with the record's state or a concurrent change",
        413 => "the body is over the size limit",
        429 => "rate limited: retry after `Retry-After` seconds",
        503 => "the store is unavailable: retry after `Retry-After` seconds",
        _ => "error",
    }
}

/// The error statuses a route can answer with: derived from what it reads and who may call
/// it, plus the ones it declares. The fuzzer (status_code_conformance) holds the server to it.
pub fn error_statuses(doc: &RouteDoc) -> BTreeSet<u16> {
    // Every route is behind the per-IP rate limit.
    let mut statuses = BTreeSet::from([429]);
    if doc.body.is_some() || doc.query.is_some() || doc.path.contains("{deployment_id}") {
        statuses.insert(400);
    }
    if doc.body.is_some() {
        statuses.insert(413);
    }
    match doc.access {
        // Static answers: no store, no credentials.
        Access::Anyone => {}
        Access::ApiKey(_) => {
            statuses.extend([401, 403, 503]);
            if doc.path.contains("/{") {
                statuses.insert(404);
            }
            if doc.method != Method::GET {
                statuses.insert(409);
            }
        }
        Access::LicenseKey | Access::Stripe => {
            statuses.insert(503);
        }
        // The token protocol's answers: a bad scope or service (400), no or bad credentials (401).
        Access::RegistryBasic => {
            statuses.extend([400, 401, 503]);
        }
    }
    statuses.extend(doc.errors.iter().copied());
    statuses
}

/// Links a body field of one operation to a value of another's answer or request, so a
/// stateful fuzzer can walk customer → license → validate → deployments → suspend → revoke.
struct BodyLink {
    from: (Method, &'static str),
    to: (Method, &'static str),
    parameters: &'static [(&'static str, &'static str)],
    body: &'static [(&'static str, &'static str)],
}

fn body_links() -> Vec<BodyLink> {
    const KEY: &[(&str, &str)] = &[("key", "$response.body#/key")];
    let license = || (Method::POST, "/v1/licenses");
    let validate = || (Method::POST, "/v1/licenses/validate");
    vec![
        BodyLink {
            from: (Method::POST, "/v1/customers"),
            to: license(),
            parameters: &[],
            body: &[("customer_id", "$response.body#/customer/id")],
        },
        BodyLink { from: license(), to: validate(), parameters: &[], body: KEY },
        BodyLink { from: license(), to: (Method::POST, "/v1/usage"), parameters: &[], body: KEY },
        BodyLink {
            from: validate(),
            to: (Method::POST, "/v1/heartbeat"),
            parameters: &[],
            body: &[("key", "$request.body#/key"), ("deployment_id", "$response.body#/deployment/id")],
        },
        BodyLink {
            from: validate(),
            to: (Method::DELETE, "/v1/deployments/{deployment_id}"),
            parameters: &[("deployment_id", "$response.body#/deployment/id")],
            body: &[("key", "$request.body#/key")],
        },
    ]
}

fn link_name(method: &Method, path: &str) -> String {
    let words = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    std::iter::once(method.as_str().to_ascii_lowercase())
        .chain(words.map(str::to_owned))
        .collect::<Vec<_>>()
        .join("_")
}

fn operation_id(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

/// The `links` of a route's success answer.
fn links_of(doc: &RouteDoc, all: &[RouteDoc]) -> Map<String, Value> {
    let mut links = Map::new();
    if let Some(pointer) = doc.creates {
        let prefix = format!("{}/{{id}}", doc.path);
        for target in all.iter().filter(|t| t.path == prefix || t.path.starts_with(&format!("{prefix}/"))) {
            links.insert(
                link_name(&target.method, target.path),
                json!({
                    "operationId": operation_id(&target.method, target.path),
                    "parameters": {"path.id": format!("$response.body#{pointer}")}
                }),
            );
        }
    }
    for link in body_links().into_iter().filter(|l| l.from == (doc.method.clone(), doc.path)) {
        let (method, path) = &link.to;
        let mut value = json!({"operationId": operation_id(method, path)});
        if !link.parameters.is_empty() {
            let parameters: Map<String, Value> =
                link.parameters.iter().map(|(name, expr)| (format!("path.{name}"), json!(expr))).collect();
            value["parameters"] = Value::Object(parameters);
        }
        let body: Map<String, Value> =
            link.body.iter().map(|(field, expr)| ((*field).to_owned(), json!(expr))).collect();
        value["requestBody"] = Value::Object(body);
        links.insert(link_name(method, path), value);
    }
    links
}

/// A path parameter's schema: what the handlers accept.
fn path_parameter_schema(name: &str) -> Value {
    match name {
        "deployment_id" => json!({"type": "string", "minLength": 1, "maxLength": 256}),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

/// Puts each literal schema from `wire` (carried in an extension) in place of its carrier.
/// Also spells a nullable formatted value (`type: [string, null], format: date-time`) as
/// `anyOf`, so no tool applies the format's rules to its `null` branch or drops the format.
fn expand_literal_schemas(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(literal) = map.remove(LITERAL_SCHEMA_EXTENSION) {
                *value = literal;
                return;
            }
            let nullable_format = map.contains_key("format")
                && map
                    .get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.len() == 2 && t.contains(&json!("null")));
            if nullable_format {
                let types = map.remove("type").unwrap_or_default();
                let description = map.remove("description");
                let kind = types.as_array().and_then(|t| t.iter().find(|t| *t != "null")).cloned();
                map.insert("type".into(), kind.unwrap_or(Value::Null));
                let formatted = Value::Object(std::mem::take(map));
                *value = json!({"anyOf": [formatted, {"type": "null"}]});
                if let Some(description) = description {
                    value["description"] = description;
                }
                return;
            }
            map.values_mut().for_each(expand_literal_schemas);
        }
        Value::Array(items) => items.iter_mut().for_each(expand_literal_schemas),
        _ => {}
    }
}

/// A query parameter is absent or a value: `null` has no spelling in a query string.
fn without_null(mut schema: Value) -> Value {
    if let Some(Value::Array(types)) = schema.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        schema["type"] = if kept.len() == 1 { kept[0].clone() } else { Value::Array(kept) };
    }
    schema
}

/// The OpenAPI 3.1 document of [`routes`].
pub fn openapi_document() -> Value {
    let mut components = Vec::new();
    let error_ref = schema::<ErrorBody>(&mut components);
    let mut paths = Map::new();
    let docs: Vec<RouteDoc> = routes().into_iter().map(|(d, _)| d).collect();
    for doc in &docs {
        let mut op = Map::new();
        op.insert("summary".into(), json!(doc.summary));
        op.insert("operationId".into(), json!(operation_id(&doc.method, doc.path)));
        let mut parameters: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": path_parameter_schema(name)}))
            .collect();
        if let Some(query) = doc.query {
            let mut local = Vec::new();
            let name = query(&mut local);
            let props = local
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, s)| serde_json::to_value(s).ok())
                .and_then(|v| v.get("properties").cloned());
            // A parameter may refer to a schema of its own (an enum): keep those components.
            components.extend(local.iter().filter(|(n, _)| *n != name).cloned());
            if let Some(Value::Object(props)) = props {
                for (param, mut schema) in props {
                    expand_literal_schemas(&mut schema);
                    parameters.push(
                        json!({"name": param, "in": "query", "required": false, "schema": without_null(schema)}),
                    );
                }
            }
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = doc.body {
            let name = body(&mut components);
            op.insert(
                "requestBody".into(),
                json!({"required": doc.method != Method::DELETE, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}),
            );
        }
        let mut success = match doc.answer {
            Some(answer) => {
                let name = answer(&mut components);
                json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
            }
            None => json!({"description": "success"}),
        };
        let links = links_of(doc, &docs);
        if !links.is_empty() {
            success["links"] = Value::Object(links);
        }
        let mut responses = Map::new();
        responses.insert(doc.status.to_string(), success);
        for status in error_statuses(doc) {
            let mut error = json!({
                "description": error_description(status),
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{error_ref}")}}}
            });
            if matches!(status, 429 | 503) {
                error["headers"] =
                    json!({"Retry-After": {"required": true, "schema": {"type": "integer", "minimum": 0}}});
            }
            responses.insert(status.to_string(), error);
        }
        op.insert("responses".into(), Value::Object(responses));
        match doc.access {
            Access::ApiKey(scope) => {
                op.insert("security".into(), json!([{ "apiKey": [scope] }]));
                op.insert("x-required-scope".into(), json!(scope));
            }
            Access::LicenseKey => {
                op.insert("x-authentication".into(), json!("license key"));
            }
            Access::Stripe => {
                op.insert("x-authentication".into(), json!("Stripe-Signature"));
            }
            Access::RegistryBasic => {
                op.insert(
                    "x-authentication".into(),
                    json!("HTTP Basic: license key or registry:push API key"),
                );
            }
            Access::Anyone => {}
        }
        let item = paths.entry(doc.path.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(doc.method.as_str().to_ascii_lowercase(), Value::Object(op));
        }
    }
    let schemas: Map<String, Value> = components
        .into_iter()
        .filter_map(|(name, s)| serde_json::to_value(s).ok().map(|v| (name, v)))
        .map(|(name, mut v)| {
            expand_literal_schemas(&mut v);
            (name, v)
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "NLS — Nectar License Service", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "nls_<key id>_<secret>"}}
        }
    })
}
