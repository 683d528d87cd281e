//! The offline → grace → fail-closed timeline, driven by an injected clock, each boundary to
//! the second; and the tampering cases (edited cache, another license's receipt, a rolled-back
//! clock, a forged server).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use nls_client_core::{
    CacheLoad, GraceReason, InvalidCode, LicenseMachine, LicenseState, Policy, ProofSource,
};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::{LicenseClaims, TokenTimes, issue_license_key, verify_license_key};
use nls_core::receipt::{OfflineFileClaims, issue_offline_file, sign_receipt};
use nls_core::validation::{ValidationCode, ValidationRequest, decide};

type Ts = DateTime<Utc>;
const DAY: i64 = 86_400;

fn t0() -> Ts {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

fn at(offset_secs: i64) -> Ts {
    t0() + Duration::seconds(offset_secs)
}

struct Server {
    ring: KeyRing,
}

impl Server {
    fn new(seed: u8) -> Self {
        let signer = SigningKey::from_seed([seed; 32], Some(format!("k{seed}")));
        Self { ring: KeyRing::with_signer(signer, vec![]).unwrap() }
    }

    fn public(&self) -> KeyRing {
        KeyRing::from_jwks(&self.ring.jwks()).unwrap()
    }

    fn key(&self, id: &str, offline_days: u32, grace_days: u32, expires_at: Option<Ts>) -> String {
        let claims = LicenseClaims {
            iss: "nls".into(),
            sub: id.into(),
            aud: "nectar".into(),
            jti: format!("jti-{id}"),
            customer_id: "cus_1".into(),
            tier: "pro".into(),
            features: vec!["sso".into()],
            limits: BTreeMap::from([("runs".to_owned(), 100)]),
            max_deployments: Some(2),
            offline_days,
            grace_days,
        };
        let times = TokenTimes { issued_at: Some(at(-DAY)), not_before: None, expires_at };
        issue_license_key(&self.ring, &claims, times).unwrap()
    }

    fn receipt(&self, key: &str, now: Ts) -> String {
        // A forging server signs receipts for keys it did not issue: judge those with seed 1's ring.
        let verified = verify_license_key(&self.ring, key)
            .or_else(|_| verify_license_key(&Server::new(1).ring, key))
            .unwrap();
        let decision = decide(&verified, &ValidationRequest::default(), None, now);
        sign_receipt(&self.ring, key, &decision, Some("dep-1"), now).unwrap()
    }

    fn answer(&self, key: &str, now: Ts) -> String {
        serde_json::json!({
            "code": "VALID", "valid": true, "license": {"id": "lic_1"},
            "next_check_in": (now + Duration::minutes(15)).to_rfc3339(),
            "receipt": self.receipt(key, now), "degraded": false,
        })
        .to_string()
    }
}

fn refusal(code: &str) -> String {
    serde_json::json!({"code": code, "valid": false, "license": null, "next_check_in": t0().to_rfc3339(), "degraded": false})
        .to_string()
}

/// A machine that validated online at `t0` and then lost the server at `t0 + 1 s`.
fn validated_then_offline(server: &Server, key: &str) -> LicenseMachine {
    let mut m = LicenseMachine::new(server.public(), key, Policy::default());
    let outcome = m.apply_validation_response(200, &server.answer(key, t0()), t0());
    assert!(matches!(outcome, nls_client_core::AnswerOutcome::Good { .. }), "{outcome:?}");
    m.record_unreachable("connection refused", at(1));
    m
}

#[derive(Debug, PartialEq)]
enum Phase {
    Valid,
    Offline,
    Grace(GraceReason, Ts),
    Invalid(InvalidCode),
}

fn phase(state: &LicenseState) -> Phase {
    match state {
        LicenseState::Valid { .. } => Phase::Valid,
        LicenseState::Offline { .. } => Phase::Offline,
        LicenseState::Grace { reason, ends_at, .. } => Phase::Grace(*reason, *ends_at),
        LicenseState::Invalid { code, .. } => Phase::Invalid(*code),
    }
}

/// Checks the phase at each (offset, expected) in order, on one machine (time moves forward).
fn check(m: &mut LicenseMachine, expected: &[(i64, Phase)]) {
    for (offset, want) in expected {
        let state = m.state(at(*offset));
        assert_eq!(&phase(&state), want, "at t0{offset:+} s: {state:?}");
    }
}

#[test]
fn default_timeline_each_boundary_to_the_second() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = validated_then_offline(&server, &key);
    let end = at(37 * DAY);
    check(
        &mut m,
        &[
            (2, Phase::Offline),
            (30 * DAY - 1, Phase::Offline),
            (30 * DAY, Phase::Grace(GraceReason::OfflineTooLong, end)),
            (37 * DAY - 1, Phase::Grace(GraceReason::OfflineTooLong, end)),
            (37 * DAY, Phase::Invalid(InvalidCode::OfflineTooLong)),
            (400 * DAY, Phase::Invalid(InvalidCode::OfflineTooLong)),
        ],
    );
}

