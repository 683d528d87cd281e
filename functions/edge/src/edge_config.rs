//! The edge's settings, parsed once per isolate from the platform's variables. A bad value
//! stops the edge with a message that names the variable; secrets are never echoed.

use chrono::Duration;

/// Variable names, shared by wrangler.toml, spin.toml and the docs.
pub mod vars {
    /// Base URL of the origin API, e.g. `https://api.nls.example`.
    pub const ORIGIN_URL: &str = "NLS_ORIGIN_URL";
    /// Secret: bearer token for the origin's internal routes, and for pushes to the edge.
    pub const SERVICE_TOKEN: &str = "NLS_SERVICE_TOKEN";
    /// Secret or var: the public JWKS (JSON) that license keys are verified against.
    pub const JWKS: &str = "NLS_JWKS";
    pub const MEMORY_FRESH_SECS: &str = "NLS_EDGE_MEMORY_FRESH_SECS";
    pub const SNAPSHOT_TTL_SECS: &str = "NLS_EDGE_SNAPSHOT_TTL_SECS";
    pub const KV_RETENTION_SECS: &str = "NLS_EDGE_KV_RETENTION_SECS";
    pub const CHECK_IN_SECS: &str = "NLS_EDGE_CHECK_IN_SECS";
    pub const OUTBOX_RETRY_SECS: &str = "NLS_EDGE_OUTBOX_RETRY_SECS";
    pub const RECEIPT_REUSE_SECS: &str = "NLS_EDGE_RECEIPT_REUSE_SECS";
    pub const ORIGIN_TIMEOUT_MS: &str = "NLS_EDGE_ORIGIN_TIMEOUT_MS";
    pub const OUTBOX_MAX_SERVER_ERRORS: &str = "NLS_EDGE_OUTBOX_MAX_SERVER_ERRORS";
    /// How often an isolate re-reads KV's JWKS, and the least time between two fetches of
    /// the origin's JWKS on an unknown `kid` (edge_keys).
    pub const JWKS_REFRESH_SECS: &str = "NLS_EDGE_JWKS_REFRESH_SECS";
    /// Validation events held per isolate before new ones are dropped (0: no events).
    pub const EVENTS_MAX: &str = "NLS_EDGE_EVENTS_MAX";
    /// Ship a batch once this many events wait (1 to 100).
    pub const EVENTS_BATCH: &str = "NLS_EDGE_EVENTS_BATCH";
    /// Ship once the oldest waiting event is this old (0: after every request, as on Spin).
    pub const EVENTS_FLUSH_SECS: &str = "NLS_EDGE_EVENTS_FLUSH_SECS";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration variable {}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub origin_url: String,
    pub service_token: String,
    pub jwks_json: String,
    /// A snapshot read into isolate memory is served without any lookup for this long.
    pub memory_fresh: Duration,
    /// No answer that is not marked `degraded` rests on a snapshot older than this (measured
    /// from when the origin produced it): the propagation bound when no push arrives.
    pub snapshot_ttl: Duration,
    /// How long KV keeps the last known snapshot, for degraded answers while the origin is
    /// down. Also the expiry of queued outbox items' dead letters.
    pub kv_retention: Duration,
    pub check_in_interval: Duration,
    /// An isolate retries its outbox at most this often.
    pub outbox_retry: Duration,
    /// A receipt signed by the origin is handed out again for this long; a receipt's offline
    /// window counts from its issue time, so it must stay young.
    pub receipt_reuse: Duration,
    /// Platform adapters abort an origin call after this long and degrade.
    pub origin_timeout: Duration,
    /// A queued item the origin answers with a 5xx this many times (with backoff) is
    /// dead-lettered.
    pub outbox_max_server_errors: u32,
    /// KV's JWKS is re-read this often; the origin's is fetched on an unknown `kid` at most
    /// this often (per isolate).
    pub jwks_refresh: Duration,
    /// Validation events held in isolate memory at most (0 turns events off).
    pub events_max: usize,
    /// A batch ships once this many events wait...
    pub events_batch: usize,
    /// ...or once the oldest has waited this long.
    pub events_flush: Duration,
}

