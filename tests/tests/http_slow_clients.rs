//! Slow clients against the real `nls serve`: many connections sending their headers a byte
//! at a time (slowloris) do not stop other clients from being served, and the server closes
//! them once the header read timeout has passed; a body that trickles in past the body read
//! timeout is refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nls_tests::http_client::request;
use nls_tests::nls_server::{NlsServer, TempDir};

const SLOW_CONNECTIONS: usize = 200;
const HEADER_TIMEOUT_SECS: u64 = 2;

/// Sends one more byte of an endless header; false once the server has closed the connection.
fn trickle(stream: &mut TcpStream, sent: usize) -> bool {
    let head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let byte = head.get(sent).copied().unwrap_or(b'a');
    stream.write_all(&[byte]).is_ok()
}

fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        // Some servers answer 408 before closing; either way the connection is over.
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn slowloris_connections_neither_block_others_nor_stay_open() {
    let dir = TempDir::new("slow-clients");
    let timeout = HEADER_TIMEOUT_SECS.to_string();
    let server = NlsServer::start(
        dir.path(),
        &[
            "--header-read-timeout-secs",
            &timeout,
            "--body-read-timeout-secs",
            &timeout,
            "--ip-rate-limit",
            "0",
        ],
    );
    let mut slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    // Keep trickling for longer than the timeout while a normal client is served promptly.
    while started.elapsed() < Duration::from_secs(HEADER_TIMEOUT_SECS + 2) {
        for stream in &mut slow {
            let _ = trickle(stream, sent);
        }
        sent += 1;
        let asked = Instant::now();
        let r = request(server.port, "GET", "/health", &[], b"").expect("a normal client is served");
        assert_eq!(r.status, 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "a normal request took {:?}", asked.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_open = slow.iter_mut().map(closed_by_server).filter(|closed| !closed).count();
    assert_eq!(
        still_open, 0,
        "{still_open} of {SLOW_CONNECTIONS} slow connections outlived the header timeout"
    );
}

#[test]
fn a_body_that_trickles_past_the_body_timeout_is_refused() {
    let dir = TempDir::new("slow-body");
    let server = NlsServer::start(dir.path(), &["--body-read-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    let body = br#"{"key":"NLS-x-00000000"}"#;
    let head = format!(
        "POST /v1/licenses/validate HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    for byte in body.iter().take(4) {
        // The server may answer and close before the trickle ends.
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "after {:?}: {answer}", started.elapsed());
    assert!(answer.contains("invalid_request"), "{answer}");
}
