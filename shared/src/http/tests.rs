//! In-process tests of the router over the in-memory store: what the end-to-end tests cannot
//! see from outside (store reads per request, the clock) or would need many servers for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::rate_limit::RateLimit;
use super::*;
use crate::key_ring::{KeyRing, SigningKey};
use crate::memory_store::MemoryStore;
use crate::model::*;
use crate::ports::*;
use crate::validation::StatusSnapshot;

const BOOTSTRAP: &str = "test-bootstrap-admin-key";

/// The in-memory store, counting license reads. Its snapshot reads can be made to fail or
/// panic, and its validation-stats writes to fail, as a store that is down or a bug would.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    license_reads: AtomicUsize,
    snapshots_unavailable: std::sync::atomic::AtomicBool,
    snapshots_panic: std::sync::atomic::AtomicBool,
    stats_writes_unavailable: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl UnitOfWork for CountingStore {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome> {
        self.inner.commit(guard, writes).await
    }
}
#[async_trait]
impl CustomerStore for CountingStore {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>> {
        self.inner.get_customer(id).await
    }
    async fn find_customer_by_stripe_id(&self, id: &str) -> StoreResult<Option<Customer>> {
        self.inner.find_customer_by_stripe_id(id).await
    }
    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>> {
        self.inner.list_customers(page).await
    }
}
#[async_trait]
impl LicenseStore for CountingStore {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        self.license_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_license(id).await
    }
    async fn find_license_by_subscription(&self, sub: &str) -> StoreResult<Option<License>> {
        self.license_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.find_license_by_subscription(sub).await
    }
    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>> {
        self.license_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list_licenses(filter, page).await
    }
    async fn search_licenses(
        &self,
        query: &crate::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        self.license_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.search_licenses(query, page).await
    }
    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>> {
        self.inner.licenses_expiring_between(from, to).await
    }
    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>> {
        self.license_reads.fetch_add(1, Ordering::SeqCst);
        if self.snapshots_panic.load(Ordering::SeqCst) {
            panic!("a bug while reading license {id}");
        }
        if self.snapshots_unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the test store is down".to_owned()));
        }
        self.inner.license_snapshot(id, now).await
    }
}
#[async_trait]
impl DeploymentStore for CountingStore {
    async fn activate_deployment(
        &self,
        d: &Deployment,
        p: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation> {
        self.inner.activate_deployment(d, p, now).await
    }
    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>> {
        self.inner.heartbeat(license_id, deployment_id, app_version, now, lease_expires_at).await
    }
    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool> {
        self.inner.release_deployment(license_id, deployment_id).await
    }
    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>> {
        self.inner.list_deployments(license_id).await
    }
}
#[async_trait]
impl UsageStore for CountingStore {
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        self.inner.record_usage_batch(batch).await
    }
    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>> {
        self.inner.usage_counters(license_id, period).await
    }
}
#[async_trait]
impl ApiKeyStore for CountingStore {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.inner.get_api_key(id).await
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.inner.list_api_keys().await
    }
}
#[async_trait]
impl AuditStore for CountingStore {
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        self.inner.list_audit(filter, page).await
    }
}
#[async_trait]
impl NotificationStore for CountingStore {
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome> {
        self.inner.claim_notification(record, now, stale_after).await
    }
    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        at: Timestamp,
        id: &str,
    ) -> StoreResult<()> {
        self.inner.mark_notification_sent(key, claimant, at, id).await
    }
    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>> {
        self.inner.list_notifications(license_id).await
    }
}
#[async_trait]
impl ValidationLogStore for CountingStore {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()> {
        self.inner.append_validation_logs(entries).await
    }
    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>> {
        self.inner.list_validation_logs(license_id, limit).await
    }
}

