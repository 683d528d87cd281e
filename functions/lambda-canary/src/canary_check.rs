//! One canary run: validate the canary license through the public URL, and judge the answer
//! as a customer app would trust it. Pass means all of:
//! - `200` with a JSON answer, `code` `VALID`, `valid: true`, not `degraded` (a degraded
//!   answer means the edge could not reach the origin);
//! - a `receipt` whose Ed25519 signature verifies against the expected JWKS (not the JWKS of
//!   whoever answered), for this exact key, with code `VALID` and not yet expired.

use std::time::Instant;

use nls_core::key_ring::KeyRing;
use nls_core::model::Timestamp;
use nls_core::receipt::{ReceiptError, verify_receipt};
use nls_core::validation::ValidationCode;
use serde::Serialize;

use crate::canary_http::CanaryHttp;

/// Why a run failed; the `Display` text is what the log and the invocation result show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanaryFailure {
    #[error("the expected JWKS is unavailable: {0}")]
    Jwks(String),
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the answer is not the validation JSON: {0}")]
    BadAnswer(String),
    #[error("the answer is {code}, not VALID")]
    NotValid { code: String },
    #[error("the answer is degraded: the edge could not reach the origin")]
    Degraded,
    #[error("the answer carries no receipt")]
    NoReceipt,
    #[error("the receipt does not verify: {0}")]
    BadReceipt(ReceiptError),
    #[error("the receipt says {0:?}, not VALID")]
    ReceiptNotValid(ValidationCode),
    #[error("the receipt has expired")]
    ReceiptExpired,
}

/// What one run found: the metric values and, on failure, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryOutcome {
    pub passed: bool,
    /// The validation round trip (0 when no request was made).
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl CanaryOutcome {
    pub fn failed(failure: &CanaryFailure, latency_ms: u64) -> Self {
        Self { passed: false, latency_ms, failure: Some(failure.to_string()) }
    }
}

/// Judges one answer of `POST /v1/licenses/validate` for `license_key` (no I/O).
pub fn judge_answer(
    status: u16,
    body: &str,
    license_key: &str,
    expected: &KeyRing,
    now: Timestamp,
) -> Result<(), CanaryFailure> {
    if status != 200 {
        return Err(CanaryFailure::Status(status));
    }
    let answer: serde_json::Value =
        serde_json::from_str(body).map_err(|e| CanaryFailure::BadAnswer(e.to_string()))?;
    let code = answer
        .get("code")
        .and_then(|c| c.as_str())
        .ok_or_else(|| CanaryFailure::BadAnswer("no `code`".to_owned()))?;
    if code != ValidationCode::Valid.as_str() || answer.get("valid") != Some(&serde_json::Value::Bool(true)) {
        return Err(CanaryFailure::NotValid { code: code.to_owned() });
    }
    if answer.get("degraded").and_then(|d| d.as_bool()).unwrap_or(false) {
        return Err(CanaryFailure::Degraded);
    }
    let receipt = answer.get("receipt").and_then(|r| r.as_str()).ok_or(CanaryFailure::NoReceipt)?;
    let receipt = verify_receipt(expected, receipt, license_key).map_err(CanaryFailure::BadReceipt)?;
    if receipt.claims.code != ValidationCode::Valid {
        return Err(CanaryFailure::ReceiptNotValid(receipt.claims.code));
    }
    if receipt.expires_at <= now {
        return Err(CanaryFailure::ReceiptExpired);
    }
    Ok(())
}

/// One run against `base_url` (the public URL: an edge or the API), judged with `expected`.
pub async fn run_check(
    http: &CanaryHttp,
    base_url: &str,
    license_key: &str,
    expected: &KeyRing,
    now: Timestamp,
) -> CanaryOutcome {
    let url = format!("{}/v1/licenses/validate", base_url.trim_end_matches('/'));
    let body = serde_json::json!({ "key": license_key }).to_string();
    let started = Instant::now();
    let result = http.post_json(&url, body).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let judged = match result {
        Ok((status, text)) => judge_answer(status, &text, license_key, expected, now),
        Err(why) => Err(CanaryFailure::Unreachable(why)),
    };
    match judged {
        Ok(()) => CanaryOutcome { passed: true, latency_ms, failure: None },
        Err(failure) => CanaryOutcome::failed(&failure, latency_ms),
    }
}

