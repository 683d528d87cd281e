use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::issuing::{LicenseTerms, issue_key, new_license};
use crate::key_ring::SigningKey;
use crate::license_token::verify_license_key;
use crate::lifecycle::LicenseStatus;
use crate::model::License;
use crate::receipt::{OfflineFileClaims, issue_offline_file, sign_receipt};
use crate::validation::{StatusSnapshot, ValidationRequest, decide};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("valid literal").to_utc()
}

fn now() -> DateTime<Utc> {
    at("2026-06-01T12:00:00Z")
}

fn ring() -> KeyRing {
    KeyRing::with_signer(SigningKey::from_seed([9; 32], None), vec![]).expect("ring")
}

fn public(ring: &KeyRing) -> KeyRing {
    KeyRing::from_jwks(&ring.jwks()).expect("jwks")
}

fn workflows() -> CloudLimits {
    CloudLimits { requests_per_minute: 120, burst: 10, monthly_quota: Some(1000) }
}

fn license(status: LicenseStatus, expires_at: Option<Timestamp>) -> License {
    let terms = LicenseTerms {
        tier: Some("pro".into()),
        features: vec!["sso".into()],
        expires_at,
        ..LicenseTerms::default()
    };
    let mut l = new_license("cus_1", terms, at("2026-01-01T00:00:00Z"));
    l.status = status;
    l.cloud = Some(BTreeMap::from([("workflows".to_owned(), workflows())]));
    l
}

/// The decision the origin would reach for `l` with `calls` used this month, and the grant.
fn decide_for(l: &License, calls: u64, audience: &str) -> (Decision, Result<AccessGrant, AccessRefused>) {
    let ring = ring();
    let key = verify_license_key(&ring, &issue_key(&ring, l, l.created_at).unwrap()).unwrap();
    let snapshot = StatusSnapshot {
        license: l.clone(),
        live_deployments: vec![],
        month_usage: BTreeMap::from([(usage_metric("workflows"), calls)]),
        as_of: now(),
    };
    let decision = decide(&key, &ValidationRequest::default(), Some(&snapshot), now());
    let grant = decide_access(&decision, l.cloud.as_ref(), &snapshot.month_usage, audience);
    (decision, grant)
}

fn token_for(l: &License, audience: &str, issued: Timestamp, ttl: Duration) -> IssuedAccess {
    let (decision, grant) = decide_for(l, 0, audience);
    sign_access_token(&ring(), &decision, &grant.unwrap(), "dep_1", audience, issued, ttl).unwrap()
}

#[test]
fn a_token_carries_the_license_and_its_rate_and_verifies_with_the_public_jwks() {
    let l = license(LicenseStatus::Active, None);
    let issued = token_for(&l, "workflows", now(), Duration::seconds(DEFAULT_ACCESS_TTL_SECS));
    assert_eq!(issued.expires_at, now() + Duration::minutes(15));
    let v = verify_access_token(&public(&ring()), &issued.token, "workflows", now()).unwrap();
    assert_eq!(v.claims.sub, l.id);
    assert_eq!(v.claims.customer_id, "cus_1");
    assert_eq!(v.claims.deployment_id, "dep_1");
    assert_eq!(v.claims.aud, "workflows");
    assert_eq!(v.claims.tier, "pro");
    assert_eq!(v.claims.features, ["sso"]);
    assert_eq!(v.claims.rate, workflows());
    assert!(v.claims.jti.starts_with("at_"));
    assert_eq!((v.issued_at, v.not_before, v.expires_at), (now(), now(), issued.expires_at));
    // The header names the type and the key; the payload has the documented names.
    let [header, payload, _] = issued.token.split('.').collect::<Vec<_>>()[..] else { panic!("3 parts") };
    let header: serde_json::Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    assert_eq!(header["typ"], ACCESS_TYP);
    assert_eq!(header["alg"], "EdDSA");
    let payload: serde_json::Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    for name in [
        "iss",
        "sub",
        "customer_id",
        "deployment_id",
        "aud",
        "tier",
        "features",
        "rate",
        "exp",
        "iat",
        "nbf",
        "jti",
    ] {
        assert!(payload.get(name).is_some(), "claim {name}");
    }
    assert_eq!(payload["rate"]["requests_per_minute"], 120);
}