#[test]
fn the_license_own_offline_and_grace_days_are_used() {
    let server = Server::new(1);
    let key = server.key("lic_1", 2, 1, None);
    let mut m = validated_then_offline(&server, &key);
    check(
        &mut m,
        &[
            (2 * DAY - 1, Phase::Offline),
            (2 * DAY, Phase::Grace(GraceReason::OfflineTooLong, at(3 * DAY))),
            (3 * DAY - 1, Phase::Grace(GraceReason::OfflineTooLong, at(3 * DAY))),
            (3 * DAY, Phase::Invalid(InvalidCode::OfflineTooLong)),
        ],
    );
}

#[test]
fn valid_while_online_and_a_good_validation_restarts_the_timeline() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.apply_validation_response(200, &server.answer(&key, t0()), t0());
    let state = m.state(at(10));
    assert!(
        matches!(&state, LicenseState::Valid { source: ProofSource::Receipt, valid_until, .. } if *valid_until == at(30 * DAY))
    );
    assert!(state.has_feature("sso") && !state.has_feature("audit"));
    assert!(state.check_limit("runs", 10, 90).allowed);
    assert!(!state.check_limit("runs", 11, 90).allowed);
    assert!(state.check_limit("unlimited_metric", 1_000_000, 0).allowed);
    // Even with no failure seen, a proof older than offline_days is not enough on its own.
    check(
        &mut m,
        &[(30 * DAY - 1, Phase::Valid), (30 * DAY, Phase::Grace(GraceReason::OfflineTooLong, at(37 * DAY)))],
    );
    // A good validation in grace starts again from the new receipt.
    let now = at(31 * DAY);
    m.apply_validation_response(200, &server.answer(&key, now), now);
    check(&mut m, &[(31 * DAY + 1, Phase::Valid), (61 * DAY - 1, Phase::Valid)]);
}

#[test]
fn degraded_and_5xx_answers_are_offline_not_invalid() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.apply_validation_response(200, &server.answer(&key, t0()), t0());
    let mut degraded: serde_json::Value = serde_json::from_str(&server.answer(&key, at(5 * DAY))).unwrap();
    degraded["degraded"] = true.into();
    let outcome = m.apply_validation_response(200, &degraded.to_string(), at(5 * DAY));
    assert!(matches!(outcome, nls_client_core::AnswerOutcome::Offline { .. }), "{outcome:?}");
    // The degraded answer's receipt did not restart the clock: grace still starts at t0 + 30 d.
    check(
        &mut m,
        &[
            (30 * DAY - 1, Phase::Offline),
            (30 * DAY, Phase::Grace(GraceReason::OfflineTooLong, at(37 * DAY))),
        ],
    );
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.apply_validation_response(200, &server.answer(&key, t0()), t0());
    for status in [500, 502, 503, 429, 404] {
        let outcome =
            m.apply_validation_response(status, r#"{"error":{"code":"unavailable","message":"x"}}"#, at(1));
        assert!(matches!(outcome, nls_client_core::AnswerOutcome::Offline { .. }), "{status}: {outcome:?}");
        assert_eq!(phase(&m.state(at(2))), Phase::Offline, "{status}");
    }
}

#[test]
fn a_definite_refusal_fails_closed_and_survives_a_restart_offline() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    for code in ["REVOKED", "SUSPENDED", "EXPIRED", "TOO_MANY_DEPLOYMENTS"] {
        let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
        m.apply_validation_response(200, &server.answer(&key, t0()), t0());
        m.apply_validation_response(200, &refusal(code), at(60));
        let want = InvalidCode::from_server_code(code).unwrap();
        assert_eq!(phase(&m.state(at(61))), Phase::Invalid(want));
        let cache = m.to_cache();
        let mut restarted = LicenseMachine::new(server.public(), &key, Policy::default());
        assert_eq!(restarted.load_cache(&cache, at(120)), CacheLoad::Loaded);
        restarted.record_unreachable("offline", at(121));
        assert_eq!(phase(&restarted.state(at(122))), Phase::Invalid(want), "{code} after restart");
        assert!(restarted.receipt().is_none());
    }
}

#[test]
fn cache_round_trip_keeps_the_timeline() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let m = validated_then_offline(&server, &key);
    let cache = m.to_cache();
    let mut restarted = LicenseMachine::new(server.public(), &key, Policy::default());
    assert_eq!(restarted.load_cache(&cache, at(DAY)), CacheLoad::Loaded);
    check(
        &mut restarted,
        &[
            (30 * DAY - 1, Phase::Offline),
            (30 * DAY, Phase::Grace(GraceReason::OfflineTooLong, at(37 * DAY))),
        ],
    );
}

