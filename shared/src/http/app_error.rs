//! One error type for every handler, and the extractors whose rejections become it.
//!
//! Clients get `{"error":{"code","message"}}` with a stable code (docs/api.md). A caller's
//! mistake is always a 4xx. Internal failures are logged here, once, and answered with a
//! generic body that names nothing internal.

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::http::wire::{ErrorBody, ErrorDetail};
use crate::lifecycle::TransitionRefused;
use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// JSON of the wrong shape: a missing field, a wrong type, or a value out of range.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidQuery(String),
    /// A usage record outside the documented bounds, or a batch that would overflow a counter.
    #[error("{0}")]
    UsageOutOfBounds(String),
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("no credentials: send `Authorization: Bearer <api key>`")]
    MissingCredentials,
    #[error("the credentials are not valid")]
    InvalidCredentials,
    #[error("the license key is not valid: {0}")]
    InvalidLicenseKey(&'static str),
    #[error("this API key lacks the `{needed}` scope")]
    InsufficientScope { needed: &'static str },
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{what} not found")]
    NotFound { code: &'static str, what: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("customer still has licenses; revoke or move them first")]
    CustomerHasLicenses,
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("deployment {0} holds no live seat; validate to activate it")]
    DeploymentNotActive(String),
    /// The license validates as `SUSPENDED` or `REVOKED`: what it reports is not accepted.
    #[error("the license is {}; it accepts no usage", .0.as_str())]
    LicenseNotUsable(crate::validation::ValidationCode),
    /// No cloud access token: the validation code says why (docs/cloud-access.md).
    #[error("{message}")]
    AccessRefused { code: crate::validation::ValidationCode, message: String },
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The store is down or timed out: safe to retry.
    #[error("service temporarily unavailable")]
    Unavailable(String),
    /// A bug or a corrupt record. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::InvalidRequest(_)
            | Self::InvalidQuery(_)
            | Self::UsageOutOfBounds(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingCredentials | Self::InvalidCredentials | Self::InvalidLicenseKey(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope { .. } | Self::LicenseNotUsable(_) | Self::AccessRefused { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::RouteNotFound | Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_)
            | Self::InvalidTransition(_)
            | Self::CustomerHasLicenses
            | Self::AlreadyExists(_)
            | Self::DeploymentNotActive(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidQuery(_) => "invalid_query",
            Self::UsageOutOfBounds(_) => "usage_out_of_bounds",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::MissingCredentials => "missing_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidLicenseKey(_) => "invalid_license_key",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotFound { code, .. } => code,
            Self::Conflict(_) => "conflict",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::CustomerHasLicenses => "customer_has_licenses",
            Self::AlreadyExists(_) => "already_exists",
            Self::DeploymentNotActive(_) => "deployment_not_active",
            Self::LicenseNotUsable(crate::validation::ValidationCode::Revoked) => "license_revoked",
            Self::LicenseNotUsable(_) => "license_suspended",
            Self::AccessRefused { code, .. } => code.as_str(),
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    pub fn not_found(code: &'static str, what: impl Into<String>) -> Self {
        Self::NotFound { code, what: what.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}

/// Every error code the API can answer with, for docs and tests.
pub const ERROR_CODES: &[&str] = &[
    "malformed_json",
    "invalid_request",
    "invalid_query",
    "usage_out_of_bounds",
    "payload_too_large",
    "missing_credentials",
    "invalid_credentials",
    "invalid_license_key",
    "insufficient_scope",
    "route_not_found",
    "method_not_allowed",
    "customer_not_found",
    "license_not_found",
    "api_key_not_found",
    "deployment_not_found",
    "conflict",
    "invalid_transition",
    "customer_has_licenses",
    "already_exists",
    "deployment_not_active",
    "license_suspended",
    "license_revoked",
    "rate_limited",
    "unavailable",
    "internal_error",
    // `POST /v1/access-tokens` refusals carry the license's validation code.
    "NOT_YET_VALID",
    "EXPIRED",
    "SUSPENDED",
    "REVOKED",
    "FEATURE_NOT_ENTITLED",
    "USAGE_LIMIT_EXCEEDED",
];

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => Self::AlreadyExists(what),
            StoreError::NotFound(what) => Self::NotFound { code: "not_found", what },
            StoreError::Conflict(what) => {
                Self::Conflict(format!("{what} was changed concurrently; read it again and retry"))
            }
            StoreError::Unavailable(why) => Self::Unavailable(why),
            corrupt @ StoreError::Corrupt { .. } => Self::Internal(corrupt.to_string()),
            cursor @ StoreError::InvalidCursor(_) => Self::InvalidQuery(cursor.to_string()),
            StoreError::StillReferenced(_) => Self::CustomerHasLicenses,
            StoreError::CounterOverflow(overflow) => Self::UsageOutOfBounds(format!(
                "{overflow}: the batch was not recorded; counters never wrap or saturate"
            )),
        }
    }
}

impl From<TransitionRefused> for AppError {
    fn from(e: TransitionRefused) -> Self {
        Self::InvalidTransition(format!(
            "a {} license cannot be {}",
            e.from.as_str(),
            crate::http::license_routes::event_past_tense(e.event)
        ))
    }
}

impl From<crate::issuing::TermsOutOfRange> for AppError {
    fn from(e: crate::issuing::TermsOutOfRange) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // The one place internal failures are logged; the client sees nothing of them.
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                self.to_string()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "store unavailable");
                self.to_string()
            }
            _ => self.to_string(),
        };
        let body = ErrorBody { error: ErrorDetail { code: self.code(), message } };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON body. Unlike `axum::Json` it ignores the content type (curl-friendly) and turns every
/// rejection into an [`AppError`]: 413 past the body limit, 400 otherwise.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body read as [`JsonBody`] reads it (same limit, same errors), left unparsed, for
/// a handler that parses it with [`parse_json`] into a type borrowing from it.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if let Some(&BodyLimit(limit)) = req.extensions().get::<BodyLimit>() {
            return read_body(req.into_body(), limit).await.map(JsonBytes);
        }
        // A router without the guard (which sets `BodyLimit`): axum's own limit applies.
        let limit = DEFAULT_BODY_LIMIT;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::invalid("the body could not be read")
            }
        })?;
        Ok(JsonBytes(bytes))
    }
}

