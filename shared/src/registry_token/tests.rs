use p256::ecdsa::signature::Verifier as _;
use proptest::prelude::*;

use super::*;

fn scope(text: &str) -> RequestedScope {
    parse_scope(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn grant(repositories: &[&str], actions: &[&str]) -> RegistryGrant {
    RegistryGrant {
        repositories: repositories.iter().map(|s| s.to_string()).collect(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    }
}

/// (requester, scopes) → the `access` claim, as `type:name:actions` strings.
fn check_access(requester: Requester<'_>, scopes: &[&str], expected: &[&str]) {
    let parsed = parse_scopes(scopes.iter().copied()).expect("scopes parse");
    let access = access_claim(&decide_scopes(requester, &parsed));
    let got: Vec<String> =
        access.iter().map(|a| format!("{}:{}:{}", a.resource_type, a.name, a.actions.join(","))).collect();
    assert_eq!(got, expected, "{requester:?} asking {scopes:?}");
}

#[test]
fn scopes_parse_by_the_grammar() {
    let s = scope("repository:nectar/app:pull,push");
    assert_eq!((s.resource_type.as_str(), s.name.as_str()), ("repository", "nectar/app"));
    assert_eq!(s.actions, ["pull", "push"]);
    assert_eq!(scope("repository(plugin):x/y:pull").resource_class.as_deref(), Some("plugin"));
    assert_eq!(scope("registry:catalog:*").actions, ["*"]);
    assert_eq!(scope("repository:localhost:5000/nectar/app:pull").name, "localhost:5000/nectar/app");
    assert_eq!(scope("repository:nectar/app:").actions, Vec::<String>::new());
    assert_eq!(scope("repository:a__b/c-d--e.f_g:pull").name, "a__b/c-d--e.f_g");
}

#[test]
fn malformed_scopes_are_refused() {
    for bad in [
        "",
        "repository",
        "repository:nectar/app",
        ":nectar/app:pull",
        "Repository:nectar/app:pull",
        "repository:Nectar/App:pull",
        "repository:nectar//app:pull",
        "repository:nectar/app-:pull",
        "repository:nectar/app:PULL",
        "repository(:x:pull",
        "repository(Plugin):x:pull",
        "repository::pull",
        "repository:nectar/app:pull;rm",
    ] {
        assert!(matches!(parse_scope(bad), Err(ScopeError::Malformed(_))), "{bad:?} parsed");
    }
    assert!(parse_scope(&format!("repository:{}:pull", "a".repeat(600))).is_err());
}

#[test]
fn several_scopes_come_as_repeated_or_space_separated_parameters() {
    let parsed = parse_scopes(["repository:a/b:pull repository:c/d:push", "registry:catalog:*"]).unwrap();
    assert_eq!(parsed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a/b", "c/d", "catalog"]);
    let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("repository:r{i}:pull")).collect();
    assert_eq!(parse_scopes(many.iter().map(String::as_str)), Err(ScopeError::TooMany));
    assert_eq!(
        parse_scopes(["repository:ok:pull", "nonsense"]).map(|_| ()),
        Err(ScopeError::Malformed("nonsense".into()))
    );
}

#[test]
fn customers_get_the_intersection_of_ask_and_plan_and_never_push() {
    let plan = grant(&["nectar/app", "nectar/worker-*"], &["pull"]);
    let customer = Requester::Customer(Some(&plan));
    check_access(customer, &["repository:nectar/app:pull"], &["repository:nectar/app:pull"]);
    check_access(customer, &["repository:nectar/app:pull,push"], &["repository:nectar/app:pull"]);
    check_access(customer, &["repository:nectar/app:push"], &[]);
    check_access(customer, &["repository:nectar/app:delete,*"], &[]);
    check_access(customer, &["repository:nectar/internal:pull"], &[]);
    check_access(customer, &["repository:nectar/worker-gpu:pull"], &["repository:nectar/worker-gpu:pull"]);
    check_access(customer, &["repository:nectar/worker-a/b:pull"], &[]);
    check_access(customer, &["registry:catalog:*"], &[]);
    check_access(customer, &["repository(plugin):nectar/app:pull"], &[]);
    check_access(
        customer,
        &["repository:nectar/app:pull", "repository:nectar/internal:pull", "repository:nectar/app:pull"],
        &["repository:nectar/app:pull"],
    );
    check_access(Requester::Customer(None), &["repository:nectar/app:pull"], &[]);
    // A stored grant that says push (it cannot pass `check`, but be safe) still gives pull only.
    let pushy = grant(&["nectar/app"], &["pull", "push", "delete"]);
    check_access(
        Requester::Customer(Some(&pushy)),
        &["repository:nectar/app:pull,push,delete"],
        &["repository:nectar/app:pull"],
    );
}

#[test]
fn staff_may_pull_and_push_anywhere_but_not_delete() {
    check_access(
        Requester::Staff,
        &["repository:nectar/internal:push,pull"],
        &["repository:nectar/internal:pull,push"],
    );
    check_access(Requester::Staff, &["repository:nectar/app:delete"], &[]);
    check_access(Requester::Staff, &["registry:catalog:*"], &[]);
}

#[test]
fn grants_are_checked_before_they_are_stored() {
    assert_eq!(grant(&["nectar/app", "nectar/worker-*"], &["pull"]).check(), Ok(()));
    assert_eq!(grant(&["Nectar"], &["pull"]).check(), Err(GrantError::BadRepository(0)));
    assert_eq!(grant(&["ok", ""], &[]).check(), Err(GrantError::BadRepository(1)));
    assert_eq!(grant(&["ok"], &["push"]).check(), Err(GrantError::BadAction));
    assert!(serde_json::from_str::<RegistryGrant>(r#"{"repositories":[],"extra":1}"#).is_err());
}

#[test]
fn globs_match_within_one_path_component() {
    let check = |pattern: &str, name: &str, expected: bool| {
        assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
    };
    check("nectar/app", "nectar/app", true);
    check("nectar/app", "nectar/app2", false);
    check("nectar/*", "nectar/app", true);
    check("nectar/*", "nectar/a/b", false);
    check("nectar/worker-*", "nectar/worker-", true);
    check("*/app", "nectar/app", true);
    check("n*r/*-*", "nectar/worker-gpu", true);
    check("nectar/*-gpu", "nectar/worker-cpu", false);
}

#[test]
fn tokens_are_es256_with_the_libtrust_kid_and_verify() {
    let key = RegistrySigningKey::generate();
    let access = vec![ResourceActions {
        resource_type: "repository".into(),
        name: "nectar/app".into(),
        actions: vec!["pull".into()],
    }];
    let now = chrono::Utc::now();
    let claims =
        RegistryClaims::new("nls", "lic_1", "registry.test", access, now, chrono::Duration::minutes(5));
    let token = key.sign(&claims);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], key.kid());
    let payload: RegistryClaims = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(payload, claims);
    assert_eq!(payload.exp - payload.iat, 300);
    let signature = Signature::from_slice(&B64URL.decode(parts[2]).unwrap()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(key.verifying_key().verify(signed.as_bytes(), &signature).is_ok());
    assert!(key.verifying_key().verify(b"other", &signature).is_err());
}

#[test]
fn libtrust_key_ids_have_twelve_groups_of_four_base32() {
    // Python: base64.b32encode(hashlib.sha256(b"").digest()[:30]), in groups of four.
    assert_eq!(libtrust_key_id(b""), "4OYM:IQUY:7QOB:JGX3:6TEJ:S35Z:EQT2:4QPE:MSNZ:GTFE:SWMR:W6CS");
    let kid = RegistrySigningKey::generate().kid().to_owned();
    assert_eq!(kid.len(), 59);
    assert!(
        kid.split(':')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)))
    );
}

#[test]
fn the_key_round_trips_through_its_jwk_and_refuses_a_mismatched_one() {
    let key = RegistrySigningKey::generate();
    let jwk = key.to_private_jwk();
    let back = RegistrySigningKey::parse_jwk_json(&serde_json::to_string(&jwk).unwrap()).unwrap();
    assert_eq!(back.kid(), key.kid());
    let mut other = jwk.clone();
    other.x = RegistrySigningKey::generate().to_private_jwk().x;
    assert!(RegistrySigningKey::from_jwk(&other).is_err());
    assert!(RegistrySigningKey::parse_jwk_json("{}").is_err());
    assert!(!format!("{key:?}").contains(&jwk.d));
}

/// (tag, content, the bytes after it) of the DER value at the start of `der`.
fn read_tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (len, header) = match der[1] {
        n @ 0..=0x7f => (usize::from(n), 2),
        0x81 => (usize::from(der[2]), 3),
        0x82 => (usize::from(der[2]) << 8 | usize::from(der[3]), 4),
        other => panic!("length form {other:#x}"),
    };
    (der[0], &der[header..header + len], &der[header + len..])
}

