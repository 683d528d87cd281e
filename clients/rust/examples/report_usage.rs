//! A reporting process for the crash test (tests/against_server.rs), and a small example of
//! usage reporting.
//!
//! ```text
//! report_usage --server URL --key KEY --jwks-file FILE --data-dir DIR [--records N] [--flush-every K] [--drain] [--validate]
//! ```
//!
//! With `--validate` it first validates and sends a heartbeat, as an app does at start-up
//! (printing `validated <outcome>`), so the data dir holds a receipt and a lease for
//! `nectar-license status` (the edge tests use it as the app). Records `N` units of `api_calls`, one at a time, printing `recorded <i>` after each
//! `record_usage` returned (so the record is on disk), and flushes to the server every `K`
//! records. With `--drain` it records nothing and sends whatever the spool holds, then prints
//! `drained <pending>`.

use std::io::Write;

use nls_client::{ClientConfig, LicenseClient};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut server, mut key, mut jwks_file, mut data_dir) = (None, None, None, None);
    let (mut records, mut flush_every, mut drain, mut validate) = (0u64, 20u64, false, false);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| fail(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--server" => server = Some(value()),
            "--key" => key = Some(value()),
            "--jwks-file" => jwks_file = Some(value()),
            "--data-dir" => data_dir = Some(value()),
            "--records" => records = value().parse().unwrap_or_else(|_| fail("--records: a number")),
            "--flush-every" => {
                flush_every = value().parse().unwrap_or_else(|_| fail("--flush-every: a number"))
            }
            "--drain" => drain = true,
            "--validate" => validate = true,
            other => fail(&format!("unknown argument {other}")),
        }
    }
    let need = |v: Option<String>, name: &str| v.unwrap_or_else(|| fail(&format!("{name} is required")));
    let jwks =
        std::fs::read_to_string(need(jwks_file, "--jwks-file")).unwrap_or_else(|e| fail(&e.to_string()));
    let config = ClientConfig::new(
        &need(server, "--server"),
        &need(key, "--key"),
        &jwks,
        need(data_dir, "--data-dir"),
    );
    let client = LicenseClient::open(config).unwrap_or_else(|e| fail(&e.to_string()));
    let out = std::io::stdout();
    if validate {
        let outcome = client.validate_now();
        let beat = client.heartbeat_now();
        writeln!(out.lock(), "validated {outcome:?} heartbeat {beat:?}").ok();
    }
    if drain {
        let report = client.flush_usage();
        if let Some(why) = report.stopped {
            fail(&format!("drain stopped: {why}"));
        }
        let pending = client.pending_usage().map(|p| p.len()).unwrap_or(usize::MAX);
        writeln!(out.lock(), "drained {pending} sent={}", report.records_sent).ok();
        return;
    }
    for i in 1..=records {
        client.record_usage("api_calls", 1).unwrap_or_else(|e| fail(&e.to_string()));
        writeln!(out.lock(), "recorded {i}").ok();
        out.lock().flush().ok();
        if i % flush_every.max(1) == 0 {
            let report = client.flush_usage();
            writeln!(out.lock(), "flushed {} {:?}", report.records_sent, report.stopped).ok();
        }
    }
}

fn fail(why: &str) -> ! {
    eprintln!("report_usage: {why}");
    std::process::exit(2)
}
