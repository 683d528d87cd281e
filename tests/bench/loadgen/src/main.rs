//! Open-loop HTTP/1.1 load generator for `nls serve` (docs/benchmarks.md, tests/bench/server_10k.sh).
//!
//! Opens `--connections` keep-alive connections, then has each send one request every
//! `--interval-ms`, the connections' schedules staggered so requests arrive at a constant rate
//! (connections / interval). Latency is measured from the *intended* send time, as wrk2 and
//! `oha --latency-correction` do: when an answer comes late, the next send on that connection
//! goes late too and that wait is counted, so queueing is not hidden. Connect time is reported
//! apart from request latency. The generator's own lateness (how long after the intended time
//! it sent on a connection that was idle) is reported too: if that is large, the generator and
//! not the server is the bottleneck.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout};

const USAGE: &str = "usage: nls-loadgen --addr HOST:PORT [--connections 10000] [--interval-ms 2000]
  [--duration-s 30] [--warmup-s 4] [--path /v1/licenses/validate] [--body-file FILE]
  [--connect-concurrency 1000] [--timeout-s 10] [--threads 1] [--timeline]
Without --body-file it sends GET, with one POST (content-type: application/json).";

struct Settings {
    addr: SocketAddr,
    connections: usize,
    interval: Duration,
    duration: Duration,
    warmup: Duration,
    request: Vec<u8>,
    connect_concurrency: usize,
    timeout: Duration,
    threads: usize,
    timeline: bool,
}

fn parse_args() -> Result<Settings, String> {
    let mut addr = None;
    let (mut connections, mut interval_ms, mut duration_s, mut warmup_s) =
        (10_000usize, 2000u64, 30u64, 4u64);
    let (mut connect_concurrency, mut timeout_s, mut threads) = (1000usize, 10u64, 1usize);
    let mut path = "/v1/licenses/validate".to_string();
    let mut body = None;
    let mut timeline = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if flag == "--timeline" {
            timeline = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--addr" => addr = Some(value.parse::<SocketAddr>().map_err(|e| format!("--addr {value}: {e}"))?),
            "--connections" => connections = number(&value)? as usize,
            "--interval-ms" => interval_ms = number(&value)?,
            "--duration-s" => duration_s = number(&value)?,
            "--warmup-s" => warmup_s = number(&value)?,
            "--path" => path = value,
            "--body-file" => {
                body = Some(std::fs::read(&value).map_err(|e| format!("--body-file {value}: {e}"))?)
            }
            "--connect-concurrency" => connect_concurrency = number(&value)?.max(1) as usize,
            "--timeout-s" => timeout_s = number(&value)?.max(1),
            "--threads" => threads = number(&value)?.max(1) as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    if connections == 0 || interval_ms == 0 || duration_s == 0 {
        return Err("--connections, --interval-ms and --duration-s must be positive".into());
    }
    Ok(Settings {
        addr,
        connections,
        interval: Duration::from_millis(interval_ms),
        duration: Duration::from_secs(duration_s),
        warmup: Duration::from_secs(warmup_s),
        request: request_bytes(addr, &path, body.as_deref()),
        connect_concurrency,
        timeout: Duration::from_secs(timeout_s),
        threads,
        timeline,
    })
}

fn request_bytes(addr: SocketAddr, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut request = match body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
    }
    .into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    request
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Answers with status 200 in the measured window: intended send time to last byte.
    latency_us: Vec<u64>,
    /// (second of the measured window the send was intended in, latency): the `--timeline`.
    latency_by_second: Vec<(u32, u64)>,
    /// Sends on an idle connection in the measured window: how late the generator fired.
    send_lag_us: Vec<u64>,
    connect_us: Vec<u64>,
    connect_errors: u64,
    /// Answered, but not 200.
    status_errors: u64,
    io_errors: u64,
    timeouts: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latency_us.extend(other.latency_us);
        self.latency_by_second.extend(other.latency_by_second);
        self.send_lag_us.extend(other.send_lag_us);
        self.connect_us.extend(other.connect_us);
        self.connect_errors += other.connect_errors;
        self.status_errors += other.status_errors;
        self.io_errors += other.io_errors;
        self.timeouts += other.timeouts;
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

async fn connect(settings: &Settings) -> Result<(TcpStream, Duration), ()> {
    let started = Instant::now();
    match timeout(settings.timeout, TcpStream::connect(settings.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok((stream, started.elapsed()))
        }
        _ => Err(()),
    }
}

/// Writes the request and reads one answer (Content-Length framing); returns its status.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut head: Option<(usize, u16, usize)> = None;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if head.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let (status, length) = parse_head(&buf[..end])?;
            head = Some((end + 4, status, length));
        }
        if let Some((body_start, status, length)) = head {
            match buf.len().cmp(&(body_start + length)) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(status),
                std::cmp::Ordering::Greater => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes past the answer"));
                }
            }
        }
    }
}

fn parse_head(head: &[u8]) -> io::Result<(u16, usize)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let head = std::str::from_utf8(head).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| bad("no content-length"))?;
    Ok((status, length))
}

