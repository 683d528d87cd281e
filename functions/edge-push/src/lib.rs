//! The origin's status push to the edges (docs/edge.md, propagation bound): the core's
//! [`StatusPublisher`] over HTTP, for every origin host (`nls serve`, the API and Stripe
//! webhook Lambdas). One publish sends `PUT {edge}/v1/internal/snapshots/{license_id}` with
//! the snapshot JSON and `Authorization: Bearer <token>` to every configured edge at once.
//!
//! Each edge gets [`DEFAULT_ATTEMPT_TIMEOUT`] per attempt and one retry after a connection
//! failure, a timeout or a 5xx (a Lambda thawed after minutes may hold a dead pooled
//! connection); a 4xx is final. The caller awaits the push after its change is committed, so
//! the worst case a dead edge adds to an admin request is two timeouts; the snapshot TTL at
//! the edge bounds what a lost push costs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nls_core::ports::{PublishError, StatusPublisher};
use nls_core::validation::StatusSnapshot;

/// Per attempt, connection included. Short: the admin request that made the change waits.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_DELAY: Duration = Duration::from_millis(100);
const SNAPSHOT_PATH: &str = "/v1/internal/snapshots/";
/// Where an edge takes the origin's JWKS after a key rotation or retirement (docs/edge.md).
const JWKS_PATH: &str = "/v1/internal/jwks";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("edge URL {url:?} is invalid: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("no edge URL given")]
    NoUrl,
    /// Names no value: the token is a secret.
    #[error("the edge push token is empty or not a valid header value")]
    BadToken,
    #[error("loading the system's TLS root certificates: {0}")]
    TlsRoots(std::io::Error),
}

/// Checks one edge base URL (`http(s)://host[:port][/prefix]`, no query) and returns it
/// without a trailing `/`. Hosts call it while parsing their settings, to fail at start-up.
pub fn parse_edge_url(url: &str) -> Result<String, SetupError> {
    let invalid = |reason| SetupError::InvalidUrl { url: url.to_owned(), reason };
    let trimmed = url.trim().trim_end_matches('/');
    let uri: Uri = trimmed.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(invalid("no host"));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(invalid("a query or fragment is not allowed"));
    }
    Ok(trimmed.to_owned())
}

/// A comma-separated list of edge URLs (the Lambdas' `NLS_EDGE_PUSH_URLS`); blank: none.
pub fn parse_edge_url_list(list: &str) -> Result<Vec<String>, SetupError> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(parse_edge_url).collect()
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Pushes snapshots to a fixed set of edges. Cheap to share (`Arc`); holds one connection pool.
pub struct HttpStatusPublisher {
    client: HttpsClient,
    edges: Vec<String>,
    /// `Bearer <token>`, marked sensitive so no hyper debug output shows it.
    authorization: HeaderValue,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for HttpStatusPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStatusPublisher").field("edges", &self.edges).finish_non_exhaustive()
    }
}

impl HttpStatusPublisher {
    /// `edges`: base URLs (see [`parse_edge_url`]); `token`: the edges' service token.
    /// The system's root certificates are loaded only when an edge is `https`.
    pub fn new(edges: &[String], token: &str) -> Result<Self, SetupError> {
        Self::with_timeout(edges, token, DEFAULT_ATTEMPT_TIMEOUT)
    }