#[test]
fn the_verifier_refuses_everything_but_a_current_token_for_its_audience() {
    let l = license(LicenseStatus::Active, None);
    let ttl = Duration::seconds(DEFAULT_ACCESS_TTL_SECS);
    let good = token_for(&l, "workflows", now(), ttl).token;
    let ring = public(&ring());
    let check = |token: &str, when: Timestamp| verify_access_token(&ring, token, "workflows", when).err();

    assert_eq!(check(&good, now()), None);
    assert_eq!(check(&good, now() + ttl - Duration::seconds(1)), None);
    assert_eq!(check(&good, now() + ttl), Some(AccessRejection::Expired), "expired");
    assert_eq!(
        check(&good, now() - Duration::seconds(NOT_BEFORE_LEEWAY_SECS + 1)),
        Some(AccessRejection::NotYetValid)
    );
    assert_eq!(check(&good, now() - Duration::seconds(NOT_BEFORE_LEEWAY_SECS)), None, "leeway");
    assert_eq!(
        verify_access_token(&ring, &good, "integrations", now()).err(),
        Some(AccessRejection::WrongAudience)
    );

    // Tampered payload: another license id, same signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = "lic_someone_else".into();
    let forged = format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2]);
    assert_eq!(check(&forged, now()), Some(AccessRejection::BadSignature));

    // alg none, keeping typ and kid.
    let mut header: serde_json::Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    header["alg"] = "none".into();
    let none = format!("{}.{}.", B64.encode(header.to_string()), parts[1]);
    assert!(check(&none, now()).is_some(), "alg none");
    header["alg"] = "HS256".into();
    let hs = format!("{}.{}.{}", B64.encode(header.to_string()), parts[1], parts[2]);
    assert!(check(&hs, now()).is_some(), "alg HS256");

    // Another key ring's token: unknown kid.
    let other = KeyRing::with_signer(SigningKey::from_seed([3; 32], None), vec![]).unwrap();
    let (decision, grant) = decide_for(&l, 0, "workflows");
    let foreign =
        sign_access_token(&other, &decision, &grant.unwrap(), "d", "workflows", now(), ttl).unwrap().token;
    assert_eq!(check(&foreign, now()), Some(AccessRejection::UnknownKid));

    // The other signed documents of the same ring, by typ.
    let full = self::ring();
    let key = issue_key(&full, &l, now()).unwrap();
    assert_eq!(check(&key, now()), Some(AccessRejection::Malformed), "a license key");
    let key_jws = crate::key_format::parse_key(&key).unwrap();
    assert_eq!(check(key_jws, now()), Some(AccessRejection::WrongType), "a license key's JWS");
    let receipt = sign_receipt(&full, &key, &decision, Some("d"), now()).unwrap();
    assert_eq!(check(&receipt, now()), Some(AccessRejection::WrongType), "a receipt");
    let offline = issue_offline_file(
        &full,
        &OfflineFileClaims { sub: l.id.clone(), license_key: key.clone(), fingerprint: None },
        now(),
        Duration::days(1),
    )
    .unwrap();
    assert_eq!(check(&offline.token, now()), Some(AccessRejection::WrongType), "an offline file");
    assert_eq!(check("", now()), Some(AccessRejection::Malformed));
    assert_eq!(check("a.b.c", now()), Some(AccessRejection::Malformed));

    // And an access token is none of those.
    assert!(crate::receipt::verify_receipt(&full, &good, &key).is_err());
    assert!(
        crate::license_token::verify_jws::<serde_json::Value>(
            &full,
            crate::license_token::LICENSE_TYP,
            &good
        )
        .is_err()
    );
}

