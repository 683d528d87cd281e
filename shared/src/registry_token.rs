//! The Docker Registry v2 token service's domain (docs/distribution.md): scope parsing, the
//! grant (what was asked ∩ what the caller may have), the token's claims, and the ES256 key
//! that signs them.
//!
//! The CNCF registry (distribution 2.8) trusts a token whose header `kid` is the libtrust key
//! id of a public key in its `rootcertbundle` (or whose `x5c` chains to it); we send `kid`. It
//! checks `iss`, `aud` (one string, its `service`), `exp`/`nbf` with 60 s of leeway, then the
//! signature with the algorithm the key type allows (ES256 for P-256). This key is separate
//! from the Ed25519 license ring: the registry cannot verify Ed25519.

mod certificate;

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Timestamp;

pub use self::certificate::self_signed_certificate_der;

/// The only resource type a grant can name; others (e.g. `registry:catalog:*`) are granted nothing.
pub const REPOSITORY: &str = "repository";
pub const PULL: &str = "pull";
pub const PUSH: &str = "push";
/// What a customer can ever be granted, whatever their license says.
pub const CUSTOMER_ACTIONS: [&str; 1] = [PULL];
/// What an API key with `registry:push` is granted, on any repository.
pub const STAFF_ACTIONS: [&str; 2] = [PULL, PUSH];
/// Bounds on what a request may carry, so a scope list never costs more than a few KB to judge.
pub const MAX_SCOPES: usize = 16;
pub const MAX_SCOPE_LEN: usize = 512;

/// A license's (or plan's) registry entitlement, as stored and as the admin API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryGrant {
    /// Repository names or globs: `*` matches any run of characters except `/`
    /// (`nectar/worker-*` matches `nectar/worker-gpu`, not `nectar/worker-a/b`).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Of these, only `pull` is ever granted to a customer.
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("`registry.repositories[{0}]` is not a repository name or glob")]
    BadRepository(usize),
    #[error("`registry.actions` may only hold `pull` (customers never push or delete)")]
    BadAction,
}

impl RegistryGrant {
    /// Checks an admin's or a catalogue's grant before it is stored.
    pub fn check(&self) -> Result<(), GrantError> {
        for (i, pattern) in self.repositories.iter().enumerate() {
            if !is_repository_name(&pattern.replace('*', "a")) {
                return Err(GrantError::BadRepository(i));
            }
        }
        if self.actions.iter().any(|a| !CUSTOMER_ACTIONS.contains(&a.as_str())) {
            return Err(GrantError::BadAction);
        }
        Ok(())
    }

    fn covers(&self, repository: &str) -> bool {
        self.repositories.iter().any(|p| glob_matches(p, repository))
    }
}

/// `*` matches any run of characters other than `/`; everything else matches itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(tail) = name.strip_prefix(prefix) else { return false };
            // Try every split of `tail` whose head has no `/`.
            let mut end = 0;
            loop {
                if glob_matches(rest, &tail[end..]) {
                    return true;
                }
                match tail[end..].chars().next() {
                    Some(c) if c != '/' => end += c.len_utf8(),
                    _ => return false,
                }
            }
        }
    }
}

/// One `scope` of a token request: `type[(class)]:name:action[,action...]` (scope.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedScope {
    pub resource_type: String,
    pub resource_class: Option<String>,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("more than {MAX_SCOPES} scopes")]
    TooMany,
    #[error("scope {0:?} is not `type:name:actions`")]
    Malformed(String),
}

fn is_lower_alnum(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// What [`RegistryGrant::check`] accepts for one `repositories` item, as a regular expression
/// (the OpenAPI document's `pattern`): a repository name where `*` may stand for any lower-case
/// letter or digit, at most 255 characters. `registry_token::tests` hold the two to each other.
pub const REPOSITORY_GLOB_PATTERN: &str = concat!(
    r"^(?:[A-Za-z0-9*.:-]*[A-Z.:][A-Za-z0-9*.:-]*/)?",
    r"[a-z0-9*]+(?:(?:[._]|__|-+)[a-z0-9*]+)*",
    r"(?:/[a-z0-9*]+(?:(?:[._]|__|-+)[a-z0-9*]+)*)*$",
);
pub const REPOSITORY_GLOB_MAX_LEN: usize = 255;

/// A repository name as the registry accepts it: `/`-separated components of lower-case
/// letters and digits joined by `.`, `_`, `__` or runs of `-`, optionally after a host
/// (`host[:port]/`), at most 255 characters.
fn is_repository_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts = name.split('/').peekable();
    let first = parts.next().unwrap_or_default();
    let host_like = first.contains([':', '.']) || first.bytes().any(|b| b.is_ascii_uppercase());
    let host_ok = host_like
        && parts.peek().is_some()
        && first.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    (host_ok || is_component(first)) && parts.all(is_component)
}

