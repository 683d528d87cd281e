//! `verify_jws` decodes tokens itself (faster than jwt-compact's `UntrustedToken` and its
//! flattened claims); these cases hold it to jwt-compact's answers, input by input.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt as _, UntrustedToken};
use serde::de::DeserializeOwned;

use super::*;
use crate::key_ring::SigningKey;

/// The verification as it was before, through jwt-compact, kept as the reference.
fn reference<T: DeserializeOwned>(
    ring: &KeyRing,
    typ: &str,
    jws: &str,
) -> Result<(String, TokenTimes, T), KeyRejection> {
    let untrusted = UntrustedToken::new(jws).map_err(|_| KeyRejection::Malformed)?;
    let header = untrusted.header();
    if header.token_type.as_deref() != Some(typ) {
        return Err(KeyRejection::BadSignature);
    }
    let kid = header.key_id.as_deref().ok_or(KeyRejection::BadSignature)?;
    let key = ring.verifier(kid).ok_or(KeyRejection::BadSignature)?;
    let public = ed25519_compact::PublicKey::new(*key.public_key().as_bytes());
    let token =
        Ed25519.validator::<T>(&public).validate(&untrusted).map_err(|_| KeyRejection::BadSignature)?;
    let (_, claims) = token.into_parts();
    let times = TokenTimes {
        issued_at: claims.issued_at,
        not_before: claims.not_before,
        expires_at: claims.expiration,
    };
    Ok((kid.to_owned(), times, claims.custom))
}

fn signed(signer: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let signature = signer.pair.sk.sign(input.as_bytes(), None);
    format!("{input}.{}", B64.encode(signature.as_ref()))
}

fn summary<T: std::fmt::Debug>(r: Result<(String, TokenTimes, T), KeyRejection>) -> String {
    match r {
        Ok((kid, t, claims)) => {
            format!("ok {kid} {:?} {:?} {:?} {claims:?}", t.issued_at, t.not_before, t.expires_at)
        }
        Err(e) => format!("err {e:?}"),
    }
}