#[async_trait]
impl ValidationStatsStore for CountingStore {
    async fn record_day_increments(
        &self,
        batch: &crate::validation_stats::DayIncrementBatch,
    ) -> StoreResult<BatchOutcome> {
        if self.stats_writes_unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("stats writes switched off".into()));
        }
        self.inner.record_day_increments(batch).await
    }
    async fn validation_day_aggregate(
        &self,
        license_id: &str,
        day: chrono::NaiveDate,
    ) -> StoreResult<Option<crate::validation_stats::ValidationDayAggregate>> {
        self.inner.validation_day_aggregate(license_id, day).await
    }
    async fn put_compliance_record(
        &self,
        record: &crate::validation_stats::ComplianceRecord,
    ) -> StoreResult<()> {
        self.inner.put_compliance_record(record).await
    }
    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: chrono::NaiveDate,
    ) -> StoreResult<Vec<crate::validation_stats::ComplianceRecord>> {
        self.inner.list_compliance_records(license_id, since).await
    }
    async fn list_flagged_compliance(
        &self,
        since: chrono::NaiveDate,
        until: chrono::NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<crate::validation_stats::ComplianceRecord>> {
        self.inner.list_flagged_compliance(since, until, limit).await
    }
}

#[async_trait]
impl StaffStore for CountingStore {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>> {
        self.inner.get_staff_user(id).await
    }
    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>> {
        self.inner.find_staff_user_by_email(email).await
    }
    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        self.inner.list_staff_users().await
    }
    async fn create_session(&self, session: &StaffSession) -> StoreResult<()> {
        self.inner.create_session(session).await
    }
    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
        self.inner.get_session(token_sha256).await
    }
    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()> {
        self.inner.touch_session(token_sha256, last_seen_at).await
    }
    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        self.inner.delete_session(token_sha256).await
    }
}

struct Harness {
    app: Router,
    state: AppState,
    store: Arc<CountingStore>,
    clock: Arc<ManualClock>,
    ring: Arc<KeyRing>,
}

fn harness_with(config: HttpConfig) -> Harness {
    let store = Arc::new(CountingStore::default());
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()));
    let ring = Arc::new(KeyRing::with_signer(SigningKey::from_seed([9; 32], None), vec![]).unwrap());
    let state = AppState::new(AppDeps {
        store: store.clone(),
        key_ring: ring.clone(),
        clock: clock.clone(),
        config: config.with_bootstrap_admin_key(BOOTSTRAP),
    });
    Harness { app: router(state.clone()), state, store, clock, ring }
}

fn harness() -> Harness {
    harness_with(HttpConfig::default())
}

