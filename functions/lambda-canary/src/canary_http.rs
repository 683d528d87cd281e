//! The canary's HTTP client (hyper, rustls with the system's roots for `https`): one request
//! at a time, each bounded by a timeout, so a hung endpoint fails the run instead of the
//! Lambda's own timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Answers larger than this are not what the canary asked for.
const MAX_BODY: usize = 256 * 1024;

pub struct CanaryHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl CanaryHttp {
    /// `load_native_roots`: false only for plain-`http` targets (local runs, tests).
    pub fn new(timeout: Duration, load_native_roots: bool) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if load_native_roots {
            builder.with_provider_and_native_roots(provider).map_err(|e| format!("TLS roots: {e}"))?
        } else {
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(connector), timeout })
    }

    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        self.send(Method::GET, url, None).await
    }

    pub async fn post_json(&self, url: &str, body: String) -> Result<(u16, String), String> {
        self.send(Method::POST, url, Some(body)).await
    }

    async fn send(&self, method: Method, url: &str, body: Option<String>) -> Result<(u16, String), String> {
        let mut builder = Request::builder().method(method).uri(url).header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("{url}: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
            .map_err(|e: String| format!("{url}: {e}"))
    }
}

/// hyper-util's error says "client error (Connect)"; the cause is in its sources.
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