#[test]
fn the_certificate_is_der_with_the_key_inside_and_a_valid_signature() {
    let key = RegistrySigningKey::generate();
    let now = chrono::Utc::now();
    let der = self_signed_certificate_der(&key, "nls registry", now, now + chrono::Duration::days(3650));
    let (tag, certificate, rest) = read_tlv(&der);
    assert_eq!((tag, rest.len()), (0x30, 0));
    let tbs_len = certificate.len() - read_tlv(certificate).2.len();
    let tbs = &certificate[..tbs_len];
    let spki = key.public_key_spki_der();
    assert!(tbs.windows(spki.len()).any(|w| w == spki.as_slice()));
    let (_, _, after_algorithm) = read_tlv(read_tlv(certificate).2);
    let (tag, bit_string, _) = read_tlv(after_algorithm);
    assert_eq!((tag, bit_string[0]), (0x03, 0));
    let signature = p256::ecdsa::DerSignature::try_from(&bit_string[1..]).expect("a DER signature");
    assert!(key.verifying_key().verify(tbs, &signature).is_ok());
    let pem = certificate_pem(&der);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n") && pem.ends_with("-----END CERTIFICATE-----\n"));
}

proptest! {
    #[test]
    fn scope_parsing_never_panics(text in ".{0,80}") {
        let _ = parse_scope(&text);
    }

    #[test]
    fn a_customer_is_never_granted_more_than_pull_or_outside_the_grant(
        name in "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        actions in proptest::collection::vec(prop_oneof!["pull", "push", "delete", "\\*"], 0..4),
        patterns in proptest::collection::vec("[a-z]{1,3}\\*?(/[a-z*]{1,4})?", 0..3),
    ) {
        let plan = RegistryGrant { repositories: patterns.clone(), actions: vec!["pull".into(), "push".into()] };
        let text = format!("repository:{name}:{}", actions.join(","));
        let parsed = parse_scopes([text.as_str()]).unwrap();
        for entry in access_claim(&decide_scopes(Requester::Customer(Some(&plan)), &parsed)) {
            prop_assert_eq!(entry.actions, vec!["pull".to_string()]);
            prop_assert!(patterns.iter().any(|p| glob_matches(p, &entry.name)));
            prop_assert!(actions.iter().any(|a| a == "pull"));
        }
    }
}

