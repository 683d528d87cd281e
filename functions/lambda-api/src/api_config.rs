//! The function's configuration: read from the environment once, at init. A missing or bad
//! value fails init with a message naming the variable. No secret lives here: the signing
//! key and the edges' push token are fetched from Secrets Manager by id.

use chrono::Duration;
use nls_core::http::HttpConfig;
use nls_core::http::rate_limit::RateLimit;
use nls_core::http::registry_routes::RegistryConfig;
use nls_core::model::UsageWindow;
use nls_edge_push::{EdgePushSettings, SettingsError};

pub const TABLE_NAME_VAR: &str = "NLS_TABLE_NAME";
pub const SIGNING_KEY_SECRET_VAR: &str = "NLS_SIGNING_KEY_SECRET_ID";
pub const LEASE_SECS_VAR: &str = "NLS_LEASE_SECS";
pub const CHECK_IN_SECS_VAR: &str = "NLS_CHECK_IN_SECS";
pub const CHURN_MAX_VAR: &str = "NLS_CHURN_MAX";
pub const CHURN_WINDOW_SECS_VAR: &str = "NLS_CHURN_WINDOW_SECS";
pub const SNAPSHOT_TTL_MS_VAR: &str = "NLS_SNAPSHOT_TTL_MS";
pub const IP_RATE_LIMIT_VAR: &str = "NLS_IP_RATE_LIMIT";
pub const API_KEY_RATE_LIMIT_VAR: &str = "NLS_API_KEY_RATE_LIMIT";
pub const CORS_ORIGINS_VAR: &str = "NLS_CORS_ORIGINS";
/// Secrets Manager id of the registry token key (a private P-256 JWK, docs/distribution.md);
/// unset: `GET /v1/registry/token` answers 404 `UNSUPPORTED`.
pub const REGISTRY_KEY_SECRET_VAR: &str = "NLS_REGISTRY_KEY_SECRET_ID";
pub const REGISTRY_ISSUER_VAR: &str = "NLS_REGISTRY_ISSUER";
pub const REGISTRY_SERVICE_VAR: &str = "NLS_REGISTRY_SERVICE";
/// The usage `at` window: days back and seconds ahead of the server's clock.
pub const USAGE_MAX_AGE_DAYS_VAR: &str = "NLS_USAGE_MAX_AGE_DAYS";
pub const USAGE_MAX_AHEAD_SECS_VAR: &str = "NLS_USAGE_MAX_AHEAD_SECS";
/// The life of a cloud access token, 60 to 3600 seconds (default 900).
pub const ACCESS_TOKEN_TTL_SECS_VAR: &str = "NLS_ACCESS_TOKEN_TTL_SECS";
const MAX_USAGE_AGE_DAYS: u32 = 3650;
const MAX_USAGE_AHEAD_SECS: u32 = 86_400;
/// Hex SHA-256 of a bootstrap admin key: lets a deployment accept an admin key without the
/// key itself ever being in the function's configuration.
pub const BOOTSTRAP_KEY_SHA256_VAR: &str = "NLS_BOOTSTRAP_ADMIN_KEY_SHA256";
/// The bootstrap admin key itself, for local runs under `cargo lambda watch` only.
pub const BOOTSTRAP_KEY_VAR: &str = "NLS_BOOTSTRAP_ADMIN_KEY";
/// Shorter bootstrap keys are refused: the key has the `admin` scope.
const MIN_BOOTSTRAP_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: &'static str },
    #[error(transparent)]
    EdgePush(#[from] SettingsError),
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub table_name: String,
    /// Secrets Manager id (name or ARN) of the private Ed25519 JWK.
    pub signing_key_secret_id: String,
    pub http: HttpConfig,
    /// Where status changes are pushed; `None` without `NLS_EDGE_PUSH_URLS`.
    pub edge_push: Option<EdgePushSettings>,
    /// The registry token service, when `NLS_REGISTRY_KEY_SECRET_ID` is set.
    pub registry: Option<RegistrySettings>,
}

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub key_secret_id: String,
    pub config: RegistryConfig,
}

fn required(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ConfigError> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing { name }),
    }
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
    min: u32,
) -> Result<u32, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<u32>() {
            Ok(value) if value >= min => Ok(value),
            Ok(_) => Err(ConfigError::Invalid { name, value: text, reason: "too small" }),
            Err(_) => Err(ConfigError::Invalid { name, value: text, reason: "not a whole number" }),
        },
    }
}

fn at_most(value: u32, max: u32, name: &'static str) -> Result<u32, ConfigError> {
    if value > max {
        return Err(ConfigError::Invalid { name, value: value.to_string(), reason: "too large" });
    }
    Ok(value)
}