#[test]
fn an_edited_cache_is_ignored() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let m = validated_then_offline(&server, &key);
    let cache = m.to_cache();
    let mut json: serde_json::Value = serde_json::from_str(&cache).unwrap();
    // Push the clock record back (to hide a rollback) ...
    json["body"]["clock"]["effective"] = (t0().timestamp() - 1000).into();
    // ... or swap a character of the receipt, or drop the MAC.
    let receipt = json["body"]["receipt"].as_str().unwrap().to_owned();
    let mut edited_receipt = json.clone();
    let flipped = receipt.replacen('A', "B", 1);
    edited_receipt["body"]["receipt"] = flipped.into();
    let mut no_mac = json.clone();
    no_mac["mac"] = "".into();
    for edited in [json.to_string(), edited_receipt.to_string(), no_mac.to_string(), "{not json".to_owned()] {
        let mut restarted = LicenseMachine::new(server.public(), &key, Policy::default());
        assert!(matches!(restarted.load_cache(&edited, at(DAY)), CacheLoad::Ignored(_)));
        restarted.record_unreachable("offline", at(DAY + 1));
        assert_eq!(phase(&restarted.state(at(DAY + 2))), Phase::Invalid(InvalidCode::NotValidated));
    }
}

#[test]
fn a_receipt_for_another_license_or_from_another_signer_is_refused() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let other_key = server.key("lic_2", 30, 7, None);
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    // The server's answer for lic_2 replayed to lic_1's client.
    let outcome = m.apply_validation_response(200, &server.answer(&other_key, t0()), t0());
    assert!(
        matches!(outcome, nls_client_core::AnswerOutcome::Offline { ref why } if why.contains("receipt")),
        "{outcome:?}"
    );
    assert_eq!(phase(&m.state(at(1))), Phase::Invalid(InvalidCode::NotValidated));
    // A spoofed server signing with its own key.
    let forger = Server::new(9);
    let outcome = m.apply_validation_response(200, &forger.answer(&key, t0()), at(2));
    assert!(matches!(outcome, nls_client_core::AnswerOutcome::Offline { .. }), "{outcome:?}");
    assert_eq!(phase(&m.state(at(3))), Phase::Invalid(InvalidCode::NotValidated));
    // Another license's cache (its MAC is keyed by the other key).
    let other = validated_then_offline(&server, &other_key);
    assert!(matches!(m.load_cache(&other.to_cache(), at(4)), CacheLoad::Ignored(_)));
}

#[test]
fn a_rolled_back_clock_is_grace_never_an_extension() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = validated_then_offline(&server, &key);
    check(&mut m, &[(10 * DAY, Phase::Offline)]);
    // Back five days: grace opens at effective t0+10d and lasts grace_days (7) of forward time,
    // which on the rolled-back wall clock ends at t0+5d+7d.
    let ends = at(12 * DAY);
    check(
        &mut m,
        &[
            (5 * DAY, Phase::Grace(GraceReason::ClockRollback, ends)),
            (12 * DAY - 1, Phase::Grace(GraceReason::ClockRollback, ends)),
            (12 * DAY, Phase::Invalid(InvalidCode::ClockRollback)),
        ],
    );
    // A second rollback neither reopens nor extends it.
    check(&mut m, &[(DAY, Phase::Invalid(InvalidCode::ClockRollback))]);
}

#[test]
fn a_rollback_while_stopped_is_caught_on_load_and_a_small_step_back_is_not() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = validated_then_offline(&server, &key);
    m.state(at(3 * DAY));
    let cache = m.to_cache();
    let mut restarted = LicenseMachine::new(server.public(), &key, Policy::default());
    assert_eq!(restarted.load_cache(&cache, at(DAY)), CacheLoad::Loaded);
    assert_eq!(phase(&restarted.state(at(DAY))), Phase::Grace(GraceReason::ClockRollback, at(8 * DAY)));
    // NTP slew: 300 s back is tolerated, 301 s is not.
    let mut m = validated_then_offline(&server, &key);
    check(
        &mut m,
        &[
            (DAY, Phase::Offline),
            (DAY - 300, Phase::Offline),
            (DAY - 300 - 301, Phase::Grace(GraceReason::ClockRollback, at(DAY - 601 + 7 * DAY))),
        ],
    );
    // The offline deadline did not move: 30 days of forward time after t0, however the
    // wall clock was moved. Here the wall clock ran 601 s behind, so grace ends 601 s "early".
}

