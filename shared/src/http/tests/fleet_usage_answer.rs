//! Issue 12, fleet-wide usage in the answer: every limited metric with the fleet's count for
//! the month, in the answer and in the signed receipt, from the (cached) status snapshot.

use super::*;

#[tokio::test]
async fn the_answer_and_its_receipt_carry_the_fleets_usage_of_every_limited_metric() {
    let h = harness();
    let (_, key) = h.license(json!({"limits": {"runs": 100, "seats": 5}})).await;
    let first = h.validate(json!({"key": key, "deployment_id": "a"})).await;
    assert_eq!(
        first["usage"]["runs"],
        json!({"used": 0, "limit": 100, "period": "2026-11", "as_of": "2026-11-30T12:00:00Z"})
    );
    assert_eq!(first["usage"]["seats"]["limit"], 5);
    // Two deployments report; the next answer (the instance dropped its snapshot) counts both.
    for (deployment, batch, value) in [("a", "ba", 60), ("b", "bb", 60)] {
        let usage = json!({"key": key, "deployment_id": deployment, "batch_id": batch,
            "records": [{"metric": "runs", "value": value, "at": "2026-11-30T11:00:00Z"}]});
        assert_eq!(h.call("POST", "/v1/usage", None, Some(usage)).await.0, StatusCode::ACCEPTED);
    }
    let answer = h.validate(json!({"key": key, "deployment_id": "a"})).await;
    assert_eq!(answer["code"], "VALID", "reporting past the limit does not stop the license");
    assert_eq!(answer["usage"]["runs"]["used"], 120);
    assert_eq!(answer["usage"]["seats"]["used"], 0, "a limited metric nobody reported is 0");
    let receipt = crate::receipt::verify_receipt(&h.ring, answer["receipt"].as_str().unwrap(), &key).unwrap();
    let claimed = receipt.claims.usage.expect("the receipt carries the usage");
    assert_eq!((claimed["runs"].used, claimed["runs"].limit), (120, 100));
    assert_eq!(claimed["runs"].period, "2026-11");
    assert_eq!(receipt.claims.usage_as_of, Some(h.clock.now().timestamp()));
}

#[tokio::test]
async fn a_license_without_limits_answers_an_empty_usage_and_a_rejected_key_none() {
    let h = harness();
    let (_, key) = h.license(json!({})).await;
    assert_eq!(h.validate(json!({"key": key})).await["usage"], json!({}));
    let rejected = h.validate(json!({"key": "NLS-nope"})).await;
    assert!(rejected.get("usage").is_none(), "{rejected}");
}
