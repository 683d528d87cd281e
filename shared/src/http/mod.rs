//! The HTTP API of DESIGN §5, written once for every runtime.
//!
//! The mechanism is an axum [`Router`](axum::Router) (axum without its `tokio` feature, so it
//! builds for `wasm32-unknown-unknown`). Every host can run a tower service: `nls serve` with
//! `axum::serve`, Lambda with `lambda_http::run`, workers-rs with its `http`/`axum` features,
//! Spin with its axum example. A host only supplies the ports in an [`AppDeps`], and may put a
//! [`ClientIp`] in the request extensions.
//!
//! Layout: `route_table` lists every route once (the router and `/openapi.json` are both built
//! from it); `public_routes` serves license-key routes; `customer_routes`, `license_routes`,
//! `api_key_routes` and `audit_routes` serve the admin API; `wire` holds the JSON types;
//! `app_error` the one error type; `request_layers` the middleware (security headers, CORS,
//! per-IP rate limit, metrics); `portal` the admin portal's HTML pages at `/admin/`.
//!
//! Handler futures are `Send`, like the ports (see `ports`).

pub mod access_token_routes;
pub mod admin_auth;
pub mod api_key_routes;
pub mod app_error;
pub mod audit_routes;
pub mod cloud_usage_routes;
pub mod customer_routes;
pub mod internal_routes;
pub mod license_routes;
pub mod memory_sweep;
pub mod metrics;
pub mod portal;
pub mod public_routes;
pub mod rate_limit;
pub mod registry_routes;
pub mod request_layers;
pub mod route_table;
pub mod snapshot_cache;
pub mod staff_license_actions;
pub mod validation_event_routes;
pub mod validation_log_buffer;
pub mod webhook_routes;
pub mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::Method;
use chrono::Duration;

use crate::billing::PlanCatalogue;
use crate::key_ring::KeyRing;
use crate::model::{Scope, Timestamp, UsageWindow};
use crate::ports::{
    ActivationPolicy, Clock, MailError, Mailer, OutgoingEmail, StatusPublisher, Store, StoreResult,
};
use crate::status_push::push_license_status;
use crate::validation::Verifier;

use self::app_error::{AppError, DEFAULT_BODY_LIMIT};
use self::metrics::Metrics;
use self::rate_limit::{RateLimit, TokenBuckets};
use self::snapshot_cache::SnapshotCache;
use self::validation_log_buffer::ValidationLogBuffer;
use self::webhook_routes::BillingSetup;

pub use self::route_table::{openapi_document, router};

/// The `event` field of the log line for a failed status push (alarmed on in template.yaml).
const EDGE_PUSH_FAILED_EVENT: &str = "edge_push_failed";

/// The validation code for a refused re-activation (churn protection); not one of the core's
/// codes because it is decided by the store's activation write, not by `decide`.
pub const ACTIVATION_RATE_LIMITED: &str = "ACTIVATION_RATE_LIMITED";

/// The caller's address, put in the request extensions by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// How the API behaves. Hosts parse their own settings into this, once, at start-up.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A new deployment's lease; each heartbeat extends it by this much. A deployment whose
    /// heartbeats stop for this long is released.
    pub lease: Duration,
    /// When clients should validate (and heartbeat) again.
    pub check_in_interval: Duration,
    /// Churn protection: at most `churn_max` new activations per license per `churn_window`.
    pub churn_window: Duration,
    pub churn_max: u32,
    pub body_limit_bytes: usize,
    /// SHA-256 of the bootstrap admin key; the key itself is never kept.
    pub bootstrap_admin_key_sha256: Option<[u8; 32]>,
    /// Origins allowed to call the admin API from a browser. Empty: no CORS.
    pub cors_origins: Vec<String>,
    pub ip_rate_limit: Option<RateLimit>,
    pub api_key_rate_limit: Option<RateLimit>,
    /// How long a status snapshot is served from memory: the bound on how stale a change made
    /// by another instance can look here.
    pub snapshot_ttl: Duration,
    /// Take the client IP from `X-Forwarded-For` (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Validation log entries held in memory between flushes.
    pub validation_log_capacity: usize,
    /// How far from the server's clock a usage record's `at` may be.
    pub usage_window: UsageWindow,
    /// The life of a cloud access token (`access_token::access_ttl` bounds it: 60 s to 1 h).
    pub access_token_ttl: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            lease: Duration::hours(1),
            check_in_interval: Duration::minutes(15),
            churn_window: Duration::hours(1),
            churn_max: 20,
            body_limit_bytes: DEFAULT_BODY_LIMIT,
            bootstrap_admin_key_sha256: None,
            cors_origins: Vec::new(),
            ip_rate_limit: Some(RateLimit { per_second: 1000.0, burst: 2000.0 }),
            api_key_rate_limit: Some(RateLimit { per_second: 50.0, burst: 100.0 }),
            snapshot_ttl: Duration::seconds(2),
            trust_forwarded_for: false,
            validation_log_capacity: 100_000,
            usage_window: UsageWindow::default(),
            access_token_ttl: Duration::seconds(crate::access_token::DEFAULT_ACCESS_TTL_SECS),
        }
    }
}