impl Harness {
    async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Body,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = auth {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut req = req.body(body).unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, headers)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let (status, value, _) = self.raw(method, path, auth, body).await;
        (status, value)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, Some(BOOTSTRAP), body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    /// A customer and a license with `terms`; returns (license id, key).
    async fn license(&self, terms: Value) -> (String, String) {
        let customer = self
            .admin("POST", "/v1/customers", Some(json!({"name": "Acme", "email": "ops@acme.test"})))
            .await;
        let mut body = terms;
        body["customer_id"] = customer["customer"]["id"].clone();
        let created = self.admin("POST", "/v1/licenses", Some(body)).await;
        (created["license"]["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
    }

    async fn validate(&self, body: Value) -> Value {
        let (status, value) = self.call("POST", "/v1/licenses/validate", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        value
    }
}

#[tokio::test]
async fn warm_validation_reads_no_license_from_the_store() {
    let h = harness();
    let (_, key) = h.license(json!({"max_deployments": 3})).await;
    let answer = h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    assert_eq!(answer["code"], "VALID");
    h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    let reads_when_warm = h.store.license_reads.load(Ordering::SeqCst);
    for _ in 0..50 {
        let answer = h.validate(json!({"key": key, "deployment_id": "d1"})).await;
        assert_eq!(answer["code"], "VALID");
        assert!(answer["receipt"].is_string());
    }
    assert_eq!(
        h.store.license_reads.load(Ordering::SeqCst),
        reads_when_warm,
        "warm validations read the store"
    );
    // Once the snapshot's TTL passes, exactly one read refreshes it.
    h.clock.advance(Duration::seconds(3));
    h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    assert_eq!(h.store.license_reads.load(Ordering::SeqCst), reads_when_warm + 1);
}

/// Issue 18: at 10,000 connections every request arriving while an expired snapshot was being
/// re-read also missed and read the store; now one request re-reads it before it expires.
#[tokio::test]
async fn a_snapshot_near_its_ttl_is_re_read_once_before_it_expires() {
    let h = harness();
    let (_, key) = h.license(json!({"max_deployments": 3})).await;
    let check_in = json!({"key": key, "deployment_id": "d1"});
    h.validate(check_in.clone()).await;
    h.validate(check_in.clone()).await;
    let reads_when_warm = h.store.license_reads.load(Ordering::SeqCst);
    // Past three quarters of the 2 s TTL: the first request re-reads, the rest do not.
    h.clock.advance(Duration::milliseconds(1600));
    for _ in 0..5 {
        assert_eq!(h.validate(check_in.clone()).await["code"], "VALID");
    }
    assert_eq!(h.store.license_reads.load(Ordering::SeqCst), reads_when_warm + 1);
    // 2.6 s after the first read, 1 s after the re-read: answered from the re-read entry.
    h.clock.advance(Duration::milliseconds(1000));
    assert_eq!(h.validate(check_in.clone()).await["code"], "VALID");
    assert_eq!(h.store.license_reads.load(Ordering::SeqCst), reads_when_warm + 1);
}

#[tokio::test]
async fn own_mutations_reach_the_next_validation_at_once() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    assert_eq!(h.validate(json!({"key": key})).await["code"], "VALID");
    h.admin("POST", &format!("/v1/licenses/{id}/suspend"), None).await;
    assert_eq!(h.validate(json!({"key": key})).await["code"], "SUSPENDED");
    h.admin("POST", &format!("/v1/licenses/{id}/reactivate"), None).await;
    assert_eq!(h.validate(json!({"key": key})).await["code"], "VALID");
}

#[tokio::test]
async fn validation_codes_for_limits_features_usage_and_churn() {
    let h = harness_with(HttpConfig { churn_max: 3, ..HttpConfig::default() });
    let (_, key) =
        h.license(json!({"max_deployments": 2, "features": ["sso"], "limits": {"seats": 10}})).await;
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "a"})).await["code"], "VALID");
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "b"})).await["code"], "VALID");
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "c"})).await["code"], "TOO_MANY_DEPLOYMENTS");
    assert_eq!(h.validate(json!({"key": key, "features": ["audit"]})).await["code"], "FEATURE_NOT_ENTITLED");
    assert_eq!(
        h.validate(json!({"key": key, "metrics": {"seats": 11}})).await["code"],
        "USAGE_LIMIT_EXCEEDED"
    );
    let usage = json!({"key": key, "deployment_id": "a", "batch_id": "b1",
        "records": [{"metric": "seats", "value": 8, "at": "2026-11-30T11:00:00Z"}]});
    assert_eq!(h.call("POST", "/v1/usage", None, Some(usage)).await.0, StatusCode::ACCEPTED);
    assert_eq!(
        h.validate(json!({"key": key, "metrics": {"seats": 3}})).await["code"],
        "USAGE_LIMIT_EXCEEDED"
    );
    // Release and re-activate: the third new activation in the window is refused as churn.
    let (status, _) = h.call("DELETE", "/v1/deployments/b", None, Some(json!({"key": key}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "c"})).await["code"], "VALID");
    h.call("DELETE", "/v1/deployments/c", None, Some(json!({"key": key}))).await;
    let refused = h.validate(json!({"key": key, "deployment_id": "d"})).await;
    assert_eq!(refused["code"], ACTIVATION_RATE_LIMITED);
    assert_eq!(refused["valid"], false);
    assert_eq!(h.validate(json!({"key": "NLS-nope"})).await["code"], "MALFORMED");
}

