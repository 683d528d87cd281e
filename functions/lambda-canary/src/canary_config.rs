//! The canary's settings, read once at init from the environment. A bad value stops the
//! function with a message that names the variable.

use std::time::Duration;

pub const URL_VAR: &str = "NLS_CANARY_URL";
pub const JWKS_URL_VAR: &str = "NLS_CANARY_JWKS_URL";
pub const KEY_SECRET_VAR: &str = "NLS_CANARY_KEY_SECRET_ID";
pub const STAGE_VAR: &str = "NLS_STAGE";
pub const TIMEOUT_VAR: &str = "NLS_CANARY_TIMEOUT_MS";
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required and missing or empty")]
    Missing(&'static str),
    #[error("{variable}={value:?} is invalid: {reason}")]
    Invalid { variable: &'static str, value: String, reason: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryConfig {
    /// The public base URL customers use (an edge, or the API's custom domain).
    pub target_url: String,
    /// Where the expected JWKS comes from: the origin's, not the answering edge's.
    pub jwks_url: String,
    /// Secrets Manager id of the canary license's key.
    pub key_secret_id: String,
    pub stage: String,
    pub timeout: Duration,
}

fn http_url(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let value = value.trim().trim_end_matches('/').to_owned();
    if !(value.starts_with("https://") || value.starts_with("http://")) || value.contains(char::is_whitespace)
    {
        return Err(ConfigError::Invalid { variable, value, reason: "must be an http(s) URL" });
    }
    Ok(value)
}

impl CanaryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let present = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| present(name).ok_or(ConfigError::Missing(name));
        let target_url = http_url(URL_VAR, required(URL_VAR)?)?;
        let jwks_url = match present(JWKS_URL_VAR) {
            Some(url) => http_url(JWKS_URL_VAR, url)?,
            None => format!("{target_url}/.well-known/jwks.json"),
        };
        let timeout_ms = match present(TIMEOUT_VAR) {
            None => DEFAULT_TIMEOUT_MS,
            Some(text) => text.trim().parse::<u64>().ok().filter(|ms| (100..=50_000).contains(ms)).ok_or(
                ConfigError::Invalid { variable: TIMEOUT_VAR, value: text, reason: "must be 100 to 50000" },
            )?,
        };
        Ok(Self {
            target_url,
            jwks_url,
            key_secret_id: required(KEY_SECRET_VAR)?.trim().to_owned(),
            stage: present(STAGE_VAR).unwrap_or_else(|| "prod".to_owned()),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Whether any URL needs the system's TLS roots.
    pub fn uses_https(&self) -> bool {
        self.target_url.starts_with("https:") || self.jwks_url.starts_with("https:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<CanaryConfig, ConfigError> {
        CanaryConfig::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn settings_are_checked_and_name_their_variable() {
        let ok =
            config(&[(URL_VAR, "https://edge.example/"), (KEY_SECRET_VAR, "nls/prod/canary-key")]).unwrap();
        assert_eq!(ok.target_url, "https://edge.example");
        assert_eq!(ok.jwks_url, "https://edge.example/.well-known/jwks.json");
        assert_eq!((ok.stage.as_str(), ok.timeout), ("prod", Duration::from_millis(DEFAULT_TIMEOUT_MS)));
        let own = config(&[
            (URL_VAR, "https://edge.example"),
            (JWKS_URL_VAR, "https://api.example/.well-known/jwks.json"),
            (KEY_SECRET_VAR, "s"),
            (STAGE_VAR, "staging"),
            (TIMEOUT_VAR, "2000"),
        ])
        .unwrap();
        assert_eq!(own.jwks_url, "https://api.example/.well-known/jwks.json");
        assert_eq!((own.stage.as_str(), own.timeout), ("staging", Duration::from_secs(2)));
        assert_eq!(config(&[(KEY_SECRET_VAR, "s")]), Err(ConfigError::Missing(URL_VAR)));
        assert_eq!(config(&[(URL_VAR, "https://e.example")]), Err(ConfigError::Missing(KEY_SECRET_VAR)));
        for (var, value) in [(URL_VAR, "edge.example"), (TIMEOUT_VAR, "0"), (JWKS_URL_VAR, "ftp://x")] {
            let mut vars = vec![(URL_VAR, "https://e.example"), (KEY_SECRET_VAR, "s")];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let error = config(&vars).unwrap_err();
            assert!(error.to_string().contains(var), "{error}");
        }
    }
}
