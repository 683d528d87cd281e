//! The customer-app side of NLS, written once: everything a client decides without touching
//! the network, the disk or the system clock.
//!
//! - [`license_state`]: the typed state an app shows (`Valid`, `Offline`, `Grace`, `Invalid`).
//! - [`effective_clock`]: time that never runs backwards, so a rolled-back clock earns nothing.
//! - [`state_machine`]: the evidence (signed receipt, last answer, offline file) and the
//!   offline → grace → fail-closed timeline, with the on-disk cache format.
//! - [`validation_answer`]: how a server answer is classified (good, refused, offline).
//! - [`schedule`]: check-in jitter and retry backoff.
//! - [`fleet_usage`]: the fleet-wide usage the limit check counts (the server's snapshot
//!   figure plus this process's reports it cannot show yet).
//!
//! The Rust client (`clients/rust`) and the Node package (`clients/node`, via wasm) bring
//! the I/O: HTTP, files and the wall clock are passed in.

pub mod effective_clock;
pub mod fleet_usage;
pub mod license_state;
pub mod schedule;
pub mod state_machine;
pub mod validation_answer;

pub use license_state::{GraceReason, InvalidCode, LicenseInfo, LicenseState, LimitCheck, ProofSource};
pub use state_machine::{CacheLoad, LicenseMachine, Policy};
pub use validation_answer::AnswerOutcome;

/// Unix seconds, the unit of every time in the cache and the wasm API.
pub type UnixSeconds = i64;
