//! A Lambda function URL in front of a function under the local Runtime API: it turns each
//! HTTP request into an API Gateway payload 2.0 event, invokes the function through the
//! emulator's Invoke route, and turns the function's answer back into an HTTP response.
//!
//! Why not the emulator's own function-URL route ([`crate::lambda_runtime::FUNCTION_URL_PREFIX`]):
//! it reads a body sent as `application/json` or `text/*` as UTF-8 and answers 500 itself,
//! without invoking the function, when the bytes are not UTF-8 (schemathesis sends such
//! bodies). A function URL passes every body on: as text when it is text, base64-encoded
//! (`isBase64Encoded`) otherwise. This front does the same, so bad bytes reach the function,
//! which must answer them with a 4xx.
//!
//! One request per connection (`connection: close`); bodies up to 6 MB, Lambda's payload
//! limit (413 above it, as a function URL answers).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::http_client::request as http_request;
use crate::lambda_runtime::FUNCTION_NAME;

/// Lambda's limit on a synchronous invocation's payload.
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

pub struct FunctionUrlFront {
    pub port: u16,
}

impl FunctionUrlFront {
    /// Listens on a free port and serves until the process exits.
    pub fn start(emulator_port: u16) -> Self {
        let (listener, port) = bind_free_port();
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve_connection(connection, emulator_port);
                });
            }
        });
        Self { port }
    }
}

fn bind_free_port() -> (TcpListener, u16) {
    for _ in 0..20 {
        let port = crate::free_port::free_port();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return (listener, port);
        }
    }
    panic!("no free port for the function URL front");
}

struct HttpRequest {
    method: String,
    target: String,
    /// Names in lower case, in the order received.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

enum ReadError {
    TooLarge,
    Malformed,
    Io,
}

fn serve_connection(connection: TcpStream, emulator_port: u16) -> io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(connection.try_clone()?);
    let mut writer = connection;
    let (status, headers, body) = match read_request(&mut reader) {
        Ok(request) => invoke(&request, emulator_port),
        Err(ReadError::TooLarge) => plain(413, "Request Entity Too Large"),
        Err(ReadError::Malformed) => plain(400, "Bad Request"),
        Err(ReadError::Io) => return Ok(()),
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in &headers {
        if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
    writer.write_all(head.as_bytes())?;
    writer.write_all(&body)?;
    writer.flush()
}

fn plain(status: u16, text: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let message = json!({ "message": text }).to_string();
    (status, vec![("content-type".into(), "application/json".into())], message.into_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn read_request(reader: &mut impl BufRead) -> Result<HttpRequest, ReadError> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(ReadError::Malformed);
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(ReadError::Malformed)?;
        // As an HTTP front refuses them (a NUL in a header would not even make an event).
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ReadError::Malformed);
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let body = if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize =
            header("content-length").map_or(Ok(0), str::parse).map_err(|_| ReadError::Malformed)?;
        if length > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(|_| ReadError::Io)?;
        body
    };
    Ok(HttpRequest { method, target, headers, body })
}

fn read_line(reader: &mut impl BufRead) -> Result<String, ReadError> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).map_err(|_| ReadError::Io)? == 0 {
        return Err(ReadError::Io);
    }
    // Header values are Latin-1 in HTTP/1.1; anything else is kept as well as UTF-8 allows.
    Ok(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned())
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ReadError::Malformed)?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        reader.read_exact(&mut body[start..]).map_err(|_| ReadError::Io)?;
        body.truncate(start + size);
    }
}

/// Text, as a function URL sees it: no content type, `text/*`, or JSON.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return true };
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media_type.starts_with("text/") || media_type == "application/json" || media_type.ends_with("+json")
}