    pub fn with_timeout(
        edges: &[String],
        token: &str,
        attempt_timeout: Duration,
    ) -> Result<Self, SetupError> {
        if edges.is_empty() {
            return Err(SetupError::NoUrl);
        }
        let edges = edges.iter().map(|u| parse_edge_url(u)).collect::<Result<Vec<_>, _>>()?;
        let token = token.trim();
        if token.is_empty() {
            return Err(SetupError::BadToken);
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| SetupError::BadToken)?;
        authorization.set_sensitive(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if edges.iter().any(|u| u.starts_with("https:")) {
            builder.with_provider_and_native_roots(provider).map_err(SetupError::TlsRoots)?
        } else {
            // Plain-HTTP edges only (local runs, tests): no root store to load.
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| SetupError::TlsRoots(std::io::Error::other(e)))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(attempt_timeout));
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, edges, authorization, attempt_timeout })
    }

    pub fn edges(&self) -> &[String] {
        &self.edges
    }

    async fn push_to(&self, edge: &str, license_id: &str, body: &Bytes) -> Result<(), PublishError> {
        let url = format!("{edge}{SNAPSHOT_PATH}{}", nls_core::path_segment::encode(license_id));
        self.put_with_retry(&url, body).await
    }

    /// `PUT {edge}/v1/internal/jwks` with the origin's public JWKS, to every edge at once: the
    /// edges trust a new `kid` and stop trusting a retired one without a redeploy. `nls serve`
    /// sends it at start-up (a rotation or retirement takes a restart); `nls keys push-jwks`
    /// sends it by hand (AWS).
    pub async fn publish_jwks(&self, jwks_json: &str) -> Result<(), PublishError> {
        let body = Bytes::from(jwks_json.to_owned());
        let results = futures_util::future::join_all(
            self.edges.iter().map(|edge| self.put_with_retry_owned(format!("{edge}{JWKS_PATH}"), &body)),
        )
        .await;
        self.combine(results)
    }

    async fn put_with_retry_owned(&self, url: String, body: &Bytes) -> Result<(), PublishError> {
        self.put_with_retry(&url, body).await
    }

    fn combine(&self, results: Vec<Result<(), PublishError>>) -> Result<(), PublishError> {
        let mut failures: Vec<PublishError> = results.into_iter().filter_map(Result::err).collect();
        match failures.len() {
            0 => Ok(()),
            1 if self.edges.len() == 1 => Err(failures.remove(0)),
            _ => Err(PublishError::Several { total: self.edges.len(), failures }),
        }
    }

    async fn put_with_retry(&self, url: &str, body: &Bytes) -> Result<(), PublishError> {
        match self.attempt(url, body).await {
            Err(PublishError::Unavailable { .. }) => {
                tokio::time::sleep(RETRY_DELAY).await;
                self.attempt(url, body).await
            }
            done => done,
        }
    }

    async fn attempt(&self, url: &str, body: &Bytes) -> Result<(), PublishError> {
        let unavailable = |reason: String| PublishError::Unavailable { target: url.to_owned(), reason };
        let request = Request::builder()
            .method(Method::PUT)
            .uri(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| unavailable(format!("building the request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| unavailable(error_chain(&e)))?;
            let status = response.status();
            // Read the (small) body so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok(status)
        };
        let status = tokio::time::timeout(self.attempt_timeout, exchange)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.attempt_timeout)))??;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() {
            Err(unavailable(format!("HTTP {}", status.as_u16())))
        } else {
            Err(PublishError::Rejected { target: url.to_owned(), status: status.as_u16() })
        }
    }
}

#[async_trait]
impl StatusPublisher for HttpStatusPublisher {
    async fn publish(&self, snapshot: &StatusSnapshot) -> Result<(), PublishError> {
        let body =
            Bytes::from(serde_json::to_vec(snapshot).map_err(|e| PublishError::Encoding(e.to_string()))?);
        let license_id = &snapshot.license.id;
        let results =
            futures_util::future::join_all(self.edges.iter().map(|e| self.push_to(e, license_id, &body)))
                .await;
        self.combine(results)
    }
}

/// hyper-util's client error says "client error (Connect)"; the cause is in its sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `NLS_EDGE_PUSH_URLS`: comma-separated edge base URLs (the Lambdas' environment).
pub const EDGE_PUSH_URLS_VAR: &str = "NLS_EDGE_PUSH_URLS";
/// `NLS_EDGE_PUSH_TOKEN_SECRET_ID`: the Secrets Manager id of the edges' service token,
/// required with [`EDGE_PUSH_URLS_VAR`]. The token itself never sits in the environment.
pub const EDGE_PUSH_TOKEN_SECRET_VAR: &str = "NLS_EDGE_PUSH_TOKEN_SECRET_ID";