impl HttpConfig {
    /// Accepts `key` as an admin API key. Only its hash is kept.
    pub fn with_bootstrap_admin_key(mut self, key: &str) -> Self {
        self.bootstrap_admin_key_sha256 = Some(admin_auth::token_sha256(key.trim()));
        self
    }

    pub fn activation_policy(&self, max_deployments: Option<u32>) -> ActivationPolicy {
        ActivationPolicy {
            max_deployments,
            lease: self.lease,
            churn_window: self.churn_window,
            churn_max: self.churn_max,
        }
    }
}

/// What a host provides.
pub struct AppDeps {
    pub store: Arc<dyn Store>,
    pub key_ring: Arc<KeyRing>,
    pub clock: Arc<dyn Clock>,
    pub config: HttpConfig,
}

/// Everything a handler reaches. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Services>,
    /// Set by [`AppState::with_status_publisher`]; outside `Services` so existing
    /// constructors keep working.
    publisher: Option<Arc<dyn StatusPublisher>>,
    /// Set by [`AppState::with_registry`] (`registry_routes`): the registry token service.
    registry: Option<Arc<registry_routes::RegistryTokenService>>,
    /// Set by [`AppState::with_mailer`]: what the portal sends emails through (failures are
    /// counted in the metrics).
    mailer: Option<Arc<dyn Mailer>>,
    /// Set by [`AppState::with_plans`]: the plan catalogue (the dashboard's revenue by tier).
    plans: Option<Arc<PlanCatalogue>>,
}

struct Services {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    key_ring: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    config: HttpConfig,
    metrics: Metrics,
    snapshots: SnapshotCache,
    validation_log: ValidationLogBuffer,
    /// Validation events (issue 12): the origin's own, waiting for the flush; edge counts.
    validation_events: validation_event_routes::ValidationEvents,
    ip_buckets: Option<TokenBuckets<IpAddr>>,
    api_key_buckets: Option<TokenBuckets<String>>,
    /// (method, route) → the scope the route table asks for.
    route_scopes: HashMap<(Method, &'static str), Scope>,
    /// Present when this host accepts Stripe webhooks.
    billing: Option<BillingSetup>,
    /// The portal's sign-in rate limits.
    portal_logins: portal::login_pages::LoginLimits,
    /// The last status push to the edges from this process (the portal's System page).
    last_edge_push: std::sync::Mutex<Option<EdgePushOutcome>>,
}

/// What this process knows of its last status push to the edges. In memory only: each
/// instance (each Lambda) knows its own pushes; `/metrics` and the logs have them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePushOutcome {
    pub at: Timestamp,
    pub license_id: String,
    /// `None` when it succeeded; the error text when it failed.
    pub error: Option<String>,
}

impl AppState {
    pub fn new(deps: AppDeps) -> Self {
        Self::build(deps, None)
    }

    /// A state that also serves `POST /v1/webhooks/stripe`.
    pub fn with_billing(deps: AppDeps, billing: BillingSetup) -> Self {
        Self::build(deps, Some(billing))
    }

    fn build(deps: AppDeps, billing: Option<BillingSetup>) -> Self {
        let AppDeps { store, key_ring, clock, config } = deps;
        let mut route_keys = route_table::route_keys();
        route_keys.extend(portal::routes().into_iter().map(|(method, path, _)| (method, path)));
        let metrics = Metrics::new(&route_keys, &public_routes::all_validation_codes());
        let inner = Services {
            verifier: Arc::new(Verifier::new(Arc::clone(&key_ring))),
            snapshots: SnapshotCache::new(config.snapshot_ttl, 100_000),
            validation_log: ValidationLogBuffer::new(config.validation_log_capacity),
            validation_events: validation_event_routes::ValidationEvents::new(config.validation_log_capacity),
            ip_buckets: config.ip_rate_limit.map(|l| TokenBuckets::new(l, 100_000)),
            api_key_buckets: config.api_key_rate_limit.map(|l| TokenBuckets::new(l, 10_000)),
            route_scopes: route_table::route_scopes(),
            billing,
            portal_logins: portal::login_pages::LoginLimits::default(),
            last_edge_push: std::sync::Mutex::new(None),
            store,
            key_ring,
            clock,
            config,
            metrics,
        };
        Self { inner: Arc::new(inner), publisher: None, registry: None, mailer: None, plans: None }
    }

    /// Pushes every committed license change an edge's snapshot reflects to `publisher`
    /// (docs/edge.md, propagation bound).
    pub fn with_status_publisher(mut self, publisher: Arc<dyn StatusPublisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Emails from this host (the portal's key email; `nls serve`'s renewals) go through
    /// `mailer`, and each failed send is counted (`nls_emails_failed_total`, the dashboard).
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = Some(Arc::new(CountingMailer { inner: mailer, services: Arc::clone(&self.inner) }));
        self
    }