/// Reads a body of at most `limit` bytes, as axum's `Bytes` extractor does (413 past the
/// limit, 400 for a body that fails to arrive), without its collect-and-copy: the usual body
/// is one frame, returned as it is. On the warm validation the generic path was about a tenth
/// of the handler's time (docs/benchmarks.md).
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, AppError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let mut read = 0;
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| AppError::invalid("the body could not be read"))?;
        let Ok(data) = frame.into_data() else { continue };
        read += data.len();
        if read > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buffer = Vec::with_capacity(read);
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

/// Every request body of the API is a JSON object; serde would also fill a struct from an
/// array (`[null, null]`), which the OpenAPI document does not allow.
pub fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, AppError> {
    let parsed = parse_any_json(bytes)?;
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(parsed),
        _ => Err(AppError::invalid("the body must be a JSON object")),
    }
}

fn parse_any_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // A type error can surface before a syntax error further on (`[1, 2`): check the
        // syntax on its own so broken JSON is always `malformed_json`.
        let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).err();
        match (e.classify(), syntax) {
            (serde_json::error::Category::Data, None) => AppError::InvalidRequest(e.to_string()),
            (_, Some(syntax)) => AppError::MalformedJson(syntax.to_string()),
            (_, None) => AppError::MalformedJson(e.to_string()),
        }
    })
}

pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The configured body limit, put in the request extensions so rejections can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query parameters, rejected as `invalid_query`.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| AppError::InvalidQuery(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::task::{Context, Poll};

    use http_body::{Frame, SizeHint};

    use super::*;

    /// A body arriving as `frames` (an `Err` is a transport failure), claiming `hint`.
    struct Frames {
        frames: VecDeque<Result<&'static str, &'static str>>,
        hint: SizeHint,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.frames.pop_front().map(|frame| match frame {
                Ok(text) => Ok(Frame::data(Bytes::from_static(text.as_bytes()))),
                Err(why) => Err(std::io::Error::other(why)),
            }))
        }

        fn size_hint(&self) -> SizeHint {
            self.hint
        }
    }

    async fn read(
        frames: &[Result<&'static str, &'static str>],
        hint: SizeHint,
        limit: usize,
    ) -> Result<Bytes, AppError> {
        read_body(Body::new(Frames { frames: frames.iter().copied().collect(), hint }), limit).await
    }

    #[tokio::test]
    async fn a_body_is_read_whole_whatever_its_frames() {
        assert_eq!(read(&[Ok(r#"{"a":1}"#)], SizeHint::with_exact(7), 7).await.unwrap(), r#"{"a":1}"#);
        assert_eq!(
            read(&[Ok("{"), Ok(""), Ok(r#""a""#), Ok(":1}")], SizeHint::new(), 7).await.unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(read(&[], SizeHint::with_exact(0), 7).await.unwrap(), "");
    }

    #[tokio::test]
    async fn past_the_limit_is_413_and_a_failed_body_is_400() {
        let too_large = |r: Result<Bytes, AppError>| matches!(r, Err(AppError::PayloadTooLarge { limit: 6 }));
        assert!(too_large(read(&[Ok(r#"{"a":1}"#)], SizeHint::with_exact(7), 6).await), "by its length");
        assert!(too_large(read(&[Ok("{"), Ok(r#""a":1}"#)], SizeHint::new(), 6).await), "chunked");
        let failed = read(&[Ok("{"), Err("reset")], SizeHint::new(), 6).await;
        assert!(matches!(failed, Err(AppError::InvalidRequest(_))), "{failed:?}");
    }
}
