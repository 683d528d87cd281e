//! The cloud service's side of access tokens (docs/cloud-access.md): a tower layer that
//! verifies `Authorization: Bearer <nls-access+jwt>` offline against the NLS JWKS, enforces the
//! token's `rate` per license, and puts the verified claims in the request extensions.
//!
//! ```text
//! let access = CloudAccess::from_jwks_url("https://licenses.nectar.example/.well-known/jwks.json")?;
//! let app = Router::new()
//!     .route("/v1/runs", post(start_run))
//!     .layer(access.require_access_token("workflows"));
//! async fn start_run(Extension(caller): Extension<CloudCaller>) { caller.claims().sub ... }
//! ```
//!
//! Answers, with the API's error shape `{"error": {"code", "message"}}`:
//! - no token, or one that fails any check (signature, `alg`, `typ`, `kid`, `aud`, `nbf`,
//!   `exp`): **401** with `WWW-Authenticate: Bearer error="invalid_token"`; a license key, a
//!   receipt or an offline file is never accepted (their `typ` differs);
//! - over the license's rate: **429** `rate_limited` with `Retry-After`;
//!   every answer past verification carries `RateLimit-Limit`, `RateLimit-Remaining` and
//!   `RateLimit-Reset` (IETF draft names).
//!
//! The verification itself is the core's [`AccessVerifier`] (written once; the Node package
//! runs the same core code through wasm). A token seen before costs a map lookup. An
//! unknown `kid` refetches the JWKS (blocking, bounded by the timeout, at most once per
//! [`JWKS_REFRESH_INTERVAL`]) and tries once more; a JWKS older than [`JWKS_MAX_AGE`] is
//! refetched before the next verification, so a key retired at NLS stops verifying here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use nls_core::access_token::{AccessClaims, AccessRejection, AccessVerifier, VerifiedAccess};
use nls_core::cloud_rate::{LicenseBuckets, RateLimiter, RateVerdict};
use nls_core::key_ring::KeyRing;
use tower_layer::Layer;
use tower_service::Service;

use crate::http_transport::HttpTransport;
use crate::license_client::{Clock, SystemClock};

/// The least time between two JWKS fetches triggered by unknown `kid`s, so a stream of forged
/// `kid`s cannot turn into a stream of fetches.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How long a fetched JWKS is trusted before the next verification refetches it (the
/// `Cache-Control: max-age` NLS serves it with). This is how a retired key stops verifying:
/// its `kid` is known, so no unknown-`kid` refresh would ever drop it.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
const JWKS_PATH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CloudAccessError {
    #[error("the JWKS is not usable: {0}")]
    Jwks(String),
    #[error("fetching the JWKS: {0}")]
    Fetch(String),
}

/// Counts allowed calls (usage metric `cloud.<audience>.calls`, docs/cloud-access.md).
pub trait CallMeter: Send + Sync {
    fn record_call(&self, caller: &VerifiedAccess);
}

/// The verified token of the current request, in its extensions.
#[derive(Debug, Clone)]
pub struct CloudCaller(pub Arc<VerifiedAccess>);

impl CloudCaller {
    pub fn claims(&self) -> &AccessClaims {
        &self.0.claims
    }
}

struct JwksSource {
    transport: HttpTransport,
    path: String,
}

struct Shared {
    jwks: Option<Arc<JwksSource>>,
    ring: Mutex<KeyRing>,
    verifiers: Mutex<Vec<Arc<AccessVerifier>>>,
    /// When the JWKS was last fetched (or a fetch was tried), by `clock`.
    last_refresh: Mutex<Option<DateTime<Utc>>>,
    /// When the ring in use was fetched, by `clock`.
    fetched_at: Mutex<Option<DateTime<Utc>>>,
    jwks_max_age: chrono::Duration,
    limiter: Arc<dyn RateLimiter>,
    meter: Option<Arc<dyn CallMeter>>,
    clock: Arc<dyn Clock>,
}

