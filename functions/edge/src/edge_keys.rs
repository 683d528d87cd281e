//! The public keys an edge verifies license keys with, and how a new JWKS reaches a running
//! edge without a redeploy (docs/edge.md, "Key rotation at the edge"):
//!
//! - **pushed**: the origin `PUT`s its JWKS to `/v1/internal/jwks` (service token) when it
//!   starts (`nls serve`) or by hand (`nls keys push-jwks`); the isolate that receives it
//!   switches at once and stores it in KV for the others;
//! - **from KV**: an isolate reads KV's copy before its first validation, and again in the
//!   background every `NLS_EDGE_JWKS_REFRESH_SECS`;
//! - **fetched on an unknown `kid`**: a key signed by a `kid` this isolate does not know makes
//!   it fetch `GET /.well-known/jwks.json` from the origin, at most once per
//!   `NLS_EDGE_JWKS_REFRESH_SECS` per isolate, so forged kids cannot flood the origin.
//!
//! `NLS_JWKS` is only the starting point: KV's copy, once there, wins over it. A retired key
//! disappears only by a push (or KV's copy), never by a fetch on an unknown kid.

use std::sync::Arc;

use nls_core::key_ring::{JwkError, Jwks, KeyRing};
use nls_core::model::Timestamp;
use nls_core::validation::Verifier;
use serde::{Deserialize, Serialize};

/// Where KV keeps the newest JWKS an edge has seen (no expiry).
pub const JWKS_KV_KEY: &str = "jwks/current";

/// The verified-key cache is per key set: a new JWKS starts an empty cache, so a key of a
/// retired `kid` is never answered from the cache.
pub struct EdgeKeys {
    pub verifier: Verifier,
    /// `GET /.well-known/jwks.json` at the edge (canonical JSON of the ring).
    pub jwks_body: String,
}

impl EdgeKeys {
    pub fn from_jwks_json(json: &str) -> Result<Self, JwkError> {
        let ring = KeyRing::parse_jwks_json(json)?;
        let jwks_body = serde_json::to_string(&ring.jwks()).unwrap_or_default();
        Ok(Self { verifier: Verifier::with_capacity(Arc::new(ring), 10_000), jwks_body })
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.verifier.ring().verifier(kid).is_some()
    }
}

/// KV's value at [`JWKS_KV_KEY`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvJwksRecord {
    pub jwks: Jwks,
    pub stored_at: Timestamp,
}

/// When this isolate last looked at KV's copy and last fetched from the origin.
#[derive(Debug, Default)]
pub struct JwksSync {
    pub kv_checked_at: Option<Timestamp>,
    pub origin_fetched_at: Option<Timestamp>,
}

/// The `kid` in a license key's header, unverified: only to decide whether to look for a
/// newer JWKS. `None` for anything that is not a well-formed key.
pub fn unverified_kid(key: &str) -> Option<String> {
    let (header, _, _) = nls_core::license_token::inspect_license_key(key.trim()).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}
