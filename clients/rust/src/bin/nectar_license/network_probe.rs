//! The network checks one layer at a time, so a failure names its layer: DNS, TCP, TLS (with
//! the certificate's expiry), then HTTP through the same ureq agent the client uses (which
//! honours `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use ureq::http::Uri;

use crate::failure_class::FailureClass;

/// Where the server is, from its URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub uri: Uri,
    pub host: String,
    pub port: u16,
    pub https: bool,
}

pub fn parse_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("the URL's scheme must be http or https, not {other:?}")),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Target { uri, host, port, https })
}

/// The proxy the client will use for `target`, from the environment, or `None` (direct,
/// including when `NO_PROXY` matches).
pub fn proxy_for(target: &Target) -> Option<ureq::Proxy> {
    ureq::Proxy::try_from_env().filter(|p| !p.is_no_proxy(&target.uri))
}

/// The proxy environment as shown to the operator: credentials in proxy URLs are hidden.
pub fn proxy_env() -> Vec<(String, String)> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), redact_userinfo(&v))))
    .collect()
}

/// `scheme://user:pass@host` → `scheme://***@host`.
pub fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub struct ProbeFailure {
    pub class: FailureClass,
    pub message: String,
    /// A fix more precise than the class's own (an expired server certificate).
    pub fix: Option<&'static str>,
}

fn fail(class: FailureClass, message: String) -> ProbeFailure {
    ProbeFailure { class, message, fix: None }
}

/// The fix when the server's certificate has expired: nothing on this machine can repair it,
/// unless this machine's clock is what is wrong.
pub const EXPIRED_CERTIFICATE_FIX: &str = "the license server's TLS certificate has expired: tell its operator to renew it (or, if the date above is wrong, sync this machine's clock)";

pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ProbeFailure> {
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(fail(FailureClass::Dns, format!("{host} resolves to no address")))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(fail(FailureClass::Dns, format!("{host} does not resolve: {e}"))),
    }
}

pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<(TcpStream, Duration), ProbeFailure> {
    let mut errors = Vec::new();
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok((stream, started.elapsed())),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(fail(FailureClass::Tcp, format!("no TCP connection ({})", errors.join("; "))))
}

/// What the TLS handshake showed.
pub struct TlsFacts {
    pub protocol: String,
    pub certificate_expires_at: Option<DateTime<Utc>>,
}

/// A TLS handshake with the client's trust roots (webpki roots, as ureq uses); the server's
/// certificate is captured to read its expiry.
pub fn tls_handshake(stream: TcpStream, host: &str, timeout: Duration) -> Result<TlsFacts, ProbeFailure> {
    let tls_fail = |m: String| fail(FailureClass::Tls, m);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_fail(format!("TLS set-up: {e}")))?;
    let verifier = Arc::new(CapturingVerifier { inner, end_entity: Mutex::new(None) });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_fail(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| tls_fail(format!("{host}: {e}")))?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| tls_fail(format!("TLS set-up: {e}")))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut tls = rustls::StreamOwned::new(connection, stream);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            let der = verifier.end_entity.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let expired_at = der.as_deref().and_then(certificate_not_after).filter(|at| *at <= Utc::now());
            if let Some(at) = expired_at {
                // Said first: whatever else is wrong with it, an expired certificate is refused
                // by every client, and only the server's operator can renew it.
                let days = (Utc::now() - at).num_days();
                let mut failure = tls_fail(format!(
                    "the TLS certificate of {host} expired at {} ({days} days ago); handshake: {e}",
                    at.to_rfc3339()
                ));
                failure.fix = Some(EXPIRED_CERTIFICATE_FIX);
                return Err(failure);
            }
            return Err(tls_fail(format!("TLS handshake with {host} failed: {e}")));
        }
    }
    let protocol = tls.conn.protocol_version().map_or("unknown".to_owned(), |v| format!("{v:?}"));
    let der = verifier.end_entity.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(TlsFacts { protocol, certificate_expires_at: der.as_deref().and_then(certificate_not_after) })
}

#[derive(Debug)]
struct CapturingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    end_entity: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.end_entity.lock().unwrap_or_else(|p| p.into_inner()) = Some(end_entity.to_vec());
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: (tag, content, rest).
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `notAfter` of an X.509 certificate (RFC 5280 §4.1: Certificate → TBSCertificate →
/// [version], serialNumber, signature, issuer, validity).
fn certificate_not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    let (_, certificate, _) = der_element(der)?;
    let (_, tbs, _) = der_element(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der_element(rest)?;
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, not_after, _) = der_element(after_not_before)?;
    let text = std::str::from_utf8(not_after).ok()?;
    let full = match tag {
        0x17 if text.len() == 13 => {
            let century = if text[..2].parse::<u32>().ok()? < 50 { "20" } else { "19" };
            format!("{century}{text}")
        }
        0x18 if text.len() == 15 => text.to_owned(),
        _ => return None,
    };
    let number = |range: std::ops::Range<usize>| full.get(range)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(4..6)?, number(6..8)?)?;
    Some(date.and_hms_opt(number(8..10)?, number(10..12)?, number(12..14)?)?.and_utc())
}

/// What the HTTP check saw.
pub struct HttpFacts {
    pub status: u16,
    pub latency: Duration,
    pub date: Option<DateTime<Utc>>,
    pub body: String,
}

pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(concat!("nectar-license/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The class of a failed HTTP exchange: the layer ureq names, else HTTP.
pub fn classify_ureq_error(error: &ureq::Error) -> FailureClass {
    match error {
        ureq::Error::HostNotFound => FailureClass::Dns,
        ureq::Error::ConnectionFailed => FailureClass::Tcp,
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => FailureClass::Tcp,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => FailureClass::Tls,
        _ => FailureClass::Http,
    }
}

/// One request (GET, or POST with a JSON body), timed, with the server's `Date`.
pub fn exchange(
    agent: &ureq::Agent,
    url: &str,
    json_body: Option<&serde_json::Value>,
) -> Result<HttpFacts, ProbeFailure> {
    let started = Instant::now();
    let result = match json_body {
        None => agent.get(url).call(),
        Some(body) => {
            agent.post(url).header("content-type", "application/json").send(body.to_string().as_str())
        }
    };
    let mut response = result.map_err(|e| fail(classify_ureq_error(&e), format!("{url}: {e}")))?;
    let latency = started.elapsed();
    let date = response
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.with_timezone(&Utc));
    let status = response.status().as_u16();
    let mut body = String::new();
    let _ = response.body_mut().as_reader().take(1 << 20).read_to_string(&mut body);
    Ok(HttpFacts { status, latency, date, body })
}

/// Makes sure nothing is left half-written on a probe connection.
pub fn close(mut stream: TcpStream) {
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_from_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["example.test".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let at = certificate_not_after(cert.der()).unwrap();
        assert_eq!(at.to_rfc3339(), "2031-07-09T00:00:00+00:00");
        assert_eq!(certificate_not_after(&cert.der()[..40]), None, "a truncated certificate is refused");
    }

    #[test]
    fn proxy_credentials_are_hidden() {
        assert_eq!(redact_userinfo("http://bob:s3cret@proxy:3128"), "http://***@proxy:3128");
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
    }
}
