//! `LicenseClient::access_token(audience)`: a cloud access token (docs/cloud-access.md) from
//! `POST /v1/access-tokens`, kept in memory until shortly before it expires.
//!
//! - A cached token with more than [`REFRESH_BEFORE_EXPIRY`] left is returned at once (no I/O).
//! - Inside that margin the cached token is still returned, and one background thread fetches
//!   its successor.
//! - With no usable token, the call fetches one (blocking, bounded by `request_timeout`; from
//!   async code call it in `spawn_blocking`). When NLS cannot be reached the error says so
//!   ([`AccessTokenError::Unreachable`]), so the app can fall back to its basic features.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::license_client::LicenseClient;

/// A token is refreshed this long before its `expires_at`.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

/// A token is never handed out with less than this left: the call it is for needs time too.
const MIN_REMAINING: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Set while the license is in grace.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    /// No answer from NLS (network, DNS, timeout) or a 5xx: retry later; meanwhile use the
    /// app's basic features.
    #[error("NLS is unreachable: {0}")]
    Unreachable(String),
    /// NLS answered and refused: `code` is the validation code (`SUSPENDED`,
    /// `FEATURE_NOT_ENTITLED`, `USAGE_LIMIT_EXCEEDED`, ...) or an API error code.
    #[error("NLS refused an access token (HTTP {status}, {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("no NLS server is configured (air-gapped install): no cloud access")]
    NoServer,
    #[error("NLS answered something that is not an access token: {0}")]
    BadAnswer(String),
}

impl AccessTokenError {
    /// Worth retrying later (as opposed to a refusal that stands until the license changes).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// Tokens by audience, and which audiences have a refresh under way.
#[derive(Default)]
pub(crate) struct AccessTokenCache {
    tokens: Mutex<HashMap<String, AccessToken>>,
    refreshing: Mutex<std::collections::HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remaining(token: &AccessToken, now: DateTime<Utc>) -> Duration {
    (token.expires_at - now).to_std().unwrap_or(Duration::ZERO)
}

impl LicenseClient {
    /// A token for the cloud service `audience`, cached until shortly before it expires.
    pub fn access_token(&self, audience: &str) -> Result<AccessToken, AccessTokenError> {
        let now = self.now();
        let cached = lock(&self.access_tokens().tokens).get(audience).cloned();
        if let Some(token) = cached.filter(|t| remaining(t, now) > MIN_REMAINING) {
            if remaining(&token, now) <= REFRESH_BEFORE_EXPIRY {
                self.refresh_in_background(audience);
            }
            return Ok(token);
        }
        self.fetch_access_token(audience)
    }

    /// Fetches a new token now, replacing the cached one.
    pub fn fetch_access_token(&self, audience: &str) -> Result<AccessToken, AccessTokenError> {
        let transport = self.transport().ok_or(AccessTokenError::NoServer)?;
        let body = serde_json::json!({
            "key": self.license_key(),
            "deployment_id": self.deployment_id(),
            "audience": audience,
        });
        let reply = transport
            .post_json("/v1/access-tokens", &body)
            .map_err(|e| AccessTokenError::Unreachable(e.to_string()))?;
        if reply.status >= 500 {
            return Err(AccessTokenError::Unreachable(format!("HTTP {}", reply.status)));
        }
        if reply.status != 200 {
            #[derive(Deserialize)]
            struct Detail {
                code: String,
                message: String,
            }
            #[derive(Deserialize)]
            struct ErrorAnswer {
                error: Detail,
            }
            let (code, message) = match serde_json::from_str::<ErrorAnswer>(&reply.body) {
                Ok(ErrorAnswer { error }) => (error.code, error.message),
                Err(_) => ("unknown".to_owned(), reply.body),
            };
            return Err(AccessTokenError::Refused { status: reply.status, code, message });
        }
        #[derive(Deserialize)]
        struct Answer {
            token: String,
            expires_at: DateTime<Utc>,
            #[serde(default)]
            warning: Option<String>,
        }
        let answer: Answer =
            serde_json::from_str(&reply.body).map_err(|e| AccessTokenError::BadAnswer(e.to_string()))?;
        let token =
            AccessToken { token: answer.token, expires_at: answer.expires_at, warning: answer.warning };
        lock(&self.access_tokens().tokens).insert(audience.to_owned(), token.clone());
        Ok(token)
    }

    /// Meters one call the cloud service `audience` allowed (not answered 401 or 429): one unit
    /// of `cloud.<audience>.calls`, spooled to disk like any usage and sent in the same
    /// idempotent batches, so N calls count N once each however often a batch is resent.
    /// The monthly quota is enforced on that counter when the next token is issued.
    pub fn record_cloud_call(&self, audience: &str) -> Result<(), crate::ClientError> {
        self.record_usage(&nls_core::access_token::usage_metric(audience), 1)
    }

    /// Forgets the cached token for `audience` (say, after the service answered 401).
    pub fn forget_access_token(&self, audience: &str) {
        lock(&self.access_tokens().tokens).remove(audience);
    }

    fn refresh_in_background(&self, audience: &str) {
        let cache = self.access_tokens();
        if !lock(&cache.refreshing).insert(audience.to_owned()) {
            return; // one refresh per audience at a time
        }
        let client = self.clone();
        let owned = audience.to_owned();
        let spawned = std::thread::Builder::new().name("nls-access-token".into()).spawn(move || {
            if let Err(e) = client.fetch_access_token(&owned) {
                tracing::warn!(error = %e, audience = %owned, "nls: access token refresh failed; the cached one is kept");
            }
            lock(&client.access_tokens().refreshing).remove(&owned);
        });
        if spawned.is_err() {
            lock(&cache.refreshing).remove(audience);
        }
    }
}

/// Shared by the clones of one client.
pub(crate) type SharedAccessTokens = Arc<AccessTokenCache>;
