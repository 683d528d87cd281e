//! Admin authentication: `Authorization: Bearer nls_<key id>_<secret>`.
//!
//! Only the hex SHA-256 of the whole token is stored (`ApiKeyRecord::secret_sha256`) and it is
//! compared in constant time. The bootstrap admin key from the configuration is kept the same
//! way: as a hash, never as text. Scopes are ordered: `read` < `write` < `admin`.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::app_error::AppError;
use crate::key_format::hex_lower;
use crate::model::{ApiKeyRecord, Scope};

pub const API_KEY_PREFIX: &str = "nls_";
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";
/// The `event` field of the deprecation warning for a `read` key on an internal route.
pub const LEGACY_EDGE_TOKEN_EVENT: &str = "legacy_edge_token";

/// Who made an admin request, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The API key id, or `bootstrap`.
    pub actor: String,
    pub scope: Scope,
}

impl Caller {
    pub fn require(&self, needed: Scope) -> Result<(), AppError> {
        if self.scope.grants(needed) || self.is_legacy_edge_token(needed) {
            Ok(())
        } else {
            Err(AppError::InsufficientScope { needed: scope_name(needed) })
        }
    }

    /// A `read`-only key on an `edge` route: the edges' token before the `edge` scope.
    fn is_legacy_edge_token(&self, needed: Scope) -> bool {
        needed == Scope::Edge && self.scope == Scope::Read && self.actor != BOOTSTRAP_ACTOR
    }
}

pub fn scope_name(scope: Scope) -> &'static str {
    scope.as_str()
}

/// The SHA-256 of an API key token, as stored.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A freshly minted API key: the record to store and the token to show once.
pub fn mint_api_key(name: &str, scopes: Vec<Scope>, now: crate::model::Timestamp) -> (ApiKeyRecord, String) {
    let id = crate::issuing::new_id("ak");
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the platform random source is unavailable");
    let token = format!("{API_KEY_PREFIX}{id}_{}", hex_lower(&secret));
    let record = ApiKeyRecord {
        id,
        name: name.to_owned(),
        secret_sha256: hex_lower(&token_sha256(&token)),
        scopes,
        created_at: now,
        revoked_at: None,
    };
    (record, token)
}

/// The longest key id looked up. Minted ids are 29 characters; a longer one cannot exist, and
/// a huge one must not reach the store (DynamoDB refuses keys over 2 KB, which read as 503).
const MAX_API_KEY_ID_LEN: usize = 128;

/// The key id inside `nls_<key id>_<secret>`; ids themselves contain one `_` (`ak_...`).
fn key_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.rsplit_once('_')?;
    (!id.is_empty() && id.len() <= MAX_API_KEY_ID_LEN && !secret.is_empty()).then_some(id)
}

fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or(AppError::MissingCredentials)?;
    let value = value.to_str().map_err(|_| AppError::InvalidCredentials)?;
    let (scheme, token) = value.split_once(' ').ok_or(AppError::InvalidCredentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::InvalidCredentials);
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let caller = authenticate(parts, state).await?;
        let route = parts.extensions.get::<MatchedPath>().map(|r| r.as_str());
        if let Some(needed) = route.and_then(|r| state.required_scope(&parts.method, r)) {
            caller.require(needed)?;
            if caller.is_legacy_edge_token(needed) {
                tracing::warn!(
                    event = LEGACY_EDGE_TOKEN_EVENT,
                    api_key_id = %caller.actor,
                    "an API key with the `read` scope called an internal route; create one with the \
                     `edge` scope for the edges: `read` stops working here in the next release"
                );
            }
        }
        Ok(caller)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, AppError> {
    let token = bearer(parts)?;
    let presented = token_sha256(token);
    if let Some(bootstrap) = &state.config().bootstrap_admin_key_sha256 {
        if bool::from(presented.ct_eq(bootstrap)) {
            return Ok(Caller { actor: BOOTSTRAP_ACTOR.to_owned(), scope: Scope::Admin });
        }
    }
    let record = verify_api_key(state, token).await?;
    // A key carries one family: `edge` alone, or read/write/admin (the highest counts).
    // `registry:push` is no admin scope: a key holding only that may not use the admin API.
    let scope = if record.scopes.contains(&Scope::Edge) {
        Some(Scope::Edge)
    } else if record.scopes.contains(&Scope::Meter) {
        // A cloud service's metering key: `meter` alone, like `edge`.
        Some(Scope::Meter)
    } else {
        record.scopes.iter().copied().filter(|s| s.is_admin_api()).max()
    };
    let scope = scope.ok_or(AppError::InsufficientScope { needed: "read" })?;
    Ok(Caller { actor: record.id, scope })
}

