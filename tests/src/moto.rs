//! One moto server (a real DynamoDB-, SES- and Secrets Manager-compatible HTTP server) per test
//! binary, shared by every test in it. Used by this crate's end-to-end tests and, as a
//! dev-dependency, by the AWS crates' tests.
//!
//! moto runs under a small Python watchdog that holds our stdin pipe: when the test process
//! exits, for whatever reason, the pipe closes and the watchdog stops moto. No server outlives
//! the tests.

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::free_port::free_port;

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

/// The environment an AWS SDK client (or a Lambda under test) needs to reach moto.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

pub struct MotoServer {
    pub endpoint: String,
    pub port: u16,
    // Dropping (or exiting) closes the watchdog's stdin, which stops moto.
    _watchdog: Mutex<Child>,
}

/// `$NLS_MOTO_SERVER`, else `moto_server` on PATH (tests/run.sh puts its venv there).
fn find_moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("NLS_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "NLS_MOTO_SERVER={} is not a file", path.display());
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("moto_server not found: run tests/run.sh once, or set NLS_MOTO_SERVER to its path")
        })
}

/// A minimal HTTP/1.0 exchange with moto; returns (status, body). `headers` are extra lines.
pub fn moto_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

impl MotoServer {
    /// A server of one's own, stopped when dropped. Tests that share one queue behind each
    /// other's requests (moto serves one at a time), so heavy users take their own.
    pub fn start() -> Self {
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
            if let Ok((200, _)) = moto_request(port, "GET", "/moto-api/data.json", &[], "") {
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

    /// moto's whole state (`/moto-api/data.json`), e.g. to read back sent mail.
    pub fn data_json(&self) -> serde_json::Value {
        let (status, body) =
            moto_request(self.port, "GET", "/moto-api/data.json", &[], "").expect("read moto data");
        assert_eq!(status, 200, "GET /moto-api/data.json: {body}");
        serde_json::from_str(&body).expect("moto data is JSON")
    }

    /// Creates a Secrets Manager secret with a string value, over moto's JSON protocol (the
    /// credential scope in `Authorization` is how moto picks the service; it checks no
    /// signature).
    pub fn create_secret(&self, name: &str, value: &str) {
        let body = serde_json::json!({"Name": name, "SecretString": value}).to_string();
        let (status, answer) = moto_request(
            self.port,
            "POST",
            "/",
            &[
                ("X-Amz-Target", "secretsmanager.CreateSecret"),
                ("Content-Type", "application/x-amz-json-1.1"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, \
                     SignedHeaders=host, Signature=0",
                ),
            ],
            &body,
        )
        .expect("CreateSecret on moto");
        assert_eq!(status, 200, "CreateSecret {name}: {answer}");
    }

    /// A new version of a secret (a rotation): it becomes `AWSCURRENT`, the old one
    /// `AWSPREVIOUS`.
    pub fn put_secret_value(&self, name: &str, value: &str) {
        let body = serde_json::json!({"SecretId": name, "SecretString": value}).to_string();
        let (status, answer) = moto_request(
            self.port,
            "POST",
            "/",
            &[
                ("X-Amz-Target", "secretsmanager.PutSecretValue"),
                ("Content-Type", "application/x-amz-json-1.1"),
                (
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/secretsmanager/aws4_request, \
                     SignedHeaders=host, Signature=0",
                ),
            ],
            &body,
        )
        .expect("PutSecretValue on moto");
        assert_eq!(status, 200, "PutSecretValue {name}: {answer}");
    }
}
