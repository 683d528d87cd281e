//! The NLS edge, written once for every edge runtime (Cloudflare Workers, Spin).
//!
//! An edge answers the public, license-key routes close to the customer. It verifies the key's
//! signature with the public JWKS only, and decides with a cached **status snapshot** looked up
//! in three layers ([`snapshot_layers`]): the isolate's memory, the platform KV, then the
//! origin. A warm validation (key seen, snapshot fresh in memory, receipt cached) makes no
//! network request. When the origin is unreachable the edge still answers, with
//! `degraded: true`, and queues what the origin must learn in a KV [`outbox`].
//!
//! This crate knows no platform: a host supplies an [`EdgeKv`] and an [`HttpClient`], turns its
//! request into an [`EdgeRequest`], runs the returned [`BackgroundTask`]s after the response
//! (`ctx.wait_until` on Workers) and calls [`Edge::drain_outbox`] on a timer.
//!
//! See `docs/edge.md` for the layers, the propagation bound and degraded mode.

pub mod access_tokens;
pub mod edge_config;
pub mod edge_keys;
pub mod edge_ports;
pub mod edge_service;
pub mod edge_wire;
pub mod outbox;
pub mod request_body;
pub mod snapshot_layers;
pub mod validation_events;

pub use edge_config::{ConfigError, EdgeConfig};
pub use edge_ports::{
    EdgeKv, HttpClient, HttpOrigin, KvError, Origin, OriginError, OriginReply, OutboundRequest,
};
pub use edge_service::{
    BackgroundTask, Edge, EdgeCounters, EdgeOutcome, EdgeRequest, EdgeResponse, EdgeState,
};
pub use request_body::{BodyTooLarge, BoundedBody};
pub use validation_events::ClientInfo;
