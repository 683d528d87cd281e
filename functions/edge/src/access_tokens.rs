//! `POST /v1/access-tokens` at the edge (docs/cloud-access.md). An edge holds only the public
//! JWKS, so it cannot sign: it re-judges the license from its snapshot with the core's
//! decisions (`decide`, then `access_token::decide_access`, written once for origin and edge)
//! and hands out a token the origin signed for the same key, deployment and audience while more
//! than [`MIN_LIFE_LEFT_SECS`] of it is left. Otherwise it forwards the request to the origin
//! once, caches the signed answer (isolate memory, then KV `atok/...`), and relays it unchanged.
//!
//! A refusal the snapshot decides (suspended, not entitled, quota spent) wins over any cached
//! token. With no fresh snapshot or an unreachable origin and no usable cached token, the
//! answer is 503 `unavailable`, as the origin gives with its store down: the app falls back.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use nls_core::access_token::{decide_access, is_audience_name};
use nls_core::model::Timestamp;
use nls_core::validation::{ValidationCode, ValidationRequest, decide};
use serde::{Deserialize, Serialize};

use crate::edge_ports::{EdgeKv, Origin, OriginError, OriginReply};
use crate::edge_service::{BackgroundTask, Edge, EdgeRequest, EdgeResponse, parse_json};
use crate::outbox::sha_hex;
use crate::snapshot_layers::SnapshotSource;

/// A cached token is handed out only while more than this is left of it, so the caller can
/// still use it (clients refresh shortly before expiry).
pub const MIN_LIFE_LEFT_SECS: i64 = 60;
/// Tokens one isolate remembers; a full map drops the expired ones, then everything.
pub const MAX_CACHED_TOKENS: usize = 10_000;
const MAX_DEPLOYMENT_ID: usize = 256;
const AUDIENCE_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
const NOT_ON_RECORD: &str = "this license is not on record";

/// The request, as the origin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenBody {
    pub key: String,
    pub deployment_id: String,
    pub audience: String,
}

/// A token the origin signed, as the edge keeps it (memory, and KV `atok/...`). Bound to the
/// license version the edge's snapshot had when it was fetched: a changed license (plan,
/// grant, status) makes the edge ask the origin again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAccessToken {
    pub license_id: String,
    pub license_version: u64,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The origin's answer (`AccessTokenAnswer`); only what is cached is read.
#[derive(Debug, Deserialize)]
struct OriginAnswer {
    token: String,
    expires_at: DateTime<Utc>,
}

/// The answer the edge composes from a cached token: the origin's shape, with the warning of
/// the decision the edge just made (a license may have entered grace since).
#[derive(Debug, Serialize)]
struct EdgeAnswer<'a> {
    token: &'a str,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// Where a token is cached in KV. Key and deployment are hashed (KV keys are visible to
/// operators; license keys are credentials); the audience is a public service name.
pub fn access_token_key(license_key: &str, deployment_id: &str, audience: &str) -> String {
    format!("atok/{}/{}/{audience}", sha_hex(license_key), sha_hex(deployment_id))
}

/// This isolate's tokens, bounded by [`MAX_CACHED_TOKENS`].
#[derive(Default)]
pub struct AccessTokenCache {
    tokens: Mutex<HashMap<String, CachedAccessToken>>,
}