#[tokio::test]
async fn receipts_verify_against_the_served_jwks() {
    let h = harness();
    let (_, key) = h.license(json!({})).await;
    let answer = h.validate(json!({"key": key, "deployment_id": "x"})).await;
    let (_, jwks) = h.call("GET", "/.well-known/jwks.json", None, None).await;
    let ring = KeyRing::parse_jwks_json(&jwks.to_string()).unwrap();
    let receipt = crate::receipt::verify_receipt(&ring, answer["receipt"].as_str().unwrap(), &key).unwrap();
    assert_eq!(receipt.claims.deployment_id.as_deref(), Some("x"));
    assert!(crate::license_token::verify_license_key(&ring, &key).is_ok());
    assert!(h.ring.signer().is_some());
}

/// (method, path, API key, body, status, error code)
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, StatusCode, &'a str);

#[tokio::test]
async fn bad_input_gets_the_documented_status_and_code() {
    let h = harness();
    let (_, reader) = {
        let created = h.admin("POST", "/v1/api-keys", Some(json!({"name": "ro", "scopes": ["read"]}))).await;
        ((), created["secret"].as_str().unwrap().to_owned())
    };
    let big = Body::from(format!("{{\"key\":\"{}\"}}", "x".repeat(70 * 1024)));
    let (status, body, _) = h.raw("POST", "/v1/licenses/validate", None, big).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/licenses/validate", None, Some("{not json"), StatusCode::BAD_REQUEST, "malformed_json"),
        ("POST", "/v1/licenses/validate", None, Some("{}"), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "POST",
            "/v1/licenses/validate",
            None,
            Some(r#"{"key": 5}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/heartbeat",
            None,
            Some(r#"{"key": "NLS-x"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/heartbeat",
            None,
            Some(r#"{"key": "NLS-x", "deployment_id": "d"}"#),
            StatusCode::UNAUTHORIZED,
            "invalid_license_key",
        ),
        ("GET", "/v1/licenses/validate", None, None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("GET", "/v1/nope", None, None, StatusCode::NOT_FOUND, "route_not_found"),
        ("GET", "/v1/customers", None, None, StatusCode::UNAUTHORIZED, "missing_credentials"),
        ("GET", "/v1/customers", Some("nls_ak_x_y"), None, StatusCode::UNAUTHORIZED, "invalid_credentials"),
        (
            "POST",
            "/v1/customers",
            Some(&reader),
            Some(r#"{"name":"a","email":"a@b.c"}"#),
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        ),
        ("GET", "/v1/customers?limit=abc", Some(BOOTSTRAP), None, StatusCode::BAD_REQUEST, "invalid_query"),
        (
            "GET",
            "/v1/licenses/lic_missing",
            Some(BOOTSTRAP),
            None,
            StatusCode::NOT_FOUND,
            "license_not_found",
        ),
        ("DELETE", "/v1/deployments/d", None, None, StatusCode::UNAUTHORIZED, "missing_credentials"),
    ];
    for (method, path, auth, body, status, code) in cases {
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_owned()));
        let (got_status, got, _) = h.raw(method, path, auth, body).await;
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {got}"
        );
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let limited = RateLimit { per_second: 1.0, burst: 2.0 };
    let h = harness_with(HttpConfig { ip_rate_limit: Some(limited), ..HttpConfig::default() });
    for _ in 0..2 {
        assert_eq!(h.call("GET", "/health", None, None).await.0, StatusCode::OK);
    }
    let (status, body, headers) = h.raw("GET", "/health", None, Body::empty()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test]
async fn every_mutation_is_audited_with_before_and_after() {
    let h = harness();
    let (id, _) = h.license(json!({"tier": "pro"})).await;
    let patched = h.admin("PATCH", &format!("/v1/licenses/{id}"), Some(json!({"features": ["sso"]}))).await;
    assert!(patched["key"].is_string(), "claims changed, so a new key is issued");
    h.admin("POST", &format!("/v1/licenses/{id}/renew"), Some(json!({"expires_at": "2030-01-01T00:00:00Z"})))
        .await;
    h.admin("DELETE", &format!("/v1/licenses/{id}"), None).await;
    let log = h.admin("GET", &format!("/v1/audit-log?target=license:{id}"), None).await;
    let actions: Vec<&str> =
        log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["license.revoke", "license.renew", "license.update", "license.create"]);
    let revoke = &log["items"][0];
    assert_eq!(
        (revoke["before"]["status"].as_str(), revoke["after"]["status"].as_str()),
        (Some("active"), Some("revoked"))
    );
    assert_eq!(revoke["actor"], "bootstrap");
    let (status, body) = h.call("POST", &format!("/v1/licenses/{id}/suspend"), Some(BOOTSTRAP), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_transition")));
}

#[tokio::test]
async fn validation_history_is_buffered_then_flushed() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    h.validate(json!({"key": key, "deployment_id": "d"})).await;
    assert!(h.store.inner.list_validation_logs(&id, 10).await.unwrap().is_empty(), "not written inline");
    let history = h.admin("GET", &format!("/v1/licenses/{id}/validations"), None).await;
    assert_eq!(history["items"][0]["code"], "VALID");
    assert_eq!(h.state.flush_validation_log().await.unwrap(), 0);
}

#[tokio::test]
async fn openapi_lists_every_route_and_metrics_count_them() {
    let h = harness();
    let (_, doc) = h.call("GET", "/openapi.json", None, None).await;
    for (method, path) in route_table::route_keys() {
        let op = &doc["paths"][path][method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["ValidateRequest"].is_object());
    h.call("GET", "/health", None, None).await;
    let response =
        h.app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text =
        String::from_utf8(axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec())
            .unwrap();
    assert!(
        text.contains(r#"nls_http_requests_total{method="GET",route="/health",status="2xx"} 1"#),
        "{text}"
    );
    assert!(text.contains("nls_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"nls_validations_total{code="VALID"}"#));
}

#[tokio::test]
async fn security_headers_and_admin_cors() {
    let h = harness_with(HttpConfig {
        cors_origins: vec!["https://portal.test".into()],
        ..HttpConfig::default()
    });
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/customers")
        .header("origin", "https://portal.test")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://portal.test");
    let req = Request::get("/health").header("origin", "https://portal.test").body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none(), "CORS is for admin routes only");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn silent_deployments_release_their_seat_after_the_lease_and_heartbeats_keep_it() {
    let h = harness_with(HttpConfig { lease: Duration::minutes(10), ..HttpConfig::default() });
    let (_, key) = h.license(json!({"max_deployments": 2})).await;
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "kept"})).await["code"], "VALID");
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "silent"})).await["code"], "VALID");
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "new"})).await["code"], "TOO_MANY_DEPLOYMENTS");
    h.clock.advance(Duration::minutes(6));
    let (status, beat) =
        h.call("POST", "/v1/heartbeat", None, Some(json!({"key": key, "deployment_id": "kept"}))).await;
    assert_eq!((status, beat["code"].as_str()), (StatusCode::OK, Some("VALID")));
    h.clock.advance(Duration::minutes(6));
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "new"})).await["code"], "VALID");
    assert_eq!(
        h.validate(json!({"key": key, "deployment_id": "silent"})).await["code"],
        "TOO_MANY_DEPLOYMENTS"
    );
    let (status, body) =
        h.call("POST", "/v1/heartbeat", None, Some(json!({"key": key, "deployment_id": "silent"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("deployment_not_active"))
    );
}

/// An in-memory [`StatusPublisher`]: keeps every snapshot it was handed, or fails them all.
#[derive(Default)]
struct RecordingPublisher {
    pushed: std::sync::Mutex<Vec<StatusSnapshot>>,
    failing: std::sync::atomic::AtomicBool,
}

impl RecordingPublisher {
    fn statuses(&self) -> Vec<&'static str> {
        self.pushed.lock().unwrap().iter().map(|s| s.license.status.as_str()).collect()
    }
    fn last(&self) -> StatusSnapshot {
        self.pushed.lock().unwrap().last().cloned().expect("something was pushed")
    }
}