/// One connection's schedule: a send at `first`, then every interval until `end`.
async fn drive(
    mut stream: Option<TcpStream>,
    first: Instant,
    measure_from: Instant,
    end: Instant,
    settings: Arc<Settings>,
) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut intended = first;
    while intended < end {
        let idle = Instant::now() < intended;
        if idle {
            sleep_until(intended.into()).await;
        }
        let measured = intended >= measure_from;
        if stream.is_none() {
            match connect(&settings).await {
                Ok((fresh, took)) => {
                    tally.connect_us.push(micros(took));
                    stream = Some(fresh);
                }
                Err(()) => {
                    tally.connect_errors += 1;
                    intended += settings.interval;
                    continue;
                }
            }
        }
        let Some(open) = stream.as_mut() else { continue };
        if measured && idle {
            tally.send_lag_us.push(micros(Instant::now().saturating_duration_since(intended)));
        }
        let answered = timeout(settings.timeout, exchange(open, &settings.request, &mut buf)).await;
        let latency = Instant::now().saturating_duration_since(intended);
        match answered {
            Ok(Ok(200)) if measured => {
                tally.latency_us.push(micros(latency));
                let second = intended.duration_since(measure_from).as_secs() as u32;
                tally.latency_by_second.push((second, micros(latency)));
            }
            Ok(Ok(200)) => {}
            Ok(Ok(_)) => tally.status_errors += 1,
            Ok(Err(_)) => {
                tally.io_errors += 1;
                stream = None;
            }
            Err(_) => {
                tally.timeouts += 1;
                stream = None;
            }
        }
        intended += settings.interval;
    }
    tally
}

/// Per second of the measured window: answers, p99 and max latency (where the stalls are).
fn print_timeline(samples: &mut [(u32, u64)]) {
    samples.sort_unstable();
    for second in samples.chunk_by(|a, b| a.0 == b.0) {
        let latencies: Vec<u64> = second.iter().map(|&(_, latency)| latency).collect();
        println!(
            "  second {:>3}: n={:>6} p99={:>8.2}ms max={:>8.2}ms",
            second[0].0,
            latencies.len(),
            percentile_ms(&latencies, 0.99),
            latencies.iter().max().map_or(f64::NAN, |&max| max as f64 / 1000.0)
        );
    }
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn summary(name: &str, values: &mut [u64]) -> String {
    values.sort_unstable();
    format!(
        "{name}: n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
        values.len(),
        percentile_ms(values, 0.50),
        percentile_ms(values, 0.90),
        percentile_ms(values, 0.99),
        percentile_ms(values, 0.999),
        values.last().map_or(f64::NAN, |&max| max as f64 / 1000.0),
    )
}

async fn run(settings: Arc<Settings>) {
    let mut tally = Tally::default();
    // Connect phase: every connection opened before the first request, at most
    // `connect_concurrency` handshakes at a time.
    let connecting = Instant::now();
    let permits = Arc::new(Semaphore::new(settings.connect_concurrency));
    let mut handshakes = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("semaphore never closed");
        let settings = Arc::clone(&settings);
        handshakes.push(tokio::spawn(async move {
            let connected = connect(&settings).await;
            drop(permit);
            connected
        }));
    }
    let mut streams = Vec::with_capacity(settings.connections);
    for handshake in handshakes {
        match handshake.await.expect("connect task panicked") {
            Ok((stream, took)) => {
                tally.connect_us.push(micros(took));
                streams.push(stream);
            }
            Err(()) => tally.connect_errors += 1,
        }
    }
    let connect_phase = connecting.elapsed();
    let open = streams.len();
    println!(
        "connect phase: {open}/{} connections in {:.2}s ({} at a time), errors={}",
        settings.connections,
        connect_phase.as_secs_f64(),
        settings.connect_concurrency,
        tally.connect_errors
    );
    if open == 0 {
        println!("RESULT no connection");
        std::process::exit(1);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + settings.warmup;
    let end = measure_from + settings.duration;
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let first = start + settings.interval.mul_f64(i as f64 / open as f64);
            tokio::spawn(drive(Some(stream), first, measure_from, end, Arc::clone(&settings)))
        })
        .collect();
    for task in tasks {
        tally.merge(task.await.expect("connection task panicked"));
    }
    if settings.timeline {
        print_timeline(&mut tally.latency_by_second);
    }
    let offered = open as f64 / settings.interval.as_secs_f64();
    let achieved = tally.latency_us.len() as f64 / settings.duration.as_secs_f64();
    println!(
        "schedule: {open} connections x 1 request / {} ms = {offered:.0} req/s offered, {}s warm-up, {}s measured",
        settings.interval.as_millis(),
        settings.warmup.as_secs(),
        settings.duration.as_secs()
    );
    let connect_line = summary("connect time (all connects, re-connects included)", &mut tally.connect_us);
    let latency_line = summary("latency from intended send (200s)", &mut tally.latency_us);
    let lag_line = summary("generator send lag (idle connections)", &mut tally.send_lag_us);
    println!("{connect_line}\n{latency_line}\n{lag_line}");
    println!(
        "answered 200: {:.0} req/s; errors: connect={} status={} io={} timeout={}",
        achieved, tally.connect_errors, tally.status_errors, tally.io_errors, tally.timeouts
    );
    let latency = &tally.latency_us;
    println!(
        "RESULT offered={offered:.0} achieved={achieved:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} \
         connect_p99_ms={:.2} connect_max_ms={:.2} lag_p99_ms={:.2} errors={}",
        percentile_ms(latency, 0.50),
        percentile_ms(latency, 0.90),
        percentile_ms(latency, 0.99),
        latency.last().map_or(f64::NAN, |&max| max as f64 / 1000.0),
        percentile_ms(&tally.connect_us, 0.99),
        tally.connect_us.last().map_or(f64::NAN, |&max| max as f64 / 1000.0),
        percentile_ms(&tally.send_lag_us, 0.99),
        tally.connect_errors + tally.status_errors + tally.io_errors + tally.timeouts,
    );
}

fn main() {
    let settings = match parse_args() {
        Ok(settings) => Arc::new(settings),
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = if settings.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(settings.threads).enable_all().build()
    };
    runtime.expect("tokio runtime").block_on(run(settings));
}