/// The expected JWKS, fetched from `jwks_url` (the origin's, by default the API's: an edge
/// that answers with another key's receipts then fails the check).
pub async fn fetch_expected_jwks(http: &CanaryHttp, jwks_url: &str) -> Result<KeyRing, CanaryFailure> {
    let (status, text) = http.get(jwks_url).await.map_err(CanaryFailure::Jwks)?;
    if status != 200 {
        return Err(CanaryFailure::Jwks(format!("HTTP {status} from {jwks_url}")));
    }
    KeyRing::parse_jwks_json(&text).map_err(|e| CanaryFailure::Jwks(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use nls_core::issuing::{LicenseTerms, issue_key, new_license};
    use nls_core::key_ring::SigningKey;
    use nls_core::receipt::sign_receipt;
    use nls_core::validation::{ValidationRequest, decide};

    /// A key, a ring, and a valid answer's body with a receipt signed by `receipt_signer`.
    fn answer(receipt_signer: &KeyRing, code: &str, degraded: bool) -> (String, String, KeyRing) {
        let ring = KeyRing::with_signer(SigningKey::from_seed([1; 32], None), vec![]).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let license = new_license("cus_canary", LicenseTerms::default(), now);
        let key = issue_key(&ring, &license, now).unwrap();
        let verified = nls_core::license_token::verify_license_key(&ring, &key).unwrap();
        let decision = decide(&verified, &ValidationRequest::default(), None, now);
        let receipt = sign_receipt(receipt_signer, &key, &decision, None, now).unwrap();
        let body = serde_json::json!({"code": code, "valid": code == "VALID", "degraded": degraded, "receipt": receipt});
        (key, body.to_string(), ring)
    }

    fn check(status: u16, body: &str, key: &str, ring: &KeyRing) -> Result<(), CanaryFailure> {
        judge_answer(status, body, key, ring, Utc.with_ymd_and_hms(2026, 12, 1, 0, 1, 0).unwrap())
    }

    #[test]
    fn answers_are_judged() {
        let ring = KeyRing::with_signer(SigningKey::from_seed([1; 32], None), vec![]).unwrap();
        let other = KeyRing::with_signer(SigningKey::from_seed([2; 32], None), vec![]).unwrap();
        let (key, good, expected) = answer(&ring, "VALID", false);
        assert_eq!(check(200, &good, &key, &expected), Ok(()));
        assert_eq!(check(503, &good, &key, &expected), Err(CanaryFailure::Status(503)));
        assert!(matches!(check(200, "<html>", &key, &expected), Err(CanaryFailure::BadAnswer(_))));
        let (_, suspended, _) = answer(&ring, "SUSPENDED", false);
        assert_eq!(
            check(200, &suspended, &key, &expected),
            Err(CanaryFailure::NotValid { code: "SUSPENDED".into() })
        );
        let (_, degraded, _) = answer(&ring, "VALID", true);
        assert_eq!(check(200, &degraded, &key, &expected), Err(CanaryFailure::Degraded));
        let (_, foreign, _) = answer(&other, "VALID", false);
        assert_eq!(
            check(200, &foreign, &key, &expected),
            Err(CanaryFailure::BadReceipt(ReceiptError::BadSignature))
        );
        let no_receipt = r#"{"code":"VALID","valid":true}"#;
        assert_eq!(check(200, no_receipt, &key, &expected), Err(CanaryFailure::NoReceipt));
        // A receipt for another key (replayed from elsewhere) is refused.
        let license = new_license("cus_other", LicenseTerms::default(), Utc::now() - Duration::days(1));
        let other_key = issue_key(&ring, &license, Utc::now()).unwrap();
        assert_eq!(
            check(200, &good, &other_key, &expected),
            Err(CanaryFailure::BadReceipt(ReceiptError::WrongKey))
        );
    }
}
