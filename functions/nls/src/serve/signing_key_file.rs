//! The server's signing keys, private JWKs in the data directory, created on first start
//! (mode 0600, written to a temporary file and renamed so a crash never leaves half a key) and
//! reused afterwards: the Ed25519 license key (keys issued before a restart keep verifying)
//! and, separately, the ES256 registry token key (the registry's certificate stays valid).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nls_core::key_ring::SigningKey;
use nls_core::registry_token::RegistrySigningKey;

use super::ServeError;

pub const SIGNING_KEY_FILE: &str = "signing-key.jwk";
pub const REGISTRY_KEY_FILE: &str = "registry-signing-key.jwk";

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, ServeError> {
    let key = load_or_create_file(
        data_dir,
        SIGNING_KEY_FILE,
        |json| SigningKey::parse_jwk_json(json).map_err(|e| e.to_string()),
        || {
            let key = SigningKey::generate();
            let json = serde_json::to_string_pretty(&key.to_private_jwk()).expect("a JWK serializes");
            (key, json)
        },
    )?;
    Ok(key)
}

/// The registry token key (docs/distribution.md); never the license-signing key.
pub fn load_or_create_registry_key(data_dir: &Path) -> Result<RegistrySigningKey, ServeError> {
    load_or_create_file(
        data_dir,
        REGISTRY_KEY_FILE,
        |json| RegistrySigningKey::parse_jwk_json(json).map_err(|e| e.to_string()),
        || {
            let key = RegistrySigningKey::generate();
            let json = serde_json::to_string_pretty(&key.to_private_jwk()).expect("a JWK serializes");
            (key, json)
        },
    )
}

fn load_or_create_file<K>(
    data_dir: &Path,
    file_name: &str,
    parse: impl Fn(&str) -> Result<K, String>,
    generate: impl Fn() -> (K, String),
) -> Result<K, ServeError> {
    let path = data_dir.join(file_name);
    let io = |source| ServeError::Io { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(json) => parse(&json).map_err(|reason| ServeError::SigningKey { path: path.clone(), reason }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, json) = generate();
            let tmp = data_dir.join(format!("{file_name}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut file = private_file(&tmp).map_err(io)?;
            file.write_all(json.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)?;
            if let Ok(dir) = fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::info!(path = %path.display(), "generated a new signing key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}