#[async_trait]
impl StatusPublisher for RecordingPublisher {
    async fn publish(&self, snapshot: &StatusSnapshot) -> Result<(), PublishError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(PublishError::Unavailable {
                target: "http://edge.test".into(),
                reason: "down".into(),
            });
        }
        self.pushed.lock().unwrap().push(snapshot.clone());
        Ok(())
    }
}

/// A harness whose state pushes to `publisher` and accepts Stripe webhooks.
fn pushing_harness(publisher: Arc<RecordingPublisher>) -> Harness {
    let h = harness();
    let billing = webhook_routes::BillingSetup {
        mailer: Arc::new(crate::billing::scenarios::RecordingMailer::new()),
        plans: crate::billing::PlanCatalogue::parse(crate::billing::scenarios::fixture("plans")).unwrap(),
        webhook_secret: crate::billing::scenarios::WEBHOOK_SECRET.to_vec(),
        policy: crate::billing::BillingPolicy::default(),
    };
    let deps = AppDeps {
        store: h.store.clone(),
        key_ring: h.ring.clone(),
        clock: h.clock.clone(),
        config: HttpConfig::default().with_bootstrap_admin_key(BOOTSTRAP),
    };
    let state = AppState::with_billing(deps, billing).with_status_publisher(publisher);
    Harness { app: router(state.clone()), state, ..h }
}

