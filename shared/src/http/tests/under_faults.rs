//! The router over a store that fails, times out, conflicts and stalls by a seeded schedule
//! (`crate::fault_injection`): the invariants hold and the answers stay in their contract.
//! Seeds come from `NLS_FAULT_SEEDS` (comma-separated) when set, so a failure can be replayed.

use std::collections::BTreeSet;

use super::*;
use crate::fault_injection::{FaultRates, FaultyStore};

struct FaultHarness {
    app: Router,
    store: Arc<FaultyStore>,
    clock: Arc<ManualClock>,
}

fn seeds() -> Vec<u64> {
    match std::env::var("NLS_FAULT_SEEDS") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1, 7, 2026],
    }
}

fn fault_harness(seed: u64) -> FaultHarness {
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new()), seed, FaultRates::NONE));
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()));
    let ring = Arc::new(KeyRing::with_signer(SigningKey::from_seed([9; 32], None), vec![]).unwrap());
    let config = HttpConfig { ip_rate_limit: None, api_key_rate_limit: None, ..HttpConfig::default() };
    let state = AppState::new(AppDeps {
        store: store.clone(),
        key_ring: ring,
        clock: clock.clone(),
        config: config.with_bootstrap_admin_key(BOOTSTRAP),
    });
    FaultHarness { app: router(state), store, clock }
}

impl FaultHarness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: bool,
        body: Option<Value>,
    ) -> (StatusCode, Value, bool) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if auth {
            req = req.header("authorization", format!("Bearer {BOOTSTRAP}"));
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let mut req = req.body(body).unwrap();
        req.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let retry_after = response.headers().contains_key("retry-after");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry_after)
    }

    /// A customer and a license, made with the faults off.
    async fn license(&self, terms: Value) -> (String, String, String) {
        let (_, customer, _) = self
            .call("POST", "/v1/customers", true, Some(json!({"name": "Acme", "email": "ops@acme.test"})))
            .await;
        let mut body = terms;
        body["customer_id"] = customer["customer"]["id"].clone();
        let (status, created, _) = self.call("POST", "/v1/licenses", true, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            customer["customer"]["id"].as_str().unwrap().to_owned(),
            created["license"]["id"].as_str().unwrap().to_owned(),
            created["key"].as_str().unwrap().to_owned(),
        )
    }
}

/// A write answer under faults: success, a documented refusal, or 503 with `Retry-After`.
fn assert_write_answer(what: &str, status: StatusCode, body: &Value, retry_after: bool) {
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}: {body}");
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after, "{what}: a 503 without Retry-After");
        assert_eq!(body["error"]["code"], "unavailable", "{what}: {body}");
    } else {
        assert!(
            status.is_success() || status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND,
            "{what}: {status} {body}"
        );
    }
}

/// Concurrent validations of 40 deployments on a 3-seat license while the store misbehaves:
/// every answer is a 200 (degraded when the store failed it, with no receipt), and no more
/// than 3 seats are ever confirmed or held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validations_under_faults_are_200_degraded_and_never_over_activate() {
    let mut degraded = 0;
    for seed in seeds() {
        let h = Arc::new(fault_harness(seed));
        let (_, license_id, key) = h.license(json!({"max_deployments": 3})).await;
        h.store.set_rates(FaultRates::harsh());
        let mut confirmed = BTreeSet::new();
        for round in 0..5 {
            let mut tasks = Vec::new();
            for d in 0..40 {
                let (h, key) = (h.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    let body = json!({"key": key, "deployment_id": format!("dep-{d}"), "fingerprint": format!("r{round}")});
                    h.call("POST", "/v1/licenses/validate", false, Some(body)).await
                }));
            }
            for task in tasks {
                let (status, answer, _) = task.await.unwrap();
                assert_eq!(status, StatusCode::OK, "seed {seed}: {answer}");
                if answer["degraded"] == true {
                    degraded += 1;
                    assert!(answer["receipt"].is_null(), "seed {seed}: a degraded answer carries a receipt");
                } else if answer["valid"] == true {
                    assert!(answer["receipt"].is_string(), "seed {seed}: {answer}");
                    confirmed.insert(answer["deployment"]["id"].as_str().unwrap().to_owned());
                } else {
                    assert_eq!(answer["code"], "TOO_MANY_DEPLOYMENTS", "seed {seed}: {answer}");
                }
            }
            // Past the snapshot TTL: the next round reads the store again.
            h.clock.advance(Duration::seconds(3));
        }
        assert!(confirmed.len() <= 3, "seed {seed}: {} seats confirmed: {confirmed:?}", confirmed.len());
        h.store.set_enabled(false);
        let live = h.store.inner().list_deployments(&license_id).await.unwrap();
        assert!(live.len() <= 3, "seed {seed}: {} seats held", live.len());
    }
    assert!(degraded > 0, "the schedules degraded no validation");
}

