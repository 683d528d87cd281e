//! Helpers for the end-to-end tests: they run the real binaries and talk to them over HTTP.
//!
//! - [`nls_host`]: what a test needs from a running origin, on either host of the router;
//! - [`nls_server`] starts `nls serve` on a free port with a temporary data directory;
//! - [`api_lambda`] starts the `api` Lambda under a local Runtime API, on moto;
//! - [`lambda_runtime`] starts that Runtime API (cargo-lambda's emulator);
//! - [`function_url_front`] serves a function under it over HTTP as a function URL does;
//! - [`runtime_api_relay`] connects a function process to it;
//! - [`moto`] starts one moto server per test binary;
//! - [`throttling_proxy`] answers a fraction of DynamoDB requests with throttling errors;
//! - [`docker_registry`] runs the CNCF registry with token auth, and skopeo;
//! - [`free_port`] picks ports for servers started in another process;
//! - [`http_client`] is a minimal HTTP/1.1 client, so tests can send exactly the bytes they
//!   mean (malformed JSON, oversize bodies, odd methods) with no client library in the way.

pub mod api_lambda;
pub mod docker_registry;
pub mod free_port;
pub mod function_url_front;
pub mod http_client;
pub mod lambda_runtime;
pub mod moto;
pub mod nls_host;
pub mod nls_server;
pub mod runtime_api_relay;
pub mod throttling_proxy;
