//! Properties of the parsers that face the internet (issue 17): the license key and its
//! checksum, JWS headers, the Stripe signature header, path segments, usage batches and list
//! query strings. For any input: no panic, a rejection from the documented set, and a round
//! trip where the format has one.
//!
//! 64 cases per property by default, so CI stays fast; `PROPTEST_CASES=10000 cargo test
//! --release -p nls-core --features http --test parser_properties` runs more.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use nls_core::billing::stripe_signature::{
    DEFAULT_TOLERANCE, parse_signature_header, sign_stripe_payload, verify_stripe_signature,
};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_format::{self, KeyFormatError};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::license_token::{KeyRejection, LICENSE_TYP, verify_license_key};
use nls_core::model::{MAX_USAGE_PERIODS_PER_BATCH, UsageBatch, UsageRecord, UsageRefused, UsageWindow};
use nls_core::path_segment;
use proptest::prelude::*;

const SEED: [u8; 32] = [9; 32];

/// 64 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::with_signer(SigningKey::from_seed(SEED, None), vec![]).unwrap()
}

fn good_key(ring: &KeyRing) -> String {
    let license = new_license("cus_1", LicenseTerms::default(), now());
    issue_key(ring, &license, now()).unwrap()
}

/// A JWS with `header` over the payload of a real key, signed by the ring's own key: only the
/// header differs from what NLS signs.
fn resigned(ring: &KeyRing, header: &serde_json::Value) -> String {
    let jws = key_format::parse_key(&good_key(ring)).unwrap().to_owned();
    let payload = jws.split('.').nth(1).unwrap();
    let signing_input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header.to_string()));
    let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(SEED));
    let signature = pair.sk.sign(signing_input.as_bytes(), None);
    key_format::format_key(&format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
}

