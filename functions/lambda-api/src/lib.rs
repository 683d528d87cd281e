//! The `api` Lambda: a thin host for the core's HTTP router (`nls_core::http::router`) on the
//! DynamoDB store. `main` builds everything once at init; [`api_app`] is the per-request part,
//! testable without AWS.

pub mod api_config;

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use lambda_http::request::RequestContext;
use nls_core::http::{AppState, ClientIp, router};

/// The router, plus what a Lambda host adds: the caller's IP from the API Gateway request
/// context, and a flush of the buffered validation history after each request (a frozen
/// Lambda runs no timers).
pub fn api_app(state: AppState) -> axum::Router {
    router(state.clone())
        .layer(middleware::from_fn_with_state(state, flush_validation_log_after))
        .layer(middleware::map_request(with_client_ip))
}

async fn with_client_ip(mut req: Request) -> Request {
    let source_ip = match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = source_ip.and_then(|text| text.parse::<IpAddr>().ok()) {
        req.extensions_mut().insert(ClientIp(ip));
    }
    req
}

async fn flush_validation_log_after(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    if let Err(e) = state.flush_validation_log().await {
        tracing::warn!(error = %e, "validation history flush failed; kept for the next request");
    }
    response
}