#[test]
fn issue_follows_the_license_state_the_audience_and_the_quota() {
    let check = |l: &License, calls: u64, audience: &str| match decide_for(l, calls, audience).1 {
        Ok(grant) => Ok(grant.warning.is_some()),
        Err(refused) => Err(refused.code),
    };
    let active = license(LicenseStatus::Active, None);
    assert_eq!(check(&active, 0, "workflows"), Ok(false));
    assert_eq!(check(&active, 999, "workflows"), Ok(false));
    assert_eq!(check(&active, 1000, "workflows"), Err(ValidationCode::UsageLimitExceeded));
    assert_eq!(check(&active, 0, "integrations"), Err(ValidationCode::FeatureNotEntitled));
    assert_eq!(
        check(&license(LicenseStatus::Suspended, None), 0, "workflows"),
        Err(ValidationCode::Suspended)
    );
    assert_eq!(check(&license(LicenseStatus::Revoked, None), 0, "workflows"), Err(ValidationCode::Revoked));
    // Expired two days ago, grace is seven: a token, with the warning.
    let in_grace = license(LicenseStatus::Active, Some(now() - Duration::days(2)));
    assert_eq!(check(&in_grace, 0, "workflows"), Ok(true));
    let past_grace = license(LicenseStatus::Active, Some(now() - Duration::days(8)));
    assert_eq!(check(&past_grace, 0, "workflows"), Err(ValidationCode::Expired));
    let mut no_cloud = license(LicenseStatus::Active, None);
    no_cloud.cloud = None;
    assert_eq!(check(&no_cloud, 0, "workflows"), Err(ValidationCode::FeatureNotEntitled));
    let mut unlimited = license(LicenseStatus::Active, None);
    unlimited.cloud.as_mut().unwrap().get_mut("workflows").unwrap().monthly_quota = None;
    assert_eq!(check(&unlimited, u64::MAX, "workflows"), Ok(false));
}

#[test]
fn the_caching_verifier_checks_times_and_audience_on_every_hit() {
    let l = license(LicenseStatus::Active, None);
    let ttl = Duration::seconds(60);
    let token = token_for(&l, "workflows", now(), ttl).token;
    let verifier = AccessVerifier::with_capacity(public(&ring()), "workflows", 2);
    assert!(verifier.verify(&token, now()).is_ok());
    assert!(verifier.verify(&token, now()).is_ok(), "a hit");
    assert_eq!(verifier.verify(&token, now() + ttl).err(), Some(AccessRejection::Expired));
    let other_audience = AccessVerifier::new(public(&ring()), "integrations");
    assert_eq!(other_audience.verify(&token, now()).err(), Some(AccessRejection::WrongAudience));
    // A failure is never cached: a tampered copy fails however often the original passed.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    for _ in 0..2 {
        assert!(verifier.verify(&tampered, now()).is_err());
    }
    // Bounded.
    for i in 0..5 {
        let t = token_for(&l, "workflows", now() + Duration::seconds(i), ttl).token;
        assert!(verifier.verify(&t, now() + Duration::seconds(i)).is_ok());
        assert!(verifier.cache().len() <= 2);
    }
    // A new ring without the old key: its tokens stop at once.
    let rotated = KeyRing::from_jwks(
        &KeyRing::with_signer(SigningKey::from_seed([4; 32], None), vec![]).unwrap().jwks(),
    )
    .unwrap();
    verifier.replace_ring(rotated);
    assert_eq!(verifier.verify(&token, now()).err(), Some(AccessRejection::UnknownKid));
}

#[test]
fn grants_are_checked_where_they_enter() {
    let ok = |name: &str| BTreeMap::from([(name.to_owned(), workflows())]);
    assert_eq!(check_cloud_grant(&ok("workflows")), Ok(()));
    assert_eq!(check_cloud_grant(&ok("ai.v2_beta-1")), Ok(()));
    for bad in ["", "Workflows", "-x", "a b", "a/b", &"a".repeat(65)] {
        assert!(check_cloud_grant(&ok(bad)).is_err(), "{bad:?}");
    }
    let zero = BTreeMap::from([("w".to_owned(), CloudLimits { burst: 0, ..workflows() })]);
    assert!(check_cloud_grant(&zero).is_err());
    let many: CloudGrant = (0..=MAX_AUDIENCES).map(|i| (format!("a{i}"), workflows())).collect();
    assert_eq!(check_cloud_grant(&many), Err(CloudGrantError::TooManyAudiences));
    assert!(serde_json::from_str::<CloudLimits>(r#"{"requests_per_minute":1,"burst":1,"rpm":2}"#).is_err());
}
