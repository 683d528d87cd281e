//! End to end: the real `nls-renewals` binary under cargo-lambda's local Runtime API, against
//! moto (DynamoDB and SES), invoked with EventBridge's scheduled event as the schedule would.

#[path = "../../aws/tests/moto_support/mod.rs"]
mod moto_support;

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use moto_support::MotoServer;
use nls_core::issuing::{LicenseTerms, new_id, new_license};
use nls_core::model::Customer;
use nls_core::ports::{UnitOfWork, Write};

const SENDER: &str = "licenses@nectar.example";

/// Kills the child when the test ends, passing or not.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_cargo_lambda() -> PathBuf {
    if let Ok(path) = std::env::var("NLS_CARGO_LAMBDA") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|dirs| std::env::split_paths(&dirs).collect::<Vec<_>>())
        .map(|dir| dir.join("cargo-lambda"));
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/cargo-lambda");
    on_path.chain([venv]).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("cargo-lambda not found: set NLS_CARGO_LAMBDA, put it on PATH, or `.venv/bin/pip install cargo-lambda`")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("ephemeral port").port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One Lambda Invoke of the function: (status, raw response body).
fn invoke(port: u16, payload: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the runtime emulator");
    stream.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    write!(
        stream,
        "POST /2015-03-31/functions/_/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn ses_messages_to(server: &MotoServer, to: &str) -> usize {
    let data = server.data_json();
    let messages = data["ses"]["Message"].as_array().cloned().unwrap_or_default();
    messages.iter().filter(|m| m["destinations"]["ToAddresses"][0] == to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_renewals_lambda_sends_a_due_reminder_once() {
    // GIVEN a license expiring in 7 days on moto, and a verified sender
    let server = MotoServer::shared();
    let table = moto_support::fresh_table().await;
    let sdk_config = server.sdk_config().await;
    let _ =
        aws_sdk_sesv2::Client::new(&sdk_config).create_email_identity().email_identity(SENDER).send().await;
    let now = Utc::now();
    let recipient = format!("{}@customer.example", table.table);
    let customer = Customer {
        id: new_id("cus"),
        name: "Ana".to_owned(),
        email: recipient.clone(),
        stripe_customer_id: None,
        reminders_opt_out: false,
        created_at: now,
        updated_at: now,
    };
    let terms = LicenseTerms {
        expires_at: Some(now + chrono::Duration::days(7) - chrono::Duration::minutes(1)),
        ..LicenseTerms::default()
    };
    let license = new_license(&customer.id, terms, now);
    table
        .store
        .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license)])
        .await
        .expect("seeded");

    // AND the real binary polling the local Runtime API
    let runtime_port = free_port();
    let _runtime = ChildGuard(
        Command::new(find_cargo_lambda())
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &runtime_port.to_string(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cargo lambda watch"),
    );
    wait_for_port(runtime_port, "cargo lambda watch");
    let _function = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_nls-renewals"))
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{runtime_port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_ENDPOINT_URL", &server.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .env("NLS_TABLE_NAME", &table.table)
            .env("NLS_SENDER_ADDRESS", SENDER)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nls-renewals"),
    );
    let scheduled_event = std::fs::read_to_string(format!(
        "{}/tests/fixtures/scheduled_event.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");

    // WHEN the schedule fires twice
    let (status, first) = invoke(runtime_port, &scheduled_event);
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).expect("a run summary");
    assert_eq!(first["sent"], 1, "{first}");
    let (status, second) = invoke(runtime_port, &scheduled_event);
    assert_eq!(status, 200, "{second}");
    let second: serde_json::Value = serde_json::from_str(&second).expect("a run summary");
    assert_eq!((&second["sent"], &second["already_sent"]), (&0.into(), &1.into()), "{second}");

    // THEN moto's SES holds exactly one reminder
    assert_eq!(ses_messages_to(server, &recipient), 1);
}
