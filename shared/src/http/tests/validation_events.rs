//! Validation events at the origin (issue 12): an edge's batch counted once, in the stats,
//! the history (repeat filter) and the daily aggregates; the origin's own answers counted in
//! the same aggregates; compliance flags; the forwarded client address.

use super::*;
use crate::validation_stats::DistinctKind;

impl Harness {
    /// An API key with `scopes`; returns its token.
    async fn api_key(&self, scopes: &[&str]) -> String {
        let created = self.admin("POST", "/v1/api-keys", Some(json!({"name": "k", "scopes": scopes}))).await;
        created["secret"].as_str().expect("shown once").to_owned()
    }

    async fn ship(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", "/v1/internal/validation-events", Some(token), Some(body)).await
    }
}

fn event(license_id: &str, fingerprint: &str, ip: &str, code: &str, at: Timestamp) -> Value {
    json!({"license_id": license_id, "deployment_id": "d1", "fingerprint": fingerprint,
           "client_ip": ip, "country": "DE", "code": code, "at": at, "edge": "FRA"})
}

#[tokio::test]
async fn an_edge_batch_counts_once_in_stats_history_and_aggregates() {
    let h = harness();
    let (id, _) = h.license(json!({"max_deployments": 2})).await;
    let edge = h.api_key(&["edge"]).await;
    let now = h.clock.now();
    // 100 events: 10 fingerprints × 10 identical validations within a minute.
    let events: Vec<Value> =
        (0..100).map(|i| event(&id, &format!("fp-{}", i % 10), "198.51.100.7", "VALID", now)).collect();
    let body = json!({"batch_id": "veb-1", "dropped": 3, "events": events});
    let (status, first) = h.ship(&edge, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["duplicate"], false);
    let (_, replay) = h.ship(&edge, body).await;
    assert_eq!(replay["duplicate"], true, "a retried batch is counted once");

    let stats = h.admin("GET", "/v1/stats", None).await;
    assert_eq!(stats["edge_validations_by_code"]["VALID"], 100);
    assert_eq!(stats["validations_by_code"]["VALID"], 100, "edge traffic is in the stats");
    // The history keeps identical validations once a minute: 10 fingerprints → 10 entries.
    let history = h.admin("GET", &format!("/v1/licenses/{id}/validations?limit=1000"), None).await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 10, "{history}");
    assert!(items.iter().all(|e| e["client_ip"] == "198.51.100.7"));

    let aggregate = h.store.validation_day_aggregate(&id, now.date_naive()).await.unwrap().unwrap();
    assert_eq!(aggregate.by_code.get("VALID"), Some(&100));
    assert_eq!(aggregate.distinct_count(DistinctKind::Fingerprint), 10);
    // 10 fingerprints > 2 seats × 3: flagged, with the evidence.
    let compliance = h.admin("GET", &format!("/v1/licenses/{id}/compliance"), None).await;
    let day = &compliance["items"][0];
    assert_eq!(day["flagged"], true, "{compliance}");
    assert_eq!(day["flags"][0]["kind"], "too_many_fingerprints");
    assert_eq!(day["flags"][0]["observed"], 10);
    assert_eq!(day["evidence"]["distinct"]["client_ip"]["top"][0]["value"], "198.51.100.7");
    let fleet = h.admin("GET", "/v1/compliance?flagged=true", None).await;
    assert_eq!(fleet["items"][0]["license_id"], id.as_str());
}

#[tokio::test]
async fn the_origins_own_validations_join_the_same_aggregates_once() {
    let h = harness();
    let (id, key) = h.license(json!({"max_deployments": 1})).await;
    h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    for _ in 0..3 {
        let refused = h.validate(json!({"key": key, "deployment_id": "d2"})).await;
        assert_eq!(refused["code"], "TOO_MANY_DEPLOYMENTS");
    }
    h.state.flush_validation_log().await.unwrap();
    assert!(
        h.store.validation_day_aggregate(&id, h.clock.now().date_naive()).await.unwrap().is_none(),
        "not written per request: only once a batch is due"
    );
    h.clock.advance(Duration::seconds(10));
    h.state.flush_validation_log().await.unwrap();
    h.state.flush_validation_log().await.unwrap();
    let aggregate = h.store.validation_day_aggregate(&id, h.clock.now().date_naive()).await.unwrap().unwrap();
    assert_eq!(aggregate.validations(), 4, "each answer once: {aggregate:?}");
    let compliance = h.admin("GET", &format!("/v1/licenses/{id}/compliance"), None).await;
    let kinds: Vec<&str> = compliance["items"][0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["repeated_too_many_deployments"], "{compliance}");
}