impl Harness {
    async fn metrics_text(&self) -> String {
        let response =
            self.app.clone().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        String::from_utf8(axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec())
            .unwrap()
    }

    async fn deliver_stripe(&self, fixture: &str) -> Value {
        let body = crate::billing::scenarios::fixture(fixture);
        let signature = crate::billing::stripe_signature::sign_stripe_payload(
            crate::billing::scenarios::WEBHOOK_SECRET,
            self.clock.now().timestamp(),
            body.as_bytes(),
        );
        let req = Request::post("/v1/webhooks/stripe")
            .header("stripe-signature", signature)
            .body(Body::from(body))
            .unwrap();
        let response = self.app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{fixture}");
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap())
            .unwrap()
    }
}

#[tokio::test]
async fn admin_changes_push_the_fresh_snapshot_and_customer_traffic_does_not() {
    let publisher = Arc::new(RecordingPublisher::default());
    let h = pushing_harness(publisher.clone());
    let (id, key) = h.license(json!({"max_deployments": 3})).await;
    h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    let usage = json!({"key": key, "deployment_id": "d1", "batch_id": "b1",
        "records": [{"metric": "seats", "value": 2, "at": h.clock.now()}]});
    assert_eq!(h.call("POST", "/v1/usage", None, Some(usage)).await.0, StatusCode::ACCEPTED);
    assert!(publisher.statuses().is_empty(), "creation, activation and usage push nothing");

    let path = format!("/v1/licenses/{id}");
    h.admin("POST", &format!("{path}/suspend"), None).await;
    let suspended = publisher.last();
    assert_eq!(
        (suspended.license.id.as_str(), suspended.license.status.as_str()),
        (id.as_str(), "suspended")
    );
    assert_eq!(
        suspended.live_deployments,
        vec!["d1".to_owned()],
        "the whole snapshot, as the GET route reads it"
    );
    assert_eq!(suspended.month_usage.get("seats"), Some(&2));
    assert_eq!(suspended.as_of, h.clock.now());

    h.admin("POST", &format!("{path}/reactivate"), None).await;
    h.admin("PATCH", &path, Some(json!({"features": ["sso"]}))).await;
    assert_eq!(publisher.last().license.features, vec!["sso".to_owned()]);
    h.admin("PATCH", &path, Some(json!({"features": ["sso"]}))).await;
    let renew_to = h.clock.now() + Duration::days(400);
    h.admin("POST", &format!("{path}/renew"), Some(json!({"expires_at": renew_to}))).await;
    assert_eq!(publisher.last().license.expires_at, Some(renew_to));
    h.admin("DELETE", &path, None).await;
    assert_eq!(
        publisher.statuses(),
        vec!["suspended", "active", "active", "active", "revoked"],
        "one push per committed change; the no-op PATCH pushes nothing"
    );
    assert!(h.metrics_text().await.contains("nls_snapshot_pushes_total{outcome=\"ok\"} 5"));
}

