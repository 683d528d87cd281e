//! An HTTP/1.1 proxy in front of moto that answers a seeded fraction of requests as DynamoDB
//! does when it throttles (400 with `ThrottlingException` or
//! `ProvisionedThroughputExceededException`), and forwards the rest. moto cannot be told to
//! throttle per request, so the fault goes between it and the store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub struct ThrottlingProxy {
    /// `http://127.0.0.1:PORT`: give it to the store as `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    per_mille: Arc<AtomicU32>,
    throttled: Arc<AtomicU64>,
}

const THROTTLES: [&str; 2] = ["ThrottlingException", "ProvisionedThroughputExceededException"];

impl ThrottlingProxy {
    /// Forwards to `upstream` (`host:port`), throttling `per_mille` of requests out of 1000.
    pub fn start(upstream: &str, seed: u64, per_mille: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let per_mille = Arc::new(AtomicU32::new(per_mille));
        let throttled = Arc::new(AtomicU64::new(0));
        let random = Arc::new(AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
        let (rate, count, upstream) = (per_mille.clone(), throttled.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (rate, count, random, upstream) =
                    (rate.clone(), count.clone(), random.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &rate, &count, &random);
                });
            }
        });
        Self { endpoint, per_mille, throttled }
    }

    pub fn set_per_mille(&self, per_mille: u32) {
        self.per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// Requests answered with a throttling error so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::SeqCst)
    }
}

fn next_random(state: &AtomicU64) -> u64 {
    let mut x = state.load(Ordering::SeqCst);
    loop {
        let mut next = x;
        next ^= next >> 12;
        next ^= next << 25;
        next ^= next >> 27;
        match state.compare_exchange(x, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next.wrapping_mul(0x2545_F491_4F6C_DD1D),
            Err(seen) => x = seen,
        }
    }
}

/// One client connection: request after request (keep-alive) until it closes.
fn serve(
    client: TcpStream,
    upstream: &str,
    rate: &AtomicU32,
    count: &AtomicU64,
    random: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            // The proxy reads each upstream answer to its end: one request per upstream connection.
            if !lower.starts_with("connection:") {
                head.extend_from_slice(line.as_bytes());
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        let roll = next_random(random);
        if (roll % 1000) < u64::from(rate.load(Ordering::SeqCst)) {
            count.fetch_add(1, Ordering::SeqCst);
            let kind = THROTTLES[(roll / 1000 % 2) as usize];
            let error = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"Rate of requests exceeds the allowed throughput."}}"#
            );
            write!(
                client,
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-errortype: {kind}\r\ncontent-length: {}\r\n\r\n{error}",
                error.len()
            )?;
            continue;
        }
        let mut upstream = TcpStream::connect(upstream)?;
        upstream.write_all(&head)?;
        upstream.write_all(b"connection: close\r\n\r\n")?;
        upstream.write_all(&body)?;
        let mut answer = Vec::new();
        upstream.read_to_end(&mut answer)?;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
        let (answer_head, answer_body) = answer.split_at(split);
        let answer_head = String::from_utf8_lossy(answer_head);
        let mut out = String::new();
        let mut delimited = false;
        for line in answer_head.split("\r\n").filter(|l| !l.is_empty()) {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                continue;
            }
            delimited |= lower.starts_with("content-length:") || lower.starts_with("transfer-encoding:");
            out.push_str(line);
            out.push_str("\r\n");
        }
        if !delimited {
            out.push_str(&format!("content-length: {}\r\n", answer_body.len()));
        }
        out.push_str("\r\n");
        client.write_all(out.as_bytes())?;
        client.write_all(answer_body)?;
    }
}