#[test]
fn decoding_matches_jwt_compact_input_by_input() {
    let signer = SigningKey::from_seed([11; 32], Some("k1".into()));
    let ring = KeyRing::with_signer(signer.clone(), vec![]).expect("ring");
    let good_claims = serde_json::to_string(&LicenseClaims {
        iss: "nls".into(),
        sub: "lic_1".into(),
        aud: "nectar".into(),
        jti: "key_1".into(),
        customer_id: "cus_1".into(),
        tier: "pro".into(),
        features: vec!["sso".into()],
        limits: BTreeMap::from([("calls".into(), 5)]),
        max_deployments: Some(2),
        offline_days: 30,
        grace_days: 7,
    })
    .expect("json");
    let with = |extra: &str| format!("{{{extra}{}", &good_claims[1..]);
    let h = r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt"}"#;
    let headers = [
        h.to_owned(),
        r#"  {"typ":"nls-license+jwt","kid":"k1","alg":"EdDSA","cty":"JSON"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","cty":"cbor"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","cty":null}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","x5t":"AAAA"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","x5t":"AAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","x5t#S256":5}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt","jku":"https://x","x5u":null,"other":[1]}"#
            .into(),
        r#"{"alg":"EdDSA","kid":"k1","kid":"k1","typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"EdDSA","alg":"EdDSA","kid":"k1","typ":"nls-license+jwt"}"#.into(),
        r#"{"kid":"k1","typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"none","kid":"k1","typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"EdDSA","kid":7,"typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k2","typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"EdDSA","typ":"nls-license+jwt"}"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-receipt+jwt"}"#.into(),
        r#"["EdDSA",null,null,"k1",null,null,null,"nls-license+jwt"]"#.into(),
        r#"{"alg":"EdDSA","kid":"k1","typ":"nls-license+jwt"} x"#.into(),
        "not json".into(),
    ];
    let payloads = [
        good_claims.clone(),
        with(r#""iat":1790000000,"nbf":1790000000,"exp":1890000000,"#),
        with(r#""exp":1890000000.7,"#),
        with(r#""exp":null,"#),
        with(r#""exp":"1890000000","#),
        with(r#""exp":-5,"#),
        with(r#""exp":99999999999999999999,"#),
        with(r#""exp":1,"exp":2,"#),
        with(r#""sub":"lic_dup","#),
        with(r#""unknown":{"nested":[1,2,3]},"#),
        good_claims.replace(r#""offline_days":30"#, r#""offline_days":30.0"#),
        good_claims.replace(r#""max_deployments":2"#, r#""max_deployments":null"#),
        good_claims.replace(r#""tier":"pro","#, ""),
        "[]".into(),
        r#"{"iat":1}"#.into(),
        "\t\n {}".into(),
        "null".into(),
    ];
    let mut tokens = Vec::new();
    for header in &headers {
        for payload in &payloads {
            tokens.push(signed(&signer, header, payload));
        }
    }
    let good = signed(&signer, h, &payloads[1]);
    let (input, signature) = good.rsplit_once('.').expect("dot");
    tokens.extend([
        format!("{good}.x"),
        format!("{input}.{}", &signature[..signature.len() - 2]),
        format!("{input}.{signature}A"),
        format!("{input}.{signature}=="),
        format!("{input}."),
        format!("{input}.***"),
        format!("{}.{}", input.replacen('.', "=.", 1), signature),
        good.replacen('e', "f", 1),
        format!("{}x.{}", input, signature),
        String::new(),
        "..".into(),
        "a.b".into(),
    ]);
    // The last character of a 2-char tail with non-zero trailing bits: "AB" is not canonical.
    tokens.push(format!("{}.AB.{signature}", input.split('.').next().expect("header")));

    let mut accepted = 0;
    for token in &tokens {
        let ours = summary(verify_jws_plain::<LicenseClaims>(&ring, LICENSE_TYP, token));
        assert_eq!(ours, summary(reference::<LicenseClaims>(&ring, LICENSE_TYP, token)), "token {token}");
        assert_eq!(ours, summary(verify_jws::<LicenseClaims>(&ring, LICENSE_TYP, token)), "token {token}");
        accepted += usize::from(ours.starts_with("ok"));
        for backend in crate::ed25519::Backend::ALL {
            let other = ring.clone().with_backend(*backend);
            assert_eq!(
                ours,
                summary(verify_jws_plain::<LicenseClaims>(&other, LICENSE_TYP, token)),
                "{backend:?}"
            );
        }
        let generic = summary(verify_jws::<serde_json::Value>(&ring, LICENSE_TYP, token));
        assert_eq!(
            generic,
            summary(reference::<serde_json::Value>(&ring, LICENSE_TYP, token)),
            "token {token}"
        );
    }
    assert!(accepted >= 10, "the cases must include accepted tokens, not only refusals ({accepted})");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The base64url decoder `decode_jws` uses accepts exactly what base64ct (jwt-compact's)
    /// accepts, with the same bytes.
    #[test]
    fn base64url_decoding_matches_base64ct(segment in "[A-Za-z0-9_=+/ -]{0,12}") {
        use base64ct::{Base64UrlUnpadded, Encoding as _};
        let ours = B64.decode(&segment).ok();
        proptest::prop_assert_eq!(ours, Base64UrlUnpadded::decode_vec(&segment).ok(), "{:?}", segment);
    }
}

#[test]
fn base64url_decoders_agree_on_every_trailing_character() {
    use base64ct::{Base64UrlUnpadded, Encoding as _};
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=";
    for prefix in ["", "A", "AA", "AAA", "AAAA"] {
        for last in alphabet.chars() {
            let segment = format!("{prefix}{last}");
            assert_eq!(
                B64.decode(&segment).ok(),
                Base64UrlUnpadded::decode_vec(&segment).ok(),
                "{segment:?}"
            );
        }
    }
}