/// The payload 2.0 event a function URL sends for `request`.
fn event(request: &HttpRequest) -> Value {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let (raw_path, raw_query) = request.target.split_once('?').unwrap_or((&request.target, ""));
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &request.headers {
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned));
            continue;
        }
        // Repeated headers arrive joined by commas.
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let header = |name: &str| headers.get(name).and_then(Value::as_str);
    let content_type = header("content-type");
    let (body, is_base64_encoded) = match std::str::from_utf8(&request.body) {
        _ if request.body.is_empty() => (None, false),
        Ok(text) if is_text(content_type) => (Some(text.to_owned()), false),
        _ => (Some(BASE64.encode(&request.body)), true),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let request_id = format!("front-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::SeqCst));
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "local",
            "http": {
                "method": request.method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": header("user-agent").unwrap_or_default(),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        },
        "isBase64Encoded": is_base64_encoded,
    });
    if let Some(body) = body {
        event["body"] = Value::String(body);
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    event
}

/// Invokes the function with the request's event; a function error is a 502, as a function
/// URL answers it.
fn invoke(request: &HttpRequest, emulator_port: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = format!("/2015-03-31/functions/{FUNCTION_NAME}/invocations");
    let payload = event(request).to_string();
    let answer = match http_request(
        emulator_port,
        "POST",
        &path,
        &[("content-type", "application/json")],
        payload.as_bytes(),
    ) {
        Ok(answer) if answer.status == 200 => answer,
        _ => return plain(502, "Internal Server Error"),
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&answer.body) else {
        return plain(502, "Internal Server Error");
    };
    let Some(status) = answer["statusCode"].as_u64().and_then(|s| u16::try_from(s).ok()) else {
        return plain(502, "Internal Server Error");
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(single) = answer["headers"].as_object() {
        headers.extend(
            single.iter().filter_map(|(n, v)| Some((n.to_ascii_lowercase(), v.as_str()?.to_owned()))),
        );
    }
    if let Some(multi) = answer["multiValueHeaders"].as_object() {
        for (name, values) in multi {
            for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
                headers.push((name.to_ascii_lowercase(), value.to_owned()));
            }
        }
    }
    for cookie in answer["cookies"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        headers.push(("set-cookie".to_owned(), cookie.to_owned()));
    }
    let text = answer["body"].as_str().unwrap_or_default();
    let body = if answer["isBase64Encoded"].as_bool().unwrap_or(false) {
        match BASE64.decode(text) {
            Ok(bytes) => bytes,
            Err(_) => return plain(502, "Internal Server Error"),
        }
    } else {
        text.as_bytes().to_vec()
    };
    // A HEAD answer carries the GET's headers and no body.
    let body = if request.method == "HEAD" { Vec::new() } else { body };
    (status, headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: Option<&str>, body: &[u8]) -> HttpRequest {
        let mut headers = vec![("cookie".to_owned(), "a=1; b=2".to_owned()), ("x-n".into(), "1".into())];
        headers.push(("x-n".into(), "2".into()));
        headers.extend(content_type.map(|c| ("content-type".to_owned(), c.to_owned())));
        HttpRequest { method: "POST".into(), target: "/v1/x?b=%20&a=1".into(), headers, body: body.to_vec() }
    }

    #[test]
    fn text_bodies_pass_as_text_and_other_bytes_as_base64() {
        let text = event(&request(Some("application/json; charset=utf-8"), b"{}"));
        assert_eq!((text["body"].as_str(), text["isBase64Encoded"].as_bool()), (Some("{}"), Some(false)));
        let not_utf8 = event(&request(Some("application/json"), &[0xff, 0xfe]));
        assert_eq!(
            (not_utf8["body"].as_str(), not_utf8["isBase64Encoded"].as_bool()),
            (Some("//4="), Some(true))
        );
        let binary = event(&request(Some("application/octet-stream"), b"{}"));
        assert_eq!(binary["body"], "e30=");
        assert!(event(&request(None, b"")).get("body").is_none());
    }

    #[test]
    fn malformed_heads_are_refused() {
        for head in [
            "GET / HTTP/1.1\r\nx-a: nul\0here\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            "GET\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
        ] {
            assert!(matches!(read_request(&mut head.as_bytes()), Err(ReadError::Malformed)), "{head:?}");
        }
        let chunked = "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let parsed = read_request(&mut chunked.as_bytes()).ok().expect("a chunked request");
        assert_eq!(
            (parsed.method.as_str(), parsed.target.as_str(), parsed.body.as_slice()),
            ("POST", "/a", &b"abc"[..])
        );
        assert_eq!(parsed.headers, vec![("transfer-encoding".to_owned(), "chunked".to_owned())]);
    }

    #[test]
    fn path_query_headers_and_cookies_are_as_a_function_url_sends_them() {
        let event = event(&request(None, b""));
        assert_eq!(event["rawPath"], "/v1/x");
        assert_eq!(event["rawQueryString"], "b=%20&a=1");
        assert_eq!(event["headers"]["x-n"], "1,2");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
    }
}
