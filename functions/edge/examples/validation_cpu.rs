//! CPU time of one edge validation, for the Workers CPU budget (10 ms on the free plan).
//! Runs the real `Edge::handle` with instant in-memory ports, so only CPU is measured:
//! - cold: a key this isolate has not seen (Ed25519 verify, decide, JSON), snapshot in memory;
//! - warm: the same key again (verified-key cache hit).
//!
//! Native: `cargo run --release -p nls-edge --example validation_cpu`
//! Wasm (V8, the engine of workerd), see docs/edge.md:
//!   `cargo build --release -p nls-edge --example validation_cpu --target wasm32-wasip1`
//!   `node tests/edge/run_wasi.mjs $CARGO_TARGET_DIR/wasm32-wasip1/release/examples/validation_cpu.wasm`

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};
use nls_core::issuing::{LicenseTerms, issue_key, new_license};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::model::License;
use nls_core::validation::StatusSnapshot;
use nls_edge::edge_wire::{HeartbeatBody, UsageBody, ValidateBody};
use nls_edge::validation_events::ValidationEventsBody;
use nls_edge::{Edge, EdgeConfig, EdgeKv, EdgeRequest, EdgeState, KvError, Origin, OriginError, OriginReply};

/// The ports below never wait, so polling once finishes every future.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

struct NoKv;

#[async_trait(?Send)]
impl EdgeKv for NoKv {
    async fn get(&self, _: &str) -> Result<Option<String>, KvError> {
        Ok(None)
    }
    async fn put(&self, _: &str, _: &str, _: Option<Duration>) -> Result<(), KvError> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), KvError> {
        Ok(())
    }
    async fn list(&self, _: &str, _: usize) -> Result<Vec<String>, KvError> {
        Ok(vec![])
    }
}

struct InstantOrigin(HashMap<String, StatusSnapshot>);

#[async_trait(?Send)]
impl Origin for InstantOrigin {
    async fn fetch_snapshot(&self, id: &str) -> Result<Option<StatusSnapshot>, OriginError> {
        Ok(self.0.get(id).cloned())
    }
    async fn forward_activation(
        &self,
        _: &ValidateBody,
        _: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        Ok(OriginReply { status: 200, body: r#"{"code":"VALID","valid":true,"receipt":"r"}"#.into() })
    }
    async fn forward_heartbeat(
        &self,
        _: &HeartbeatBody,
        _: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        unreachable!()
    }
    async fn forward_usage(&self, _: &UsageBody, _: Option<&str>) -> Result<OriginReply, OriginError> {
        unreachable!()
    }
    async fn release(&self, _: &str, _: &str, _: Option<&str>) -> Result<OriginReply, OriginError> {
        unreachable!()
    }
    async fn fetch_jwks(&self) -> Result<String, OriginError> {
        unreachable!("every key is signed by the one known kid")
    }

    async fn ship_validation_events(&self, _: &ValidationEventsBody) -> Result<OriginReply, OriginError> {
        Ok(OriginReply { status: 200, body: "{}".into() })
    }
    async fn forward_access_token(
        &self,
        _: &nls_edge::access_tokens::AccessTokenBody,
        _: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        unreachable!("the benchmark asks for no access token")
    }
}

fn main() {
    const COLD: usize = 200;
    const WARM: usize = 20_000;
    let ring = KeyRing::with_signer(SigningKey::from_seed([5; 32], None), vec![]).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
    let licenses: Vec<License> = (0..COLD)
        .map(|_| {
            new_license("cus_bench", LicenseTerms { max_deployments: Some(5), ..Default::default() }, now)
        })
        .collect();
    let keys: Vec<String> = licenses.iter().map(|l| issue_key(&ring, l, now).unwrap()).collect();
    let snapshots = licenses
        .iter()
        .map(|l| {
            let s = StatusSnapshot {
                license: l.clone(),
                live_deployments: vec![],
                month_usage: Default::default(),
                as_of: now,
            };
            (l.id.clone(), s)
        })
        .collect();
    let jwks = serde_json::to_string(&ring.jwks()).unwrap();
    let vars = HashMap::from([
        ("NLS_ORIGIN_URL", "https://origin.bench".to_owned()),
        ("NLS_SERVICE_TOKEN", "bench".to_owned()),
        ("NLS_JWKS", jwks),
        ("NLS_EDGE_MEMORY_FRESH_SECS", "3600".to_owned()),
        ("NLS_EDGE_SNAPSHOT_TTL_SECS", "3600".to_owned()),
    ]);
    let config = EdgeConfig::from_vars(|n| vars.get(n).cloned()).unwrap();
    let edge = Edge::new(Arc::new(EdgeState::new(config).unwrap()), NoKv, InstantOrigin(snapshots));
    let request = |key: &str| EdgeRequest {
        method: "POST".into(),
        path: "/v1/licenses/validate".into(),
        headers: vec![],
        body: format!(r#"{{"key":"{key}"}}"#).into_bytes(),
        client: Default::default(),
    };
    // Load every snapshot (and the origin's receipt) into memory first: this is the CPU of an
    // isolate that knows the license but has not verified this exact key text yet.
    for key in &keys {
        let answer = block_on(edge.handle(request(key), now)).response;
        assert!(answer.body.contains("\"VALID\""), "{}", answer.body);
    }
    let fresh_edge = {
        let jwks = serde_json::to_string(&ring.jwks()).unwrap();
        let vars2 = HashMap::from([
            ("NLS_ORIGIN_URL", "https://origin.bench".to_owned()),
            ("NLS_SERVICE_TOKEN", "bench".to_owned()),
            ("NLS_JWKS", jwks),
            ("NLS_EDGE_MEMORY_FRESH_SECS", "3600".to_owned()),
            ("NLS_EDGE_SNAPSHOT_TTL_SECS", "3600".to_owned()),
        ]);
        EdgeConfig::from_vars(|n| vars2.get(n).cloned()).unwrap()
    };
    // Cold: a new isolate state, so each key is verified (Ed25519) and its snapshot fetched
    // from the (instant) origin.
    let cold_edge = Edge::new(
        Arc::new(EdgeState::new(fresh_edge).unwrap()),
        NoKv,
        InstantOrigin(
            licenses
                .iter()
                .map(|l| {
                    let s = StatusSnapshot {
                        license: l.clone(),
                        live_deployments: vec![],
                        month_usage: Default::default(),
                        as_of: now,
                    };
                    (l.id.clone(), s)
                })
                .collect(),
        ),
    );
    let start = Instant::now();
    for key in &keys {
        let _ = block_on(cold_edge.handle(request(key), now));
    }
    let cold = start.elapsed() / COLD as u32;
    let start = Instant::now();
    for i in 0..WARM {
        let _ = block_on(edge.handle(request(&keys[i % COLD]), now));
    }
    let warm = start.elapsed() / WARM as u32;
    println!(
        "edge validation CPU: cold {:.1} µs, warm {:.1} µs (Workers free-plan budget: 10,000 µs)",
        cold.as_secs_f64() * 1e6,
        warm.as_secs_f64() * 1e6
    );
}