#[tokio::test]
async fn a_failed_push_does_not_fail_the_change_and_is_counted() {
    let publisher = Arc::new(RecordingPublisher::default());
    publisher.failing.store(true, Ordering::SeqCst);
    let h = pushing_harness(publisher.clone());
    let (id, key) = h.license(json!({})).await;
    let answer = h.admin("POST", &format!("/v1/licenses/{id}/suspend"), None).await;
    assert_eq!(answer["license"]["status"], "suspended");
    assert_eq!(h.validate(json!({"key": key})).await["code"], "SUSPENDED", "the change is committed");
    let text = h.metrics_text().await;
    assert!(text.contains("nls_snapshot_pushes_total{outcome=\"failed\"} 1"), "{text}");
    assert!(text.contains("nls_snapshot_pushes_total{outcome=\"ok\"} 0"), "{text}");
}

#[tokio::test]
async fn stripe_lifecycle_transitions_are_pushed() {
    let publisher = Arc::new(RecordingPublisher::default());
    let h = pushing_harness(publisher.clone());
    h.clock.set(crate::billing::scenarios::at("2026-11-01T00:00:30Z"));
    for fixture in &crate::billing::scenarios::LAPSING_HISTORY[..4] {
        h.deliver_stripe(fixture).await;
    }
    let before = publisher.statuses().len();
    let ack = h.deliver_stripe("invoice.payment_failed").await;
    let pushed = publisher.last();
    assert_eq!(Some(pushed.license.id.as_str()), ack["license_id"].as_str());
    assert_eq!(pushed.license.status.as_str(), "past_due");
    assert!(pushed.license.grace_ends_at.is_some(), "the edge gets the grace end with the status");
    h.deliver_stripe("customer.subscription.updated.unpaid").await;
    assert_eq!(publisher.last().license.status.as_str(), "suspended");
    assert_eq!(publisher.statuses().len(), before + 2);
    h.deliver_stripe("customer.created").await;
    assert_eq!(publisher.statuses().len(), before + 2, "an ignored event pushes nothing");
}