/// A cloud service's access-token checks. Cheap to clone; build it once.
#[derive(Clone)]
pub struct CloudAccess {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CloudAccess {
    fn build(ring: KeyRing, jwks: Option<Arc<JwksSource>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                jwks,
                ring: Mutex::new(ring),
                verifiers: Mutex::new(Vec::new()),
                last_refresh: Mutex::new(None),
                fetched_at: Mutex::new(None),
                jwks_max_age: chrono::Duration::from_std(JWKS_MAX_AGE).unwrap_or(chrono::Duration::MAX),
                limiter: Arc::new(LicenseBuckets::default()),
                meter: None,
                clock: Arc::new(SystemClock),
            }),
        }
    }

    /// Trusts exactly this JWKS (no refresh).
    pub fn from_jwks_json(jwks_json: &str) -> Result<Self, CloudAccessError> {
        let ring = KeyRing::parse_jwks_json(jwks_json).map_err(|e| CloudAccessError::Jwks(e.to_string()))?;
        Ok(Self::build(ring, None))
    }

    /// Fetches the JWKS now, and again when a token names a `kid` it lacks.
    pub fn from_jwks_url(jwks_url: &str) -> Result<Self, CloudAccessError> {
        let (base, path) =
            match jwks_url.find("://").and_then(|i| jwks_url[i + 3..].find('/').map(|j| i + 3 + j)) {
                Some(split) => (&jwks_url[..split], &jwks_url[split..]),
                None => (jwks_url, "/.well-known/jwks.json"),
            };
        let source =
            JwksSource { transport: HttpTransport::new(base, JWKS_PATH_TIMEOUT), path: path.to_owned() };
        let ring = fetch_ring(&source)?;
        let access = Self::build(ring, Some(Arc::new(source)));
        *lock(&access.shared.fetched_at) = Some(access.shared.clock.now());
        Ok(access)
    }

    /// A copy with one setting changed. Layers built before keep the settings they had.
    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let old = &self.shared;
        let mut shared = Shared {
            jwks: old.jwks.clone(),
            ring: Mutex::new(lock(&old.ring).clone()),
            verifiers: Mutex::new(Vec::new()),
            last_refresh: Mutex::new(*lock(&old.last_refresh)),
            fetched_at: Mutex::new(*lock(&old.fetched_at)),
            jwks_max_age: old.jwks_max_age,
            limiter: Arc::clone(&old.limiter),
            meter: old.meter.clone(),
            clock: Arc::clone(&old.clock),
        };
        change(&mut shared);
        Self { shared: Arc::new(shared) }
    }

    /// Buckets shared by every instance of the service (default: in this process).
    pub fn with_rate_limiter(self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.with(|s| s.limiter = limiter)
    }

    /// Counts every allowed call.
    pub fn with_meter(self, meter: Arc<dyn CallMeter>) -> Self {
        self.with(|s| s.meter = Some(meter))
    }

    /// The clock for `nbf`/`exp`, the rate buckets and the JWKS's age. A ring fetched before
    /// counts as fetched now by this clock.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.with(|s| {
            let now = clock.now();
            s.clock = clock;
            let fetched = s.fetched_at.get_mut().unwrap_or_else(|p| p.into_inner());
            if fetched.is_some() {
                *fetched = Some(now);
            }
            *s.last_refresh.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        })
    }

    /// How long a fetched JWKS is used before it is fetched again (default [`JWKS_MAX_AGE`]).
    pub fn with_jwks_max_age(self, max_age: Duration) -> Self {
        self.with(|s| s.jwks_max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX))
    }

    /// A layer admitting only tokens for `audience` (this service's name in the plans).
    pub fn require_access_token(&self, audience: &str) -> AccessTokenLayer {
        let ring = lock(&self.shared.ring).clone();
        let verifier = Arc::new(AccessVerifier::new(ring, audience));
        lock(&self.shared.verifiers).push(Arc::clone(&verifier));
        AccessTokenLayer { access: self.clone(), verifier }
    }

    /// Verifies a token without the rate limit (for non-HTTP callers and benchmarks).
    pub fn verify(
        &self,
        verifier: &AccessVerifier,
        token: &str,
    ) -> Result<Arc<VerifiedAccess>, AccessRejection> {
        let now = self.shared.clock.now();
        let stale = lock(&self.shared.fetched_at).is_some_and(|at| now - at >= self.shared.jwks_max_age);
        if stale {
            // Keys retired at NLS leave the ring here; a failed fetch keeps the keys we have.
            self.refresh_jwks_if_due();
        }
        match verifier.verify(token, now) {
            Err(AccessRejection::UnknownKid) if self.refresh_jwks_if_due() => verifier.verify(token, now),
            other => other,
        }
    }

    /// Refetches the JWKS unless one was fetched (or tried) within [`JWKS_REFRESH_INTERVAL`];
    /// true when a new ring is in place.
    fn refresh_jwks_if_due(&self) -> bool {
        let Some(source) = &self.shared.jwks else { return false };
        let now = self.shared.clock.now();
        {
            let mut last = lock(&self.shared.last_refresh);
            let interval = chrono::Duration::from_std(JWKS_REFRESH_INTERVAL).unwrap_or(chrono::Duration::MAX);
            // A clock set back does not hold refreshes off.
            if last.is_some_and(|at| now >= at && now - at < interval) {
                return false;
            }
            *last = Some(now);
        }
        match fetch_ring(source) {
            Ok(ring) => {
                for verifier in lock(&self.shared.verifiers).iter() {
                    verifier.replace_ring(ring.clone());
                }
                *lock(&self.shared.ring) = ring;
                *lock(&self.shared.fetched_at) = Some(now);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "nls: JWKS refresh failed; keeping the keys we have");
                false
            }
        }
    }
}

