//! The client's configuration from the environment, under the names every Nectar install uses
//! (the app, the `nectar-license` CLI and the Node package read the same ones):
//!
//! | variable | holds |
//! | --- | --- |
//! | `NECTAR_LICENSE_SERVER` | NLS base URL; absent or empty: air-gapped (needs an offline file) |
//! | `NECTAR_LICENSE_KEY` | the license key |
//! | `NECTAR_LICENSE_JWKS` | path of the pinned public JWKS file |
//! | `NECTAR_LICENSE_DATA_DIR` | the state directory (receipt cache, deployment id, usage spool) |
//!
//! An offline license file imported with `nectar-license activate-offline` lives in the data
//! directory as [`OFFLINE_FILE_NAME`]; [`ClientConfig::from_env`] loads it when present.

use std::path::{Path, PathBuf};

use crate::license_client::ClientConfig;

pub const ENV_SERVER: &str = "NECTAR_LICENSE_SERVER";
pub const ENV_KEY: &str = "NECTAR_LICENSE_KEY";
pub const ENV_JWKS: &str = "NECTAR_LICENSE_JWKS";
pub const ENV_DATA_DIR: &str = "NECTAR_LICENSE_DATA_DIR";

/// The offline license file's name inside the data directory.
pub const OFFLINE_FILE_NAME: &str = "offline-license.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} ({}): {source}", path.display())]
    Unreadable { name: &'static str, path: PathBuf, source: std::io::Error },
}

/// The four settings as given (flags or environment), before any file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseSettings {
    pub server_url: Option<String>,
    pub license_key: Option<String>,
    pub jwks_path: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

impl LicenseSettings {
    /// Reads the `NECTAR_LICENSE_*` variables; empty values count as unset.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Self::from_env`], from any lookup (tests, or a parsed `.env` file).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Self {
            server_url: get(ENV_SERVER),
            license_key: get(ENV_KEY),
            jwks_path: get(ENV_JWKS).map(PathBuf::from),
            data_dir: get(ENV_DATA_DIR).map(PathBuf::from),
        }
    }

    /// Values set in `overrides` win (command-line flags over the environment).
    pub fn overridden_by(self, overrides: LicenseSettings) -> Self {
        Self {
            server_url: overrides.server_url.or(self.server_url),
            license_key: overrides.license_key.or(self.license_key),
            jwks_path: overrides.jwks_path.or(self.jwks_path),
            data_dir: overrides.data_dir.or(self.data_dir),
        }
    }

    /// The pinned JWKS text.
    pub fn read_jwks(&self) -> Result<String, ConfigError> {
        let path = self.jwks_path.as_ref().ok_or(ConfigError::Missing(ENV_JWKS))?;
        std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            name: ENV_JWKS,
            path: path.clone(),
            source,
        })
    }

    /// A client configuration: the JWKS file is read, and an offline license file in the data
    /// directory is loaded. An imported file wins: its own key is used (an offline file carries
    /// a key of its own, issued with it). Otherwise a key is required; a server is optional
    /// (air-gapped installs have none).
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let data_dir = self.data_dir.clone().ok_or(ConfigError::Missing(ENV_DATA_DIR))?;
        let jwks = self.read_jwks()?;
        let offline_file = read_offline_file(&data_dir)?;
        let key = match (&offline_file, &self.license_key) {
            (Some(_), _) => String::new(), // the key inside the file
            (None, Some(key)) => key.clone(),
            (None, None) => return Err(ConfigError::Missing(ENV_KEY)),
        };
        let mut config = ClientConfig::new(self.server_url.as_deref().unwrap_or(""), &key, &jwks, data_dir);
        config.server_url = self.server_url.clone();
        config.offline_file = offline_file;
        Ok(config)
    }
}

/// The offline license file imported into `data_dir`, if any.
pub fn read_offline_file(data_dir: &Path) -> Result<Option<String>, ConfigError> {
    let path = data_dir.join(OFFLINE_FILE_NAME);
    crate::durable_file::read_optional(&path).map_err(|source| ConfigError::Unreadable {
        name: ENV_DATA_DIR,
        path,
        source,
    })
}

impl ClientConfig {
    /// The configuration from `NECTAR_LICENSE_SERVER`, `NECTAR_LICENSE_KEY`,
    /// `NECTAR_LICENSE_JWKS` (a path) and `NECTAR_LICENSE_DATA_DIR`; an error names the
    /// variable that is missing or unreadable.
    pub fn from_env() -> Result<Self, ConfigError> {
        LicenseSettings::from_env().client_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> LicenseSettings {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LicenseSettings::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn reads_the_four_names_and_treats_empty_as_unset() {
        let s = settings(&[
            (ENV_SERVER, "https://licenses.example"),
            (ENV_KEY, " NLS-abc "),
            (ENV_JWKS, "/etc/nectar/jwks.json"),
            (ENV_DATA_DIR, ""),
        ]);
        assert_eq!(s.server_url.as_deref(), Some("https://licenses.example"));
        assert_eq!(s.license_key.as_deref(), Some("NLS-abc"));
        assert_eq!(s.jwks_path, Some(PathBuf::from("/etc/nectar/jwks.json")));
        assert_eq!(s.data_dir, None);
    }

    #[test]
    fn flags_override_the_environment() {
        let env = settings(&[(ENV_SERVER, "https://a"), (ENV_KEY, "k1")]);
        let flags = LicenseSettings { server_url: Some("https://b".into()), ..Default::default() };
        let merged = env.overridden_by(flags);
        assert_eq!(merged.server_url.as_deref(), Some("https://b"));
        assert_eq!(merged.license_key.as_deref(), Some("k1"));
    }

    #[test]
    fn errors_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("nls-env-{}", crate::durable_file::random_id()));
        let missing_jwks = settings(&[(ENV_DATA_DIR, dir.to_str().unwrap()), (ENV_KEY, "k")]);
        assert_eq!(missing_jwks.client_config().err().unwrap().to_string(), "NECTAR_LICENSE_JWKS is not set");
        let unreadable = settings(&[
            (ENV_DATA_DIR, dir.to_str().unwrap()),
            (ENV_KEY, "k"),
            (ENV_JWKS, dir.join("nope.json").to_str().unwrap()),
        ]);
        let message = unreadable.client_config().err().unwrap().to_string();
        assert!(message.starts_with("NECTAR_LICENSE_JWKS ("), "{message}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwks.json"), "{}").unwrap();
        let no_key = settings(&[
            (ENV_DATA_DIR, dir.to_str().unwrap()),
            (ENV_JWKS, dir.join("jwks.json").to_str().unwrap()),
        ]);
        assert_eq!(no_key.client_config().err().unwrap().to_string(), "NECTAR_LICENSE_KEY is not set");
        // With an imported offline file, the key inside it is enough.
        std::fs::write(dir.join(OFFLINE_FILE_NAME), "{\"format\":\"nls-offline-license/1\"}").unwrap();
        let config = no_key.client_config().unwrap();
        assert!(config.offline_file.is_some() && config.server_url.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
