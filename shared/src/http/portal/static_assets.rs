//! The portal's hand-written stylesheet and script, compiled into the binary (no CDN, no
//! external fonts, nothing to build). The script only enhances: copy buttons and confirm
//! dialogs; every page works without it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const STYLESHEET: &str = include_str!("assets/portal.css");
const SCRIPT: &str = include_str!("assets/portal.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