/// Strings near the key shape: a prefix, JWS-ish text and a checksum-ish tail, or anything.
fn key_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "NLS-[A-Za-z0-9_.-]{0,80}-[0-9a-f]{8}",
        "(NLS-)?[A-Za-z0-9_-]{1,20}\\.[A-Za-z0-9_-]{1,20}\\.[A-Za-z0-9_-]{0,20}(-[0-9a-fA-F]{0,9})?",
        "\\PC{0,5000}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_key_is_refused_with_a_documented_code(text in key_like()) {
        let ring = ring();
        // Only a key this ring signed verifies, and a refusal is one of the three codes.
        match verify_license_key(&ring, &text) {
            Ok(_) => prop_assert!(false, "accepted {text:?}"),
            Err(KeyRejection::Malformed | KeyRejection::ChecksumMismatch | KeyRejection::BadSignature) => {}
        }
        match key_format::parse_key(&text) {
            Ok(jws) => prop_assert_eq!(key_format::checksum(jws), text.trim()[text.trim().len() - 8..].to_owned()),
            Err(KeyFormatError::TooLong) => prop_assert!(text.len() > key_format::MAX_KEY_BYTES),
            Err(KeyFormatError::Malformed | KeyFormatError::ChecksumMismatch) => {}
        }
    }

    #[test]
    fn the_checksum_is_eight_lower_hex_and_round_trips(jws in "[A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{1,60}") {
        let sum = key_format::checksum(&jws);
        prop_assert!(sum.len() == 8 && sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let key = key_format::format_key(&jws);
        let padded = format!("  {key}\n");
        prop_assert_eq!(key_format::parse_key(&padded), Ok(jws.as_str()));
        // Any other checksum is a mismatch, never a pass.
        let other = format!("{}{:08x}", &key[..key.len() - 8], u32::from_str_radix(&sum, 16).unwrap() ^ 1);
        prop_assert_eq!(key_format::parse_key(&other), Err(KeyFormatError::ChecksumMismatch));
    }

    /// No header field chooses how a key is verified: whatever `alg`, `typ` and `kid` say, a
    /// key verifies only with EdDSA, the license `typ` and a `kid` of the ring.
    #[test]
    fn only_eddsa_the_license_typ_and_a_known_kid_verify(
        alg in prop_oneof![
            Just("EdDSA".to_owned()), Just("none".to_owned()), Just("HS256".to_owned()),
            Just("ES256".to_owned()), Just("Ed25519".to_owned()), Just("eddsa".to_owned()), "\\PC{0,12}",
        ],
        typ in prop_oneof![
            Just(LICENSE_TYP.to_owned()), Just("nls-receipt+jwt".to_owned()), Just("JWT".to_owned()), "\\PC{0,12}",
        ],
        kid_choice in 0..3u8,
        extra in proptest::option::of(("x_[a-z]{1,8}", "\\PC{0,16}")),
    ) {
        let ring = ring();
        let kid = ring.signer().unwrap().kid.clone();
        let mut header = serde_json::json!({"alg": alg, "typ": typ});
        match kid_choice {
            0 => header["kid"] = serde_json::json!(kid),
            1 => header["kid"] = serde_json::json!(format!("{kid}x")),
            _ => {}
        }
        if let Some((name, value)) = &extra {
            header[name.as_str()] = serde_json::json!(value);
        }
        let key = resigned(&ring, &header);
        let verdict = verify_license_key(&ring, &key);
        let expected = alg == "EdDSA" && typ == LICENSE_TYP && kid_choice == 0;
        prop_assert_eq!(verdict.is_ok(), expected, "header {} gave {:?}", header, verdict.as_ref().err());
        if let Err(rejection) = verdict {
            prop_assert!(matches!(rejection, KeyRejection::BadSignature | KeyRejection::Malformed));
        }
    }

    #[test]
    fn any_stripe_signature_header_parses_or_is_a_documented_refusal(header in prop_oneof![
        any::<String>(),
        "(t=-?[0-9]{0,12}|v1=[0-9a-f]{0,66}|v0=[a-z0-9]{0,8}|[a-z]{0,3}=?[^,]{0,10})(,(t=-?[0-9]{0,12}|v1=[0-9a-f]{0,66}|[a-z]{0,3}=?[^,]{0,10})){0,5}",
    ], body in any::<Vec<u8>>()) {
        if let Ok(parsed) = parse_signature_header(&header) {
            prop_assert!(!parsed.v1.is_empty());
        }
        match verify_stripe_signature(Some(&header), &body, b"whsec_test", DEFAULT_TOLERANCE, now()) {
            Ok(_) => prop_assert!(false, "a random header verified"),
            Err(e) => prop_assert!(
                ["signature_missing", "signature_malformed", "signature_mismatch", "signature_stale"].contains(&e.code())
            ),
        }
    }

    #[test]
    fn a_stripe_signature_round_trips_and_binds_body_and_time(
        body in any::<Vec<u8>>(),
        skew in -600i64..600,
        flip in any::<prop::sample::Index>(),
    ) {
        let secret = b"whsec_test";
        let signed_at = now().timestamp() + skew;
        let header = sign_stripe_payload(secret, signed_at, &body);
        let verdict = verify_stripe_signature(Some(&header), &body, secret, DEFAULT_TOLERANCE, now());
        if skew.abs() <= DEFAULT_TOLERANCE.num_seconds() {
            prop_assert_eq!(verdict.map(|p| p.timestamp), Ok(signed_at));
        } else {
            prop_assert_eq!(verdict.map(|p| p.timestamp), Err(nls_core::billing::stripe_signature::SignatureError::Stale));
        }
        let mut tampered = body.clone();
        if tampered.is_empty() {
            tampered.push(b'x');
        } else {
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
        }
        prop_assert!(verify_stripe_signature(Some(&header), &tampered, secret, DEFAULT_TOLERANCE, now()).is_err());
    }

    #[test]
    fn path_segments_round_trip_and_stay_one_segment(id in any::<String>(), raw in "\\PC{0,40}") {
        let encoded = path_segment::encode(&id);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        prop_assert_eq!(path_segment::decode(&encoded), Some(id));
        // Decoding anything at all either fails or gives a string that encodes back to a
        // segment decoding to the same string.
        if let Some(decoded) = path_segment::decode(&raw) {
            prop_assert_eq!(path_segment::decode(&path_segment::encode(&decoded)), Some(decoded));
        }
    }

    /// A usage batch with any values and times: within the bounds it sums without overflow
    /// into at most 99 periods; outside them it is one of the documented refusals.
    #[test]
    fn usage_batches_are_bounded_or_refused(
        records in prop::collection::vec((0u64..=u64::MAX, -400i64 * 86_400..400 * 86_400, "[a-z]{1,3}"), 1..60),
    ) {
        let batch = UsageBatch {
            license_id: "lic_1".into(),
            deployment_id: "dep".into(),
            batch_id: "b".into(),
            records: records
                .iter()
                .map(|(value, offset, metric)| UsageRecord {
                    metric: metric.clone(),
                    value: *value,
                    at: now() + Duration::seconds(*offset),
                })
                .collect(),
            received_at: now(),
        };
        match batch.check_bounds(now(), &UsageWindow::default()) {
            Ok(()) => {
                let sums = batch.counter_increments().expect("bounded values cannot overflow a fresh counter");
                let periods: std::collections::BTreeSet<_> = sums.keys().map(|(_, p)| p.clone()).collect();
                prop_assert!(periods.len() <= MAX_USAGE_PERIODS_PER_BATCH);
            }
            Err(UsageRefused::ValueTooLarge { .. } | UsageRefused::OutsideWindow { .. } | UsageRefused::TooManyPeriods { .. }) => {}
        }
    }
}

