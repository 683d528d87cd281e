//! The edge's ports: the platform KV, an HTTP client, and the origin built on it.
//!
//! These traits are `?Send`, unlike `nls_core::ports`: on Workers every KV and fetch future
//! holds JS values (`JsFuture`, `!Send`) and an isolate runs one thread, and Spin components
//! are single-threaded too. Requiring `Send` would force every adapter through
//! `worker::send::SendFuture` wrappers for no gain: nothing in an edge ever crosses threads.
//! The native tests drive these traits on a current-thread runtime.

use async_trait::async_trait;
use chrono::Duration;
use nls_core::validation::StatusSnapshot;
use serde::Serialize;

use crate::access_tokens::AccessTokenBody;
use crate::edge_wire::{HeartbeatBody, UsageBody, ValidateBody};
use crate::validation_events::ValidationEventsBody;

/// The headers a forwarded call names its caller with; the origin trusts the address only
/// with a valid `edge` service token (`nls_core::http::validation_event_routes`).
pub const CLIENT_IP_HEADER: &str = "x-nls-client-ip";
pub const EDGE_TOKEN_HEADER: &str = "x-nls-edge-token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "edge KV failed: {}", self.0)
    }
}

/// The platform's key-value store (Workers KV, Spin key-value). Eventually consistent is
/// enough: every value the edge stores carries its own timestamps, and every write it queues
/// is idempotent at the origin.
#[async_trait(?Send)]
pub trait EdgeKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError>;
    /// `ttl`: the store may forget the value after this long (Workers KV needs ≥ 60 s; hosts
    /// without expiry keep it and the edge judges age from the value itself).
    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Keys starting with `prefix`, at most `limit`.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError>;
}

/// A request to the origin, built by the edge; the platform only sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
}

/// Sends one request. `Err` means the origin could not be reached in time (DNS, connect,
/// timeout); any HTTP answer, even a 5xx, is `Ok`.
#[async_trait(?Send)]
pub trait HttpClient {
    async fn send(&self, request: OutboundRequest) -> Result<(u16, String), String>;
}

/// The origin's answer, relayed as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginReply {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// No answer in time (DNS, connect, timeout): NLS is down. The edge degrades, never passes
    /// this on, and skips the origin for a while (the breaker).
    Unreachable(String),
    /// The origin answered this 5xx: it is up but failed this request. The edge degrades for
    /// the customer, but does not trip the breaker, and a queued item answered so is retried
    /// a bounded number of times (docs/edge.md).
    ServerError(u16),
    /// The internal route refused the edge (wrong service token, bad route): a deployment
    /// mistake, logged loudly, treated like unreachable for the customer.
    Misconfigured(String),
}

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "origin unreachable: {why}"),
            Self::ServerError(status) => write!(f, "origin answered {status}"),
            Self::Misconfigured(why) => write!(f, "origin refused the edge: {why}"),
        }
    }
}