#[tokio::test]
async fn only_the_edge_scope_may_ship_events_and_bad_events_are_400() {
    let h = harness();
    let (id, _) = h.license(json!({})).await;
    let now = h.clock.now();
    let ok = json!({"batch_id": "b", "events": [event(&id, "f", "10.0.0.1", "VALID", now)]});
    let read = h.api_key(&["read"]).await;
    assert_eq!(h.ship(&read, ok.clone()).await.0, StatusCode::FORBIDDEN, "not the legacy read token");
    assert_eq!(h.ship(BOOTSTRAP, ok.clone()).await.0, StatusCode::FORBIDDEN);
    let edge = h.api_key(&["edge"]).await;
    for bad in [
        json!({"batch_id": "b", "events": [event(&id, "f", "not-an-ip", "VALID", now)]}),
        json!({"batch_id": "b", "events": [event(&id, "f", "10.0.0.1", "NOT_A_CODE", now)]}),
        json!({"batch_id": "b", "events": [event(&id, "f", "10.0.0.1", "VALID", now - Duration::days(30))]}),
        json!({"batch_id": "", "events": []}),
        json!({"batch_id": "b", "events": (0..101).map(|_| event(&id, "f", "10.0.0.1", "VALID", now)).collect::<Vec<_>>()}),
    ] {
        let (status, answer) = h.ship(&edge, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    }
    assert_eq!(h.ship(&edge, ok).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_forwarded_client_address_is_trusted_only_with_the_edge_token() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    let edge = h.api_key(&["edge"]).await;
    let read = h.api_key(&["read"]).await;
    let send = |token: Option<String>, ip: &'static str, fingerprint: &'static str| {
        let mut req = Request::builder()
            .method("POST")
            .uri("/v1/licenses/validate")
            .header("content-type", "application/json")
            .header("x-nls-client-ip", ip);
        if let Some(t) = token {
            req = req.header("x-nls-edge-token", t);
        }
        let mut req = req
            .body(Body::from(
                json!({"key": key, "deployment_id": "d1", "fingerprint": fingerprint}).to_string(),
            ))
            .unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
        h.app.clone().oneshot(req)
    };
    assert_eq!(send(Some(edge.clone()), "203.0.113.9", "a").await.unwrap().status(), StatusCode::OK);
    assert_eq!(send(None, "203.0.113.66", "b").await.unwrap().status(), StatusCode::OK);
    assert_eq!(send(Some(read), "203.0.113.67", "c").await.unwrap().status(), StatusCode::OK);
    assert_eq!(send(Some("nls_ak_x_y".into()), "203.0.113.68", "d").await.unwrap().status(), StatusCode::OK);
    let history = h.admin("GET", &format!("/v1/licenses/{id}/validations"), None).await;
    let seen: std::collections::BTreeMap<String, String> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["fingerprint"].as_str().unwrap().to_owned(), e["client_ip"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(seen["a"], "203.0.113.9", "the edge's caller");
    for forged in ["b", "c", "d"] {
        assert_eq!(seen[forged], "127.0.0.1", "a header without the edge token is ignored ({forged})");
    }
}

#[tokio::test]
async fn own_validations_are_written_in_batches_and_kept_through_a_failed_write() {
    let h = harness();
    let licenses = crate::validation_stats::MAX_EVENTS_PER_BATCH + 20; // two batches
    let mut validated = Vec::new();
    for _ in 0..licenses {
        let (id, key) = h.license(json!({"max_deployments": 2})).await;
        for _ in 0..2 {
            h.validate(json!({"key": key, "deployment_id": "d1", "fingerprint": "f1"})).await;
        }
        validated.push((id, key));
    }
    h.store.stats_writes_unavailable.store(true, Ordering::SeqCst);
    assert!(h.state.flush_validation_events().await.is_err(), "the store is down");
    h.store.stats_writes_unavailable.store(false, Ordering::SeqCst);
    // Counted after the failure: joins what was put back.
    let (first_id, first_key) = &validated[0];
    h.validate(json!({"key": first_key, "deployment_id": "d1", "fingerprint": "f1"})).await;

    assert_eq!(h.state.flush_validation_events().await.unwrap(), 2 * licenses + 1);
    assert_eq!(h.state.flush_validation_events().await.unwrap(), 0, "nothing twice");
    let today = h.clock.now().date_naive();
    for (id, _) in &validated {
        let aggregate = h.store.validation_day_aggregate(id, today).await.unwrap().unwrap();
        let expected = if id == first_id { 3 } else { 2 };
        assert_eq!(aggregate.validations(), expected, "{aggregate:?}");
        assert_eq!(aggregate.distinct[&DistinctKind::Fingerprint].distinct, 1, "{aggregate:?}");
    }
    let series = h.state.validation_events().metric_series();
    let dropped = series.iter().find(|(name, _, _)| *name == "nls_validation_events_dropped_total");
    assert_eq!(dropped.map(|(_, _, n)| *n), Some(0), "none dropped");
}
