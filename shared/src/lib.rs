//! NLS core: the domain of the Nectar License Service. It does no I/O and knows no platform;
//! adapters in `functions/` reach it through the traits in [`ports`].

pub mod access_token;
pub mod billing;
pub mod cloud_rate;
pub mod ed25519;
pub mod email;
pub mod issuing;
pub mod key_format;
pub mod key_ring;
pub mod license_search;
pub mod license_token;
pub mod lifecycle;
pub mod memory_store;
pub mod model;
pub mod panic_guard;
pub mod path_segment;
pub mod ports;
pub mod receipt;
pub mod registry_token;
pub mod renewals;
pub mod staff_accounts;
pub mod staff_changes;
pub mod status_push;
pub mod totp;
pub mod validation;
pub mod validation_stats;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod fault_injection;
#[cfg(feature = "http")]
pub mod http;
