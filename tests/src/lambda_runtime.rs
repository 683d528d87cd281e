//! cargo-lambda's local Runtime API (`cargo lambda watch --only-lambda-apis`): the real
//! function binaries poll it as they poll AWS's, and tests reach them through its invoke and
//! function-URL routes. Found at `$NLS_CARGO_LAMBDA`, else `cargo-lambda` on PATH.
//!
//! Each function process reaches the emulator through a [`FunctionLink`] of its own (see
//! [`crate::runtime_api_relay`] for why).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http_client::request;
use crate::runtime_api_relay::RuntimeApiRelay;

/// The function name every test function runs as; the emulator routes by it.
pub const FUNCTION_NAME: &str = "_";
/// The emulator's function-URL route (API Gateway payload 2.0 events) to [`FUNCTION_NAME`].
pub const FUNCTION_URL_PREFIX: &str = "/lambda-url/_";

pub struct LocalRuntimeApi {
    child: Child,
    pub port: u16,
}

fn cargo_lambda() -> PathBuf {
    if let Some(path) = std::env::var_os("NLS_CARGO_LAMBDA") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("cargo-lambda"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("cargo-lambda not found: run tests/run.sh once, or set NLS_CARGO_LAMBDA"))
}

impl LocalRuntimeApi {
    /// Starts the emulator in `package_dir` (a function's crate) and waits until it listens.
    pub fn start(package_dir: &Path) -> Self {
        for _attempt in 0..3 {
            if let Some(runtime) = Self::try_start(package_dir) {
                return runtime;
            }
        }
        panic!("cargo lambda watch did not start (three attempts)");
    }

    /// `None` when the emulator exited: the port we picked was taken in the meantime.
    fn try_start(package_dir: &Path) -> Option<Self> {
        let port = crate::free_port::free_port();
        let mut child = Command::new(cargo_lambda())
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(package_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cargo lambda watch");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            assert!(Instant::now() < deadline, "cargo lambda watch did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Something listens; make sure it is ours and not another test's server on a reused
        // port (our emulator would then exit on its failed bind).
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        Some(Self { child, port })
    }

    /// A new function process's way in: keep the link for as long as the process runs, and
    /// drop it after the process is gone.
    pub fn connect_function(&self) -> FunctionLink {
        FunctionLink { relay: RuntimeApiRelay::start(self.port) }
    }

    /// One synchronous Lambda Invoke with `payload`: (status, raw response body).
    pub fn invoke(&self, payload: &str) -> (u16, String) {
        let path = format!("/2015-03-31/functions/{FUNCTION_NAME}/invocations");
        let headers = [("content-type", "application/json")];
        let response = request(self.port, "POST", &path, &headers, payload.as_bytes()).expect("invoke");
        (response.status, response.text())
    }
}

/// One function process's connection to the emulator.
pub struct FunctionLink {
    relay: RuntimeApiRelay,
}

impl FunctionLink {
    /// What Lambda sets for a function process, pointed at the emulator through this link.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{}/.rt", self.relay.port)),
            ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME.to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ]
    }
}

impl Drop for LocalRuntimeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a function process when the test ends, passing or not.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
