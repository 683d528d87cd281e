//! Every route, listed once. The router, the metrics registry and `GET /openapi.json` are all
//! built from [`routes`], and the schemas come from the wire types themselves (utoipa), so the
//! document cannot drift from what is served.

use std::collections::HashMap;

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
}

fn doc(method: Method, path: &'static str, summary: &'static str, access: Access) -> RouteDoc {
    RouteDoc { method, path, summary, access, body: None, query: None, status: 200, answer: None }
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
}

const READ: Access = Access::ApiKey("read");
const WRITE: Access = Access::ApiKey("write");
const ADMIN: Access = Access::ApiKey("admin");

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
            .body::<ValidateRequest>()
            .answer::<ValidationAnswer>(200),
            post(public::validate),
        ),
        (
            doc(M::POST, "/v1/heartbeat", "Renew a deployment's lease", LicenseKey)
                .body::<HeartbeatRequest>()
                .answer::<HeartbeatAnswer>(200),
            post(public::heartbeat),
        ),
        (
            doc(M::POST, "/v1/usage", "Report a usage batch (counted once per batch_id)", LicenseKey)
                .body::<UsageRequest>()
                .answer::<UsageAccepted>(202),
            post(public::usage),
        ),
        (
            doc(M::DELETE, "/v1/deployments/{deployment_id}", "Release a deployment's seat", LicenseKey)
                .body::<ReleaseDeploymentRequest>()
                .answer::<DeploymentReleased>(200),
            delete(public::release_deployment),
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
            doc(M::GET, "/v1/internal/snapshots/{id}", "A status snapshot, for the edges", READ),
            get(crate::http::internal_routes::license_snapshot),
        ),
        (
            doc(M::POST, "/v1/customers", "Create a customer", WRITE)
                .body::<CreateCustomerRequest>()
                .answer::<CustomerEnvelope>(201),
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
                .answer::<LicenseEnvelope>(201),
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
                .answer::<ApiKeyCreated>(201),
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
            doc(M::GET, "/v1/licenses/{id}/notifications", "A license's communication log", READ)
                .answer::<NotificationList>(200),
            get(licenses::license_notifications),
        ),
        (
            doc(M::POST, "/v1/webhooks/stripe", "Stripe events (authenticated by Stripe-Signature)", Stripe),
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

/// The OpenAPI 3.1 document of [`routes`].
pub fn openapi_document() -> Value {
    let mut components = Vec::new();
    let error_ref = schema::<ErrorBody>(&mut components);
    let mut paths = Map::new();
    for (doc, _) in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(doc.summary));
        op.insert("operationId".into(), json!(format!("{} {}", doc.method, doc.path)));
        let mut parameters: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(query) = doc.query {
            let mut local = Vec::new();
            let name = query(&mut local);
            let props = local
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, s)| serde_json::to_value(s).ok())
                .and_then(|v| v.get("properties").cloned());
            if let Some(Value::Object(props)) = props {
                for (param, schema) in props {
                    parameters
                        .push(json!({"name": param, "in": "query", "required": false, "schema": schema}));
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
        let success = match doc.answer {
            Some(answer) => {
                let name = answer(&mut components);
                json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
            }
            None => json!({"description": "success"}),
        };
        let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{error_ref}")}}}});
        op.insert(
            "responses".into(),
            json!({ doc.status.to_string(): success, "4XX": error.clone(), "5XX": error }),
        );
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
