//! Small real servers that misbehave the way a customer's network does, for the CLI tests:
//! a TLS endpoint with a self-signed certificate, and an HTTP proxy in front of `nls serve`
//! that rewrites the `Date` header (a server clock, or this machine's, that is off), and a TLS
//! proxy in front of `nls serve` whose certificate expired.
//! Each runs on its own threads on a free port until the process ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A TLS listener on 127.0.0.1 presenting a self-signed certificate for `localhost`; it
/// completes handshakes with whoever accepts the certificate, then closes. Returns the port.
pub fn self_signed_tls_endpoint() -> u16 {
    let key = rcgen::KeyPair::generate().expect("generate a key pair");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("certificate params")
        .self_signed(&key)
        .expect("self-sign");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                while tls.conn.is_handshaking() {
                    if tls.conn.complete_io(&mut tls.sock).is_err() {
                        return; // the client refused the certificate: what the test expects
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    port
}

/// A TLS-terminating proxy on 127.0.0.1 to `upstream_port` (plain HTTP, `nls serve`) whose
/// certificate for `localhost` expired: valid from 2024-01-01 to 2025-01-01, generated now.
/// A client that accepted it would reach the real server. Returns the port.
pub fn expired_certificate_tls_proxy(upstream_port: u16) -> u16 {
    let key = rcgen::KeyPair::generate().expect("generate a key pair");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("certificate params");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let cert = params.self_signed(&key).expect("self-sign");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let _ = relay_one(&mut tls, upstream_port, None);
            });
        }
    });
    port
}

/// An HTTP reverse proxy to `upstream_port` that replaces the `Date` header of every answer
/// with `date` (RFC 2822). One request per connection (`Connection: close`). Returns the port.
pub fn date_rewriting_proxy(upstream_port: u16, date: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let date = date.clone();
            std::thread::spawn(move || {
                let mut client = client;
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = relay_one(&mut client, upstream_port, Some(&date));
            });
        }
    });
    port
}

/// Relays one request to `upstream_port`; with `date`, the answer's `Date` is replaced.
fn relay_one(client: &mut impl ReadWrite, upstream_port: u16, date: Option<&str>) -> std::io::Result<()> {
    let (head, body) = read_message(client)?;
    let head = set_header(&head, "connection", "close");
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(10)))?;
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let split = find(&answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    let answer_head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let answer_head = match date {
        Some(date) => set_header(&answer_head, "date", date),
        None => answer_head,
    };
    let answer_head = set_header(&answer_head, "connection", "close");
    client.write_all(answer_head.as_bytes())?;
    client.write_all(&answer[split..])?;
    client.flush()
}

/// Reads one HTTP request: its head (through the blank line) and a `content-length` body.
fn read_message(stream: &mut impl Read) -> std::io::Result<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok((head, body))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The head with header `name` set to `value` (replaced, or added before the blank line).
fn set_header(head: &str, name: &str, value: &str) -> String {
    let mut lines: Vec<String> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{name}: {value}"));
    lines.join("\r\n") + "\r\n\r\n"
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