/// The stored, unrevoked record of an API key token (`nls_<key id>_<secret>`), after its
/// per-key rate limit. The bootstrap key is not an API key record and is not accepted here.
pub(crate) async fn verify_api_key(state: &AppState, token: &str) -> Result<ApiKeyRecord, AppError> {
    let id = key_id_of(token).ok_or(AppError::InvalidCredentials)?;
    let record = state.store().get_api_key(id).await?.ok_or(AppError::InvalidCredentials)?;
    let stored = hex_lower(&token_sha256(token));
    let matches = bool::from(stored.as_bytes().ct_eq(record.secret_sha256.as_bytes()));
    if !matches || record.revoked_at.is_some() {
        return Err(AppError::InvalidCredentials);
    }
    state.check_api_key_rate(&record.id)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_found_inside_tokens() {
        let check = |token: &str, expected: Option<&str>| assert_eq!(key_id_of(token), expected, "{token}");
        check("nls_ak_abc_0123", Some("ak_abc"));
        check("nls_ak_abc_", None);
        check("nls__0123", None);
        check("ak_abc_0123", None);
        check("nls_nounderscore", None);
        // Issue 19 item 7: a 2 KB id reached DynamoDB, which refused the key: 503, not 401.
        check(&format!("nls_ak_{}_0123", "x".repeat(2048)), None);
        check(
            &format!("nls_{}_0123", "x".repeat(MAX_API_KEY_ID_LEN)),
            Some("x".repeat(MAX_API_KEY_ID_LEN).as_str()),
        );
    }

    #[test]
    fn only_read_only_keys_pass_as_the_legacy_edge_token() {
        let caller = |actor: &str, scope| Caller { actor: actor.to_owned(), scope };
        let allowed = |c: Caller, needed| c.require(needed).is_ok();
        assert!(allowed(caller("ak_edge", Scope::Edge), Scope::Edge));
        assert!(allowed(caller("ak_old", Scope::Read), Scope::Edge));
        assert!(!allowed(caller("ak_w", Scope::Write), Scope::Edge));
        assert!(!allowed(caller("ak_a", Scope::Admin), Scope::Edge));
        assert!(!allowed(caller(BOOTSTRAP_ACTOR, Scope::Admin), Scope::Edge));
        assert!(!allowed(caller("ak_edge", Scope::Edge), Scope::Read));
        assert!(!allowed(caller("ak_push", Scope::RegistryPush), Scope::Edge));
        assert!(allowed(caller("ak_meter", Scope::Meter), Scope::Meter));
        for other in [Scope::Read, Scope::Write, Scope::Admin, Scope::Edge, Scope::RegistryPush] {
            assert!(!allowed(caller("ak_meter", Scope::Meter), other), "{other:?}");
            assert!(!allowed(caller("ak_x", other), Scope::Meter), "{other:?}");
        }
        assert!(!allowed(caller(BOOTSTRAP_ACTOR, Scope::Admin), Scope::Meter));
    }

    #[test]
    fn minted_tokens_hash_to_their_record() {
        let (record, token) = mint_api_key("ci", vec![Scope::Write], chrono::Utc::now());
        assert_eq!(key_id_of(&token), Some(record.id.as_str()));
        assert_eq!(record.secret_sha256, hex_lower(&token_sha256(&token)));
        assert!(!record.secret_sha256.contains(&token));
    }
}
