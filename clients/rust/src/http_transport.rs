//! The only place that talks HTTP: a small blocking client (ureq) with timeouts. Every call
//! returns the status and body, or a transport error; what they mean is decided in
//! `nls-client-core`.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(String);

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// The server's `Date` header (second resolution), when it sent a readable one.
    pub date: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Clone)]
pub struct HttpTransport {
    base: String,
    agent: ureq::Agent,
}

impl HttpTransport {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("nls-client-rust/", env!("CARGO_PKG_VERSION")))
            .build();
        Self { base: base_url.trim_end_matches('/').to_owned(), agent: config.into() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<Reply, TransportError> {
        let text = body.to_string();
        let response = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/json")
            .send(text.as_str())
            .map_err(|e| TransportError(format!("POST {path}: {e}")))?;
        read(response, path)
    }

    /// A POST with `Authorization: Bearer <token>` (a cloud service's `meter` API key).
    pub fn post_json_with_bearer(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: &str,
    ) -> Result<Reply, TransportError> {
        let text = body.to_string();
        let response = self
            .agent
            .post(&self.url(path))
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {token}"))
            .send(text.as_str())
            .map_err(|e| TransportError(format!("POST {path}: {e}")))?;
        read(response, path)
    }

    pub fn get(&self, path: &str) -> Result<Reply, TransportError> {
        let response =
            self.agent.get(&self.url(path)).call().map_err(|e| TransportError(format!("GET {path}: {e}")))?;
        read(response, path)
    }

    pub fn delete_with_key(&self, path: &str, license_key: &str) -> Result<Reply, TransportError> {
        let response = self
            .agent
            .delete(&self.url(path))
            .header("x-license-key", license_key)
            .call()
            .map_err(|e| TransportError(format!("DELETE {path}: {e}")))?;
        read(response, path)
    }
}

fn read(mut response: ureq::http::Response<ureq::Body>, path: &str) -> Result<Reply, TransportError> {
    let status = response.status().as_u16();
    let date = response
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.with_timezone(&chrono::Utc));
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| TransportError(format!("{path}: reading the answer: {e}")))?;
    Ok(Reply { status, body, date })
}
