//! Starts one moto server per test binary (a real DynamoDB- and SES-compatible HTTP server)
//! and hands out clients and fresh tables on it.
//!
//! moto runs under a small Python watchdog that holds our stdin pipe: when the test process
//! exits, for whatever reason, the pipe closes and the watchdog stops moto. No server outlives
//! the tests.

#![allow(dead_code)]

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use nls_aws::{ClientTuning, DynamoStore, RequestCounter};

const WATCHDOG: &str = r#"
import subprocess, sys
log = open(sys.argv[1], "wb")
server = subprocess.Popen(sys.argv[2:], stdout=log, stderr=log)
try:
    sys.stdin.read()
finally:
    server.terminate()
    try:
        server.wait(5)
    except Exception:
        server.kill()
"#;

/// Loaded by moto's Python through PYTHONPATH: serializes request handling. DynamoDB makes
/// every request atomic; threaded moto does not (its TransactWriteItems rolls back by
/// restoring a deep copy of the table, which undoes other threads' writes, and its conditional
/// writes check and write without a lock). Serialized, moto is atomic per request as DynamoDB
/// is, while our clients still race each other request by request.
const SERIALIZE_REQUESTS: &str = r#"
try:
    import threading
    import werkzeug.serving as serving

    _lock = threading.Lock()
    _run_simple = serving.run_simple

    def run_simple(host, port, app, *args, **kwargs):
        def serialized(environ, start_response):
            with _lock:
                return list(app(environ, start_response))
        return _run_simple(host, port, serialized, *args, **kwargs)

    serving.run_simple = run_simple
except ImportError:
    pass
"#;

pub struct MotoServer {
    pub endpoint: String,
    pub port: u16,
    // Dropping (or exiting) closes the watchdog's stdin, which stops moto.
    _watchdog: Mutex<Child>,
}

fn find_moto_server() -> PathBuf {
    if let Ok(path) = std::env::var("NLS_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "NLS_MOTO_SERVER={} is not a file", path.display());
        return path;
    }
    if let Some(dirs) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&dirs) {
            let candidate = dir.join("moto_server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let workspace_venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    for candidate in [workspace_venv, PathBuf::from("/work/main/.venv/bin/moto_server")] {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "moto_server not found: set NLS_MOTO_SERVER, put it on PATH, or install it with \
         `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'` at the workspace root"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A minimal HTTP/1.0 exchange with moto's control API; returns (status, body).
pub fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

impl MotoServer {
    fn start() -> Self {
        let moto_server = find_moto_server();
        let python = moto_server
            .parent()
            .map(|dir| dir.join("python3"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"));
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!("nls-moto-{port}.log"));
        let site_dir = std::env::temp_dir().join(format!("nls-moto-site-{port}"));
        std::fs::create_dir_all(&site_dir).expect("create the moto site dir");
        std::fs::write(site_dir.join("sitecustomize.py"), SERIALIZE_REQUESTS)
            .expect("write sitecustomize.py");
        let child = Command::new(&python)
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&log_path)
            .arg(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONPATH", &site_dir)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {} via {}: {e}", moto_server.display(), python.display())
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_request(port, "GET", "/moto-api/data.json") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server ({}) did not answer on port {port} within 30 s; see {}",
                moto_server.display(),
                log_path.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), port, _watchdog: Mutex::new(child) }
    }

    /// The server shared by every test of this binary.
    pub fn shared() -> &'static MotoServer {
        static SERVER: OnceLock<MotoServer> = OnceLock::new();
        SERVER.get_or_init(MotoServer::start)
    }

    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }

    pub fn data_json(&self) -> serde_json::Value {
        let (status, body) = http_request(self.port, "GET", "/moto-api/data.json").expect("read moto data");
        assert_eq!(status, 200, "GET /moto-api/data.json: {body}");
        serde_json::from_str(&body).expect("moto data is JSON")
    }
}

/// moto is one Python process serving many concurrent requests: allow it time.
pub fn test_tuning() -> ClientTuning {
    ClientTuning {
        max_attempts: 3,
        connect_timeout: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(30),
        operation_timeout: Duration::from_secs(60),
        ..ClientTuning::default()
    }
}

/// A store on a fresh table of the shared moto server, and the counter of its requests.
pub struct TestTable {
    pub store: DynamoStore,
    pub requests: RequestCounter,
    pub table: String,
}

pub async fn fresh_table() -> TestTable {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = MotoServer::shared();
    let requests = RequestCounter::new();
    let client = nls_aws::dynamodb_client(&server.sdk_config().await, &test_tuning(), Some(&requests));
    let table = format!("nls-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    nls_aws::create_table(&client, &table).await.expect("create the test table");
    requests.reset();
    TestTable { store: DynamoStore::new(client, table.clone()), requests, table }
}