fn is_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// Parses one scope. The name may hold `:` (a registry host's port), so the type ends at the
/// first `:` and the actions start after the last.
pub fn parse_scope(text: &str) -> Result<RequestedScope, ScopeError> {
    let malformed = || ScopeError::Malformed(text.chars().take(80).collect());
    if text.len() > MAX_SCOPE_LEN {
        return Err(malformed());
    }
    let (type_part, rest) = text.split_once(':').ok_or_else(malformed)?;
    let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
    let (resource_type, resource_class) = match type_part.split_once('(') {
        None => (type_part, None),
        Some((t, class)) => {
            let class = class.strip_suffix(')').filter(|c| is_lower_alnum(c)).ok_or_else(malformed)?;
            (t, Some(class.to_owned()))
        }
    };
    if !is_lower_alnum(resource_type) || name.is_empty() {
        return Err(malformed());
    }
    if resource_type == REPOSITORY && !is_repository_name(name) {
        return Err(malformed());
    }
    let actions: Vec<String> = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
    let action_ok = |a: &String| a == "*" || a.bytes().all(|b| b.is_ascii_lowercase());
    if !actions.iter().all(action_ok) {
        return Err(malformed());
    }
    Ok(RequestedScope {
        resource_type: resource_type.to_owned(),
        resource_class,
        name: name.to_owned(),
        actions,
    })
}

/// Every `scope` parameter of a request; one parameter may also hold several, space-separated.
pub fn parse_scopes<'a>(
    params: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<RequestedScope>, ScopeError> {
    let mut scopes = Vec::new();
    for text in params.into_iter().flat_map(|p| p.split(' ')).filter(|s| !s.is_empty()) {
        if scopes.len() == MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        scopes.push(parse_scope(text)?);
    }
    Ok(scopes)
}

/// Who is asking, once their credentials checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester<'a> {
    /// A customer whose license validated; `None`: the license has no registry entitlement.
    Customer(Option<&'a RegistryGrant>),
    /// An API key with the `registry:push` scope.
    Staff,
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// What a requested scope became: granted actions (possibly fewer than asked) or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDecision {
    pub scope: RequestedScope,
    pub granted: Vec<String>,
}

/// The intersection of what was asked and what the requester may have, scope by scope.
pub fn decide_scopes(requester: Requester<'_>, scopes: &[RequestedScope]) -> Vec<ScopeDecision> {
    scopes
        .iter()
        .map(|scope| {
            let allowed: BTreeSet<&str> = match requester {
                _ if scope.resource_type != REPOSITORY || scope.resource_class.is_some() => BTreeSet::new(),
                Requester::Staff => STAFF_ACTIONS.into_iter().collect(),
                Requester::Customer(Some(grant)) if grant.covers(&scope.name) => grant
                    .actions
                    .iter()
                    .map(String::as_str)
                    .filter(|a| CUSTOMER_ACTIONS.contains(a))
                    .collect(),
                Requester::Customer(_) => BTreeSet::new(),
            };
            let mut granted: Vec<String> =
                scope.actions.iter().filter(|a| allowed.contains(a.as_str())).cloned().collect();
            granted.sort();
            granted.dedup();
            ScopeDecision { scope: scope.clone(), granted }
        })
        .collect()
}

/// The `access` claim: the granted scopes, one entry per repository with its actions merged.
pub fn access_claim(decisions: &[ScopeDecision]) -> Vec<ResourceActions> {
    let mut access: Vec<ResourceActions> = Vec::new();
    for d in decisions.iter().filter(|d| !d.granted.is_empty()) {
        match access.iter_mut().find(|a| a.resource_type == d.scope.resource_type && a.name == d.scope.name) {
            Some(entry) => {
                entry.actions.extend(d.granted.iter().cloned());
                entry.actions.sort();
                entry.actions.dedup();
            }
            None => access.push(ResourceActions {
                resource_type: d.scope.resource_type.clone(),
                name: d.scope.name.clone(),
                actions: d.granted.clone(),
            }),
        }
    }
    access
}

