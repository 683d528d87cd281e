//! `POST /v1/access-tokens` and the `cloud` grant of licenses (docs/cloud-access.md).

use super::*;
use crate::access_token::{AccessRejection, verify_access_token};

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

fn cloud() -> Value {
    json!({"workflows": {"requests_per_minute": 120, "burst": 10, "monthly_quota": 3}})
}

impl Harness {
    async fn access_token(&self, key: &str, audience: &str) -> (StatusCode, Value) {
        let body = json!({"key": key, "deployment_id": "d1", "audience": audience});
        self.call("POST", "/v1/access-tokens", None, Some(body)).await
    }
}

#[tokio::test]
async fn the_cloud_grant_is_set_shown_replaced_and_removed_through_the_admin_api() {
    let h = harness();
    let (id, _) = h.license(json!({"cloud": cloud()})).await;
    let path = format!("/v1/licenses/{id}");
    assert_eq!(h.admin("GET", &path, None).await["license"]["cloud"], cloud());
    let replaced = json!({"ai": {"requests_per_minute": 60, "burst": 5}});
    let patched = h.admin("PATCH", &path, Some(json!({"cloud": replaced}))).await;
    assert_eq!(patched["license"]["cloud"], replaced);
    assert!(patched["key"].is_null(), "the cloud grant is not in the key: no new key");
    let untouched = h.admin("PATCH", &path, Some(json!({"tier": "pro"}))).await;
    assert_eq!(untouched["license"]["cloud"], replaced, "absent leaves it");
    let removed = h.admin("PATCH", &path, Some(json!({"cloud": null}))).await;
    assert!(removed["license"].get("cloud").is_none(), "{removed}");
    for bad in [
        json!({"cloud": {"Work Flows": {"requests_per_minute": 1, "burst": 1}}}),
        json!({"cloud": {"w": {"requests_per_minute": 0, "burst": 1}}}),
        json!({"cloud": {"w": {"burst": 1}}}),
        json!({"cloud": []}),
    ] {
        let (status, answer) = h.call("PATCH", &path, Some(BOOTSTRAP), Some(bad.clone())).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_valid_license_gets_a_token_for_an_audience_it_has_and_nothing_else() {
    let h = harness();
    let (id, key) = h.license(json!({"cloud": cloud(), "tier": "pro", "features": ["sso"]})).await;
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let token = answer["token"].as_str().unwrap();
    let public = KeyRing::from_jwks(&h.ring.jwks()).unwrap();
    let verified = verify_access_token(&public, token, "workflows", h.clock.now()).unwrap();
    assert_eq!(verified.claims.sub, id);
    assert_eq!(verified.claims.deployment_id, "d1");
    assert_eq!(verified.claims.tier, "pro");
    assert_eq!(verified.claims.rate.burst, 10);
    assert_eq!(answer["expires_at"], json!(verified.expires_at));
    assert_eq!(verified.expires_at - h.clock.now(), Duration::minutes(15));
    assert!(answer.get("warning").is_none());
    assert_eq!(
        verify_access_token(&public, token, "integrations", h.clock.now()).err(),
        Some(AccessRejection::WrongAudience)
    );

    let (status, answer) = h.access_token(&key, "integrations").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("FEATURE_NOT_ENTITLED")));
    let (status, answer) = h.access_token("NLS-not-a-key-00000000", "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::UNAUTHORIZED, Some("invalid_license_key")));
    let (status, answer) = h.access_token(&key, "Not An Audience").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let (_, plain_key) = h.license(json!({})).await;
    let (status, answer) = h.access_token(&plain_key, "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("FEATURE_NOT_ENTITLED")));
}

#[tokio::test]
async fn a_suspended_license_gets_no_new_token_and_one_in_grace_gets_a_warning() {
    let h = harness();
    let (id, key) = h.license(json!({"cloud": cloud()})).await;
    h.admin("POST", &format!("/v1/licenses/{id}/suspend"), None).await;
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("SUSPENDED")));
    h.admin("DELETE", &format!("/v1/licenses/{id}"), None).await;
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("REVOKED")), "{answer}");

    let expires = h.clock.now() + Duration::days(1);
    let (_, key) = h.license(json!({"cloud": cloud(), "expires_at": expires})).await;
    h.clock.advance(Duration::days(3));
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["warning"].as_str().unwrap().contains("grace"), "{answer}");
    h.clock.advance(Duration::days(7));
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::FORBIDDEN, Some("EXPIRED")));
}

#[tokio::test]
async fn the_monthly_quota_counts_the_audience_calls_usage() {
    let h = harness();
    let (_, key) = h.license(json!({"cloud": cloud()})).await;
    assert_eq!(h.validate(json!({"key": key, "deployment_id": "d1"})).await["code"], "VALID");
    let at = h.clock.now() - Duration::minutes(1);
    let usage = |batch_id: &str, value: u64| {
        json!({"key": key, "deployment_id": "d1", "batch_id": batch_id,
               "records": [{"metric": "cloud.workflows.calls", "value": value, "at": at}]})
    };
    assert_eq!(h.call("POST", "/v1/usage", None, Some(usage("b1", 2))).await.0, StatusCode::ACCEPTED);
    h.clock.advance(Duration::seconds(3)); // past the snapshot TTL
    assert_eq!(h.access_token(&key, "workflows").await.0, StatusCode::OK, "2 of 3 used");
    assert_eq!(h.call("POST", "/v1/usage", None, Some(usage("b2", 1))).await.0, StatusCode::ACCEPTED);
    h.clock.advance(Duration::seconds(3));
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::FORBIDDEN, Some("USAGE_LIMIT_EXCEEDED")),
        "{answer}"
    );
    assert!(answer["error"]["message"].as_str().unwrap().contains("3 used of 3"), "{answer}");
}

#[tokio::test]
async fn no_token_while_the_store_is_down() {
    let h = harness();
    let (_, key) = h.license(json!({"cloud": cloud()})).await;
    h.store.snapshots_unavailable.store(true, Ordering::SeqCst);
    let (status, answer) = h.access_token(&key, "workflows").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
}
