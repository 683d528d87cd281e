//! The NLS edge as a Spin component. Everything it does is in `nls-edge`; this file only
//! supplies Spin's key-value store, outbound HTTP, variables and the clock, and runs the
//! background work after the response has been handed to the host.
//!
//! Spin instantiates a component per request, so the isolate-memory layer rarely hits here:
//! the key-value store is the first layer in practice (documented in docs/edge.md).
#![cfg(target_os = "wasi")]

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use futures::SinkExt;
use nls_edge::{
    ClientInfo, Edge, EdgeConfig, EdgeKv, EdgeRequest, EdgeState, HttpClient, HttpOrigin, KvError,
    OutboundRequest,
};
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingResponse, Request, Response, ResponseOutparam,
};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;

/// The key-value store named in spin.toml.
const KV_STORE: &str = "default";

thread_local! {
    static STATE: RefCell<Option<Arc<EdgeState>>> = const { RefCell::new(None) };
}

fn state() -> Result<Arc<EdgeState>, String> {
    if let Some(state) = STATE.with(|s| s.borrow().clone()) {
        return Ok(state);
    }
    // Spin variable names are lower case: NLS_ORIGIN_URL is `nls_origin_url`.
    let config = EdgeConfig::from_vars(|name| spin_sdk::variables::get(&name.to_ascii_lowercase()).ok())
        .map_err(|e| e.to_string())?;
    let state = Arc::new(EdgeState::new(config).map_err(|e| e.to_string())?);
    STATE.with(|s| *s.borrow_mut() = Some(Arc::clone(&state)));
    Ok(state)
}

/// Spin's key-value store has no expiry: values are stored as `<unix expiry or ->\n<value>`
/// and an expired value reads as absent.
struct SpinKv(Store);

fn kv_err(e: impl std::fmt::Debug) -> KvError {
    KvError(format!("{e:?}"))
}

#[async_trait(?Send)]
impl EdgeKv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        let Some(bytes) = self.0.get(key).map_err(kv_err)? else { return Ok(None) };
        let text = String::from_utf8(bytes).map_err(kv_err)?;
        let Some((expiry, value)) = text.split_once('\n') else { return Ok(None) };
        let expired = expiry.parse::<i64>().is_ok_and(|at| at <= Utc::now().timestamp());
        if expired {
            let _ = self.0.delete(key);
            return Ok(None);
        }
        Ok(Some(value.to_owned()))
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError> {
        let expiry = ttl.map_or_else(|| "-".to_owned(), |ttl| (Utc::now() + ttl).timestamp().to_string());
        self.0.set(key, format!("{expiry}\n{value}").as_bytes()).map_err(kv_err)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(kv_err)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        let mut keys: Vec<String> =
            self.0.get_keys().map_err(kv_err)?.into_iter().filter(|k| k.starts_with(prefix)).collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }
}

/// Spin's outbound HTTP; spin.toml's `allowed_outbound_hosts` lets only the origin through.
struct SpinHttp;

#[async_trait(?Send)]
impl HttpClient for SpinHttp {
    async fn send(&self, request: OutboundRequest) -> Result<(u16, String), String> {
        let method = match request.method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_owned()),
        };
        let mut builder = Request::builder();
        builder.method(method).uri(request.url);
        for (name, value) in request.headers {
            builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder.body(body.into_bytes());
        }
        let response: Response = spin_sdk::http::send(builder.build()).await.map_err(|e| e.to_string())?;
        Ok((*response.status(), String::from_utf8_lossy(response.body()).into_owned()))
    }
}

async fn respond(
    out: ResponseOutparam,
    status: u16,
    content_type: &str,
    body: String,
    extra: &[(&str, String)],
) {
    let mut list = vec![
        ("content-type".to_owned(), content_type.as_bytes().to_vec()),
        ("x-content-type-options".to_owned(), b"nosniff".to_vec()),
    ];
    list.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())));
    let headers = Fields::from_list(&list).unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let mut sink = response.take_body();
    out.set(response);
    if !body.is_empty() {
        let _ = sink.send(body.into_bytes()).await;
    }
    let _ = sink.close().await;
}

/// Answers, then runs the background work (revalidation, KV write-behind, outbox delivery)
/// before returning: Spin's equivalent of `wait_until`.
#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let state = match state() {
        Ok(state) => state,
        Err(why) => {
            eprintln!("nls-spin misconfigured: {why}");
            let body = format!(
                r#"{{"error":{{"code":"internal_error","message":"edge misconfigured: {}"}}}}"#,
                why.replace('"', "'")
            );
            return respond(out, 500, "application/json", body, &[]).await;
        }
    };
    let kv = match Store::open(KV_STORE) {
        Ok(store) => SpinKv(store),
        Err(e) => {
            eprintln!("nls-spin: key-value store {KV_STORE:?}: {e:?}");
            let body =
                r#"{"error":{"code":"internal_error","message":"edge misconfigured: key-value store"}}"#;
            return respond(out, 500, "application/json", body.to_owned(), &[]).await;
        }
    };
    let cfg = &state.config;
    let origin = HttpOrigin::new(&cfg.origin_url, &cfg.service_token, SpinHttp);
    let edge = Edge::new(Arc::clone(&state), kv, origin);
    let method = req.method().to_string();
    let path = req.path_with_query().unwrap_or_else(|| "/".to_owned());
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    // Spin's HTTP trigger puts the peer's `ip:port` in `spin-client-addr`.
    let ip = headers
        .iter()
        .rev()
        .find(|(n, _)| n == "spin-client-addr")
        .and_then(|(_, v)| v.parse::<std::net::SocketAddr>().ok())
        .map(|addr| addr.ip().to_string());
    let client = ClientInfo { ip, country: None, edge: Some("spin".to_owned()) };
    let body = req.into_body().await.unwrap_or_default();
    let outcome = edge.handle(EdgeRequest { method, path, headers, body, client }, Utc::now()).await;
    let r = outcome.response;
    respond(out, r.status, r.content_type, r.body, &r.headers).await;
    for task in outcome.background {
        edge.run_background(task, Utc::now()).await;
    }
}