#[cfg(feature = "http")]
mod over_http {
    //! The same through the router: JSON bodies and query strings a client controls.

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use nls_core::http::{AppDeps, AppState, ClientIp, HttpConfig, router};
    use nls_core::memory_store::MemoryStore;
    use nls_core::ports::ManualClock;
    use tower::ServiceExt;

    use super::*;

    const ADMIN: &str = "property-test-admin-key";

    fn app() -> axum::Router {
        let config = HttpConfig { ip_rate_limit: None, api_key_rate_limit: None, ..HttpConfig::default() };
        router(AppState::new(AppDeps {
            store: Arc::new(MemoryStore::new()),
            key_ring: Arc::new(ring()),
            clock: Arc::new(ManualClock::new(now())),
            config: config.with_bootstrap_admin_key(ADMIN),
        }))
    }

    fn call(app: &axum::Router, method: &str, uri: &str, body: String) -> (StatusCode, serde_json::Value) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::from(body))
                .unwrap();
            request.extensions_mut().insert(ClientIp("127.0.0.1".parse().unwrap()));
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
        })
    }

    fn usage_body() -> impl Strategy<Value = String> {
        let record = (
            prop_oneof![Just("m".to_owned()), "\\PC{0,300}"],
            prop_oneof![
                Just(serde_json::json!(1)),
                (0u64..=u64::MAX).prop_map(|v| serde_json::json!(v)),
                Just(serde_json::json!(-1)),
                Just(serde_json::json!(1.5)),
                Just(serde_json::json!("7"))
            ],
            prop_oneof![
                Just("2026-11-30T11:00:00Z".to_owned()),
                Just("9999-12-31T23:59:59Z".to_owned()),
                "\\PC{0,30}"
            ],
        )
            .prop_map(|(metric, value, at)| serde_json::json!({"metric": metric, "value": value, "at": at}));
        (
            prop_oneof![Just("NLS-x".to_owned()), "\\PC{0,50}"],
            prop_oneof![Just("dep-1".to_owned()), "\\PC{0,300}"],
            prop::collection::vec(record, 0..4),
            any::<bool>(),
        )
            .prop_map(|(key, deployment, records, garbage)| {
                if garbage {
                    format!("{{\"key\": {key:?}, \"records\": [{deployment}")
                } else {
                    serde_json::json!({"key": key, "deployment_id": deployment, "batch_id": "b", "records": records}).to_string()
                }
            })
    }

    fn query_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            (0u64..=u64::MAX).prop_map(|n| n.to_string()),
            Just("-1".to_owned()),
            Just("1e3".to_owned()),
            "[A-Za-z0-9_-]{1,300}",
            "(%[0-9A-Fa-f]{2}|%|[^&#%]){0,40}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_usage_body_is_a_4xx_with_a_documented_code(body in usage_body()) {
            let (status, answer) = call(&app(), "POST", "/v1/usage", body.clone());
            prop_assert!(status.is_client_error(), "{} for {}: {}", status, body, answer);
            let code = answer["error"]["code"].as_str().unwrap_or_default().to_owned();
            prop_assert!(
                ["malformed_json", "invalid_request", "invalid_license_key", "usage_out_of_bounds", "payload_too_large"].contains(&code.as_str()),
                "{} {} for {}", status, answer, body
            );
        }

        #[test]
        fn any_list_query_is_a_page_or_invalid_query(limit in query_value(), cursor in query_value(), path in prop_oneof![Just("/v1/licenses"), Just("/v1/customers"), Just("/v1/audit-log")]) {
            let uri = format!("{path}?limit={limit}&cursor={cursor}");
            prop_assume!(uri.parse::<axum::http::Uri>().is_ok());
            let (status, answer) = call(&app(), "GET", &uri, String::new());
            match status {
                StatusCode::OK => {
                    // An empty `limit` is the default; otherwise it must be 1 to 100.
                    let decoded = path_segment::decode(&limit).map(|l| l.replace('+', " "));
                    let in_range = decoded.as_deref().is_some_and(|l| {
                        l.is_empty() || l.parse::<u64>().is_ok_and(|n| (1..=100).contains(&n))
                    });
                    prop_assert!(in_range, "{} accepted: {}", uri, answer);
                    prop_assert!(answer["next_cursor"].is_null() || answer["next_cursor"].is_string());
                }
                StatusCode::BAD_REQUEST => prop_assert_eq!(answer["error"]["code"].as_str(), Some("invalid_query"), "{}", uri),
                other => prop_assert!(false, "{} for {}: {}", other, uri, answer),
            }
        }
    }
}
