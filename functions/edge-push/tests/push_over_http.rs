//! The publisher against real local HTTP servers (axum on tokio): what goes on the wire, the
//! retry after a 5xx, a final 4xx, a timeout, and the fan-out to several edges.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::any;
use chrono::{TimeZone, Utc};
use nls_core::lifecycle::LicenseStatus;
use nls_core::ports::{PublishError, StatusPublisher};
use nls_core::validation::StatusSnapshot;
use nls_edge_push::HttpStatusPublisher;

/// What one edge saw: (method, path, authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;
/// (what was seen, the statuses still to answer, the delay before answering).
type EdgeState = (Seen, Arc<Mutex<Vec<u16>>>, Duration);

/// A fake edge that answers `statuses` in turn (then 204) after `delay`.
async fn edge(statuses: Vec<u16>, delay: Duration) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let plan = Arc::new(Mutex::new(statuses));
    let state = (seen.clone(), plan, delay);
    let app = Router::new().fallback(any(
        |State((seen, plan, delay)): State<EdgeState>, req: Request| async move {
            let (parts, body) = req.into_parts();
            let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let auth = parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.path().to_owned(),
                auth.unwrap_or_default(),
                String::from_utf8(body.to_vec()).unwrap(),
            ));
            tokio::time::sleep(delay).await;
            let next = {
                let mut plan = plan.lock().unwrap();
                if plan.is_empty() { 204 } else { plan.remove(0) }
            };
            StatusCode::from_u16(next).unwrap()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app.with_state(state)).await.unwrap() });
    (url, seen)
}

fn snapshot(id: &str) -> StatusSnapshot {
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let mut license = nls_core::issuing::new_license("cus_1", Default::default(), now);
    license.id = id.to_owned();
    license.status = LicenseStatus::Suspended;
    StatusSnapshot {
        license,
        live_deployments: vec!["d1".into()],
        month_usage: Default::default(),
        as_of: now,
    }
}

#[tokio::test]
async fn puts_the_snapshot_json_with_the_token_to_every_edge() {
    let (a, seen_a) = edge(vec![], Duration::ZERO).await;
    let (b, seen_b) = edge(vec![], Duration::ZERO).await;
    let publisher = HttpStatusPublisher::new(&[a, format!("{b}/")], "tok_123").unwrap();
    let pushed = snapshot("lic/1 x");
    publisher.publish(&pushed).await.unwrap();
    for seen in [seen_a, seen_b] {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (method, path, auth, body) = &seen[0];
        assert_eq!((method.as_str(), path.as_str()), ("PUT", "/v1/internal/snapshots/lic%2F1%20x"));
        assert_eq!(auth, "Bearer tok_123");
        let sent: StatusSnapshot = serde_json::from_str(body).unwrap();
        assert_eq!(sent, pushed);
    }
}

#[tokio::test]
async fn a_5xx_is_retried_once_and_a_4xx_is_final() {
    let (url, seen) = edge(vec![503], Duration::ZERO).await;
    let publisher = HttpStatusPublisher::new(std::slice::from_ref(&url), "t").unwrap();
    publisher.publish(&snapshot("lic_1")).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2, "retried after the 503");

    let (url, seen) = edge(vec![503, 502], Duration::ZERO).await;
    let publisher = HttpStatusPublisher::new(std::slice::from_ref(&url), "t").unwrap();
    let err = publisher.publish(&snapshot("lic_1")).await.unwrap_err();
    assert!(matches!(err, PublishError::Unavailable { .. }), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 2, "one retry only");

    let (url, seen) = edge(vec![401], Duration::ZERO).await;
    let publisher = HttpStatusPublisher::new(std::slice::from_ref(&url), "wrong").unwrap();
    let err = publisher.publish(&snapshot("lic_1")).await.unwrap_err();
    assert!(matches!(err, PublishError::Rejected { status: 401, .. }), "{err}");
    assert!(!err.to_string().contains("wrong"), "the token is never in an error");
    assert_eq!(seen.lock().unwrap().len(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn a_silent_or_dead_edge_costs_two_short_timeouts_and_spares_the_others() {
    let (slow, _) = edge(vec![], Duration::from_secs(30)).await;
    let (ok, seen_ok) = edge(vec![], Duration::ZERO).await;
    // Nothing listens on a port just released.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let publisher =
        HttpStatusPublisher::with_timeout(&[slow, ok, dead], "t", Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = publisher.publish(&snapshot("lic_1")).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the edges are pushed concurrently; took {took:?}");
    match err {
        PublishError::Several { total: 3, failures } => assert_eq!(failures.len(), 2, "{failures:?}"),
        other => panic!("{other}"),
    }
    assert_eq!(seen_ok.lock().unwrap().len(), 1, "the healthy edge got its push");
}
