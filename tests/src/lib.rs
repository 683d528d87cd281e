//! Helpers for the end-to-end tests: they run the real binaries and talk to them over HTTP.
//!
//! - [`nls_server`] starts `nls serve` on a free port with a temporary data directory;
//! - [`http_client`] is a minimal HTTP/1.1 client, so tests can send exactly the bytes they
//!   mean (malformed JSON, oversize bodies, odd methods) with no client library in the way.

pub mod http_client;
pub mod nls_server;
