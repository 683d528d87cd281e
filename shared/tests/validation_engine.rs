//! The validation engine's decisions, driven by data: one `check` per scenario.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::{VerifiedLicense, verify_license_key};
use nls_core::lifecycle::LicenseStatus;
use nls_core::model::License;
use nls_core::receipt::{ReceiptError, sign_receipt, verify_receipt};
use nls_core::validation::{StatusSnapshot, ValidationCode, ValidationRequest, decide};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("valid literal").to_utc()
}

const CREATED: &str = "2026-01-01T00:00:00Z";
const EXPIRES: &str = "2027-01-01T00:00:00Z";

fn ring() -> KeyRing {
    KeyRing::with_signer(SigningKey::from_seed([5; 32], None), vec![]).expect("ring")
}

fn license() -> License {
    let terms = LicenseTerms {
        tier: Some("pro".into()),
        features: vec!["sso".into()],
        limits: BTreeMap::from([("api_calls".into(), 100)]),
        max_deployments: Some(2),
        expires_at: Some(at(EXPIRES)),
        ..LicenseTerms::default()
    };
    License { id: "lic_fixed".into(), ..new_license("cus_1", terms, at(CREATED)) }
}

fn verified(l: &License) -> (String, VerifiedLicense) {
    let ring = ring();
    let key = issue_key(&ring, l, at(CREATED)).expect("issue");
    let v = verify_license_key(&ring, &key).expect("verify");
    (key, v)
}

fn snapshot(l: License, live: &[&str], used: u64) -> StatusSnapshot {
    StatusSnapshot {
        license: l,
        live_deployments: live.iter().map(|s| s.to_string()).collect(),
        month_usage: BTreeMap::from([("api_calls".into(), used)]),
        as_of: at(CREATED),
    }
}

struct Case<'a> {
    name: &'a str,
    now: DateTime<Utc>,
    request: ValidationRequest,
    snapshot: Option<StatusSnapshot>,
    expected: ValidationCode,
    needs_activation: bool,
}

fn check(case: Case<'_>) {
    let (_, key) = verified(&license());
    let d = decide(&key, &case.request, case.snapshot.as_ref(), case.now);
    assert_eq!((d.code, d.needs_activation), (case.expected, case.needs_activation), "case: {}", case.name);
    if d.code == ValidationCode::Valid {
        assert!(d.warning.is_none(), "case: {}: VALID carries no warning", case.name);
    }
    if d.code == ValidationCode::InGrace {
        assert!(d.warning.is_some(), "case: {}: IN_GRACE carries a warning", case.name);
    }
}

fn req() -> ValidationRequest {
    ValidationRequest::default()
}

fn with_status(status: LicenseStatus) -> License {
    License { status, ..license() }
}

