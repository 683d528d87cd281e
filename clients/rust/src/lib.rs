//! NLS client for customer apps (DESIGN §7).
//!
//! ```text
//! let license = nls_client::LicenseClient::start(nls_client::ClientConfig::new(
//!     "https://licenses.nectar.example",
//!     &std::env::var("NECTAR_LICENSE_KEY")?,
//!     include_str!("nls-jwks.json"),
//!     "/var/lib/nectar/license",
//! ))?;
//! let app = axum::Router::new()
//!     .route("/reports", get(reports).layer(license.require_feature("reports")))
//!     .layer(license.require_valid_license());
//! ```
//!
//! - [`LicenseClient`]: validation at start-up and at `next_check_in` with jitter, the signed
//!   receipt cached on disk, offline mode then grace then fail closed, clock-rollback
//!   detection, heartbeats, and usage reporting through an fsync'd on-disk spool.
//! - [`middleware`]: tower/axum guards answering 402/403 with a JSON error code.
//! - [`LicenseClient::access_token`]: cloud access tokens for Nectar's cloud services, and
//!   [`cloud_access`]: the services' side, `require_access_token(audience)` (docs/cloud-access.md),
//!   and [`cloud_meter`]: the services' own count of the calls they allowed, sent to NLS.
//! - [`env_config`]: the `NECTAR_LICENSE_*` environment ([`ClientConfig::from_env`]).
//! - The decisions themselves live in `nls-client-core` (pure, shared with the Node package).

pub mod access_tokens;
#[cfg(feature = "axum")]
pub mod cloud_access;
#[cfg(feature = "axum")]
pub mod cloud_meter;
pub mod deployment_lease;
pub mod durable_file;
pub mod env_config;
pub mod http_transport;
pub mod license_client;
#[cfg(feature = "axum")]
pub mod middleware;
pub mod usage_spool;

pub use access_tokens::{AccessToken, AccessTokenError};
pub use env_config::{ConfigError, LicenseSettings};
pub use license_client::{ClientConfig, ClientError, Clock, FlushReport, LicenseClient, SystemClock};
pub use nls_client_core::{
    AnswerOutcome, GraceReason, InvalidCode, LicenseInfo, LicenseState, LimitCheck, Policy, ProofSource,
};
pub use usage_spool::UsageRecord;
