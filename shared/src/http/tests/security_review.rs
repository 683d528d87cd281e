//! Regression tests for the defects of the security review (issue 19) that the router shows:
//! unbounded license terms, panics, degraded receipts, client text sizes, usage for stopped
//! licenses, oversized API key ids and the forwarded client address.

use super::*;
use crate::issuing::issue_key;

const HUGE_DAYS: u32 = u32::MAX;

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

#[tokio::test]
async fn license_terms_out_of_range_are_refused_with_invalid_request() {
    let h = harness();
    let customer =
        h.admin("POST", "/v1/customers", Some(json!({"name": "Acme", "email": "ops@acme.test"}))).await;
    let customer_id = customer["customer"]["id"].clone();
    for terms in [
        json!({"offline_days": HUGE_DAYS}),
        json!({"grace_days": HUGE_DAYS}),
        json!({"grace_days": 3651}),
        json!({"expires_at": "2200-01-01T00:00:00Z"}),
        json!({"expires_at": "1969-12-31T23:59:59Z"}),
    ] {
        let mut body = terms.clone();
        body["customer_id"] = customer_id.clone();
        let (status, answer) = h.call("POST", "/v1/licenses", Some(BOOTSTRAP), Some(body)).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{terms}"
        );
    }
    let (id, key) = h.license(json!({"offline_days": 3650, "grace_days": 3650})).await;
    assert_eq!(h.validate(json!({"key": key})).await["code"], "VALID");
    for patch in [json!({"offline_days": HUGE_DAYS}), json!({"expires_at": "9999-01-01T00:00:00Z"})] {
        let (status, answer) =
            h.call("PATCH", &format!("/v1/licenses/{id}"), Some(BOOTSTRAP), Some(patch)).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    }
    let renew = json!({"expires_at": "2200-06-01T00:00:00Z"});
    let (status, answer) =
        h.call("POST", &format!("/v1/licenses/{id}/renew"), Some(BOOTSTRAP), Some(renew)).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

/// Issue 19 item 1: a license with `grace_days` or `offline_days` of 4294967295 made every
/// validation panic (date overflow) and the connection drop. Records (and keys) made before
/// the bounds may still hold such terms.
#[tokio::test]
async fn a_stored_license_with_huge_terms_validates_without_panicking() {
    let h = harness();
    let (id, _) = h.license(json!({"expires_at": "2027-06-01T00:00:00Z"})).await;
    let stored = h.store.inner.get_license(&id).await.unwrap().unwrap();
    let legacy = License {
        offline_days: HUGE_DAYS,
        grace_days: HUGE_DAYS,
        version: stored.version + 1,
        ..stored.clone()
    };
    let write = Write::UpdateLicense { license: legacy.clone(), expected_version: stored.version };
    h.store.inner.commit(None, vec![write]).await.unwrap();
    let key = issue_key(&h.ring, &legacy, h.state.now()).unwrap();
    let answer = h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    assert_eq!(answer["code"], "VALID", "{answer}");
    let receipt = crate::receipt::verify_receipt(&h.ring, answer["receipt"].as_str().unwrap(), &key).unwrap();
    assert!(receipt.expires_at > h.state.now());
    // Past its expiry the huge grace never ends: IN_GRACE, not a panic.
    h.clock.set(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "d1"})).await["code"], "IN_GRACE");
}

/// A panic in a handler is answered with the standard 500 body and the service goes on.
#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_next_request_works() {
    let h = harness();
    let (_, key) = h.license(json!({})).await;
    h.store.snapshots_panic.store(true, Ordering::SeqCst);
    let body = Body::from(json!({"key": key}).to_string());
    let (status, answer, headers) = h.raw("POST", "/v1/licenses/validate", None, body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer, json!({"error": {"code": "internal_error", "message": "internal error"}}));
    assert_eq!(headers["x-content-type-options"], "nosniff", "the guard's headers are still set");
    h.store.snapshots_panic.store(false, Ordering::SeqCst);
    assert_eq!(h.validate(json!({"key": key})).await["code"], "VALID");
    let metrics = h.call("GET", "/metrics", None, None).await;
    assert_eq!(metrics.0, StatusCode::OK);
}

/// Issue 19 item 3: with the store down the origin decided from the key alone (revocation,
/// suspension and seats ignored) and still signed a receipt good for offline + grace days.
#[tokio::test]
async fn a_degraded_answer_carries_no_receipt() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    h.admin("POST", &format!("/v1/licenses/{id}/suspend"), None).await;
    h.clock.advance(Duration::seconds(10)); // past the snapshot cache
    h.store.snapshots_unavailable.store(true, Ordering::SeqCst);
    let answer = h.validate(json!({"key": key, "deployment_id": "d1"})).await;
    assert_eq!(
        (answer["degraded"].as_bool(), answer["valid"].as_bool()),
        (Some(true), Some(true)),
        "{answer}"
    );
    assert!(answer["receipt"].is_null(), "a degraded answer signed a receipt: {answer}");
    h.store.snapshots_unavailable.store(false, Ordering::SeqCst);
    assert_eq!(h.validate(json!({"key": key})).await["code"], "SUSPENDED");
}