#[test]
fn decisions() {
    let l = license();
    let exp = at(EXPIRES);
    let grace_end = exp + Duration::days(7);
    let in_year = at("2026-06-01T00:00:00Z");
    let dep = |id: &str| ValidationRequest { deployment_id: Some(id.into()), ..req() };
    let cases = vec![
        Case {
            name: "claims only, in term",
            now: in_year,
            request: req(),
            snapshot: None,
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "before nbf",
            now: at(CREATED) - Duration::seconds(1),
            request: req(),
            snapshot: None,
            expected: ValidationCode::NotYetValid,
            needs_activation: false,
        },
        Case {
            name: "at nbf",
            now: at(CREATED),
            request: req(),
            snapshot: None,
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "one second before exp",
            now: exp - Duration::seconds(1),
            request: req(),
            snapshot: None,
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "at exp: grace starts",
            now: exp,
            request: req(),
            snapshot: None,
            expected: ValidationCode::InGrace,
            needs_activation: false,
        },
        Case {
            name: "last second of grace",
            now: grace_end - Duration::seconds(1),
            request: req(),
            snapshot: None,
            expected: ValidationCode::InGrace,
            needs_activation: false,
        },
        Case {
            name: "grace over",
            now: grace_end,
            request: req(),
            snapshot: None,
            expected: ValidationCode::Expired,
            needs_activation: false,
        },
        Case {
            name: "renewed in the store beats the key's exp",
            now: grace_end + Duration::days(1),
            request: req(),
            snapshot: Some(snapshot(
                License { expires_at: Some(exp + Duration::days(365)), ..l.clone() },
                &[],
                0,
            )),
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "suspended",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(with_status(LicenseStatus::Suspended), &[], 0)),
            expected: ValidationCode::Suspended,
            needs_activation: false,
        },
        Case {
            name: "revoked",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(with_status(LicenseStatus::Revoked), &[], 0)),
            expected: ValidationCode::Revoked,
            needs_activation: false,
        },
        Case {
            name: "expired status",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(with_status(LicenseStatus::Expired), &[], 0)),
            expected: ValidationCode::Expired,
            needs_activation: false,
        },
        Case {
            name: "past due inside payment grace",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(
                License {
                    status: LicenseStatus::PastDue,
                    grace_ends_at: Some(in_year + Duration::seconds(1)),
                    ..l.clone()
                },
                &[],
                0,
            )),
            expected: ValidationCode::InGrace,
            needs_activation: false,
        },
        Case {
            name: "past due, payment grace over",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(
                License { status: LicenseStatus::PastDue, grace_ends_at: Some(in_year), ..l.clone() },
                &[],
                0,
            )),
            expected: ValidationCode::Suspended,
            needs_activation: false,
        },
        Case {
            name: "known deployment",
            now: in_year,
            request: dep("a"),
            snapshot: Some(snapshot(l.clone(), &["a", "b"], 0)),
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "new deployment with room",
            now: in_year,
            request: dep("c"),
            snapshot: Some(snapshot(l.clone(), &["a"], 0)),
            expected: ValidationCode::Valid,
            needs_activation: true,
        },
        Case {
            name: "new deployment, full",
            now: in_year,
            request: dep("c"),
            snapshot: Some(snapshot(l.clone(), &["a", "b"], 0)),
            expected: ValidationCode::TooManyDeployments,
            needs_activation: false,
        },
        Case {
            name: "suspension is decided before the deployment limit",
            now: in_year,
            request: dep("c"),
            snapshot: Some(snapshot(with_status(LicenseStatus::Suspended), &["a", "b"], 0)),
            expected: ValidationCode::Suspended,
            needs_activation: false,
        },
        Case {
            name: "entitled feature",
            now: in_year,
            request: ValidationRequest { features: vec!["sso".into()], ..req() },
            snapshot: None,
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "feature not entitled",
            now: in_year,
            request: ValidationRequest { features: vec!["sso".into(), "saml".into()], ..req() },
            snapshot: None,
            expected: ValidationCode::FeatureNotEntitled,
            needs_activation: false,
        },
        Case {
            name: "usage exactly at the limit",
            now: in_year,
            request: ValidationRequest { metrics: BTreeMap::from([("api_calls".into(), 10)]), ..req() },
            snapshot: Some(snapshot(l.clone(), &[], 90)),
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "usage over the limit",
            now: in_year,
            request: ValidationRequest { metrics: BTreeMap::from([("api_calls".into(), 11)]), ..req() },
            snapshot: Some(snapshot(l.clone(), &[], 90)),
            expected: ValidationCode::UsageLimitExceeded,
            needs_activation: false,
        },
        Case {
            name: "metric without a limit",
            now: in_year,
            request: ValidationRequest { metrics: BTreeMap::from([("other".into(), u64::MAX)]), ..req() },
            snapshot: None,
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
        Case {
            name: "store features win over the key's",
            now: in_year,
            request: ValidationRequest { features: vec!["sso".into()], ..req() },
            snapshot: Some(snapshot(License { features: vec![], ..l.clone() }, &[], 0)),
            expected: ValidationCode::FeatureNotEntitled,
            needs_activation: false,
        },
        Case {
            name: "a snapshot of another license is ignored",
            now: in_year,
            request: req(),
            snapshot: Some(snapshot(
                License { id: "lic_other".into(), status: LicenseStatus::Revoked, ..l.clone() },
                &[],
                0,
            )),
            expected: ValidationCode::Valid,
            needs_activation: false,
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn perpetual_license_never_expires() {
    let l = License { expires_at: None, ..license() };
    let (_, key) = verified(&l);
    let d = decide(&key, &req(), None, at("2099-01-01T00:00:00Z"));
    assert_eq!(d.code, ValidationCode::Valid);
    assert_eq!(d.license.expires_at, None);
}

#[test]
fn answer_carries_the_summary_and_grace_end() {
    let (_, key) = verified(&license());
    let d = decide(&key, &req(), None, at(EXPIRES));
    assert_eq!(d.license.grace_ends_at, Some(at(EXPIRES) + Duration::days(7)));
    assert_eq!(d.license.max_deployments, Some(2));
    assert!(d.warning.is_some(), "IN_GRACE carries a warning");
}

#[test]
fn receipts_bind_to_their_key_and_reject_edits() {
    let ring = ring();
    let l = license();
    let (key, verified) = verified(&l);
    let now = at("2026-06-01T00:00:00Z");
    let decision = decide(&verified, &req(), None, now);
    let receipt = sign_receipt(&ring, &key, &decision, Some("dep-1"), now).expect("sign");
    let r = verify_receipt(&ring, &receipt, &key).expect("verifies");
    assert_eq!(r.issued_at, now);
    assert_eq!(r.expires_at, now + Duration::days(37));
    assert_eq!(r.claims.deployment_id.as_deref(), Some("dep-1"));

    let other = License { id: "lic_other".into(), ..license() };
    let (other_key, _) = verified_with(&ring, &other);
    assert_eq!(verify_receipt(&ring, &receipt, &other_key).unwrap_err(), ReceiptError::WrongKey);

    let mut parts: Vec<String> = receipt.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert_eq!(verify_receipt(&ring, &parts.join("."), &key).unwrap_err(), ReceiptError::BadSignature);
    // A license key's JWS is not a receipt, even though the same ring signed it.
    let jws = nls_core::key_format::parse_key(&key).expect("jws");
    assert_eq!(verify_receipt(&ring, jws, &key).unwrap_err(), ReceiptError::BadSignature);
}

fn verified_with(ring: &KeyRing, l: &License) -> (String, VerifiedLicense) {
    let key = issue_key(ring, l, at(CREATED)).expect("issue");
    let v = verify_license_key(ring, &key).expect("verify");
    (key, v)
}