fn sha256_hex(name: &'static str, text: &str) -> Result<[u8; 32], ConfigError> {
    let invalid = || ConfigError::Invalid { name, value: text.to_owned(), reason: "not 64 hex digits" };
    let digits = text.trim().as_bytes();
    if digits.len() != 64 {
        return Err(invalid());
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(hash)
}

fn bootstrap_key_sha256(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<[u8; 32]>, ConfigError> {
    if let Some(key) = lookup(BOOTSTRAP_KEY_VAR).filter(|k| !k.is_empty()) {
        if key.trim().len() < MIN_BOOTSTRAP_KEY_LEN {
            // The value is a secret: never echo it.
            return Err(ConfigError::Invalid {
                name: BOOTSTRAP_KEY_VAR,
                value: "<hidden>".into(),
                reason: "shorter than 16 characters",
            });
        }
        return Ok(Some(nls_core::http::admin_auth::token_sha256(key.trim())));
    }
    lookup(BOOTSTRAP_KEY_SHA256_VAR)
        .filter(|h| !h.is_empty())
        .map(|h| sha256_hex(BOOTSTRAP_KEY_SHA256_VAR, &h))
        .transpose()
}

fn rate(per_second: u32) -> Option<RateLimit> {
    (per_second > 0)
        .then(|| RateLimit { per_second: f64::from(per_second), burst: 2.0 * f64::from(per_second) })
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` gives a variable's value; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = HttpConfig::default();
        let seconds = |name, default: Duration, min| {
            number(&lookup, name, u32::try_from(default.num_seconds()).unwrap_or(u32::MAX), min)
                .map(|s| Duration::seconds(i64::from(s)))
        };
        let http = HttpConfig {
            lease: seconds(LEASE_SECS_VAR, defaults.lease, 1)?,
            check_in_interval: seconds(CHECK_IN_SECS_VAR, defaults.check_in_interval, 1)?,
            churn_window: seconds(CHURN_WINDOW_SECS_VAR, defaults.churn_window, 0)?,
            churn_max: number(&lookup, CHURN_MAX_VAR, defaults.churn_max, 0)?,
            snapshot_ttl: Duration::milliseconds(i64::from(number(
                &lookup,
                SNAPSHOT_TTL_MS_VAR,
                u32::try_from(defaults.snapshot_ttl.num_milliseconds()).unwrap_or(u32::MAX),
                0,
            )?)),
            ip_rate_limit: rate(number(&lookup, IP_RATE_LIMIT_VAR, 1000, 0)?),
            api_key_rate_limit: rate(number(&lookup, API_KEY_RATE_LIMIT_VAR, 50, 0)?),
            cors_origins: lookup(CORS_ORIGINS_VAR)
                .map(|list| {
                    list.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect()
                })
                .unwrap_or_default(),
            bootstrap_admin_key_sha256: bootstrap_key_sha256(&lookup)?,
            usage_window: UsageWindow {
                max_age: Duration::days(i64::from(at_most(
                    number(&lookup, USAGE_MAX_AGE_DAYS_VAR, 35, 1)?,
                    MAX_USAGE_AGE_DAYS,
                    USAGE_MAX_AGE_DAYS_VAR,
                )?)),
                max_ahead: Duration::seconds(i64::from(at_most(
                    number(&lookup, USAGE_MAX_AHEAD_SECS_VAR, 300, 0)?,
                    MAX_USAGE_AHEAD_SECS,
                    USAGE_MAX_AHEAD_SECS_VAR,
                )?)),
            },
            access_token_ttl: Duration::seconds(i64::from(at_most(
                number(
                    &lookup,
                    ACCESS_TOKEN_TTL_SECS_VAR,
                    u32::try_from(defaults.access_token_ttl.num_seconds()).unwrap_or(u32::MAX),
                    u32::try_from(nls_core::access_token::MIN_ACCESS_TTL_SECS).unwrap_or(u32::MAX),
                )?,
                u32::try_from(nls_core::access_token::MAX_ACCESS_TTL_SECS).unwrap_or(u32::MAX),
                ACCESS_TOKEN_TTL_SECS_VAR,
            )?)),
            ..defaults
        };
        Ok(Self {
            table_name: required(&lookup, TABLE_NAME_VAR)?,
            signing_key_secret_id: required(&lookup, SIGNING_KEY_SECRET_VAR)?,
            http,
            edge_push: EdgePushSettings::from_lookup(&lookup)?,
            registry: lookup(REGISTRY_KEY_SECRET_VAR).filter(|id| !id.trim().is_empty()).map(
                |key_secret_id| {
                    let issuer = lookup(REGISTRY_ISSUER_VAR).unwrap_or_else(|| "nls".to_owned());
                    let service =
                        lookup(REGISTRY_SERVICE_VAR).unwrap_or_else(|| "nectar-registry".to_owned());
                    RegistrySettings { key_secret_id, config: RegistryConfig::new(&issuer, &service) }
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn check(vars: &[(&str, &str)], expected: Result<(), ConfigError>) {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let got = ApiConfig::from_lookup(|name| map.get(name).cloned()).map(|_| ());
        assert_eq!(got, expected, "{vars:?}");
    }

    #[test]
    fn errors_name_the_variable() {
        let base = [(TABLE_NAME_VAR, "nls"), (SIGNING_KEY_SECRET_VAR, "nls/signing-key")];
        check(&base, Ok(()));
        check(&base[1..], Err(ConfigError::Missing { name: TABLE_NAME_VAR }));
        check(&base[..1], Err(ConfigError::Missing { name: SIGNING_KEY_SECRET_VAR }));
        check(
            &[base[0], base[1], (LEASE_SECS_VAR, "an hour")],
            Err(ConfigError::Invalid {
                name: LEASE_SECS_VAR,
                value: "an hour".into(),
                reason: "not a whole number",
            }),
        );
        check(
            &[base[0], base[1], (LEASE_SECS_VAR, "0")],
            Err(ConfigError::Invalid { name: LEASE_SECS_VAR, value: "0".into(), reason: "too small" }),
        );
        check(
            &[base[0], base[1], (BOOTSTRAP_KEY_SHA256_VAR, "abc")],
            Err(ConfigError::Invalid {
                name: BOOTSTRAP_KEY_SHA256_VAR,
                value: "abc".into(),
                reason: "not 64 hex digits",
            }),
        );
        check(&[base[0], base[1], (BOOTSTRAP_KEY_SHA256_VAR, &"ab".repeat(32))], Ok(()));
        let map = HashMap::from([
            (TABLE_NAME_VAR, "nls"),
            (SIGNING_KEY_SECRET_VAR, "k"),
            (REGISTRY_KEY_SECRET_VAR, "nls/registry-key"),
            (REGISTRY_SERVICE_VAR, "reg.example"),
        ]);
        let config = ApiConfig::from_lookup(|name| map.get(name).map(|v| v.to_string())).unwrap();
        let registry = config.registry.expect("registry settings");
        assert_eq!(
            (
                registry.key_secret_id.as_str(),
                registry.config.issuer.as_str(),
                registry.config.service.as_str()
            ),
            ("nls/registry-key", "nls", "reg.example")
        );
        check(&[base[0], base[1], (USAGE_MAX_AGE_DAYS_VAR, "90")], Ok(()));
        check(
            &[base[0], base[1], (USAGE_MAX_AGE_DAYS_VAR, "3651")],
            Err(ConfigError::Invalid {
                name: USAGE_MAX_AGE_DAYS_VAR,
                value: "3651".into(),
                reason: "too large",
            }),
        );
        check(
            &[base[0], base[1], ("NLS_EDGE_PUSH_URLS", "https://edge.example")],
            Err(ConfigError::EdgePush(SettingsError::NoTokenSecret)),
        );
        for (value, reason) in [("59", "too small"), ("3601", "too large")] {
            check(
                &[base[0], base[1], (ACCESS_TOKEN_TTL_SECS_VAR, value)],
                Err(ConfigError::Invalid { name: ACCESS_TOKEN_TTL_SECS_VAR, value: value.into(), reason }),
            );
        }
        let ttl = |vars: &[(&str, &str)]| {
            let map: HashMap<&str, &str> = vars.iter().copied().collect();
            ApiConfig::from_lookup(|name| map.get(name).map(|v| v.to_string())).unwrap().http.access_token_ttl
        };
        assert_eq!(ttl(&base), chrono::Duration::minutes(15), "the default");
        assert_eq!(
            ttl(&[base[0], base[1], (ACCESS_TOKEN_TTL_SECS_VAR, "60")]),
            chrono::Duration::seconds(60)
        );
        assert_eq!(ttl(&[base[0], base[1], (ACCESS_TOKEN_TTL_SECS_VAR, "3600")]), chrono::Duration::hours(1));
        let err = ConfigError::Missing { name: TABLE_NAME_VAR }.to_string();
        assert!(err.contains("NLS_TABLE_NAME"), "{err}");
    }
}