/// A registry token's claims (jwt.md). `aud` is one string: 2.8 compares it as such.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<ResourceActions>,
}

impl RegistryClaims {
    /// Claims valid from `now` for `ttl`, with a fresh random `jti`.
    pub fn new(
        issuer: &str,
        subject: &str,
        service: &str,
        access: Vec<ResourceActions>,
        now: Timestamp,
        ttl: chrono::Duration,
    ) -> Self {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).expect("the platform random source is unavailable");
        Self {
            iss: issuer.to_owned(),
            sub: subject.to_owned(),
            aud: service.to_owned(),
            exp: (now + ttl).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: crate::key_format::hex_lower(&jti),
            access,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryKeyError {
    #[error("not a private P-256 EC JWK: {0}")]
    BadJwk(&'static str),
}

/// The ES256 key that signs registry tokens.
#[derive(Clone)]
pub struct RegistrySigningKey {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for RegistrySigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A private EC JWK (RFC 7518 §6.2), the stored form of the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EcPrivateJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub d: String,
    #[serde(default)]
    pub kid: Option<String>,
}

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl RegistrySigningKey {
    pub fn generate() -> Self {
        loop {
            let mut d = [0u8; 32];
            getrandom::fill(&mut d).expect("the platform random source is unavailable");
            // Zero or ≥ the group order: astronomically rare, draw again.
            if let Ok(key) = SigningKey::from_slice(&d) {
                return Self::from_key(key);
            }
        }
    }

    fn from_key(key: SigningKey) -> Self {
        let kid = libtrust_key_id(&spki_der(key.verifying_key()));
        Self { key, kid }
    }

    pub fn from_jwk(jwk: &EcPrivateJwk) -> Result<Self, RegistryKeyError> {
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(RegistryKeyError::BadJwk("kty must be EC and crv P-256"));
        }
        let d = B64URL.decode(&jwk.d).map_err(|_| RegistryKeyError::BadJwk("d is not base64url"))?;
        let key =
            SigningKey::from_slice(&d).map_err(|_| RegistryKeyError::BadJwk("d is not a P-256 scalar"))?;
        let key = Self::from_key(key);
        if key.public_jwk_coordinates() != (jwk.x.clone(), jwk.y.clone()) {
            return Err(RegistryKeyError::BadJwk("x and y do not match d"));
        }
        Ok(key)
    }

    pub fn parse_jwk_json(json: &str) -> Result<Self, RegistryKeyError> {
        let jwk: EcPrivateJwk =
            serde_json::from_str(json).map_err(|_| RegistryKeyError::BadJwk("not JSON"))?;
        Self::from_jwk(&jwk)
    }

    fn public_jwk_coordinates(&self) -> (String, String) {
        let point = self.key.verifying_key().to_encoded_point(false);
        let x = point.x().map(|x| B64URL.encode(x)).unwrap_or_default();
        let y = point.y().map(|y| B64URL.encode(y)).unwrap_or_default();
        (x, y)
    }

    pub fn to_private_jwk(&self) -> EcPrivateJwk {
        let (x, y) = self.public_jwk_coordinates();
        EcPrivateJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x,
            y,
            d: B64URL.encode(self.key.to_bytes()),
            kid: Some(self.kid.clone()),
        }
    }

    /// The libtrust key id the registry looks tokens' `kid` up by.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }

    pub fn public_key_spki_der(&self) -> Vec<u8> {
        spki_der(self.key.verifying_key())
    }

    /// `header.claims.signature`, ES256 (the signature is r ‖ s, RFC 7518 §3.4).
    pub fn sign(&self, claims: &RegistryClaims) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let claims = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims));
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64URL.encode(signature.to_bytes()))
    }

    /// ECDSA-SHA256 over `message`, DER-encoded (X.509 signatures).
    pub(crate) fn sign_der(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    let point = key.to_encoded_point(false);
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point.as_bytes());
    der
}

/// libtrust's key id: the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in
/// base32 (RFC 4648, no padding), in twelve `:`-separated groups of four.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(spki_der);
    let mut encoded = String::with_capacity(48);
    for chunk in digest[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            encoded.push(ALPHABET[((bits >> (i * 5)) & 31) as usize] as char);
        }
    }
    let groups: Vec<&str> = (0..12).map(|i| &encoded[i * 4..i * 4 + 4]).collect();
    groups.join(":")
}

/// PEM armour for a DER certificate (the registry's `rootcertbundle` format).
pub fn certificate_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests;