mod fleet_usage_answer;
mod memory_sweep;
mod openapi_links;
mod security_review;
mod validation_events;
#[tokio::test]
async fn usage_outside_the_documented_bounds_is_refused_with_a_stable_code() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    let now = h.clock.now();
    let batch = |batch_id: &str, records: Value| json!({"key": key, "deployment_id": "d1", "batch_id": batch_id, "records": records});
    let one = |value: u64, at: chrono::DateTime<Utc>| json!([{"metric": "m", "value": value, "at": at}]);
    let max = crate::model::MAX_USAGE_VALUE;
    let cases = [
        ("over the per-record maximum", one(max + 1, now)),
        ("the counter's saturation point", one(u64::MAX, now)),
        ("older than the window", one(1, now - Duration::days(35) - Duration::seconds(1))),
        ("years back", one(1, Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap())),
        ("ahead of the window", one(1, now + Duration::minutes(5) + Duration::seconds(1))),
    ];
    for (label, records) in cases {
        let (status, answer) = h.call("POST", "/v1/usage", None, Some(batch(label, records))).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("usage_out_of_bounds")),
            "{label}: {answer}"
        );
    }
    // The edges of the window and the maximum are accepted.
    let edges = json!([
        {"metric": "m", "value": max, "at": now - Duration::days(35)},
        {"metric": "m", "value": 1, "at": now + Duration::minutes(5)},
    ]);
    let (status, answer) = h.call("POST", "/v1/usage", None, Some(batch("edges", edges))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // A wider configured window still caps the periods one batch may touch (DynamoDB's
    // transaction holds 100 items: the batch marker and 99 counters).
    let wide = harness_with(HttpConfig {
        usage_window: crate::model::UsageWindow {
            max_age: Duration::days(400),
            max_ahead: Duration::minutes(5),
        },
        ..HttpConfig::default()
    });
    let (_, wide_key) = wide.license(json!({})).await;
    let spread: Vec<Value> =
        (0..90).map(|d| json!({"metric": "m", "value": 1, "at": now - Duration::days(d * 4)})).collect();
    let body = json!({"key": wide_key, "deployment_id": "d1", "batch_id": "spread", "records": spread});
    let (status, answer) = wide.call("POST", "/v1/usage", None, Some(body)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("usage_out_of_bounds")),
        "{answer}"
    );
    // Nothing refused was counted.
    assert_eq!(h.store.usage_counters(&id, "2026-10").await.unwrap().get("m"), Some(&max));
    assert_eq!(h.store.usage_counters(&id, "2026-11").await.unwrap().get("m"), Some(&1));
}

#[tokio::test]
async fn a_usage_batch_that_would_overflow_a_counter_is_refused_not_saturated() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    let now = h.clock.now();
    // GIVEN a counter 10 short of u64::MAX (about 2000 full batches' worth, seeded directly)
    let near_max = u64::MAX - 10;
    let seed = UsageBatch {
        license_id: id.clone(),
        deployment_id: "d1".into(),
        batch_id: "seed".into(),
        records: vec![UsageRecord { metric: "m".into(), value: near_max, at: now }],
        received_at: now,
    };
    h.store.record_usage_batch(&seed).await.unwrap();
    // WHEN a batch would take it past the maximum, THEN it is refused and nothing moves
    let over = json!({"key": key, "deployment_id": "d1", "batch_id": "over",
        "records": [{"metric": "m", "value": 11, "at": now}]});
    let (status, answer) = h.call("POST", "/v1/usage", None, Some(over)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("usage_out_of_bounds")),
        "{answer}"
    );
    let month = h.store.usage_counters(&id, "2026-11").await.unwrap();
    assert_eq!(month.get("m"), Some(&near_max), "the refused batch added nothing");
    // AND one that fits exactly is counted
    let fits = json!({"key": key, "deployment_id": "d1", "batch_id": "fits",
        "records": [{"metric": "m", "value": 10, "at": now}]});
    assert_eq!(h.call("POST", "/v1/usage", None, Some(fits)).await.0, StatusCode::ACCEPTED);
    assert_eq!(h.store.usage_counters(&id, "2026-11").await.unwrap().get("m"), Some(&u64::MAX));
}

#[tokio::test]
async fn a_garbage_cursor_is_invalid_query_on_every_list_route() {
    let h = harness();
    h.license(json!({})).await;
    for path in ["/v1/customers", "/v1/licenses", "/v1/audit-log"] {
        let (status, answer) =
            h.call("GET", &format!("{path}?cursor=not%20a%20cursor!"), Some(BOOTSTRAP), None).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{path}: {answer}"
        );
    }
}
mod access_tokens;
mod cloud_usage;
mod under_faults;