/// What the edge asks of the origin. `client_ip` on a forwarded call is the caller's address
/// as the platform gave it, so the origin's rate limits, churn protection and history see the
/// customer rather than the edge.
#[async_trait(?Send)]
pub trait Origin {
    /// `GET /v1/internal/snapshots/{license_id}` with the service token. `None`: no such
    /// license on record.
    async fn fetch_snapshot(&self, license_id: &str) -> Result<Option<StatusSnapshot>, OriginError>;
    /// `POST /v1/licenses/validate`: activation of a new deployment (one conditional write at
    /// the origin) and fresh receipts.
    async fn forward_activation(
        &self,
        body: &ValidateBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError>;
    async fn forward_heartbeat(
        &self,
        body: &HeartbeatBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError>;
    /// Safe to repeat: the origin counts a `batch_id` once.
    async fn forward_usage(
        &self,
        body: &UsageBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError>;
    async fn release(
        &self,
        deployment_id: &str,
        key: &str,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError>;
    /// `POST /v1/internal/validation-events` with the service token; safe to repeat (the
    /// origin counts a `batch_id` once).
    async fn ship_validation_events(&self, body: &ValidationEventsBody) -> Result<OriginReply, OriginError>;
    /// `GET /.well-known/jwks.json`: the origin's public keys (JSON), for a key signed by a
    /// `kid` the edge does not know yet.
    async fn fetch_jwks(&self) -> Result<String, OriginError>;
    /// `POST /v1/access-tokens`: a cloud access token the origin signs (the edge cannot).
    async fn forward_access_token(
        &self,
        body: &AccessTokenBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError>;
}

/// The origin over HTTP: the routes and headers live here, once; a platform gives the client.
pub struct HttpOrigin<C> {
    base_url: String,
    service_token: String,
    client: C,
}

impl<C: HttpClient> HttpOrigin<C> {
    pub fn new(base_url: &str, service_token: &str, client: C) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            service_token: service_token.to_owned(),
            client,
        }
    }

    async fn call(&self, request: OutboundRequest) -> Result<OriginReply, OriginError> {
        let (status, body) = self.client.send(request).await.map_err(OriginError::Unreachable)?;
        if status >= 500 {
            return Err(OriginError::ServerError(status));
        }
        Ok(OriginReply { status, body })
    }

    /// The headers of a forwarded call: the caller's address with the token that vouches for it.
    fn forwarded_headers(&self, client_ip: Option<&str>) -> Vec<(&'static str, String)> {
        let mut headers = vec![("x-nls-edge", "1".to_owned())];
        if let Some(ip) = client_ip {
            headers.push((CLIENT_IP_HEADER, ip.to_owned()));
            headers.push((EDGE_TOKEN_HEADER, self.service_token.clone()));
        }
        headers
    }

    async fn post_json<T: Serialize>(
        &self,
        path: &str,
        body: &T,
        mut headers: Vec<(&'static str, String)>,
    ) -> Result<OriginReply, OriginError> {
        let body = serde_json::to_string(body).map_err(|e| OriginError::Misconfigured(e.to_string()))?;
        headers.push(("content-type", "application/json".to_owned()));
        self.call(OutboundRequest {
            method: "POST",
            url: format!("{}{path}", self.base_url),
            headers,
            body: Some(body),
        })
        .await
    }
}

#[async_trait(?Send)]
impl<C: HttpClient> Origin for HttpOrigin<C> {
    async fn fetch_snapshot(&self, license_id: &str) -> Result<Option<StatusSnapshot>, OriginError> {
        let reply = self
            .call(OutboundRequest {
                method: "GET",
                url: format!(
                    "{}/v1/internal/snapshots/{}",
                    self.base_url,
                    nls_core::path_segment::encode(license_id)
                ),
                headers: vec![("authorization", format!("Bearer {}", self.service_token))],
                body: None,
            })
            .await?;
        match reply.status {
            200 => serde_json::from_str(&reply.body)
                .map(Some)
                .map_err(|e| OriginError::Misconfigured(format!("snapshot JSON: {e}"))),
            404 if reply.body.contains("license_not_found") => Ok(None),
            status => Err(OriginError::Misconfigured(format!("snapshot route answered {status}"))),
        }
    }

    async fn forward_activation(
        &self,
        body: &ValidateBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.post_json("/v1/licenses/validate", body, self.forwarded_headers(client_ip)).await
    }

    async fn forward_heartbeat(
        &self,
        body: &HeartbeatBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.post_json("/v1/heartbeat", body, self.forwarded_headers(client_ip)).await
    }

    async fn forward_usage(
        &self,
        body: &UsageBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.post_json("/v1/usage", body, self.forwarded_headers(client_ip)).await
    }

    async fn release(
        &self,
        deployment_id: &str,
        key: &str,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        let mut headers = self.forwarded_headers(client_ip);
        headers.push(("x-license-key", key.to_owned()));
        self.call(OutboundRequest {
            method: "DELETE",
            url: format!(
                "{}/v1/deployments/{}",
                self.base_url,
                nls_core::path_segment::encode(deployment_id)
            ),
            headers,
            body: None,
        })
        .await
    }

    async fn fetch_jwks(&self) -> Result<String, OriginError> {
        let reply = self
            .call(OutboundRequest {
                method: "GET",
                url: format!("{}/.well-known/jwks.json", self.base_url),
                headers: vec![("accept", "application/json".to_owned())],
                body: None,
            })
            .await?;
        match reply.status {
            200 => Ok(reply.body),
            status => Err(OriginError::Misconfigured(format!("JWKS route answered {status}"))),
        }
    }

    async fn forward_access_token(
        &self,
        body: &AccessTokenBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.post_json("/v1/access-tokens", body, self.forwarded_headers(client_ip)).await
    }

    async fn ship_validation_events(&self, body: &ValidationEventsBody) -> Result<OriginReply, OriginError> {
        let headers = vec![("authorization", format!("Bearer {}", self.service_token))];
        self.post_json("/v1/internal/validation-events", body, headers).await
    }
}
