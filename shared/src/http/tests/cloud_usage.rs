//! `POST /v1/cloud-usage` (a cloud service meters the calls it allowed) and the configured
//! access-token life (docs/cloud-access.md).

use super::*;

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

impl Harness {
    async fn meter_key(&self) -> String {
        let created =
            self.admin("POST", "/v1/api-keys", Some(json!({"name": "workflows", "scopes": ["meter"]}))).await;
        created["secret"].as_str().expect("shown once").to_owned()
    }

    async fn month_calls(&self, license_id: &str) -> u64 {
        let usage = self.admin("GET", &format!("/v1/licenses/{license_id}/usage"), None).await;
        usage["counters"]["cloud.workflows.calls"].as_u64().unwrap_or(0)
    }

    async fn token_answer(&self, key: &str) -> (StatusCode, Value) {
        let body = json!({"key": key, "deployment_id": "d1", "audience": "workflows"});
        self.call("POST", "/v1/access-tokens", None, Some(body)).await
    }
}

fn batch(batch_id: &str, records: Value) -> Value {
    json!({"batch_id": batch_id, "audience": "workflows", "records": records})
}

#[tokio::test]
async fn a_meter_key_counts_calls_once_per_batch_id_and_the_quota_sees_them() {
    let h = harness();
    let quota = json!({"workflows": {"requests_per_minute": 60, "burst": 10, "monthly_quota": 5}});
    let (a, key_a) = h.license(json!({"cloud": quota})).await;
    let (b, _) = h.license(json!({"cloud": quota})).await;
    let meter = h.meter_key().await;
    let at = h.clock.now() - Duration::minutes(1);
    let first = batch(
        "mb_1",
        json!([{"license_id": a, "calls": 2, "at": at}, {"license_id": b, "calls": 1, "at": at},
               {"license_id": a, "calls": 1, "at": at}, {"license_id": "lic_never_issued", "calls": 9, "at": at}]),
    );
    let (status, answer) = h.call("POST", "/v1/cloud-usage", Some(&meter), Some(first.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer,
        json!({"batch_id": "mb_1", "recorded": 2, "duplicates": 0, "unknown_license_ids": ["lic_never_issued"]})
    );
    // The answer was lost; the service sends the same batch again: nothing more is counted.
    let (status, again) = h.call("POST", "/v1/cloud-usage", Some(&meter), Some(first)).await;
    assert_eq!(
        (status, &again["recorded"], &again["duplicates"]),
        (StatusCode::ACCEPTED, &json!(0), &json!(2))
    );
    assert_eq!((h.month_calls(&a).await, h.month_calls(&b).await), (3, 1));

    // An app's batch with the same id is another batch: the service's ids are namespaced.
    h.validate(json!({"key": key_a, "deployment_id": "d1"})).await;
    let app_usage = json!({"key": key_a, "deployment_id": "d1", "batch_id": "mb_1",
                           "records": [{"metric": "cloud.workflows.calls", "value": 1, "at": at}]});
    assert_eq!(h.call("POST", "/v1/usage", None, Some(app_usage)).await.0, StatusCode::ACCEPTED);
    assert_eq!(h.month_calls(&a).await, 4);
    assert_eq!(h.token_answer(&key_a).await.0, StatusCode::OK, "4 of 5 used");

    let one_more = batch("mb_2", json!([{"license_id": a, "calls": 1, "at": at}]));
    assert_eq!(h.call("POST", "/v1/cloud-usage", Some(&meter), Some(one_more)).await.0, StatusCode::ACCEPTED);
    let (status, answer) = h.token_answer(&key_a).await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::FORBIDDEN, Some("USAGE_LIMIT_EXCEEDED")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_meter_key_reaches_nothing_else_and_nothing_else_meters() {
    let h = harness();
    let (id, _) = h.license(json!({})).await;
    let meter = h.meter_key().await;
    for (method, path) in
        [("GET", "/v1/licenses"), ("GET", "/v1/api-keys"), ("GET", "/v1/internal/snapshots/x")]
    {
        let (status, answer) = h.call(method, path, Some(&meter), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    let body = batch("mb_1", json!([{"license_id": id, "calls": 1, "at": h.clock.now()}]));
    let edge = h.admin("POST", "/v1/api-keys", Some(json!({"name": "e", "scopes": ["edge"]}))).await;
    let admin = h.admin("POST", "/v1/api-keys", Some(json!({"name": "a", "scopes": ["admin"]}))).await;
    for token in [BOOTSTRAP, edge["secret"].as_str().unwrap(), admin["secret"].as_str().unwrap()] {
        let (status, _) = h.call("POST", "/v1/cloud-usage", Some(token), Some(body.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(h.call("POST", "/v1/cloud-usage", None, Some(body)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.month_calls(&id).await, 0);
    let (status, answer) = h
        .call(
            "POST",
            "/v1/api-keys",
            Some(BOOTSTRAP),
            Some(json!({"name": "x", "scopes": ["meter", "read"]})),
        )
        .await;
    assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, Some("invalid_request")));
}

#[tokio::test]
async fn a_bad_record_refuses_the_whole_batch_and_counts_nothing() {
    let h = harness();
    let (id, _) = h.license(json!({})).await;
    let meter = h.meter_key().await;
    let now = h.clock.now();
    let good = json!({"license_id": id, "calls": 1, "at": now});
    for (bad, code) in [
        (batch("mb", json!([good, {"license_id": id, "calls": 0, "at": now}])), "invalid_request"),
        (batch("mb", json!([good, {"license_id": "", "calls": 1, "at": now}])), "invalid_request"),
        (batch("mb", json!([])), "invalid_request"),
        (batch("", json!([good])), "invalid_request"),
        (json!({"batch_id": "mb", "audience": "Work Flows", "records": [good]}), "invalid_request"),
        (
            batch("mb", json!([good, {"license_id": id, "calls": 1, "at": now - Duration::days(40)}])),
            "usage_out_of_bounds",
        ),
        (
            batch("mb", json!([good, {"license_id": id, "calls": 1, "at": now + Duration::hours(1)}])),
            "usage_out_of_bounds",
        ),
    ] {
        let (status, answer) = h.call("POST", "/v1/cloud-usage", Some(&meter), Some(bad.clone())).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, Some(code)), "{bad}");
    }
    assert_eq!(h.month_calls(&id).await, 0);
}

#[tokio::test]
async fn the_access_token_life_is_the_configured_one() {
    let h = harness_with(HttpConfig { access_token_ttl: Duration::seconds(60), ..HttpConfig::default() });
    let (_, key) = h.license(json!({"cloud": {"workflows": {"requests_per_minute": 1, "burst": 1}}})).await;
    let (status, answer) = h.token_answer(&key).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let expires_at: chrono::DateTime<Utc> = serde_json::from_value(answer["expires_at"].clone()).unwrap();
    assert_eq!(expires_at - h.clock.now(), Duration::seconds(60));
    let public = KeyRing::from_jwks(&h.ring.jwks()).unwrap();
    let token = answer["token"].as_str().unwrap();
    let verified =
        crate::access_token::verify_access_token(&public, token, "workflows", h.clock.now()).unwrap();
    assert_eq!(verified.expires_at - verified.issued_at, Duration::seconds(60));
    assert!(crate::access_token::access_ttl(59).is_err() && crate::access_token::access_ttl(3601).is_err());
    assert_eq!(crate::access_token::access_ttl(3600), Ok(Duration::hours(1)));
}
