//! The one middleware every request passes: per-IP rate limit, CORS for the admin routes,
//! security headers, JSON bodies for the framework's own errors (404, 405, 413), metrics, and
//! a panic in a handler answered as the standard 500 (and logged) instead of a dropped
//! connection.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::app_error::{AppError, BodyLimit};
use crate::http::{AppState, ClientIp};
use crate::panic_guard::catch_panic;

/// Admin routes are the ones that take an API key; only they answer CORS.
pub fn is_admin_path(path: &str) -> bool {
    const ADMIN_PREFIXES: [&str; 6] =
        ["/v1/customers", "/v1/licenses", "/v1/api-keys", "/v1/audit-log", "/v1/stats", "/v1/compliance"];
    path != "/v1/licenses/validate" && ADMIN_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The caller's address. Behind a trusted proxy (`trust_forwarded_for`), the rightmost
/// `X-Forwarded-For` entry: the one that proxy appended for the peer it saw. Entries to its
/// left were written by the client and prove nothing.
fn client_ip(state: &AppState, req: &Request) -> Option<std::net::IpAddr> {
    if state.config().trust_forwarded_for {
        let forwarded =
            req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back();
        if let Some(ip) = forwarded.and_then(|v| v.rsplit(',').next()).and_then(|s| s.trim().parse().ok()) {
            return Some(ip);
        }
    }
    req.extensions().get::<ClientIp>().map(|c| c.0)
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = state.now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let cors_origin = allowed_origin(&state, req.headers(), req.uri().path());
    req.extensions_mut().insert(BodyLimit(state.config().body_limit_bytes));
    // An edge's forwarded call names its caller; trusted only with the edge's service token.
    let forwarded = crate::http::validation_event_routes::forwarded_client_ip(&state, req.headers()).await;
    let ip = forwarded.or_else(|| client_ip(&state, &req));
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
    }

    let mut response = if method == Method::OPTIONS && cors_origin.is_some() {
        preflight()
    } else if let Some(Err(limited)) = ip.map(|ip| state.check_ip_rate(ip)) {
        limited.into_response()
    } else {
        let route_name = route.as_ref().map_or(crate::http::metrics::UNMATCHED_ROUTE, |r| r.as_str());
        catch_panic(next.run(req)).await.unwrap_or_else(|panicked| {
            AppError::Internal(format!("{method} {route_name}: handler {panicked}")).into_response()
        })
    };

    // The portal answers its own errors as HTML pages; everything else gets the API's JSON.
    if response.status().as_u16() >= 400 && !is_json(response.headers()) && !is_html(response.headers()) {
        response = as_json_error(response, state.config().body_limit_bytes);
    }
    set_security_headers(response.headers_mut());
    if let Some(origin) = cors_origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    let micros = (state.now() - started).num_microseconds().unwrap_or(0).max(0) as u64;
    let status = response.status().as_u16();
    state.metrics().record_request(&method, route.as_ref().map(|r| r.as_str()), status, micros);
    tracing::debug!(
        method = %method,
        route = route.as_ref().map_or(crate::http::metrics::UNMATCHED_ROUTE, |r| r.as_str()),
        status,
        micros,
        "request"
    );
    response
}

fn allowed_origin(state: &AppState, headers: &HeaderMap, path: &str) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let allowed = state.config().cors_origins.iter().any(|o| o.as_bytes() == origin.as_bytes() || o == "*");
    (allowed && is_admin_path(path)).then(|| origin.clone())
}

fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers
        .insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PATCH, DELETE"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn is_html(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// The framework answers some errors itself with a plain body; give them the API's shape.
fn as_json_error(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    let error = match status {
        StatusCode::NOT_FOUND => AppError::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: body_limit },
        s if s.is_client_error() => AppError::invalid(format!("the request was refused ({})", s.as_u16())),
        _ => AppError::Internal(format!("unexpected {status} from the framework")),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut replaced = error.into_response();
    *replaced.status_mut() = status;
    if let Some(allow) = allow {
        replaced.headers_mut().insert(header::ALLOW, allow);
    }
    replaced
}

fn set_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A portal page sets its own policy (its stylesheet and script); the API's is the strictest.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// The 404 for unknown routes.
pub async fn route_not_found() -> AppError {
    AppError::RouteNotFound
}

/// The 405 for a known route and a wrong method.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
