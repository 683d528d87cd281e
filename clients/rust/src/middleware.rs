//! tower/axum middleware, the seed app's three guards:
//!
//! ```text
//! let app = Router::new()
//!     .route("/reports", get(reports).layer(license.require_feature("reports")))
//!     .route("/runs", post(run).layer(license.check_usage_limit("workflow_runs")))
//!     .layer(license.require_valid_license());
//! ```
//!
//! Answers, with the API's error shape `{"error": {"code", "message"}}`:
//! - no usable license (invalid, or offline and grace both over): **402**, `code` = the
//!   license state's code (`REVOKED`, `OFFLINE_TOO_LONG`, `NOT_VALIDATED`, ...);
//! - a feature the license lacks: **403** `FEATURE_NOT_ENTITLED`;
//! - a metric over its monthly limit: **402** `USAGE_LIMIT_EXCEEDED`.
//!
//! While offline or in grace, requests pass with an `X-License-Warning` header. The guards
//! only read memory; they never call the network.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;

use crate::license_client::LicenseClient;
use nls_client_core::LicenseState;

pub const WARNING_HEADER: &str = "x-license-warning";

#[derive(Clone)]
enum Rule {
    Valid,
    Feature(String),
    /// Checks one more unit of the metric fits, and records it when the handler succeeds.
    Usage(String),
}

/// A tower [`Layer`] guarding routes with the license. Build it with
/// [`LicenseClient::require_valid_license`], [`LicenseClient::require_feature`] or
/// [`LicenseClient::check_usage_limit`].
#[derive(Clone)]
pub struct LicenseLayer {
    client: LicenseClient,
    rule: Rule,
}

impl LicenseClient {
    /// 402 unless the license is usable (valid, offline within its window, or in grace).
    pub fn require_valid_license(&self) -> LicenseLayer {
        LicenseLayer { client: self.clone(), rule: Rule::Valid }
    }

    /// 402 without a usable license, 403 `FEATURE_NOT_ENTITLED` without `feature`.
    pub fn require_feature(&self, feature: &str) -> LicenseLayer {
        LicenseLayer { client: self.clone(), rule: Rule::Feature(feature.to_owned()) }
    }

    /// 402 `USAGE_LIMIT_EXCEEDED` when one more `metric` would pass the monthly limit;
    /// otherwise the request runs and, if it succeeds (2xx), one unit is recorded.
    pub fn check_usage_limit(&self, metric: &str) -> LicenseLayer {
        LicenseLayer { client: self.clone(), rule: Rule::Usage(metric.to_owned()) }
    }
}

/// The same guards as free functions, for those who prefer `layer(require_feature(&c, "x"))`.
pub fn require_valid_license(client: &LicenseClient) -> LicenseLayer {
    client.require_valid_license()
}
pub fn require_feature(client: &LicenseClient, feature: &str) -> LicenseLayer {
    client.require_feature(feature)
}
pub fn check_usage_limit(client: &LicenseClient, metric: &str) -> LicenseLayer {
    client.check_usage_limit(metric)
}

impl<S> Layer<S> for LicenseLayer {
    type Service = LicenseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LicenseService { inner, client: self.client.clone(), rule: self.rule.clone() }
    }
}

#[derive(Clone)]
pub struct LicenseService<S> {
    inner: S,
    client: LicenseClient,
    rule: Rule,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request> for LicenseService<S>
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

    fn call(&mut self, request: Request) -> Self::Future {
        let state = self.client.state();
        if let LicenseState::Invalid { code, reason } = &state {
            return ready(refuse(StatusCode::PAYMENT_REQUIRED, code.as_str(), reason));
        }
        match &self.rule {
            Rule::Valid => {}
            Rule::Feature(feature) => {
                if !state.has_feature(feature) {
                    let message = format!("the license does not include the feature {feature:?}");
                    return ready(refuse(StatusCode::FORBIDDEN, "FEATURE_NOT_ENTITLED", &message));
                }
            }
            Rule::Usage(metric) => {
                let check = state.check_limit(metric, 1, self.client.usage_standing(metric).used);
                if !check.allowed {
                    let message = format!(
                        "{metric}: {} used of {} this month",
                        check.used,
                        check.limit.unwrap_or_default()
                    );
                    return ready(refuse(StatusCode::PAYMENT_REQUIRED, "USAGE_LIMIT_EXCEEDED", &message));
                }
            }
        }
        let warning = state.warning().and_then(|w| HeaderValue::from_str(&w).ok());
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        let rule = self.rule.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if let Some(w) = warning {
                response.headers_mut().insert(WARNING_HEADER, w);
            }
            let succeeded = response.status().is_success();
            if let (Rule::Usage(metric), true) = (&rule, succeeded)
                && let Err(e) = client.record_usage(metric, 1)
            {
                tracing::error!(error = %e, %metric, "nls: could not record usage");
            }
            Ok(response)
        })
    }
}

fn ready(response: Response) -> BoxFuture<Result<Response, Infallible>> {
    Box::pin(std::future::ready(Ok(response)))
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
