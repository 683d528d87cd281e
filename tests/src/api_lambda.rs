//! Runs the `api` Lambda as AWS does, locally: the release `nls-api` binary polls a Runtime
//! API (`cargo lambda watch --only-lambda-apis`), on a fresh DynamoDB table in moto, with its
//! signing key in a Secrets Manager secret (moto) fetched at init. Requests go through the
//! emulator's function-URL route, as API Gateway payload format 2.0 events.
//!
//! Found at `$NLS_API_LAMBDA_BIN`, else `<target dir>/release/nls-api` (tests/run.sh builds
//! it: `cargo build --release -p nls-lambda-api`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http_client::request;
use crate::lambda_runtime::{FUNCTION_URL_PREFIX, FunctionLink, LocalRuntimeApi};
use crate::moto::{MotoServer, aws_env};
use crate::nls_host::{EDGE_PUSH_TOKEN, HostOptions, NlsHost};
use crate::nls_server::{TempDir, run_nls, target_dir};

pub struct ApiLambda {
    runtime: LocalRuntimeApi,
    /// Dropped after the functions (fields drop after `Drop::drop`), which stops moto.
    _moto: MotoServer,
    functions: Vec<FunctionInstance>,
    instances: usize,
    env: Vec<(&'static str, String)>,
    admin_key: String,
    signing_jwk: Value,
    work_dir: TempDir,
}

struct FunctionInstance {
    process: Child,
    /// Dropped after the process is reaped.
    _link: FunctionLink,
}

fn api_lambda_binary() -> PathBuf {
    let bin = std::env::var_os("NLS_API_LAMBDA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release").join("nls-api"));
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release -p nls-lambda-api` first (or set NLS_API_LAMBDA_BIN)",
        bin.display()
    );
    bin
}

impl ApiLambda {
    pub fn start(label: &str, options: HostOptions) -> Self {
        Self::start_with_secrets(label, options, &[])
    }

    /// Also puts each `(VARIABLE, value)` of `secrets` into a Secrets Manager secret of its
    /// own and sets `VARIABLE` to its id (as template.yaml does with e.g. the registry key).
    pub fn start_with_secrets(label: &str, options: HostOptions, secrets: &[(&'static str, &str)]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Its own moto: the races of the other Lambda tests must not queue ahead of this one's
        // requests (moto serves one request at a time, and the function's DynamoDB client
        // gives an attempt 1 s, as in production).
        let moto = MotoServer::start();
        let name = format!("nls-e2e-{label}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let work_dir = TempDir::new(&name);
        let aws = aws_env(&moto.endpoint);

        // What a deployer does (docs/deploy-aws.md): a table, and a signing key in a secret.
        run_nls(&["dynamodb", "create-table", "--table", &name], &aws);
        let key_file = work_dir.path().join("signing.jwk");
        run_nls(&["keys", "generate", "--out", key_file.to_str().expect("UTF-8 path")], &[]);
        let jwk_text = std::fs::read_to_string(&key_file).expect("the generated JWK");
        let secret_id = format!("{name}/signing-key");
        moto.create_secret(&secret_id, &jwk_text);
        std::fs::remove_file(&key_file).expect("remove the key file");

        let runtime =
            LocalRuntimeApi::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/lambda-api"));
        let admin_key = format!("lambda-e2e-admin-{}-{}", std::process::id(), runtime.port);
        let mut env = aws;
        if let Some(url) = options.edge_push_url {
            let token_id = format!("{name}/edge-push-token");
            moto.create_secret(&token_id, EDGE_PUSH_TOKEN);
            env.extend([("NLS_EDGE_PUSH_URLS", url.to_owned()), ("NLS_EDGE_PUSH_TOKEN_SECRET_ID", token_id)]);
        }
        for (variable, value) in secrets {
            let secret_id = format!("{name}/{variable}");
            moto.create_secret(&secret_id, value);
            env.push((variable, secret_id));
        }
        env.extend([
            ("NLS_TABLE_NAME", name.clone()),
            ("NLS_SIGNING_KEY_SECRET_ID", secret_id),
            ("NLS_BOOTSTRAP_ADMIN_KEY", admin_key.clone()),
            ("NLS_LOG", if options.debug_json_logs { "debug" } else { "warn" }.to_owned()),
        ]);
        let mut lambda = Self {
            runtime,
            _moto: moto,
            functions: Vec::new(),
            instances: options.instances.max(1),
            env,
            admin_key,
            signing_jwk: serde_json::from_str(&jwk_text).expect("a JWK"),
            work_dir,
        };
        lambda.start_again();
        lambda
    }

    /// The function's DynamoDB table and the AWS environment that reaches it (moto), for
    /// `nls ... --store dynamodb --table` on the same store.
    pub fn store_env(&self) -> (String, Vec<(&'static str, String)>) {
        let table = self.env.iter().find(|(k, _)| *k == "NLS_TABLE_NAME").map(|(_, v)| v.clone());
        let aws = self.env.iter().filter(|(k, _)| k.starts_with("AWS_")).cloned().collect();
        (table.expect("the table name"), aws)
    }

    fn log_path(&self) -> PathBuf {
        self.work_dir.path().join("functions.log")
    }
}

impl NlsHost for ApiLambda {
    fn endpoint(&self) -> (u16, &str) {
        (self.runtime.port, FUNCTION_URL_PREFIX)
    }
    fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// Stops every function instance: SIGTERM (Lambda's shutdown signal), then SIGKILL.
    fn stop(&mut self) {
        for function in &self.functions {
            let _ = Command::new("kill").arg("-TERM").arg(function.process.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for mut function in self.functions.drain(..) {
            while Instant::now() < deadline && matches!(function.process.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = function.process.kill();
            let _ = function.process.wait();
        }
    }
    fn kill9(&mut self) {
        for mut function in self.functions.drain(..) {
            let _ = function.process.kill();
            let _ = function.process.wait();
        }
    }

    /// Cold-starts the instances, then waits until one answers `/health`.
    fn start_again(&mut self) {
        assert!(self.functions.is_empty(), "still running");
        for _ in 0..self.instances {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open the function log");
            let link = self.runtime.connect_function();
            let process = Command::new(api_lambda_binary())
                .envs(link.env())
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env_remove("AWS_PROFILE")
                .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start nls-api");
            self.functions.push(FunctionInstance { process, _link: link });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health =
                request(self.runtime.port, "GET", &format!("{FUNCTION_URL_PREFIX}/health"), &[], b"");
            if health.is_ok_and(|r| r.status == 200) {
                return;
            }
            for function in &mut self.functions {
                if let Ok(Some(status)) = function.process.try_wait() {
                    panic!("nls-api exited during init: {status}\n{}", self.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "nls-api did not answer /health within 30 s\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    fn private_signing_jwk(&self) -> Value {
        self.signing_jwk.clone()
    }
}

impl Drop for ApiLambda {
    fn drop(&mut self) {
        self.kill9();
    }
}