impl EdgeConfig {
    pub const DEFAULT_MEMORY_FRESH_SECS: i64 = 5;
    pub const DEFAULT_SNAPSHOT_TTL_SECS: i64 = 60;
    pub const DEFAULT_KV_RETENTION_SECS: i64 = 7 * 24 * 3600;
    pub const DEFAULT_CHECK_IN_SECS: i64 = 900;
    pub const DEFAULT_OUTBOX_RETRY_SECS: i64 = 5;
    pub const DEFAULT_RECEIPT_REUSE_SECS: i64 = 3600;
    pub const DEFAULT_ORIGIN_TIMEOUT_MS: i64 = 3000;
    pub const DEFAULT_OUTBOX_MAX_SERVER_ERRORS: i64 = 8;
    pub const DEFAULT_JWKS_REFRESH_SECS: i64 = 60;
    pub const DEFAULT_EVENTS_MAX: i64 = 5_000;
    pub const DEFAULT_EVENTS_BATCH: i64 = 100;
    pub const DEFAULT_EVENTS_FLUSH_SECS: i64 = 10;

    /// Reads every setting through `var` (the platform's environment lookup).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError { variable: name, problem: "is required and missing or empty".to_owned() })
        };
        let number = |name: &'static str, default: i64, min: i64| -> Result<i64, ConfigError> {
            match var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(text) => match text.parse::<i64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(ConfigError {
                        variable: name,
                        problem: format!("must be a whole number ≥ {min}, got {text:?}"),
                    }),
                },
            }
        };
        let origin_url = required(vars::ORIGIN_URL)?;
        if !(origin_url.starts_with("https://") || origin_url.starts_with("http://")) {
            return Err(ConfigError {
                variable: vars::ORIGIN_URL,
                problem: format!("must be an http(s) URL, got {origin_url:?}"),
            });
        }
        let jwks_json = required(vars::JWKS)?;
        nls_core::key_ring::KeyRing::parse_jwks_json(&jwks_json)
            .map_err(|e| ConfigError { variable: vars::JWKS, problem: format!("not a usable JWKS: {e}") })?;
        let config = Self {
            origin_url,
            service_token: required(vars::SERVICE_TOKEN)?,
            jwks_json,
            memory_fresh: Duration::seconds(number(
                vars::MEMORY_FRESH_SECS,
                Self::DEFAULT_MEMORY_FRESH_SECS,
                0,
            )?),
            snapshot_ttl: Duration::seconds(number(
                vars::SNAPSHOT_TTL_SECS,
                Self::DEFAULT_SNAPSHOT_TTL_SECS,
                1,
            )?),
            kv_retention: Duration::seconds(number(
                vars::KV_RETENTION_SECS,
                Self::DEFAULT_KV_RETENTION_SECS,
                60,
            )?),
            check_in_interval: Duration::seconds(number(
                vars::CHECK_IN_SECS,
                Self::DEFAULT_CHECK_IN_SECS,
                1,
            )?),
            outbox_retry: Duration::seconds(number(
                vars::OUTBOX_RETRY_SECS,
                Self::DEFAULT_OUTBOX_RETRY_SECS,
                1,
            )?),
            receipt_reuse: Duration::seconds(number(
                vars::RECEIPT_REUSE_SECS,
                Self::DEFAULT_RECEIPT_REUSE_SECS,
                0,
            )?),
            origin_timeout: Duration::milliseconds(number(
                vars::ORIGIN_TIMEOUT_MS,
                Self::DEFAULT_ORIGIN_TIMEOUT_MS,
                1,
            )?),
            outbox_max_server_errors: u32::try_from(number(
                vars::OUTBOX_MAX_SERVER_ERRORS,
                Self::DEFAULT_OUTBOX_MAX_SERVER_ERRORS,
                1,
            )?)
            .unwrap_or(u32::MAX),
            jwks_refresh: Duration::seconds(number(
                vars::JWKS_REFRESH_SECS,
                Self::DEFAULT_JWKS_REFRESH_SECS,
                1,
            )?),
            events_max: usize::try_from(number(vars::EVENTS_MAX, Self::DEFAULT_EVENTS_MAX, 0)?)
                .unwrap_or(usize::MAX),
            events_batch: usize::try_from(number(vars::EVENTS_BATCH, Self::DEFAULT_EVENTS_BATCH, 1)?)
                .unwrap_or(usize::MAX),
            events_flush: Duration::seconds(number(
                vars::EVENTS_FLUSH_SECS,
                Self::DEFAULT_EVENTS_FLUSH_SECS,
                0,
            )?),
        };
        if config.events_batch > crate::validation_events::MAX_EVENTS_PER_SHIPMENT {
            return Err(ConfigError {
                variable: vars::EVENTS_BATCH,
                problem: format!("must not exceed {}", crate::validation_events::MAX_EVENTS_PER_SHIPMENT),
            });
        }
        if config.memory_fresh > config.snapshot_ttl {
            return Err(ConfigError {
                variable: vars::MEMORY_FRESH_SECS,
                problem: format!("must not exceed {}", vars::SNAPSHOT_TTL_SECS),
            });
        }
        Ok(config)
    }
}