    /// The plan catalogue (`NLS_PLANS_FILE`), when the host has one.
    pub fn with_plans(mut self, plans: PlanCatalogue) -> Self {
        self.plans = Some(Arc::new(plans));
        self
    }

    /// The counting mailer of [`AppState::with_mailer`]; `None` on a host without one.
    pub fn mailer(&self) -> Option<Arc<dyn Mailer>> {
        self.mailer.clone()
    }

    /// The plan catalogue of [`AppState::with_plans`], else the billing set-up's.
    pub fn plans(&self) -> Option<&PlanCatalogue> {
        self.plans.as_deref().or_else(|| self.billing().map(|b| &b.plans))
    }

    /// Whether this host pushes status changes to the edges, and its last push.
    pub fn edge_push_status(&self) -> (bool, Option<EdgePushOutcome>) {
        let last = self.inner.last_edge_push.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.publisher.is_some(), last)
    }

    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
    pub fn key_ring(&self) -> &KeyRing {
        &self.inner.key_ring
    }
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }
    pub fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }
    pub(crate) fn billing(&self) -> Option<&BillingSetup> {
        self.inner.billing.as_ref()
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    pub(crate) fn portal_login_limits(&self) -> &portal::login_pages::LoginLimits {
        &self.inner.portal_logins
    }
    pub(crate) fn snapshots(&self) -> &SnapshotCache {
        &self.inner.snapshots
    }
    pub(crate) fn validation_log(&self) -> &ValidationLogBuffer {
        &self.inner.validation_log
    }

    pub fn validation_events(&self) -> &validation_event_routes::ValidationEvents {
        &self.inner.validation_events
    }

    /// Writes buffered validation history to the store. Hosts call this on a timer (about
    /// once a second) and at shutdown; serverless hosts after each request. The origin's own
    /// validation events (the daily aggregates) go with it once a batch is due.
    pub async fn flush_validation_log(&self) -> StoreResult<usize> {
        let events = validation_event_routes::flush_own_events(self, false).await;
        let logged = self.inner.validation_log.flush(&*self.inner.store).await?;
        events.map(|_| logged)
    }

    /// Writes every pending own validation event now (hosts: at shutdown).
    pub async fn flush_validation_events(&self) -> StoreResult<usize> {
        validation_event_routes::flush_own_events(self, true).await
    }

    /// Drops this process's cached view of a license after it changed.
    pub fn invalidate_license(&self, license_id: &str) {
        self.inner.snapshots.invalidate(license_id);
    }

    /// After a committed status or terms change (admin or billing): drops the cached view and
    /// pushes the fresh snapshot to the edges. Never fails: the change is committed, so a lost
    /// push is logged and counted, and the edges' snapshot TTL bounds it. Customer traffic
    /// (activations, usage) only invalidates: the edge forwarded it and refreshes on its own,
    /// and a push per request would spend KV writes.
    pub async fn license_changed(&self, license_id: &str) {
        self.invalidate_license(license_id);
        let Some(publisher) = &self.publisher else { return };
        let metrics = &self.inner.metrics;
        let pushed = push_license_status(&*self.inner.store, &**publisher, license_id, self.now()).await;
        if let Ok(true) | Err(_) = &pushed {
            let outcome = EdgePushOutcome {
                at: self.now(),
                license_id: license_id.to_owned(),
                error: pushed.as_ref().err().map(ToString::to_string),
            };
            *self.inner.last_edge_push.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        }
        match pushed {
            Ok(true) => metrics.record_snapshot_push(true),
            Ok(false) => {}
            Err(e) => {
                metrics.record_snapshot_push(false);
                // `event` is what template.yaml's metric filters count for the alarm.
                tracing::warn!(
                    event = EDGE_PUSH_FAILED_EVENT,
                    license_id,
                    error = %e,
                    "status push to the edges failed; their snapshot TTL bounds the staleness"
                );
            }
        }
    }

    /// The scope a route needs, checked as soon as the caller is known (before the body is
    /// read), so a wrong scope is 403 whatever the body holds.
    pub(crate) fn required_scope(&self, method: &Method, route: &str) -> Option<Scope> {
        self.inner.route_scopes.get(&(method.clone(), route)).copied()
    }

    pub(crate) fn check_ip_rate(&self, ip: IpAddr) -> Result<(), AppError> {
        match &self.inner.ip_buckets {
            Some(buckets) => buckets
                .take(&ip, self.now())
                .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }

    pub(crate) fn check_api_key_rate(&self, key_id: &str) -> Result<(), AppError> {
        match &self.inner.api_key_buckets {
            Some(buckets) => buckets
                .take(&key_id.to_owned(), self.now())
                .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }
}

/// A mailer that counts its failed sends in the host's metrics.
struct CountingMailer {
    inner: Arc<dyn Mailer>,
    services: Arc<Services>,
}

#[async_trait::async_trait]
impl Mailer for CountingMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<String, MailError> {
        let sent = self.inner.send(email).await;
        if sent.is_err() {
            self.services.metrics.record_email_failure();
        }
        sent
    }
}

#[cfg(test)]
mod tests;