fn fetch_ring(source: &JwksSource) -> Result<KeyRing, CloudAccessError> {
    let reply = source.transport.get(&source.path).map_err(|e| CloudAccessError::Fetch(e.to_string()))?;
    if reply.status != 200 {
        return Err(CloudAccessError::Fetch(format!("HTTP {}", reply.status)));
    }
    KeyRing::parse_jwks_json(&reply.body).map_err(|e| CloudAccessError::Jwks(e.to_string()))
}

#[derive(Clone)]
pub struct AccessTokenLayer {
    access: CloudAccess,
    verifier: Arc<AccessVerifier>,
}

impl<S> Layer<S> for AccessTokenLayer {
    type Service = AccessTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessTokenService { inner, access: self.access.clone(), verifier: Arc::clone(&self.verifier) }
    }
}

#[derive(Clone)]
pub struct AccessTokenService<S> {
    inner: S,
    access: CloudAccess,
    verifier: Arc<AccessVerifier>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request> for AccessTokenService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = self.access.clone();
        let verifier = Arc::clone(&self.verifier);
        Box::pin(async move {
            let Some(token) = bearer(&request) else {
                return Ok(unauthorized("missing_token", "send `Authorization: Bearer <access token>`"));
            };
            let caller = match access.verify(&verifier, &token) {
                Ok(caller) => caller,
                Err(rejection) => return Ok(unauthorized(rejection.code(), &rejection.to_string())),
            };
            let now_ms = access.shared.clock.now().timestamp_millis();
            let claims = &caller.claims;
            let verdict = match access.shared.limiter.take(&claims.sub, &claims.rate, now_ms).await {
                Ok(verdict) => Some(verdict),
                Err(e) => {
                    tracing::warn!(error = %e, license_id = %claims.sub, "nls: rate limiter unavailable; call let through");
                    None
                }
            };
            if let Some(verdict) = verdict.filter(|v| !v.allowed) {
                let message = format!("over the license's rate at {}", verifier.audience());
                let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &message);
                rate_headers(&mut response, &verdict);
                return Ok(response);
            }
            if let Some(meter) = &access.shared.meter {
                meter.record_call(&caller);
            }
            request.extensions_mut().insert(CloudCaller(caller));
            let mut response = inner.call(request).await?;
            if let Some(verdict) = verdict {
                rate_headers(&mut response, &verdict);
            }
            Ok(response)
        })
    }
}

fn bearer(request: &Request) -> Option<String> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_owned())
}

fn rate_headers(response: &mut Response, verdict: &RateVerdict) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(verdict.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(verdict.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(verdict.reset_secs));
    if let Some(secs) = verdict.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

fn unauthorized(code: &str, message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, code, message);
    let challenge = format!(r#"Bearer error="invalid_token", error_description="{code}""#);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