/// Where a Lambda pushes status changes, read once at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePushSettings {
    pub urls: Vec<String>,
    /// Secrets Manager id (name or ARN) of the edges' service token.
    pub token_secret_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{EDGE_PUSH_URLS_VAR}={value:?} is invalid: {reason}")]
    BadUrls { value: String, reason: &'static str },
    #[error("{EDGE_PUSH_TOKEN_SECRET_VAR} is not set (it is required with {EDGE_PUSH_URLS_VAR})")]
    NoTokenSecret,
}

impl EdgePushSettings {
    /// `None` when [`EDGE_PUSH_URLS_VAR`] is unset or blank: no push, no secret needed.
    /// `lookup` gives a variable's value; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SettingsError> {
        let list = lookup(EDGE_PUSH_URLS_VAR).unwrap_or_default();
        let urls = parse_edge_url_list(&list).map_err(|e| SettingsError::BadUrls {
            value: list.clone(),
            reason: match e {
                SetupError::InvalidUrl { reason, .. } => reason,
                _ => "not a list of edge URLs",
            },
        })?;
        if urls.is_empty() {
            return Ok(None);
        }
        let token_secret_id = lookup(EDGE_PUSH_TOKEN_SECRET_VAR)
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or(SettingsError::NoTokenSecret)?;
        Ok(Some(Self { urls, token_secret_id }))
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_trimmed() {
        assert_eq!(parse_edge_url(" https://edge.example/ ").unwrap(), "https://edge.example");
        assert_eq!(parse_edge_url("http://127.0.0.1:8787/nls").unwrap(), "http://127.0.0.1:8787/nls");
        assert_eq!(
            parse_edge_url_list(" https://a.example/, ,http://b.example ").unwrap(),
            vec!["https://a.example".to_owned(), "http://b.example".to_owned()]
        );
        assert!(parse_edge_url_list("").unwrap().is_empty());
        assert!(parse_edge_url_list("https://a.example,b").is_err());
        for bad in ["edge.example", "ftp://edge.example", "https://", "https://e.example/?a=1", ""] {
            assert!(parse_edge_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn setup_refuses_an_empty_token_and_never_prints_it() {
        let edges = ["http://127.0.0.1:1".to_owned()];
        assert!(matches!(HttpStatusPublisher::new(&edges, " "), Err(SetupError::BadToken)));
        assert!(matches!(HttpStatusPublisher::new(&[], "t"), Err(SetupError::NoUrl)));
        let publisher = HttpStatusPublisher::new(&edges, "secret-token-value").unwrap();
        assert!(!format!("{publisher:?}").contains("secret-token-value"));
    }

    #[test]
    fn lambda_settings_name_the_variable() {
        let settings = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> =
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            EdgePushSettings::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert_eq!(settings(&[]), Ok(None), "no URLs: no push, no secret needed");
        assert_eq!(settings(&[(EDGE_PUSH_URLS_VAR, " ")]), Ok(None));
        assert_eq!(
            settings(&[(EDGE_PUSH_URLS_VAR, "https://edge.example")]),
            Err(SettingsError::NoTokenSecret)
        );
        assert_eq!(
            settings(&[(EDGE_PUSH_URLS_VAR, "edge.example")]),
            Err(SettingsError::BadUrls {
                value: "edge.example".into(),
                reason: "the scheme must be http or https"
            })
        );
        assert_eq!(
            settings(&[
                (EDGE_PUSH_URLS_VAR, "https://a.example/, https://b.example"),
                (EDGE_PUSH_TOKEN_SECRET_VAR, "nls/edge-push-token"),
            ]),
            Ok(Some(EdgePushSettings {
                urls: vec!["https://a.example".into(), "https://b.example".into()],
                token_secret_id: "nls/edge-push-token".into(),
            }))
        );
        assert!(SettingsError::NoTokenSecret.to_string().contains(EDGE_PUSH_TOKEN_SECRET_VAR));
    }
}
