//! The CLI's settings: the same `NECTAR_LICENSE_*` environment the app reads
//! (`nls_client::env_config`), overridden by flags, with the JWKS and key files read.

use std::path::PathBuf;
use std::time::Duration;

use nls_client::LicenseSettings;
use nls_client::env_config::ENV_JWKS;
use serde::Serialize;

use crate::local_state::{self, KeySummary};
use crate::network_probe::redact_userinfo;

pub struct ResolvedConfig {
    pub server_url: Option<String>,
    /// The key as given (flag, key file or environment); `None` when none was.
    pub key: Option<String>,
    pub key_origin: &'static str,
    /// The JWKS path and text, or why there is none.
    pub jwks: Result<(PathBuf, String), String>,
    pub data_dir: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub timeout: Duration,
}

/// The flags that override the environment.
pub struct Overrides {
    pub server: Option<String>,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub jwks: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub timeout: Duration,
}

impl ResolvedConfig {
    pub fn resolve(flags: Overrides) -> Result<Self, String> {
        let env = LicenseSettings::from_env();
        let key_from_file = match &flags.key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--key-file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let key_origin = match (&flags.key, &key_from_file, &env.license_key) {
            (Some(_), _, _) => "--key",
            (None, Some(_), _) => "--key-file",
            (None, None, Some(_)) => "NECTAR_LICENSE_KEY",
            (None, None, None) => "none",
        };
        let settings = env.overridden_by(LicenseSettings {
            server_url: flags.server.filter(|s| !s.trim().is_empty()),
            license_key: flags.key.or(key_from_file).filter(|k| !k.is_empty()),
            jwks_path: flags.jwks,
            data_dir: flags.data_dir,
        });
        let jwks = match &settings.jwks_path {
            None => Err(format!("no JWKS configured ({ENV_JWKS} or --jwks)")),
            Some(path) => settings.read_jwks().map(|text| (path.clone(), text)).map_err(|e| e.to_string()),
        };
        Ok(Self {
            server_url: settings.server_url,
            key: settings.license_key,
            key_origin,
            jwks,
            data_dir: settings.data_dir,
            fingerprint: flags.fingerprint,
            timeout: flags.timeout,
        })
    }

    /// The configuration as it may be shown to support: the key reduced to its checksum and
    /// `jti`, no secret.
    pub fn redacted(&self) -> RedactedConfig {
        RedactedConfig {
            server: self.server_url.as_deref().map(redact_userinfo),
            key_origin: self.key_origin,
            key: self.key.as_deref().map(local_state::key_summary),
            jwks: match &self.jwks {
                Ok((path, _)) => path.display().to_string(),
                Err(why) => why.clone(),
            },
            data_dir: self.data_dir.as_ref().map(|d| d.display().to_string()),
            fingerprint_set: self.fingerprint.is_some(),
            timeout_seconds: self.timeout.as_secs(),
            proxy_env: crate::network_probe::proxy_env().into_iter().collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RedactedConfig {
    pub server: Option<String>,
    pub key_origin: &'static str,
    pub key: Option<KeySummary>,
    pub jwks: String,
    pub data_dir: Option<String>,
    pub fingerprint_set: bool,
    pub timeout_seconds: u64,
    pub proxy_env: std::collections::BTreeMap<String, String>,
}
