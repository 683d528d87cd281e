//! What an end-to-end test needs from a running NLS origin, whichever program hosts the core's
//! router: `nls serve` ([`NlsServer`]) or the `api` Lambda under a local Runtime API
//! ([`ApiLambda`]). Tests written against [`NlsHost`] run unchanged on both.

use serde_json::Value;

use crate::api_lambda::ApiLambda;
use crate::http_client::{HttpResponse, request};
use crate::nls_server::{NlsServer, TempDir};

pub trait NlsHost: Send + Sync {
    /// Where requests go, and the path prefix that reaches the router there.
    fn endpoint(&self) -> (u16, &str);
    fn admin_key(&self) -> &str;
    /// SIGTERM, then wait for the exit.
    fn stop(&mut self);
    /// SIGKILL: nothing is flushed.
    fn kill9(&mut self);
    /// Starts again on the same data, after [`stop`](Self::stop) or [`kill9`](Self::kill9).
    fn start_again(&mut self);
    fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
    /// Everything the host wrote to stdout and stderr so far.
    fn log_text(&self) -> String;
    /// The private signing JWK the host signs with (to prove it never reaches a log).
    fn private_signing_jwk(&self) -> Value;

    fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> HttpResponse {
        let (port, prefix) = self.endpoint();
        let bearer = auth.map(|a| format!("Bearer {a}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        request(port, method, &format!("{prefix}{path}"), &headers, body.as_bytes()).unwrap_or_else(|e| {
            let log = self.log_text();
            let tail = log.char_indices().rev().nth(4000).map_or(log.as_str(), |(at, _)| &log[at..]);
            panic!("{method} {path}: {e}\nthe host's log, last lines:\n{tail}")
        })
    }

    /// An admin call with the bootstrap key that must succeed; returns the JSON answer.
    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let r = self.call(method, path, Some(self.admin_key()), body);
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.text());
        r.json()
    }

    fn validate(&self, body: &Value) -> Value {
        let r = self.call("POST", "/v1/licenses/validate", None, Some(body));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// The service token hosts push to the edge with in tests.
pub const EDGE_PUSH_TOKEN: &str = "test-edge-push-token";

/// Which program hosts the router in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `nls serve` on its embedded SQLite store.
    NlsServe,
    /// The release `nls-api` binary under `cargo lambda watch`, on DynamoDB (moto).
    ApiLambda,
}

#[derive(Debug, Clone, Copy)]
pub struct HostOptions {
    /// Lambda only: how many function instances poll the Runtime API at once (as Lambda
    /// scales out under concurrent requests). `nls serve` is one process.
    pub instances: usize,
    /// Debug-level logs as JSON lines.
    pub debug_json_logs: bool,
    /// An edge to push status changes to, with a service token made up for the test.
    pub edge_push_url: Option<&'static str>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self { instances: 1, debug_json_logs: false, edge_push_url: None }
    }
}

impl Host {
    pub fn start(self, label: &str) -> Box<dyn NlsHost> {
        self.start_with(label, HostOptions::default())
    }

    pub fn start_with(self, label: &str, options: HostOptions) -> Box<dyn NlsHost> {
        match self {
            Host::NlsServe => {
                let dir = TempDir::new(label);
                let (mut args, level) = if options.debug_json_logs {
                    (vec!["--log-format", "json"], "debug")
                } else {
                    (vec![], "warn")
                };
                let mut env = vec![];
                if let Some(url) = options.edge_push_url {
                    args.extend(["--edge-push-url", url]);
                    env.push(("NLS_EDGE_PUSH_TOKEN", EDGE_PUSH_TOKEN));
                }
                Box::new(NlsServer::start_with_env(dir.path(), &args, &env, level).owning(dir))
            }
            Host::ApiLambda => Box::new(ApiLambda::start(label, options)),
        }
    }
}

impl NlsHost for NlsServer {
    fn endpoint(&self) -> (u16, &str) {
        (self.port, "")
    }
    fn admin_key(&self) -> &str {
        &self.admin_key
    }
    fn stop(&mut self) {
        NlsServer::stop(self)
    }
    fn kill9(&mut self) {
        NlsServer::kill9(self)
    }
    fn start_again(&mut self) {
        NlsServer::start_again(self)
    }
    fn log_text(&self) -> String {
        NlsServer::log_text(self)
    }
    fn private_signing_jwk(&self) -> Value {
        let text =
            std::fs::read_to_string(self.data_dir.join("signing-key.jwk")).expect("the signing key file");
        serde_json::from_str(&text).expect("a JWK")
    }
}
