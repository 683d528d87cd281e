//! The alert rules (infra/prometheus) and the Grafana dashboard (infra/grafana) query the
//! metrics the real `nls serve` exposes: every metric name and every route, code, outcome and
//! bucket they select on is read back from a live `/metrics` after some traffic, and
//! `promtool check metrics` accepts the exposition. A renamed metric or route fails here
//! instead of silently never alerting.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use nls_tests::http_client::request;
use nls_tests::nls_host::NlsHost;
use nls_tests::nls_server::{NlsServer, TempDir};
use serde_json::json;

/// Label names whose values the queries pick and the server must produce verbatim. (`status`
/// is one of five fixed classes, `job` and `instance` come from Prometheus.)
const CHECKED_LABELS: [&str; 4] = ["route", "code", "outcome", "le"];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

/// The PromQL in the rules file and the dashboard, as (metric, its matchers).
fn selectors(queries: &str) -> Vec<(String, Vec<Matcher>)> {
    let bytes = queries.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = queries[at..].find("nls_") {
        let start = at + offset;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            start + queries[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(0);
        at = end.max(start + 4);
        if preceded_by_word {
            continue;
        }
        let name = queries[start..end].to_owned();
        let mut matchers = Vec::new();
        if queries[end..].starts_with('{') {
            let close = end + queries[end..].find('}').expect("a closing brace");
            for part in queries[end + 1..close].split(',') {
                let (label, rest) = part.split_at(part.find(['=', '!']).expect("a label matcher"));
                let op_len = if rest.starts_with("=~") || rest.starts_with("!=") { 2 } else { 1 };
                let value = rest[op_len..].trim().trim_matches('"');
                matchers.push((label.trim().to_owned(), rest[..op_len].to_owned(), value.to_owned()));
            }
        }
        found.push((name, matchers));
    }
    found
}

fn family(name: &str) -> &str {
    ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[test]
fn rules_and_dashboard_query_what_nls_serve_exposes() {
    let dir = TempDir::new("ops-metrics");
    let server = NlsServer::start_with_env(
        dir.path(),
        &["--renewals-every-secs", "0"],
        &[("NLS_STRIPE_WEBHOOK_SECRET", "whsec_ops_metric_names")],
        "warn",
    );
    let customer =
        server.admin("POST", "/v1/customers", Some(&json!({"name": "Acme", "email": "ops@acme.test"})));
    let license =
        server.admin("POST", "/v1/licenses", Some(&json!({"customer_id": customer["customer"]["id"]})));
    let answer = server.validate(&json!({"key": license["key"], "deployment_id": "host-1"}));
    assert_eq!(answer["code"], "VALID", "{answer}");
    // An unsigned delivery: a 4xx on the webhook route, as a misconfigured secret would give.
    let webhook = request(server.port, "POST", "/v1/webhooks/stripe", &[], b"{}").expect("webhook");
    assert_eq!(webhook.status / 100, 4, "{}", webhook.text());

    let metrics = request(server.port, "GET", "/metrics", &[], b"").expect("GET /metrics").text();
    let families: BTreeSet<&str> =
        metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();

    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("infra/grafana/nls-origin.json")).expect("the dashboard is JSON");
    let panel_queries = dashboard["panels"].as_array().expect("panels").iter().flat_map(|panel| {
        panel["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str())
    });
    let queries = panel_queries.fold(repo_file("infra/prometheus/nls-rules.yml"), |all, q| all + "\n" + q);
    let selectors = selectors(&queries);
    assert!(selectors.len() > 20, "too few queries found: {selectors:?}");
    let mut missing = Vec::new();
    for (name, matchers) in &selectors {
        if !families.contains(family(name)) {
            missing.push(format!("metric {name}"));
            continue;
        }
        for (label, op, value) in matchers {
            if op != "=" || !CHECKED_LABELS.contains(&label.as_str()) {
                continue;
            }
            let wanted = format!("{label}=\"{value}\"");
            let produced = samples
                .iter()
                .any(|s| s.split(['{', ' ']).next() == Some(name.as_str()) && s.contains(wanted.as_str()));
            if !produced {
                missing.push(format!("{name}{{{wanted}}}"));
            }
        }
    }
    assert!(missing.is_empty(), "queried but not in nls serve's /metrics: {missing:?}\n{metrics}");

    let promtool = std::env::var("NLS_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e} (Debian package prometheus; tests/run.sh installs it)"));
    check.stdin.take().expect("stdin").write_all(metrics.as_bytes()).expect("write the metrics");
    let checked = check.wait_with_output().expect("promtool check metrics");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn selectors_are_read_from_promql() {
    let found = selectors(
        r#"sum(rate(nls_http_requests_total{route="/v1/x",status=~"4xx|5xx"}[5m])) / up{job="nls"} + nls:rec_nls_y"#,
    );
    let expected = vec![(
        "nls_http_requests_total".to_owned(),
        vec![
            ("route".to_owned(), "=".to_owned(), "/v1/x".to_owned()),
            ("status".to_owned(), "=~".to_owned(), "4xx|5xx".to_owned()),
        ],
    )];
    assert_eq!(found, expected);
}