impl AccessTokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedAccessToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, cache_key: &str) -> Option<CachedAccessToken> {
        self.lock().get(cache_key).cloned()
    }

    pub fn put(&self, cache_key: String, token: CachedAccessToken, now: Timestamp) {
        let mut map = self.lock();
        if map.len() >= MAX_CACHED_TOKENS && !map.contains_key(&cache_key) {
            map.retain(|_, t| t.expires_at > now);
            if map.len() >= MAX_CACHED_TOKENS {
                map.clear();
            }
        }
        map.insert(cache_key, token);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// True when `cached` may be handed out now for `license_id` at `license_version`.
fn usable(cached: &CachedAccessToken, license_id: &str, license_version: u64, now: Timestamp) -> bool {
    cached.license_id == license_id
        && cached.license_version == license_version
        && cached.expires_at - now > Duration::seconds(MIN_LIFE_LEFT_SECS)
}

fn unavailable(why: &str) -> EdgeResponse {
    let mut r = EdgeResponse::error(503, "unavailable", format!("{why}; no access token issued"));
    r.headers.push(("retry-after", "1".to_owned()));
    r
}

fn refused(code: ValidationCode, message: String) -> EdgeResponse {
    EdgeResponse::error(403, code.as_str(), message)
}

impl<K: EdgeKv, O: Origin> Edge<K, O> {
    pub(crate) async fn access_token(
        &self,
        req: &EdgeRequest,
        now: Timestamp,
        bg: &mut Vec<BackgroundTask>,
    ) -> Result<EdgeResponse, EdgeResponse> {
        let body: AccessTokenBody = parse_json(&req.body)?;
        let chars = body.deployment_id.chars().count();
        if chars == 0 || chars > MAX_DEPLOYMENT_ID {
            return Err(EdgeResponse::error(
                400,
                "invalid_request",
                format!("`deployment_id` must be 1 to {MAX_DEPLOYMENT_ID} characters"),
            ));
        }
        if !is_audience_name(&body.audience) {
            return Err(EdgeResponse::error(
                400,
                "invalid_request",
                format!("`audience` must match {AUDIENCE_PATTERN}"),
            ));
        }
        let key = self.verify_key(&body.key, now, bg).await.map_err(|rejection| {
            let code = ValidationCode::from(rejection).as_str();
            EdgeResponse::error(401, "invalid_license_key", format!("the license key is not valid: {code}"))
        })?;
        let license_id = key.claims.sub.clone();
        let lookup = self.lookup_snapshot(&license_id, now, true, bg).await;
        if lookup.source == SnapshotSource::NotOnRecord {
            return Err(refused(ValidationCode::Revoked, NOT_ON_RECORD.to_owned()));
        }
        // Only a snapshot within the TTL may re-judge the license: with an older one a
        // suspension could be missed, so no token (the origin, store down, gives none either).
        let entry = match lookup.entry {
            Some(entry) if !lookup.degraded() => entry,
            _ => return Err(unavailable("the license's status cannot be checked now")),
        };
        let snapshot = entry.snapshot();
        let decision = decide(&key, &ValidationRequest::default(), Some(snapshot), now);
        let grant =
            decide_access(&decision, snapshot.license.cloud.as_ref(), &snapshot.month_usage, &body.audience)
                .map_err(|r| refused(r.code, r.message))?;
        let version = snapshot.license.version;
        let key_text = body.key.trim();
        let cache_key = access_token_key(key_text, &body.deployment_id, &body.audience);
        let mut cached = self.state.access_tokens.get(&cache_key);
        if cached.as_ref().is_none_or(|c| !usable(c, &license_id, version, now)) {
            cached = self.kv_access_token(&cache_key, &license_id, version, now).await;
        }
        if let Some(cached) = cached.filter(|c| usable(c, &license_id, version, now)) {
            let answer =
                EdgeAnswer { token: &cached.token, expires_at: cached.expires_at, warning: grant.warning };
            return Ok(EdgeResponse::json(200, &answer));
        }
        let forwarded = self.origin_access_token(&body, req.client.ip.as_deref(), now).await;
        let reply = match forwarded {
            Ok(reply) => reply,
            Err(_) => return Err(unavailable("NLS cannot be reached")),
        };
        if reply.status == 200 {
            if let Ok(answer) = serde_json::from_str::<OriginAnswer>(&reply.body) {
                let token = CachedAccessToken {
                    license_id,
                    license_version: version,
                    token: answer.token,
                    expires_at: answer.expires_at,
                };
                if let Ok(value) = serde_json::to_string(&token) {
                    bg.push(BackgroundTask::KvPut {
                        key: cache_key.clone(),
                        value,
                        ttl_secs: (token.expires_at - now).num_seconds(),
                    });
                }
                self.state.access_tokens.put(cache_key, token, now);
            }
        }
        Ok(EdgeResponse::relay(reply))
    }

    /// A token another isolate (or an earlier Spin instance) cached in KV, copied to memory.
    async fn kv_access_token(
        &self,
        cache_key: &str,
        license_id: &str,
        version: u64,
        now: Timestamp,
    ) -> Option<CachedAccessToken> {
        let text = self.kv.get(cache_key).await.ok()??;
        let cached: CachedAccessToken = serde_json::from_str(&text).ok()?;
        if !usable(&cached, license_id, version, now) {
            return None;
        }
        self.state.access_tokens.put(cache_key.to_owned(), cached.clone(), now);
        Some(cached)
    }

    async fn origin_access_token(
        &self,
        body: &AccessTokenBody,
        client_ip: Option<&str>,
        now: Timestamp,
    ) -> Result<OriginReply, OriginError> {
        if !self.state.origin_may_be_up(now) {
            return Err(OriginError::Unreachable("origin marked down after a recent failure".to_owned()));
        }
        let result = self.origin.forward_access_token(body, client_ip).await;
        self.state.note_origin(&result, now);
        result
    }
}