#[test]
fn a_good_validation_clears_a_rollback() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = validated_then_offline(&server, &key);
    check(
        &mut m,
        &[(10 * DAY, Phase::Offline), (9 * DAY, Phase::Grace(GraceReason::ClockRollback, at(16 * DAY)))],
    );
    let now = at(10 * DAY + 60);
    m.apply_validation_response(200, &server.answer(&key, now), now);
    check(&mut m, &[(10 * DAY + 61, Phase::Valid)]);
}

#[test]
fn license_expiry_inside_the_receipt_is_honoured_offline() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, Some(at(2 * DAY)));
    let mut m = validated_then_offline(&server, &key);
    check(
        &mut m,
        &[
            (2 * DAY - 1, Phase::Offline),
            (2 * DAY, Phase::Grace(GraceReason::LicenseExpired, at(9 * DAY))),
            (9 * DAY - 1, Phase::Grace(GraceReason::LicenseExpired, at(9 * DAY))),
            (9 * DAY, Phase::Invalid(InvalidCode::Expired)),
        ],
    );
}

#[test]
fn keys_that_fail_local_checks_are_invalid_without_a_network() {
    let server = Server::new(1);
    let forger = Server::new(9);
    let forged = forger.key("lic_1", 30, 7, None);
    let cases = [
        ("not a key".to_owned(), InvalidCode::Malformed),
        (forged.clone(), InvalidCode::BadSignature),
        (format!("{}00000000", &forged[..forged.len() - 8]), InvalidCode::ChecksumMismatch),
    ];
    for (key, want) in cases {
        let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
        assert_eq!(phase(&m.state(t0())), Phase::Invalid(want), "{key}");
    }
}

#[test]
fn never_validated_and_offline_fails_closed() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.record_unreachable("connection refused", t0());
    assert_eq!(phase(&m.state(t0())), Phase::Invalid(InvalidCode::NotValidated));
}

#[test]
fn offline_license_file_ttl_machine_and_clock() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let claims =
        OfflineFileClaims { sub: "lic_1".into(), license_key: key.clone(), fingerprint: Some("m1".into()) };
    let file = issue_offline_file(&server.ring, &claims, t0(), Duration::days(10)).unwrap();
    let file_json = serde_json::to_string(&file).unwrap();
    assert_eq!(LicenseMachine::key_from_offline_file(&server.public(), &file_json).unwrap(), key);

    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    assert_eq!(
        m.load_offline_file(&file_json, Some("m2"), at(1)),
        Err(nls_core::receipt::OfflineFileError::WrongMachine)
    );
    m.load_offline_file(&file_json, Some("m1"), at(1)).unwrap();
    let state = m.state(at(2));
    assert!(
        matches!(state, LicenseState::Valid { source: ProofSource::OfflineFile, valid_until, .. } if valid_until == at(10 * DAY))
    );
    check(
        &mut m,
        &[(10 * DAY - 1, Phase::Valid), (10 * DAY, Phase::Invalid(InvalidCode::OfflineFileInvalid))],
    );
    // Setting the clock back does not revive an expired file: effective time never goes back.
    check(&mut m, &[(DAY, Phase::Invalid(InvalidCode::OfflineFileInvalid))]);
    // A file from another signer is refused.
    let forged = issue_offline_file(&Server::new(9).ring, &claims, t0(), Duration::days(10)).unwrap();
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    assert!(m.load_offline_file(&serde_json::to_string(&forged).unwrap(), Some("m1"), at(1)).is_err());
}

#[test]
fn a_refused_code_the_client_does_not_know_still_fails_closed() {
    let server = Server::new(1);
    let key = server.key("lic_1", 30, 7, None);
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.apply_validation_response(200, &refusal("SOMETHING_NEW"), t0());
    assert_eq!(phase(&m.state(at(1))), Phase::Invalid(InvalidCode::Refused));
    // ACTIVATION_RATE_LIMITED with a receipt in hand is "not now", not "no".
    let mut m = LicenseMachine::new(server.public(), &key, Policy::default());
    m.apply_validation_response(200, &server.answer(&key, t0()), t0());
    m.apply_validation_response(200, &refusal("ACTIVATION_RATE_LIMITED"), at(1));
    assert_eq!(phase(&m.state(at(2))), Phase::Offline);
    let _ = ValidationCode::Valid;
}

#[test]
fn heartbeat_answers_that_call_for_a_validation() {
    use nls_client_core::validation_answer::heartbeat_needs_validation;
    let cases = [
        (409, r#"{"error":{"code":"deployment_not_active","message":"x"}}"#, true),
        (200, r#"{"code":"REVOKED","valid":false}"#, true),
        (200, r#"{"code":"VALID","valid":true}"#, false),
        (503, r#"{"error":{"code":"unavailable","message":"x"}}"#, false),
        (200, "not json", false),
    ];
    for (status, body, want) in cases {
        assert_eq!(heartbeat_needs_validation(status, body), want, "{status} {body}");
    }
}
