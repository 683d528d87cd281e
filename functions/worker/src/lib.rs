//! The NLS edge on Cloudflare Workers. Everything it does is in `nls-edge`; this file only
//! supplies Workers KV, `fetch` with a timeout, the clock, `ctx.wait_until` for background
//! work, and a cron trigger that drains the outbox.
//!
//! Isolate memory (the first snapshot layer) is the [`EdgeState`] kept in a thread local: a
//! Workers isolate runs one thread and is reused across requests until it is evicted.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use nls_edge::{
    BodyTooLarge, BoundedBody, ClientInfo, Edge, EdgeConfig, EdgeKv, EdgeRequest, EdgeResponse, EdgeState,
    HttpClient, HttpOrigin, KvError, OutboundRequest,
};
use worker::{
    AbortController, Context, Delay, Env, Fetch, Headers, Method, Request, RequestInit, Response,
    ScheduleContext, ScheduledEvent, event, kv::KvStore,
};

/// The KV namespace binding in wrangler.toml.
const KV_BINDING: &str = "NLS_EDGE_KV";

thread_local! {
    static STATE: RefCell<Option<Arc<EdgeState>>> = const { RefCell::new(None) };
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(worker::Date::now().as_millis() as i64).unwrap_or_default()
}

/// Parses the configuration once per isolate.
fn state(env: &Env) -> Result<Arc<EdgeState>, String> {
    if let Some(state) = STATE.with(|s| s.borrow().clone()) {
        return Ok(state);
    }
    let var = |name: &str| env.var(name).or_else(|_| env.secret(name)).ok().map(|v| v.to_string());
    let config = EdgeConfig::from_vars(var).map_err(|e| e.to_string())?;
    let state = Arc::new(EdgeState::new(config).map_err(|e| e.to_string())?);
    STATE.with(|s| *s.borrow_mut() = Some(Arc::clone(&state)));
    Ok(state)
}

struct WorkersKv(KvStore);

fn kv_err(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

#[async_trait(?Send)]
impl EdgeKv for WorkersKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.0.get(key).text().await.map_err(kv_err)
    }

    async fn put(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError> {
        let mut put = self.0.put(key, value).map_err(kv_err)?;
        if let Some(ttl) = ttl {
            // Workers KV refuses expirations under 60 s.
            put = put.expiration_ttl(ttl.num_seconds().max(60) as u64);
        }
        put.execute().await.map_err(kv_err)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).await.map_err(kv_err)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        let listed =
            self.0.list().prefix(prefix.to_owned()).limit(limit as u64).execute().await.map_err(kv_err)?;
        Ok(listed.keys.into_iter().map(|k| k.name).collect())
    }
}

/// `fetch` with an abort after the configured timeout.
struct WorkersFetch {
    timeout: Duration,
}

#[async_trait(?Send)]
impl HttpClient for WorkersFetch {
    async fn send(&self, request: OutboundRequest) -> Result<(u16, String), String> {
        let headers = Headers::new();
        for (name, value) in &request.headers {
            headers.set(name, value).map_err(|e| e.to_string())?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned())).with_headers(headers);
        if let Some(body) = &request.body {
            init.with_body(Some(body.as_str().into()));
        }
        let outbound = Request::new_with_init(&request.url, &init).map_err(|e| e.to_string())?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let fetch = Fetch::Request(outbound);
        let call = async {
            let mut response = fetch.send_with_signal(&signal).await.map_err(|e| e.to_string())?;
            let status = response.status_code();
            let text = response.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        };
        let timer =
            Delay::from(std::time::Duration::from_millis(self.timeout.num_milliseconds().max(1) as u64));
        match select(Box::pin(call), Box::pin(timer)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => {
                controller.abort();
                Err(format!("no answer within {} ms", self.timeout.num_milliseconds()))
            }
        }
    }
}

type WorkerEdge = Edge<WorkersKv, HttpOrigin<WorkersFetch>>;

fn edge(env: &Env) -> Result<WorkerEdge, String> {
    let state = state(env)?;
    let kv = env.kv(KV_BINDING).map_err(|e| format!("KV binding {KV_BINDING}: {e}"))?;
    let cfg = &state.config;
    let origin =
        HttpOrigin::new(&cfg.origin_url, &cfg.service_token, WorkersFetch { timeout: cfg.origin_timeout });
    Ok(Edge::new(state, WorkersKv(kv), origin))
}

fn respond(
    status: u16,
    content_type: &str,
    body: String,
    extra: &[(&str, String)],
) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    headers.set("x-content-type-options", "nosniff")?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    let response = if body.is_empty() { Response::empty()? } else { Response::ok(body)? };
    Ok(response.with_status(status).with_headers(headers))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let edge = match edge(&env) {
        Ok(edge) => edge,
        Err(why) => {
            // A deployment mistake, not an outage: say which variable is wrong.
            worker::console_error!("nls-worker misconfigured: {why}");
            let body = format!(
                r#"{{"error":{{"code":"internal_error","message":"edge misconfigured: {}"}}}}"#,
                why.replace('"', "'")
            );
            return respond(500, "application/json", body, &[]);
        }
    };
    let headers = req.headers().entries().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    let url = req.url()?;
    let path = url.path().to_owned();
    let body = match req.method() {
        Method::Get | Method::Head => Vec::new(),
        _ => match read_bounded_body(&mut req).await {
            Ok(body) => body,
            Err(BodyTooLarge) => {
                let r = EdgeResponse::payload_too_large();
                return respond(r.status, r.content_type, r.body, &r.headers);
            }
        },
    };
    // The platform's view of the caller: Cloudflare sets `CF-Connecting-IP` itself (a client
    // cannot forge it) and `request.cf` carries the country and the colo.
    let cf = req.cf();
    let client = ClientInfo {
        ip: req.headers().get("cf-connecting-ip").ok().flatten(),
        country: cf.and_then(|cf| cf.country()),
        edge: cf.map(|cf| cf.colo()),
    };
    let request = EdgeRequest { method: req.method().to_string(), path, headers, body, client };
    let outcome = edge.handle(request, now()).await;
    if !outcome.background.is_empty() {
        let tasks = outcome.background;
        ctx.wait_until(async move {
            for task in tasks {
                edge.run_background(task, now()).await;
            }
        });
    }
    let r = outcome.response;
    respond(r.status, r.content_type, r.body, &r.headers)
}

/// The body, refused on its declared `Content-Length` or as soon as the chunks read pass the
/// limit, so an oversized body is never buffered whole.
async fn read_bounded_body(req: &mut Request) -> Result<Vec<u8>, BodyTooLarge> {
    BoundedBody::check_declared(req.headers().get("content-length").ok().flatten().as_deref())?;
    let Ok(mut stream) = req.stream() else { return Ok(Vec::new()) }; // no body at all
    let mut body = BoundedBody::default();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        body.push(&chunk)?;
    }
    Ok(body.into_bytes())
}

/// Cron trigger (wrangler.toml `[triggers]`): delivers what any isolate queued.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, ctx: ScheduleContext) {
    match edge(&env) {
        Ok(edge) => ctx.wait_until(async move {
            let report = edge.drain_outbox(now()).await;
            worker::console_log!("nls outbox drain: {report:?}");
        }),
        Err(why) => worker::console_error!("nls-worker misconfigured: {why}"),
    }
}
