//! The server's signing key: a private Ed25519 JWK in the data directory, created on first
//! start (mode 0600, written to a temporary file and renamed so a crash never leaves half a
//! key) and reused afterwards, so keys issued before a restart keep verifying.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nls_core::key_ring::SigningKey;

use super::ServeError;

pub const SIGNING_KEY_FILE: &str = "signing-key.jwk";

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(SIGNING_KEY_FILE)
}

pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, ServeError> {
    let path = path_in(data_dir);
    let io = |source| ServeError::Io { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(json) => SigningKey::parse_jwk_json(&json)
            .map_err(|source| ServeError::SigningKey { path: path.clone(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate();
            let json = serde_json::to_string_pretty(&key.to_private_jwk()).expect("a JWK serializes");
            let tmp = data_dir.join(format!("{SIGNING_KEY_FILE}.tmp"));
            let _ = fs::remove_file(&tmp);
            let mut file = private_file(&tmp).map_err(io)?;
            file.write_all(json.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::rename(&tmp, &path).map_err(io)?;
            if let Ok(dir) = fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::info!(kid = %key.kid, path = %path.display(), "generated a new signing key");
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