/// The document's pattern for a grant's repository says exactly what `check` enforces.
fn pattern_accepts(item: &str) -> bool {
    let pattern = regex_lite::Regex::new(REPOSITORY_GLOB_PATTERN).expect("the pattern compiles");
    item.len() <= REPOSITORY_GLOB_MAX_LEN && pattern.is_match(item)
}

fn check_accepts(item: &str) -> bool {
    grant(&[item], &["pull"]).check().is_ok()
}

#[test]
fn the_repository_pattern_agrees_with_the_check_on_the_edge_cases() {
    for item in [
        "nectar/app",
        "nectar/worker-*",
        "*",
        "a.b",
        "a__b",
        "a---b",
        "localhost:5000/nectar/app",
        "Registry.Example.com/x",
        "A/b",
        "*.example.com/x",
        &"a".repeat(255),
        "",
        "/a",
        "a/",
        "a//b",
        "Foo",
        "a:b",
        "a._b",
        "a___b",
        "a-_b",
        "-a",
        "a-",
        "abc-/x",
        "nectar/App",
        "nectar/app:tag",
        "nectar/a b",
        "ñ/a",
        &"a".repeat(256),
    ] {
        assert_eq!(pattern_accepts(item), check_accepts(item), "{item:?}");
    }
}

proptest! {
    #[test]
    fn the_repository_pattern_agrees_with_the_check(
        item in proptest::collection::vec(
            prop::sample::select(vec!["a", "z9", "Q", "*", ".", "_", "__", "-", "--", ":", "/", " ", "é"]),
            0..14,
        ).prop_map(|parts| parts.concat())
    ) {
        prop_assert_eq!(pattern_accepts(&item), check_accepts(&item), "{:?}", item);
    }

    /// The pattern with its repetitions bounded, so what it generates stays under the length cap.
    #[test]
    fn what_the_repository_pattern_generates_the_check_accepts(
        item in proptest::string::string_regex(
            &REPOSITORY_GLOB_PATTERN
                .trim_start_matches('^')
                .trim_end_matches('$')
                .replace("]+", "]{1,4}")
                .replace("]*", "]{0,3}")
                .replace(")*", "){0,3}")
                .replace("-+", "-{1,2}"),
        ).expect("a pattern proptest can generate from")
    ) {
        prop_assert!(check_accepts(&item), "{:?}", item);
    }
}
