//! The exit codes of `nectar-license`: one per failure class, a contract for scripts (install.sh,
//! health checks, monitoring) documented in docs/install.md. Never renumber one.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The CLI could not do its own job (e.g. writing the bundle).
    Internal,
    /// `status`: the license is not usable (the state's code says why).
    NotUsable,
    /// No key, no JWKS or no data dir configured, or the JWKS file unreadable or invalid.
    Config,
    /// Not an NLS key, or a typo (checksum).
    KeyFormat,
    /// The key's signature does not verify: edited, or a forgery.
    KeySignature,
    /// Signed by a key (`kid`) the pinned JWKS does not know.
    KeyUnknownKid,
    /// The license expired (the server's record, or the key when offline).
    Expired,
    /// The server's name does not resolve (or the proxy's).
    Dns,
    /// No TCP connection to the server (down, firewall, wrong port).
    Tcp,
    /// TLS handshake or certificate rejected.
    Tls,
    /// The server answered, but not with a usable NLS answer (5xx, not NLS, timeout).
    Http,
    /// This machine's clock differs from the server's by more than the tolerance.
    ClockSkew,
    /// The client detected the clock being set back.
    ClockRollback,
    /// The data dir cannot be created, written or fsync'd, or the disk is nearly full.
    DataDir,
    /// The server refused the license (suspended, revoked, not yet valid, ...).
    Refused,
    /// Every seat is taken (or activations are rate limited).
    NoSeat,
    /// The offline license file is rejected.
    OfflineFile,
}

impl FailureClass {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Internal => 1,
            Self::NotUsable => 3,
            Self::Config => 10,
            Self::KeyFormat => 11,
            Self::KeySignature => 12,
            Self::KeyUnknownKid => 13,
            Self::Expired => 14,
            Self::Dns => 20,
            Self::Tcp => 21,
            Self::Tls => 22,
            Self::Http => 23,
            Self::ClockSkew => 30,
            Self::ClockRollback => 31,
            Self::DataDir => 40,
            Self::Refused => 50,
            Self::NoSeat => 51,
            Self::OfflineFile => 60,
        }
    }
}

/// A failure the CLI reports and exits with.
#[derive(Debug)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }
}
