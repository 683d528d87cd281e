//! Starts the real `nls serve` binary for a test.
//!
//! The binary is found at `$NLS_BIN`, else `<target dir>/debug/nls` where the target dir is
//! `$CARGO_TARGET_DIR` or the workspace's `target/`. Build it first: `cargo build -p nls`
//! (the test command in the README does). A test package cannot depend on another package's
//! binary on stable cargo, and building it from inside a test would fight the outer cargo for
//! the build lock, so the tests look for it and say so clearly when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::free_port::free_port;
use crate::http_client::request;

/// `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

pub fn nls_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NLS_BIN") {
        return PathBuf::from(bin);
    }
    let bin = target_dir().join("debug").join("nls");
    assert!(bin.exists(), "{} not found: run `cargo build -p nls` first (or set NLS_BIN)", bin.display());
    bin
}

/// Runs `nls ARGS` with extra environment variables; asserts success and returns stdout.
pub fn run_nls(args: &[&str], env: &[(&'static str, String)]) -> String {
    let output = Command::new(nls_binary())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run nls");
    assert!(output.status.success(), "nls {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A data directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("nls-e2e-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

pub struct NlsServer {
    child: Option<Child>,
    pub port: u16,
    pub admin_key: String,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    log_level: String,
    /// A data directory removed when the server is dropped (after the server stops).
    _owned_dir: Option<TempDir>,
}

impl NlsServer {
    /// Starts a server on `data_dir` with a bootstrap admin key, and waits until it answers.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_logging(data_dir, extra_args, "warn")
    }

    /// Like [`start`](Self::start), with `RUST_LOG=log_level`; the server's stderr goes to
    /// [`log_path`](Self::log_path).
    pub fn start_logging(data_dir: &Path, extra_args: &[&str], log_level: &str) -> Self {
        Self::start_with_env(data_dir, extra_args, &[], log_level)
    }

    /// Like [`start_logging`](Self::start_logging), with extra environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        log_level: &str,
    ) -> Self {
        let admin_key = format!("e2e-admin-{}-{}", std::process::id(), free_port());
        let mut server = Self {
            child: None,
            port: 0,
            admin_key,
            data_dir: data_dir.to_owned(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log_level: log_level.to_owned(),
            _owned_dir: None,
        };
        server.spawn();
        server
    }

    /// Removes `dir` when the server is dropped.
    pub fn owning(mut self, dir: TempDir) -> Self {
        self._owned_dir = Some(dir);
        self
    }

    /// The server's stderr, appended across restarts: beside the data directory, not in it.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open the server log");
            let mut child = Command::new(nls_binary())
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(&self.extra_args)
                .env("NLS_BOOTSTRAP_ADMIN_KEY", &self.admin_key)
                .env("RUST_LOG", &self.log_level)
                .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn nls serve");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("nls serve exited early: {status}\n{}", self.log_text());
                    break;
                }
                if request(port, "GET", "/health", &[], b"").is_ok_and(|r| r.status == 200) {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            if last_error.is_empty() {
                last_error = "nls serve did not answer /health in time".into();
            }
        }
        panic!("{last_error}");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "nls serve exited with {status} after SIGTERM");
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("nls serve did not stop within 15 s of SIGTERM");
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }
}

impl Drop for NlsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
