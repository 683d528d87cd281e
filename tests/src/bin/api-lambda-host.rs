//! `api-lambda-host`: the `api` Lambda as the Rust tests run it ([`ApiLambda`]: the release
//! `nls-api` under cargo-lambda's Runtime API emulator, on DynamoDB in moto), served over HTTP
//! by a [`FunctionUrlFront`], for tools that are not Rust tests (tests/schemathesis/run.sh).
//!
//! Prints `base_url=<URL>` and `admin_key=<bootstrap admin key>` on stdout once the function
//! answers `/health`, then serves until its stdin closes; it then stops everything it started
//! and writes the function's log to stderr. Closing stdin, rather than a signal, is the stop:
//! a caller that dies closes it too, so nothing outlives the caller.

use std::io::Write;

use nls_tests::api_lambda::ApiLambda;
use nls_tests::function_url_front::FunctionUrlFront;
use nls_tests::nls_host::{HostOptions, NlsHost};

fn main() {
    let mut lambda = ApiLambda::start("host", HostOptions::default());
    let (emulator_port, _) = lambda.endpoint();
    let front = FunctionUrlFront::start(emulator_port);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "base_url=http://127.0.0.1:{}", front.port).expect("write stdout");
    writeln!(stdout, "admin_key={}", lambda.admin_key()).expect("write stdout");
    stdout.flush().expect("flush stdout");
    drop(stdout);

    // Waits for end of input; any bytes sent meanwhile are ignored.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    lambda.stop();
    eprint!("{}", lambda.log_text());
}
