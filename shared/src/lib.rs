//! NLS core: the domain of the Nectar License Service. It does no I/O and knows no platform;
//! adapters in `functions/` reach it through the traits in [`ports`].

pub mod billing;
pub mod email;
pub mod issuing;
pub mod key_format;
pub mod key_ring;
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
pub mod status_push;
pub mod validation;
pub mod validation_stats;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "http")]
pub mod http;
