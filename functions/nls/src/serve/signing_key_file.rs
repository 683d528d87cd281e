//! The server's keys in the data directory, created on first start and reused afterwards:
//! - the Ed25519 license-signing key (so keys issued before a restart keep verifying) and,
//!   after a rotation (`nls keys rotate`), the retired signers' public keys in a JWKS that the
//!   server keeps trusting until `nls keys retire`;
//! - separately, the ES256 registry token key (so the registry's certificate stays valid)
//!   and, after `nls registry rotate`, the previous registry keys the registry must still
//!   trust until `nls registry retire` (private: `nls registry cert` signs their certificates).
//!
//! Every write goes to a temporary file (mode 0600) that is fsynced and renamed, so a crash
//! never leaves half a key.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nls_core::key_ring::{Jwks, KeyRing, SigningKey, VerifyingKey};
use nls_core::registry_token::RegistrySigningKey;

use super::ServeError;

pub const SIGNING_KEY_FILE: &str = "signing-key.jwk";
/// Public keys still trusted for verification (a JWKS), written by `nls keys rotate`.
pub const TRUSTED_KEYS_FILE: &str = "trusted-keys.json";
pub const REGISTRY_KEY_FILE: &str = "registry-signing-key.jwk";
/// `{"keys": [private EC JWK, ...]}`: registry keys replaced by `nls registry rotate`, whose
/// tokens the registry still accepts (their certificates stay in the bundle).
pub const REGISTRY_PREVIOUS_KEYS_FILE: &str = "registry-previous-keys.json";
/// Every key file of a data dir (what `nls backup --include-keys` carries).
pub const KEY_FILES: [&str; 4] =
    [SIGNING_KEY_FILE, TRUSTED_KEYS_FILE, REGISTRY_KEY_FILE, REGISTRY_PREVIOUS_KEYS_FILE];

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

/// The signer, created if missing, and the verifiers kept from earlier rotations.
pub fn load_ring(data_dir: &Path) -> Result<KeyRing, ServeError> {
    let signer = load_or_create(data_dir)?;
    let verifiers = read_trusted(data_dir)?;
    let path = data_dir.join(TRUSTED_KEYS_FILE);
    KeyRing::with_signer(signer, verifiers)
        .map_err(|e| ServeError::SigningKey { path, reason: e.to_string() })
}

/// The verifiers of `trusted-keys.json`; none when it does not exist.
pub fn read_trusted(data_dir: &Path) -> Result<Vec<VerifyingKey>, ServeError> {
    let path = data_dir.join(TRUSTED_KEYS_FILE);
    let json = match fs::read_to_string(&path) {
        Ok(json) => json,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ServeError::Io { path, source }),
    };
    let key_error = |reason: String| ServeError::SigningKey { path: path.clone(), reason };
    let jwks: Jwks = serde_json::from_str(&json).map_err(|e| key_error(e.to_string()))?;
    jwks.keys.iter().map(|jwk| VerifyingKey::from_jwk(jwk).map_err(|e| key_error(e.to_string()))).collect()
}

pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, ServeError> {
    load_or_create_file(
        data_dir,
        SIGNING_KEY_FILE,
        |json| SigningKey::parse_jwk_json(json).map_err(|e| e.to_string()),
        || {
            let key = SigningKey::generate();
            let json = serde_json::to_string_pretty(&key.to_private_jwk()).expect("a JWK serializes");
            (key, json)
        },
    )
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

#[derive(serde::Serialize, serde::Deserialize)]
struct RegistryKeyList {
    keys: Vec<nls_core::registry_token::EcPrivateJwk>,
}

/// The previous registry keys still trusted; none when the file does not exist.
pub fn read_registry_previous(data_dir: &Path) -> Result<Vec<RegistrySigningKey>, ServeError> {
    let path = data_dir.join(REGISTRY_PREVIOUS_KEYS_FILE);
    let json = match fs::read_to_string(&path) {
        Ok(json) => json,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ServeError::Io { path, source }),
    };
    let key_error = |reason: String| ServeError::SigningKey { path: path.clone(), reason };
    let list: RegistryKeyList = serde_json::from_str(&json).map_err(|e| key_error(e.to_string()))?;
    list.keys
        .iter()
        .map(|jwk| RegistrySigningKey::from_jwk(jwk).map_err(|e| key_error(e.to_string())))
        .collect()
}

pub fn write_registry_previous(data_dir: &Path, keys: &[RegistrySigningKey]) -> std::io::Result<()> {
    let list = RegistryKeyList { keys: keys.iter().map(RegistrySigningKey::to_private_jwk).collect() };
    let json = serde_json::to_string_pretty(&list).expect("JWKs serialize");
    write_private(data_dir, REGISTRY_PREVIOUS_KEYS_FILE, json.as_bytes())
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
            write_private(data_dir, file_name, json.as_bytes()).map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new signing key");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes `data_dir/name` atomically with mode 0600, replacing it if it exists.
pub fn write_private(data_dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = private_file(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(name))?;
    if let Ok(dir) = fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
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
