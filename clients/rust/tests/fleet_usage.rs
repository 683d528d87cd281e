//! Fleet-wide usage against a real `nls serve` (`cargo build -p nls` first): two deployments of
//! one license share its monthly limit. Each client's limit check counts the fleet's total
//! from the last answer, plus what it delivered since and what it has spooled, so the call
//! that would overshoot is refused locally, before anything is asked of the server.

mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use nls_client::{AnswerOutcome, ClientConfig, LicenseClient};
use support::{Server, temp_dir};
use tower::ServiceExt;

fn client(server: &Server, key: &str, jwks: &str, tag: &str) -> LicenseClient {
    let mut config = ClientConfig::new(&server.url, key, jwks, temp_dir(tag));
    config.request_timeout = Duration::from_secs(5);
    LicenseClient::open(config).unwrap()
}

fn validate(client: &LicenseClient) {
    let outcome = client.validate_now();
    assert!(matches!(outcome, AnswerOutcome::Good { .. }), "{outcome:?}");
}

#[test]
fn two_deployments_reporting_60_of_100_each_are_refused_locally_on_the_third_call() {
    let mut server = Server::start(3600);
    let (license_id, key) = server.issue_license(serde_json::json!({"limits": {"runs": 100}}));
    let jwks = server.jwks();
    let a = client(&server, &key, &jwks, "fleet-a");
    let b = client(&server, &key, &jwks, "fleet-b");
    assert_ne!(a.deployment_id(), b.deployment_id(), "two deployments, two seats");
    validate(&a);
    validate(&b);
    let view = a.fleet_usage().expect("the answer carries the fleet's usage");
    assert_eq!(view.metrics["runs"].used, 0);
    assert_eq!(view.metrics["runs"].limit, 100);

    // Each reports 60: it fits what each knew (the fleet had used nothing).
    for c in [&a, &b] {
        assert!(c.check_limit("runs", 60).allowed);
        c.record_usage("runs", 60).unwrap();
    }
    // Spooled, not yet delivered, counts: 50 more would pass 100.
    let check = a.check_limit("runs", 50);
    assert_eq!((check.allowed, check.used), (false, 60), "{check:?}");

    for c in [&a, &b] {
        let report = c.flush_usage();
        assert_eq!((report.batches_sent, report.stopped.as_deref()), (1, None), "{report:?}");
    }
    assert_eq!(server.usage_counter(&license_id, "runs"), 120);
    // Delivered, but no answer has shown it yet: still counted, so 41 more does not fit.
    let standing = a.usage_standing("runs");
    assert_eq!((standing.fleet_used, standing.delivered_unconfirmed, standing.spooled), (Some(0), 60, 0));
    assert!(a.check_limit("runs", 40).allowed && !a.check_limit("runs", 41).allowed);

    // The next check-in (a second later, so the snapshot is certainly newer than both
    // deliveries): each sees the fleet's 120 and its own 60 only once.
    std::thread::sleep(Duration::from_millis(1100));
    validate(&a);
    validate(&b);
    for c in [&a, &b] {
        let standing = c.usage_standing("runs");
        assert_eq!((standing.fleet_used, standing.delivered_unconfirmed, standing.used), (Some(120), 0, 120));
    }

    // The third call of either is refused locally, before asking: the server is gone.
    server.kill();
    for c in [&a, &b] {
        let check = c.check_limit("runs", 1);
        assert_eq!((check.allowed, check.used, check.limit), (false, 120, Some(100)), "{check:?}");
    }
    let app = Router::new()
        .route("/runs", get(|| async { "ran" }).layer(b.check_usage_limit("runs")))
        .layer(b.require_valid_license());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (status, body) = runtime.block_on(async {
        let response = app.oneshot(Request::get("/runs").body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    });
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(body.contains("USAGE_LIMIT_EXCEEDED") && body.contains("120 used of 100"), "{body}");
}

#[test]
fn the_fleet_view_survives_a_restart_in_the_signed_cache() {
    let server = Server::start(3600);
    let (_, key) = server.issue_license(serde_json::json!({"limits": {"runs": 100}}));
    let jwks = server.jwks();
    let dir = temp_dir("fleet-restart");
    let open = || {
        let mut config = ClientConfig::new(&server.url, &key, &jwks, &dir);
        config.request_timeout = Duration::from_secs(5);
        LicenseClient::open(config).unwrap()
    };
    let first = open();
    validate(&first);
    first.record_usage("runs", 70).unwrap();
    assert_eq!(first.flush_usage().batches_sent, 1);
    std::thread::sleep(Duration::from_millis(1100));
    validate(&first);
    first.shutdown();
    drop(first);

    // A restart without the server: the cached receipt still carries the fleet's 70.
    let restarted = open();
    let standing = restarted.usage_standing("runs");
    assert_eq!((standing.fleet_used, standing.used), (Some(70), 70), "{standing:?}");
    assert!(!restarted.check_limit("runs", 31).allowed);
}