/// Issue 19 item 5: fingerprints and app versions had no bound (~60 KB each filled a
/// license's seats item on DynamoDB).
#[tokio::test]
async fn fingerprint_and_app_version_are_capped_at_256_characters() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    let at_limit = "é".repeat(256);
    let over = "x".repeat(257);
    let ok = h.validate(json!({"key": key, "deployment_id": "d1", "fingerprint": at_limit})).await;
    assert_eq!(ok["code"], "VALID");
    let heartbeat = json!({"key": key, "deployment_id": "d1", "app_version": at_limit});
    assert_eq!(h.call("POST", "/v1/heartbeat", None, Some(heartbeat)).await.0, StatusCode::OK);
    let refused = [
        ("/v1/licenses/validate", None, json!({"key": key, "deployment_id": "d2", "fingerprint": over})),
        ("/v1/heartbeat", None, json!({"key": key, "deployment_id": "d1", "app_version": over})),
        (&format!("/v1/licenses/{id}/offline-file") as &str, Some(BOOTSTRAP), json!({"fingerprint": over})),
    ];
    for (path, auth, body) in refused {
        let (status, answer) = h.call("POST", path, auth, Some(body)).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{path}"
        );
    }
    let seats = h.store.inner.list_deployments(&id).await.unwrap();
    assert!(seats.iter().all(|d| d.deployment_id != "d2"), "a refused validation took a seat");
}

/// Issue 19 item 7: usage was accepted (and counted) for revoked and suspended licenses.
#[tokio::test]
async fn usage_is_refused_for_suspended_and_revoked_licenses() {
    let h = harness();
    let (id, key) = h.license(json!({})).await;
    let usage = |batch: &str| {
        json!({"key": key, "deployment_id": "d1", "batch_id": batch,
            "records": [{"metric": "runs", "value": 1, "at": "2026-11-30T11:00:00Z"}]})
    };
    assert_eq!(h.call("POST", "/v1/usage", None, Some(usage("b1"))).await.0, StatusCode::ACCEPTED);
    h.admin("POST", &format!("/v1/licenses/{id}/suspend"), None).await;
    let (status, answer) = h.call("POST", "/v1/usage", None, Some(usage("b2"))).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("license_suspended")), "{answer}");
    h.admin("DELETE", &format!("/v1/licenses/{id}"), None).await;
    let (status, answer) = h.call("POST", "/v1/usage", None, Some(usage("b3"))).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("license_revoked")), "{answer}");
    let month = h.store.inner.usage_counters(&id, "2026-11").await.unwrap();
    assert_eq!(month.get("runs"), Some(&1), "only the batch sent while active counts");
}

/// Issue 19 item 7: an API key id over 2 KB reached the store (a 503 on DynamoDB).
#[tokio::test]
async fn an_oversized_api_key_id_is_invalid_credentials() {
    let h = harness();
    let token = format!("nls_ak_{}_0123abcd", "x".repeat(2100));
    let (status, answer) = h.call("GET", "/v1/customers", Some(&token), None).await;
    assert_eq!((status, error_code(&answer)), (StatusCode::UNAUTHORIZED, Some("invalid_credentials")));
}

/// Issue 19 item 7: behind a trusted proxy the leftmost `X-Forwarded-For` entry, which the
/// client writes, was taken as the client's address.
#[tokio::test]
async fn the_rightmost_forwarded_for_entry_is_the_client() {
    let h = harness_with(HttpConfig { trust_forwarded_for: true, ..HttpConfig::default() });
    let (id, key) = h.license(json!({})).await;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/licenses/validate")
        .header("content-type", "application/json")
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
        .body(Body::from(json!({"key": key}).to_string()))
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let history = h.admin("GET", &format!("/v1/licenses/{id}/validations"), None).await;
    assert_eq!(history["items"][0]["client_ip"], "198.51.100.7", "{history}");
}

#[tokio::test]
async fn create_and_renew_refuse_the_same_past_expiry_with_the_same_code() {
    let h = harness();
    let customer =
        h.admin("POST", "/v1/customers", Some(json!({"name": "Acme", "email": "ops@acme.test"}))).await;
    let (id, _) = h.license(json!({})).await;
    let now = h.clock.now();
    for expires_at in [now - Duration::days(1), now, now - Duration::milliseconds(1)] {
        let create = json!({"customer_id": customer["customer"]["id"], "expires_at": expires_at});
        let (created, created_answer) = h.call("POST", "/v1/licenses", Some(BOOTSTRAP), Some(create)).await;
        let renew = json!({"expires_at": expires_at});
        let (renewed, renewed_answer) =
            h.call("POST", &format!("/v1/licenses/{id}/renew"), Some(BOOTSTRAP), Some(renew)).await;
        assert_eq!(
            (created, error_code(&created_answer)),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
        assert_eq!(
            (renewed, error_code(&renewed_answer)),
            (created, error_code(&created_answer)),
            "{expires_at}"
        );
    }
    let soon = now + Duration::seconds(1);
    let create = json!({"customer_id": customer["customer"]["id"], "expires_at": soon});
    let (status, answer) = h.call("POST", "/v1/licenses", Some(BOOTSTRAP), Some(create)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}