/// With the store down, a validation still answers 200 from the key alone, `degraded: true`,
/// with no receipt.
#[tokio::test]
async fn validation_with_the_store_down_is_degraded_not_5xx() {
    let h = fault_harness(3);
    let (_, _, key) = h.license(json!({"max_deployments": 3})).await;
    h.store.set_rates(FaultRates::down());
    for body in [json!({"key": key}), json!({"key": key, "deployment_id": "new-dep"})] {
        let (status, answer, _) = h.call("POST", "/v1/licenses/validate", false, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!((answer["degraded"].as_bool(), answer["code"].as_str()), (Some(true), Some("VALID")));
        assert!(answer["receipt"].is_null());
    }
    let (status, answer, retry_after) = h.call("GET", "/v1/customers", true, None).await;
    assert_eq!((status, retry_after), (StatusCode::SERVICE_UNAVAILABLE, true), "{answer}");
}

/// Admin writes under faults answer 2xx, 409, 404 or 503 with `Retry-After`, never 500; and
/// no partial commit is visible: every license has its `license.create` audit entry and every
/// such entry its license (both are one commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_writes_under_faults_are_503_with_retry_after_and_commit_whole() {
    for seed in seeds() {
        let h = fault_harness(seed);
        let (customer_id, license_id, _) = h.license(json!({})).await;
        h.store.set_rates(FaultRates::harsh());
        let mut unavailable = 0;
        for i in 0..40 {
            let calls = [
                (
                    "POST",
                    "/v1/customers".to_owned(),
                    Some(json!({"name": format!("c{i}"), "email": "x@acme.test"})),
                ),
                ("POST", "/v1/licenses".to_owned(), Some(json!({"customer_id": customer_id}))),
                ("POST", format!("/v1/licenses/{license_id}/suspend"), None),
                ("POST", format!("/v1/licenses/{license_id}/reactivate"), None),
                ("PATCH", format!("/v1/licenses/{license_id}"), Some(json!({"max_deployments": i + 1}))),
                ("PATCH", format!("/v1/customers/{customer_id}"), Some(json!({"name": format!("n{i}")}))),
            ];
            for (method, path, body) in calls {
                let (status, answer, retry_after) = h.call(method, &path, true, body).await;
                assert_write_answer(&format!("seed {seed}: {method} {path}"), status, &answer, retry_after);
                unavailable += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
            }
        }
        assert!(unavailable > 0, "seed {seed}: no write met a fault: {:?}", h.store.injected());

        h.store.set_enabled(false);
        let store = h.store.inner();
        let licenses = store
            .list_licenses(&LicenseFilter::default(), &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|l| format!("license:{}", l.id))
            .collect::<BTreeSet<_>>();
        let mut created = BTreeSet::new();
        let mut page = PageRequest::first(100);
        loop {
            let got = store.list_audit(&AuditFilter::default(), &page).await.unwrap();
            created
                .extend(got.items.iter().filter(|e| e.action == "license.create").map(|e| e.target.clone()));
            match got.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(licenses, created, "seed {seed}: a license without its audit entry, or the reverse");
    }
}

/// A client that retries each usage batch until it is acknowledged (as the client library
/// does) gets every batch counted exactly once, though some first tries committed and lost
/// their answer.
#[tokio::test]
async fn usage_retried_through_faults_counts_each_batch_once() {
    for seed in seeds() {
        let h = fault_harness(seed);
        let (_, license_id, key) = h.license(json!({})).await;
        h.store.set_rates(FaultRates::harsh());
        let mut duplicates = 0;
        for batch in 0..60 {
            let body = json!({"key": key, "deployment_id": "dep-1", "batch_id": format!("b{batch}"),
                "records": [{"metric": "calls", "value": 5, "at": "2026-11-30T11:00:00Z"}]});
            let mut tries = 0;
            loop {
                tries += 1;
                assert!(tries < 200, "seed {seed}: batch {batch} never acknowledged");
                let (status, answer, retry_after) =
                    h.call("POST", "/v1/usage", false, Some(body.clone())).await;
                if status == StatusCode::ACCEPTED {
                    duplicates += usize::from(answer["duplicate"] == true);
                    break;
                }
                assert_eq!(
                    (status, retry_after),
                    (StatusCode::SERVICE_UNAVAILABLE, true),
                    "seed {seed}: {answer}"
                );
            }
        }
        assert!(duplicates > 0, "seed {seed}: no answer was lost: {:?}", h.store.injected());
        h.store.set_enabled(false);
        let counters = h.store.inner().usage_counters(&license_id, "2026-11").await.unwrap();
        assert_eq!(counters.get("calls"), Some(&300), "seed {seed}: 60 batches of 5");
    }
}
