//! A relay that carries one Lambda function process's Runtime API calls to cargo-lambda's
//! emulator, in order, over a single upstream connection.
//!
//! Why it exists: the emulator answers a function's `POST …/response` as soon as it has the
//! head, and reads the rest of a body larger than its first read (about 8 KB) only when more
//! bytes arrive on that connection. The Lambda runtime's pooled client usually sends its next
//! `GET …/next` on the same connection, which pushes the body through. When it picks another
//! connection, the body stalls: the invocation hangs, or fails with the emulator's 500 once
//! the connection closes. Measured with a 36 KB response: direct, about 1 request in 300
//! failed; through one connection, none in 6,000. A Lambda runtime has one call in flight at
//! a time, so serializing its calls costs it nothing.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub struct RuntimeApiRelay {
    pub port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    emulator_port: u16,
    upstream: Mutex<Option<BufReader<TcpStream>>>,
    /// A handle on the upstream socket that does not need the lock, which a long-polling
    /// `GET …/next` holds: shutting it down ends that poll.
    upstream_socket: Mutex<Option<TcpStream>>,
    stopping: AtomicBool,
}

impl RuntimeApiRelay {
    pub fn start(emulator_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API relay");
        let port = listener.local_addr().expect("the relay's address").port();
        let shared = Arc::new(Shared {
            emulator_port,
            upstream: Mutex::new(None),
            upstream_socket: Mutex::new(None),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for downstream in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(downstream) = downstream {
                    let shared = Arc::clone(&accepting);
                    std::thread::spawn(move || relay_connection(downstream, &shared));
                }
            }
        });
        Self { port, shared }
    }
}

impl Drop for RuntimeApiRelay {
    /// Closes the upstream connection, so the emulator drops a pending `GET …/next` of a
    /// process that is gone instead of handing it the next invocation.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(socket) =
            self.shared.upstream_socket.lock().unwrap_or_else(PoisonError::into_inner).take()
        {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay_connection(downstream: TcpStream, shared: &Shared) {
    let Ok(reading) = downstream.try_clone() else { return };
    let mut requests = BufReader::new(reading);
    let mut responses = downstream;
    while let Ok(Some(request)) = read_message(&mut requests, Message::Request) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let response = {
            let mut upstream = shared.upstream.lock().unwrap_or_else(PoisonError::into_inner);
            let reused = upstream.is_some();
            let mut outcome = exchange(&mut upstream, shared, &request);
            // A reused connection may have been closed by the emulator while idle: one retry
            // on a fresh one, as a pooled HTTP client does. Repeating a Runtime API call is
            // harmless (the emulator ignores a response for an invocation it no longer holds).
            if outcome.is_err() && reused && !shared.stopping.load(Ordering::SeqCst) {
                *upstream = None;
                outcome = exchange(&mut upstream, shared, &request);
            }
            match outcome {
                Ok(response) => response,
                Err(_) => {
                    *upstream = None;
                    return;
                }
            }
        };
        if responses.write_all(&response).is_err() {
            return;
        }
    }
}

fn exchange(
    upstream: &mut Option<BufReader<TcpStream>>,
    shared: &Shared,
    request: &[u8],
) -> io::Result<Vec<u8>> {
    let connection = match upstream {
        Some(connection) => connection,
        None => {
            let socket = TcpStream::connect(("127.0.0.1", shared.emulator_port))?;
            *shared.upstream_socket.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(socket.try_clone()?);
            upstream.insert(BufReader::new(socket))
        }
    };
    connection.get_mut().write_all(request)?;
    read_message(connection, Message::Response)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the emulator closed the connection"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    Request,
    Response,
}

/// One HTTP/1.1 message exactly as received, head and body (`Content-Length` or chunked).
/// `None` when the peer closed the connection between messages.
fn read_message(reader: &mut impl BufRead, kind: Message) -> io::Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut bodiless = false;
    let mut start_line = true;
    loop {
        let line = read_line(reader, &mut message)?;
        let Some(line) = line else {
            return if message.is_empty() { Ok(None) } else { Err(truncated()) };
        };
        if line.is_empty() {
            break;
        }
        if std::mem::take(&mut start_line) {
            if kind == Message::Response {
                let status = line.split(' ').nth(1).unwrap_or_default();
                bodiless = status.starts_with('1') || status == "204" || status == "304";
            }
        } else if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = value.trim().parse().map_err(|_| malformed("content-length"))?
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    if bodiless {
        return Ok(Some(message));
    }
    if !chunked {
        read_exactly(reader, &mut message, content_length)?;
        return Ok(Some(message));
    }
    loop {
        let size_line = read_line(reader, &mut message)?.ok_or_else(truncated)?;
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader, &mut message)?.ok_or_else(truncated)?.is_empty() {}
            return Ok(Some(message));
        }
        read_exactly(reader, &mut message, size + 2)?;
    }
}

/// Appends one line to `message`; returns it without its line ending (`None` at end of stream).
fn read_line(reader: &mut impl BufRead, message: &mut Vec<u8>) -> io::Result<Option<String>> {
    let start = message.len();
    if reader.read_until(b'\n', message)? == 0 {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&message[start..]).trim_end_matches(['\r', '\n']).to_owned()))
}

fn read_exactly(reader: &mut impl Read, message: &mut Vec<u8>, count: usize) -> io::Result<()> {
    let start = message.len();
    message.resize(start + count, 0);
    reader.read_exact(&mut message[start..])
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "truncated HTTP message")
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_messages_framed_by_length_by_chunks_and_without_a_body() {
        let stream = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n".to_vec();
        let mut reader = &stream[..];
        let first = read_message(&mut reader, Message::Request).unwrap().unwrap();
        assert!(first.ends_with(b"\r\n\r\nabc"));
        let second = read_message(&mut reader, Message::Request).unwrap().unwrap();
        assert_eq!(second, b"GET /b HTTP/1.1\r\n\r\n");
        assert!(read_message(&mut reader, Message::Request).unwrap().is_none());

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(read_message(&mut &chunked[..], Message::Response).unwrap().unwrap(), chunked);

        let no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(read_message(&mut &no_content[..], Message::Response).unwrap().unwrap(), no_content);

        let cut = b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nab";
        assert!(read_message(&mut &cut[..], Message::Request).is_err());
    }
}
