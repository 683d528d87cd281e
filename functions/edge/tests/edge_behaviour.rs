//! The edge's behaviour, natively, with in-memory fakes of the KV and the origin. The fake
//! origin is the core's own `MemoryStore` behind the core's decision and receipt functions, so
//! activation limits and batch idempotency are the real ones.
//!
//! Each test reads GIVEN / WHEN / THEN.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};
use nls_core::access_token::{
    CloudGrant, CloudLimits, DEFAULT_ACCESS_TTL_SECS, decide_access, sign_access_token, verify_access_token,
};
use nls_core::issuing::{LicenseTerms, apply_event, issue_key, new_license};
use nls_core::key_ring::{KeyRing, SigningKey};
use nls_core::lifecycle::LifecycleEvent;
use nls_core::memory_store::MemoryStore;
use nls_core::model::{Deployment, License, Timestamp, UsageBatch, UsageRecord};
use nls_core::ports::ValidationStatsStore;
use nls_core::ports::{
    Activation, ActivationPolicy, BatchOutcome, DeploymentStore, LicenseStore, UnitOfWork, UsageStore, Write,
};
use nls_core::receipt::{sign_receipt, verify_receipt};
use nls_core::validation::{StatusSnapshot, ValidationRequest, Verifier, decide};
use nls_core::validation_stats::{ValidationEvent, ValidationEventBatch};
use nls_edge::access_tokens::AccessTokenBody;
use nls_edge::edge_wire::{HeartbeatBody, UsageBody, ValidateBody};
use nls_edge::validation_events::ValidationEventsBody;
use nls_edge::{
    BackgroundTask, ClientInfo, Edge, EdgeConfig, EdgeKv, EdgeRequest, EdgeState, KvError, Origin,
    OriginError, OriginReply,
};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// Fakes

#[derive(Default)]
struct KvWorld {
    map: RefCell<BTreeMap<String, String>>,
    gets: Cell<usize>,
    down: Cell<bool>,
}

#[derive(Clone, Default)]
struct FakeKv(Rc<KvWorld>);

#[async_trait(?Send)]
impl EdgeKv for FakeKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.0.gets.set(self.0.gets.get() + 1);
        if self.0.down.get() {
            return Err(KvError("down".into()));
        }
        Ok(self.0.map.borrow().get(key).cloned())
    }
    async fn put(&self, key: &str, value: &str, _ttl: Option<Duration>) -> Result<(), KvError> {
        if self.0.down.get() {
            return Err(KvError("down".into()));
        }
        self.0.map.borrow_mut().insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.map.borrow_mut().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, KvError> {
        if self.0.down.get() {
            return Err(KvError("down".into()));
        }
        Ok(self.0.map.borrow().keys().filter(|k| k.starts_with(prefix)).take(limit).cloned().collect())
    }
}

struct OriginWorld {
    store: MemoryStore,
    /// Replaced by a rotation test.
    ring: RefCell<Arc<KeyRing>>,
    now: Cell<Timestamp>,
    up: Cell<bool>,
    calls: RefCell<HashMap<&'static str, usize>>,
    /// Usage batches the origin answers with this status instead of counting them (a 5xx
    /// arrives as `OriginError::ServerError`, as `HttpOrigin` reports it).
    usage_answers: RefCell<HashMap<String, u16>>,
    /// The caller address each forwarded call carried.
    client_ips: RefCell<Vec<Option<String>>>,
    events_dropped_reported: RefCell<u64>,
}

#[derive(Clone)]
struct FakeOrigin(Rc<OriginWorld>);

impl FakeOrigin {
    fn count(&self, what: &'static str) -> Result<(), OriginError> {
        *self.0.calls.borrow_mut().entry(what).or_default() += 1;
        if self.0.up.get() { Ok(()) } else { Err(OriginError::Unreachable("connection refused".into())) }
    }
    fn calls(&self) -> usize {
        self.0.calls.borrow().values().sum()
    }
    fn verify(&self, key: &str) -> Option<Arc<nls_core::license_token::VerifiedLicense>> {
        Verifier::new(self.0.ring.borrow().clone()).verify(key).ok()
    }
}

fn reply(status: u16, body: Value) -> Result<OriginReply, OriginError> {
    Ok(OriginReply { status, body: body.to_string() })
}

fn policy(max: Option<u32>) -> ActivationPolicy {
    ActivationPolicy {
        max_deployments: max,
        lease: Duration::hours(1),
        churn_window: Duration::hours(1),
        churn_max: 20,
    }
}

#[async_trait(?Send)]
impl Origin for FakeOrigin {
    async fn fetch_snapshot(&self, license_id: &str) -> Result<Option<StatusSnapshot>, OriginError> {
        self.count("snapshot")?;
        Ok(self.0.store.license_snapshot(license_id, self.0.now.get()).await.unwrap())
    }

    async fn forward_activation(
        &self,
        body: &ValidateBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.count("validate")?;
        self.0.client_ips.borrow_mut().push(client_ip.map(str::to_owned));
        let now = self.0.now.get();
        let key = self.verify(&body.key).expect("the edge forwards verified keys only");
        let snapshot = self.0.store.license_snapshot(&key.claims.sub, now).await.unwrap();
        let request = ValidationRequest { deployment_id: body.deployment_id.clone(), ..Default::default() };
        let decision = decide(&key, &request, snapshot.as_ref(), now);
        let mut code = decision.code.as_str();
        if decision.needs_activation {
            let d = Deployment {
                license_id: key.claims.sub.clone(),
                deployment_id: body.deployment_id.clone().unwrap(),
                fingerprint: None,
                app_version: None,
                activated_at: now,
                last_heartbeat_at: now,
                lease_expires_at: now + Duration::hours(1),
            };
            let max = decision.license.max_deployments;
            if let Activation::LimitReached { .. } =
                self.0.store.activate_deployment(&d, &policy(max), now).await.unwrap()
            {
                code = "TOO_MANY_DEPLOYMENTS";
            }
        }
        let valid = code == "VALID" || code == "IN_GRACE";
        let receipt = valid.then(|| {
            sign_receipt(&self.0.ring.borrow(), &body.key, &decision, body.deployment_id.as_deref(), now)
                .unwrap()
        });
        reply(
            200,
            json!({"code": code, "valid": valid, "receipt": receipt, "degraded": false, "from": "origin"}),
        )
    }

    async fn forward_heartbeat(
        &self,
        body: &HeartbeatBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.count("heartbeat")?;
        self.0.client_ips.borrow_mut().push(client_ip.map(str::to_owned));
        let now = self.0.now.get();
        let key = self.verify(&body.key).unwrap();
        let hb = self
            .0
            .store
            .heartbeat(&key.claims.sub, &body.deployment_id, None, now, now + Duration::hours(1))
            .await;
        match hb.unwrap() {
            Some(_) => reply(200, json!({"code": "VALID", "valid": true})),
            None => reply(404, json!({"error": {"code": "deployment_not_active", "message": "no"}})),
        }
    }

    async fn forward_usage(
        &self,
        body: &UsageBody,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.count("usage")?;
        self.0.client_ips.borrow_mut().push(client_ip.map(str::to_owned));
        match self.0.usage_answers.borrow().get(&body.batch_id) {
            Some(&status) if status >= 500 => return Err(OriginError::ServerError(status)),
            Some(&status) => {
                return reply(status, json!({"error": {"code": "usage_out_of_bounds", "message": "no"}}));
            }
            None => {}
        }
        let key = self.verify(&body.key).unwrap();
        let batch = UsageBatch {
            license_id: key.claims.sub.clone(),
            deployment_id: body.deployment_id.clone(),
            batch_id: body.batch_id.clone(),
            records: body
                .records
                .iter()
                .map(|r| UsageRecord { metric: r.metric.clone(), value: r.value, at: r.at })
                .collect(),
            received_at: self.0.now.get(),
        };
        let outcome = self.0.store.record_usage_batch(&batch).await.unwrap();
        reply(202, json!({"batch_id": body.batch_id, "duplicate": outcome == BatchOutcome::Duplicate}))
    }

    async fn release(
        &self,
        deployment_id: &str,
        key: &str,
        client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.count("release")?;
        self.0.client_ips.borrow_mut().push(client_ip.map(str::to_owned));
        let key = self.verify(key).unwrap();
        let released = self.0.store.release_deployment(&key.claims.sub, deployment_id).await.unwrap();
        reply(if released { 200 } else { 404 }, json!({"deployment_id": deployment_id, "released": released}))
    }

    async fn fetch_jwks(&self) -> Result<String, OriginError> {
        self.count("jwks")?;
        Ok(serde_json::to_string(&self.0.ring.borrow().jwks()).unwrap())
    }

    /// The origin's `POST /v1/access-tokens`: the same core decisions, then a signature.
    async fn forward_access_token(
        &self,
        body: &AccessTokenBody,
        _client_ip: Option<&str>,
    ) -> Result<OriginReply, OriginError> {
        self.count("access_token")?;
        let now = self.0.now.get();
        let key = self.verify(&body.key).expect("the edge forwards verified keys only");
        let snapshot = self.0.store.license_snapshot(&key.claims.sub, now).await.unwrap().unwrap();
        let decision = decide(&key, &ValidationRequest::default(), Some(&snapshot), now);
        match decide_access(&decision, snapshot.license.cloud.as_ref(), &snapshot.month_usage, &body.audience)
        {
            Err(refused) => {
                reply(403, json!({"error": {"code": refused.code.as_str(), "message": refused.message}}))
            }
            Ok(grant) => {
                let ttl = Duration::seconds(DEFAULT_ACCESS_TTL_SECS);
                let ring = self.0.ring.borrow().clone();
                let issued = sign_access_token(
                    &ring,
                    &decision,
                    &grant,
                    &body.deployment_id,
                    &body.audience,
                    now,
                    ttl,
                )
                .unwrap();
                reply(200, json!({"token": issued.token, "expires_at": issued.expires_at}))
            }
        }
    }

    async fn ship_validation_events(&self, body: &ValidationEventsBody) -> Result<OriginReply, OriginError> {
        self.count("events")?;
        let batch = ValidationEventBatch {
            batch_id: body.batch_id.clone(),
            received_at: self.0.now.get(),
            events: body
                .events
                .iter()
                .map(|e| ValidationEvent {
                    license_id: e.license_id.clone(),
                    deployment_id: e.deployment_id.clone(),
                    fingerprint: e.fingerprint.clone(),
                    client_ip: e.client_ip.clone(),
                    country: e.country.clone(),
                    code: e.code.clone(),
                    at: e.at,
                    edge: e.edge.clone(),
                })
                .collect(),
        };
        let outcome = self.0.store.record_validation_events(&batch).await.unwrap();
        *self.0.events_dropped_reported.borrow_mut() += body.dropped;
        reply(200, json!({"batch_id": body.batch_id, "duplicate": outcome == BatchOutcome::Duplicate}))
    }
}

// ------------------------------------------------------------------------------------------
// The world of one test

struct World {
    edge: Edge<FakeKv, FakeOrigin>,
    kv: FakeKv,
    origin: FakeOrigin,
    license: License,
    key: String,
    now: Timestamp,
}

const TOKEN: &str = "test-service-token";
/// The address the platform gives for every test client.
const CLIENT_IP: &str = "203.0.113.7";

impl World {
    async fn new(max_deployments: Option<u32>) -> Self {
        Self::with_vars(max_deployments, &[]).await
    }

    /// A world whose edge also gets `extra` configuration variables.
    async fn with_vars(max_deployments: Option<u32>, extra: &[(&'static str, &str)]) -> Self {
        let signer = SigningKey::from_seed([9; 32], None);
        let ring = Arc::new(KeyRing::with_signer(signer, vec![]).unwrap());
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        let terms = LicenseTerms {
            max_deployments,
            limits: BTreeMap::from([("seats".into(), 100)]),
            ..Default::default()
        };
        let license = new_license("cus_1", terms, now - Duration::days(1));
        let key = issue_key(&ring, &license, now - Duration::days(1)).unwrap();
        let store = MemoryStore::new();
        let customer = nls_core::model::Customer {
            id: "cus_1".into(),
            name: "acme".into(),
            email: "ops@acme.test".into(),
            stripe_customer_id: None,
            reminders_opt_out: false,
            created_at: now,
            updated_at: now,
        };
        store
            .commit(None, vec![Write::CreateCustomer(customer), Write::CreateLicense(license.clone())])
            .await
            .unwrap();
        let jwks = serde_json::to_string(&ring.jwks()).unwrap();
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("NLS_ORIGIN_URL", "http://origin.test".to_owned()),
            ("NLS_SERVICE_TOKEN", TOKEN.to_owned()),
            ("NLS_JWKS", jwks),
            ("NLS_EDGE_MEMORY_FRESH_SECS", "5".to_owned()),
            ("NLS_EDGE_SNAPSHOT_TTL_SECS", "60".to_owned()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let config = EdgeConfig::from_vars(|name| vars.get(name).cloned()).unwrap();
        let state = Arc::new(EdgeState::new(config).unwrap());
        let kv = FakeKv::default();
        let origin = FakeOrigin(Rc::new(OriginWorld {
            store,
            ring: RefCell::new(ring),
            now: Cell::new(now),
            up: Cell::new(true),
            calls: RefCell::default(),
            usage_answers: RefCell::default(),
            client_ips: RefCell::default(),
            events_dropped_reported: RefCell::default(),
        }));
        let edge = Edge::new(state, kv.clone(), origin.clone());
        Self { edge, kv, origin, license, key, now }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.origin.0.now.set(self.now);
    }

    /// Sends a request and runs its background tasks, as a host would after responding.
    async fn send(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let (status, value, background) = self.send_only(method, path, body, vec![]).await;
        for task in background {
            self.edge.run_background(task, self.now).await;
        }
        (status, value)
    }

    async fn send_only(
        &self,
        method: &str,
        path: &str,
        body: Value,
        headers: Vec<(String, String)>,
    ) -> (u16, Value, Vec<BackgroundTask>) {
        let request = EdgeRequest {
            method: method.into(),
            path: path.into(),
            headers,
            body: if body.is_null() { vec![] } else { body.to_string().into_bytes() },
            client: ClientInfo {
                ip: Some(CLIENT_IP.to_owned()),
                country: Some("DE".to_owned()),
                edge: Some("FRA".to_owned()),
            },
        };
        let outcome = self.edge.handle(request, self.now).await;
        let value = serde_json::from_str(&outcome.response.body).unwrap_or(Value::Null);
        (outcome.response.status, value, outcome.background)
    }

    async fn validate(&self, deployment: Option<&str>) -> Value {
        let mut body = json!({"key": self.key});
        if let Some(d) = deployment {
            body["deployment_id"] = json!(d);
        }
        let (status, answer) = self.send("POST", "/v1/licenses/validate", body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    async fn set_status(&mut self, event: LifecycleEvent) {
        let current = self.origin.0.store.get_license(&self.license.id).await.unwrap().unwrap();
        let next = apply_event(&current, event, self.now).unwrap();
        let write = Write::UpdateLicense { license: next.clone(), expected_version: current.version };
        self.origin.0.store.commit(None, vec![write]).await.unwrap();
        self.license = next;
    }

    fn usage_body(&self, batch_id: &str, value: u64) -> Value {
        json!({"key": self.key, "deployment_id": "dep-1", "batch_id": batch_id,
               "records": [{"metric": "api_calls", "value": value, "at": self.now.to_rfc3339()}]})
    }

    async fn month_usage(&self, metric: &str) -> u64 {
        let counters = self
            .origin
            .0
            .store
            .usage_counters(&self.license.id, &self.now.format("%Y-%m").to_string())
            .await
            .unwrap();
        counters.get(metric).copied().unwrap_or(0)
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

// ------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_warm_validation_makes_no_network_request_and_carries_the_origins_receipt() {
    run(async {
        // GIVEN an edge that validated this key once (cold: snapshot and receipt from the origin)
        let w = World::new(None).await;
        let cold = w.validate(None).await;
        assert_eq!(cold["code"], "VALID");
        assert!(cold["receipt"].is_string(), "the cold answer relays the origin's receipt: {cold}");
        let (origin_calls, kv_gets) = (w.origin.calls(), w.kv.0.gets.get());

        // WHEN it validates the same key again within the memory freshness window
        let warm = w.validate(None).await;

        // THEN no KV read and no origin call happened, and the answer is complete
        assert_eq!(w.origin.calls(), origin_calls);
        assert_eq!(w.kv.0.gets.get(), kv_gets);
        assert_eq!(warm["code"], "VALID");
        assert_eq!(warm["degraded"], false);
        assert_eq!(warm["receipt"], cold["receipt"]);
        let ring =
            KeyRing::parse_jwks_json(&serde_json::to_string(&w.origin.0.ring.borrow().jwks()).unwrap())
                .unwrap();
        verify_receipt(&ring, warm["receipt"].as_str().unwrap(), &w.key)
            .expect("a receipt the customer app can verify");
        assert_eq!(warm["license"]["id"], w.license.id.as_str());
    });
}

#[test]
fn rejected_keys_are_answered_at_the_edge_without_the_origin() {
    run(async {
        let w = World::new(None).await;
        let last = if w.key.ends_with('0') { '1' } else { '0' };
        let typo = format!("{}{last}", &w.key[..w.key.len() - 1]);
        for (key, code) in [("not a key".to_owned(), "MALFORMED"), (typo, "CHECKSUM_MISMATCH")] {
            let (status, answer) = w.send("POST", "/v1/licenses/validate", json!({"key": key})).await;
            assert_eq!(status, 200);
            assert_eq!(answer["code"], code, "{answer}");
            assert_eq!(answer["valid"], false);
        }
        let other = SigningKey::from_seed([3; 32], None);
        let foreign_ring = KeyRing::with_signer(other, vec![]).unwrap();
        let forged = issue_key(&foreign_ring, &w.license, w.now).unwrap();
        let (_, answer) = w.send("POST", "/v1/licenses/validate", json!({"key": forged})).await;
        assert_eq!(answer["code"], "BAD_SIGNATURE");
        // An unknown kid may fetch the JWKS (edge_keys), nothing else.
        let jwks_fetches = w.origin.0.calls.borrow().get("jwks").copied().unwrap_or(0);
        assert_eq!(w.origin.calls() - jwks_fetches, 0);
    });
}

#[test]
fn a_stale_memory_entry_is_served_at_once_and_revalidated_in_the_background() {
    run(async {
        // GIVEN a warm edge
        let mut w = World::new(None).await;
        w.validate(None).await;
        let calls = w.origin.calls();
        // WHEN the memory entry is older than memory_fresh but younger than the TTL
        w.advance(Duration::seconds(6));
        let (status, answer, background) =
            w.send_only("POST", "/v1/licenses/validate", json!({"key": w.key}), vec![]).await;
        // THEN the answer comes from memory with no network call, and a revalidation is queued
        assert_eq!((status, &answer["code"]), (200, &json!("VALID")));
        assert_eq!(w.origin.calls(), calls);
        assert!(background.iter().any(|t| matches!(t, BackgroundTask::Revalidate { .. })), "{background:?}");
        // AND only one revalidation is claimed while it runs
        let (_, _, again) = w.send_only("POST", "/v1/licenses/validate", json!({"key": w.key}), vec![]).await;
        assert!(!again.iter().any(|t| matches!(t, BackgroundTask::Revalidate { .. })));
    });
}

#[test]
fn a_suspension_reaches_the_edge_within_the_snapshot_ttl_without_a_push() {
    run(async {
        // GIVEN a warm edge and a license suspended at the origin
        let mut w = World::new(None).await;
        w.validate(None).await;
        w.set_status(LifecycleEvent::Suspend).await;
        // WHEN requests keep coming, one per second
        let mut followed_after = None;
        for second in 1..=61 {
            w.advance(Duration::seconds(1));
            if w.validate(None).await["code"] == "SUSPENDED" {
                followed_after = Some(second);
                break;
            }
        }
        // THEN the edge answers SUSPENDED within the TTL (60 s)
        let after = followed_after.expect("the edge never followed the suspension");
        assert!(after <= 60, "followed after {after} s");
    });
}

#[test]
fn a_pushed_snapshot_is_followed_at_once_and_pushes_need_the_service_token() {
    run(async {
        let mut w = World::new(None).await;
        w.validate(None).await;
        w.set_status(LifecycleEvent::Suspend).await;
        let snapshot = w.origin.0.store.license_snapshot(&w.license.id, w.now).await.unwrap().unwrap();
        let path = format!("/v1/internal/snapshots/{}", w.license.id);

        let (status, ..) = w.send_only("PUT", &path, serde_json::to_value(&snapshot).unwrap(), vec![]).await;
        assert_eq!(status, 401);
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let (status, ..) = w.send_only("PUT", &path, serde_json::to_value(&snapshot).unwrap(), bearer).await;
        assert_eq!(status, 204);

        assert_eq!(w.validate(None).await["code"], "SUSPENDED");
        assert!(w.kv.0.map.borrow().contains_key(&format!("snap/{}", w.license.id)), "the push lands in KV");
    });
}

#[test]
fn an_older_snapshot_pushed_late_does_not_roll_the_status_back() {
    run(async {
        let mut w = World::new(None).await;
        let active = w.origin.0.store.license_snapshot(&w.license.id, w.now).await.unwrap().unwrap();
        w.set_status(LifecycleEvent::Suspend).await;
        let suspended = w.origin.0.store.license_snapshot(&w.license.id, w.now).await.unwrap().unwrap();
        assert!(suspended.license.version > active.license.version);
        let path = format!("/v1/internal/snapshots/{}", w.license.id);
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];

        // The suspension's push arrives first, the earlier state's push after it.
        for snapshot in [&suspended, &active] {
            let body = serde_json::to_value(snapshot).unwrap();
            let (status, ..) = w.send_only("PUT", &path, body, bearer.clone()).await;
            assert_eq!(status, 204);
        }
        assert_eq!(w.validate(None).await["code"], "SUSPENDED");
        let kv_text = w.kv.0.map.borrow().get(&format!("snap/{}", w.license.id)).cloned().unwrap();
        assert!(kv_text.contains("\"suspended\""), "KV keeps the newer snapshot: {kv_text}");
    });
}

#[test]
fn with_the_origin_down_a_known_license_validates_degraded_never_5xx() {
    run(async {
        // GIVEN an edge that knows the license, and an origin that went away
        let mut w = World::new(None).await;
        w.validate(None).await;
        w.origin.0.up.set(false);
        // WHEN the snapshot is older than the TTL
        w.advance(Duration::seconds(120));
        let answer = w.validate(None).await;
        // THEN the answer is valid and says it is degraded
        assert_eq!(answer["code"], "VALID");
        assert_eq!(answer["valid"], true);
        assert_eq!(answer["degraded"], true);
        // AND a second request does not wait on the origin again (breaker)
        let calls = w.origin.calls();
        assert_eq!(w.validate(None).await["degraded"], true);
        assert_eq!(w.origin.calls(), calls);
    });
}

#[test]
fn with_the_origin_down_and_nothing_cached_the_signature_alone_decides() {
    run(async {
        let w = World::new(None).await;
        w.origin.0.up.set(false);
        let answer = w.validate(None).await;
        assert_eq!((answer["code"].as_str(), answer["degraded"].as_bool()), (Some("VALID"), Some(true)));
    });
}

#[test]
fn a_new_deployment_is_admitted_provisionally_within_the_known_limit_and_reconciled() {
    run(async {
        // GIVEN a license for 2 deployments, one taken, and the origin down
        let mut w = World::new(Some(2)).await;
        assert_eq!(w.validate(Some("dep-a")).await["code"], "VALID");
        w.origin.0.up.set(false);
        w.advance(Duration::seconds(120));
        // WHEN a second and then a third deployment start
        let second = w.validate(Some("dep-b")).await;
        let third = w.validate(Some("dep-c")).await;
        // THEN the second is admitted provisionally, the third is over the known limit
        assert_eq!(second["code"], "VALID", "{second}");
        assert_eq!(second["degraded"], true);
        assert_eq!(second["deployment"]["provisional"], true);
        assert_eq!(third["code"], "TOO_MANY_DEPLOYMENTS", "{third}");
        // AND when the origin returns, the activation is delivered and the seat is real
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        let report = w.edge.drain_outbox(w.now).await;
        // The activation, and the batch of the two degraded answers' events that a background
        // drain queued while the origin was down.
        assert_eq!(report.delivered, 2, "{report:?}");
        let live: Vec<String> = w
            .origin
            .0
            .store
            .list_deployments(&w.license.id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.deployment_id)
            .collect();
        assert!(live.contains(&"dep-b".to_owned()), "{live:?}");
        let after = w.validate(Some("dep-b")).await;
        assert_eq!((after["code"].as_str(), after["degraded"].as_bool()), (Some("VALID"), Some(false)));
    });
}

#[test]
fn usage_queued_while_the_origin_is_down_is_delivered_exactly_once() {
    run(async {
        // GIVEN an origin that is down
        let mut w = World::new(None).await;
        w.origin.0.up.set(false);
        // WHEN a client reports a batch, and retries it, and reports another
        for body in [w.usage_body("b-1", 5), w.usage_body("b-1", 5), w.usage_body("b-2", 7)] {
            let (status, answer) = w.send("POST", "/v1/usage", body).await;
            // THEN each is acknowledged at the edge
            assert_eq!(status, 202, "{answer}");
            assert_eq!(answer["queued"], true);
        }
        assert_eq!(w.kv.0.map.borrow().keys().filter(|k| k.starts_with("outbox/")).count(), 2);
        // AND once the origin is back, draining (even twice) counts each batch once
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        let first = w.edge.drain_outbox(w.now).await;
        let second = w.edge.drain_outbox(w.now).await;
        assert_eq!((first.delivered, second.delivered), (2, 0));
        assert_eq!(w.month_usage("api_calls").await, 12);
        // AND a late client retry of a delivered batch is a duplicate at the origin
        let (status, answer) = w.send("POST", "/v1/usage", w.usage_body("b-1", 5)).await;
        assert_eq!((status, answer["duplicate"].as_bool()), (202, Some(true)));
        assert_eq!(w.month_usage("api_calls").await, 12);
    });
}

fn queued_keys(w: &World, prefix: &str) -> usize {
    w.kv.0.map.borrow().keys().filter(|k| k.starts_with(prefix)).count()
}

#[test]
fn a_queued_write_the_origin_refuses_or_keeps_failing_is_dead_lettered_and_blocks_nothing() {
    run(async {
        // GIVEN three batches queued while the origin was down: one it will refuse (400), one
        // it will answer 503 every time (a poison pill), and a good one behind them
        let mut w = World::new(None).await;
        w.origin.0.up.set(false);
        for (batch, value) in [("a-refused", 1), ("b-poison", 2), ("c-good", 3)] {
            let (status, answer) = w.send("POST", "/v1/usage", w.usage_body(batch, value)).await;
            assert_eq!(status, 202, "{answer}");
        }
        w.origin.0.usage_answers.borrow_mut().insert("a-refused".into(), 400);
        w.origin.0.usage_answers.borrow_mut().insert("b-poison".into(), 503);
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        // WHEN the queue is drained
        let first = w.edge.drain_outbox(w.now).await;
        // THEN the refused batch is dead-lettered at once, the good one is delivered past the
        // poison pill, and the 503 neither stops the drain nor trips the breaker
        assert_eq!((first.delivered, first.rejected, first.remaining), (1, 1, 1), "{first:?}");
        assert!(!first.origin_unreachable);
        assert_eq!(w.month_usage("api_calls").await, 3);
        let calls = w.origin.calls();
        assert_eq!(w.validate(None).await["degraded"], false);
        assert!(w.origin.calls() > calls, "the breaker is not tripped by a 5xx");
        // AND the poison pill is retried with backoff, then dead-lettered after its tries
        let tries = w.edge.state().config.outbox_max_server_errors;
        let mut drains = 1;
        while queued_keys(&w, "outbox/") > 0 {
            let before = w.origin.0.calls.borrow().get("usage").copied();
            w.edge.drain_outbox(w.now).await;
            assert_eq!(
                w.origin.0.calls.borrow().get("usage").copied(),
                before,
                "not retried before its backoff"
            );
            w.advance(Duration::hours(1));
            w.edge.drain_outbox(w.now).await;
            drains += 1;
            assert!(drains <= tries, "still queued after {drains} tries");
        }
        assert_eq!(drains, tries);
        assert_eq!(queued_keys(&w, "deadletter/"), 2);
        // AND the edge's metrics count both dead letters
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let request = EdgeRequest {
            method: "GET".into(),
            path: "/v1/internal/metrics".into(),
            headers: bearer,
            body: vec![],
            client: Default::default(),
        };
        let metrics = w.edge.handle(request, w.now).await.response;
        assert_eq!(metrics.status, 200);
        assert!(metrics.body.contains("nls_edge_dead_letters_total 2"), "{}", metrics.body);
        let (status, ..) = w.send_only("GET", "/v1/internal/metrics", Value::Null, vec![]).await;
        assert_eq!(status, 401);
    });
}

#[test]
fn with_no_snapshot_provisional_seats_stop_at_the_keys_max_deployments() {
    run(async {
        // GIVEN a key for 2 deployments, an edge that never saw the license, the origin down
        let w = World::new(Some(2)).await;
        w.origin.0.up.set(false);
        // WHEN three deployments start
        let a = w.validate(Some("dep-a")).await;
        let b = w.validate(Some("dep-b")).await;
        let c = w.validate(Some("dep-c")).await;
        // THEN two are admitted provisionally and the third is over the key's own limit
        assert_eq!((a["code"].as_str(), a["degraded"].as_bool()), (Some("VALID"), Some(true)), "{a}");
        assert_eq!(b["code"], "VALID", "{b}");
        assert_eq!(c["code"], "TOO_MANY_DEPLOYMENTS", "{c}");
        // AND a deployment already admitted is still admitted
        assert_eq!(w.validate(Some("dep-a")).await["code"], "VALID");
    });
}

#[test]
fn a_usage_batch_that_cannot_be_queued_anywhere_is_answered_503_not_acknowledged() {
    run(async {
        // GIVEN an origin and a KV both down, and a memory outbox filled to its bound
        let w = World::new(None).await;
        w.origin.0.up.set(false);
        w.kv.0.down.set(true);
        for i in 0..nls_edge::edge_service::MAX_MEMORY_OUTBOX {
            let (status, _) = w.send("POST", "/v1/usage", w.usage_body(&format!("fill-{i}"), 1)).await;
            assert_eq!(status, 202);
        }
        // WHEN one more batch arrives
        let (status, answer) = w.send("POST", "/v1/usage", w.usage_body("one-too-many", 1)).await;
        // THEN it is refused for a retry rather than acknowledged and lost
        assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("unavailable")), "{answer}");
        let c = w.edge.state().counters();
        assert_eq!(c.outbox_dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    });
}

#[test]
fn a_redelivery_after_a_lost_acknowledgement_is_not_double_counted() {
    run(async {
        // GIVEN a queued batch that the origin counted, but whose KV delete was lost
        let mut w = World::new(None).await;
        w.origin.0.up.set(false);
        w.send("POST", "/v1/usage", w.usage_body("b-9", 3)).await;
        let queued: Vec<(String, String)> =
            w.kv.0
                .map
                .borrow()
                .iter()
                .filter(|(k, _)| k.starts_with("outbox/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        w.edge.drain_outbox(w.now).await;
        w.kv.0.map.borrow_mut().extend(queued); // the delete "never happened"
        // WHEN another isolate drains it again
        w.advance(Duration::seconds(10));
        let report = w.edge.drain_outbox(w.now).await;
        // THEN it is delivered, and counted once
        assert_eq!(report.delivered, 1);
        assert_eq!(w.month_usage("api_calls").await, 3);
    });
}

#[test]
fn heartbeats_are_acknowledged_at_the_edge_while_the_origin_is_down_and_delivered_later() {
    run(async {
        let mut w = World::new(None).await;
        w.validate(Some("dep-1")).await;
        w.origin.0.up.set(false);
        w.advance(Duration::minutes(30));
        let (status, answer) =
            w.send("POST", "/v1/heartbeat", json!({"key": w.key, "deployment_id": "dep-1"})).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!((answer["degraded"].as_bool(), answer["queued"].as_bool()), (Some(true), Some(true)));
        assert_eq!(answer["deployment"]["live"], true);

        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        assert_eq!(w.edge.drain_outbox(w.now).await.delivered, 1);
        let deployments = w.origin.0.store.list_deployments(&w.license.id).await.unwrap();
        assert_eq!(deployments[0].last_heartbeat_at, w.now, "the lease was renewed on delivery");
    });
}

#[test]
fn background_drains_are_scheduled_by_the_isolate_that_queued() {
    run(async {
        let mut w = World::new(None).await;
        w.origin.0.up.set(false);
        w.send("POST", "/v1/usage", w.usage_body("b-1", 1)).await;
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(6));
        let (_, _, background) = w.send_only("GET", "/health", Value::Null, vec![]).await;
        assert!(background.contains(&BackgroundTask::DrainOutbox), "{background:?}");
        for task in background {
            w.edge.run_background(task, w.now).await;
        }
        assert_eq!(w.month_usage("api_calls").await, 1);
    });
}

#[test]
fn the_edge_keeps_answering_when_its_kv_is_down() {
    run(async {
        let mut w = World::new(None).await;
        w.kv.0.down.set(true);
        assert_eq!(w.validate(None).await["code"], "VALID");
        w.origin.0.up.set(false);
        w.advance(Duration::seconds(10));
        let (status, answer) = w.send("POST", "/v1/usage", w.usage_body("b-1", 4)).await;
        assert_eq!((status, answer["queued"].as_bool()), (202, Some(true)));
        // Held in isolate memory until KV or the origin is back.
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        assert_eq!(w.edge.drain_outbox(w.now).await.delivered, 1);
        assert_eq!(w.month_usage("api_calls").await, 4);
    });
}

#[test]
fn bad_requests_get_4xx_with_the_error_shape() {
    run(async {
        let w = World::new(None).await;
        let check = |status: u16, body: &Value, want_status: u16, want_code: &str| {
            assert_eq!(status, want_status, "{body}");
            assert_eq!(body["error"]["code"], want_code, "{body}");
        };
        let request = EdgeRequest {
            method: "POST".into(),
            path: "/v1/licenses/validate".into(),
            headers: vec![],
            body: b"{".to_vec(),
            client: Default::default(),
        };
        let out = w.edge.handle(request, w.now).await;
        check(out.response.status, &serde_json::from_str(&out.response.body).unwrap(), 400, "malformed_json");
        let (s, b) = w.send("POST", "/v1/licenses/validate", json!({"nokey": 1})).await;
        check(s, &b, 400, "invalid_request");
        let (s, b) = w.send("GET", "/v1/nowhere", Value::Null).await;
        check(s, &b, 404, "route_not_found");
        let (s, b) = w.send("GET", "/v1/usage", Value::Null).await;
        check(s, &b, 405, "method_not_allowed");
        let (s, b) = w.send("POST", "/v1/usage", json!({"key": "NLS-x", "deployment_id": "d", "batch_id": "b", "records": [{"metric": "m", "value": 1, "at": "2026-11-20T00:00:00Z"}]})).await;
        check(s, &b, 401, "invalid_license_key");
        let big = EdgeRequest {
            method: "POST".into(),
            path: "/v1/usage".into(),
            headers: vec![],
            body: vec![b' '; 70_000],
            client: Default::default(),
        };
        assert_eq!(w.edge.handle(big, w.now).await.response.status, 413);
        let (s, jwks) = w.send("GET", "/.well-known/jwks.json", Value::Null).await;
        assert_eq!(s, 200);
        assert!(jwks["keys"][0]["d"].is_null(), "the edge publishes public keys only");
        assert_eq!(w.origin.calls(), 0);
    });
}

#[test]
fn release_is_forwarded_and_frees_the_seat_at_the_edge_at_once() {
    run(async {
        let w = World::new(Some(1)).await;
        assert_eq!(w.validate(Some("dep-a")).await["code"], "VALID");
        let headers = vec![("x-license-key".to_owned(), w.key.clone())];
        let (status, ..) = w.send_only("DELETE", "/v1/deployments/dep-a", Value::Null, headers).await;
        assert_eq!(status, 200);
        assert_eq!(w.validate(Some("dep-b")).await["code"], "VALID");
    });
}

#[test]
fn configuration_errors_name_the_variable() {
    let err = EdgeConfig::from_vars(|name| match name {
        "NLS_ORIGIN_URL" => Some("ftp://x".into()),
        _ => None,
    })
    .unwrap_err();
    assert_eq!(err.variable, "NLS_ORIGIN_URL");
    let err = EdgeConfig::from_vars(|name| match name {
        "NLS_ORIGIN_URL" => Some("https://x".into()),
        _ => None,
    })
    .unwrap_err();
    assert_eq!(err.variable, "NLS_JWKS");
}

#[test]
fn the_drain_route_needs_the_service_token_and_delivers_the_queue() {
    run(async {
        let mut w = World::new(None).await;
        w.origin.0.up.set(false);
        w.send("POST", "/v1/usage", w.usage_body("b-1", 2)).await;
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(10));
        let (status, ..) = w.send_only("POST", "/v1/internal/outbox/drain", Value::Null, vec![]).await;
        assert_eq!(status, 401);
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let (status, report, _) = w.send_only("POST", "/v1/internal/outbox/drain", Value::Null, bearer).await;
        assert_eq!((status, report["delivered"].as_u64()), (200, Some(1)), "{report}");
        assert_eq!(w.month_usage("api_calls").await, 2);
    });
}

#[test]
fn another_isolate_serves_from_kv_with_the_cached_receipt_and_no_origin_call() {
    run(async {
        // GIVEN one isolate that validated the key (snapshot and receipt now in KV)
        let w = World::new(None).await;
        let first = w.validate(Some("dep-1")).await;
        let calls = w.origin.calls();
        // WHEN a fresh isolate (Spin: a fresh instance) over the same KV validates it
        let config = w.edge.state().config.clone();
        let second_isolate =
            Edge::new(Arc::new(EdgeState::new(config).unwrap()), w.kv.clone(), w.origin.clone());
        let body = json!({"key": w.key, "deployment_id": "dep-1"}).to_string().into_bytes();
        let request = EdgeRequest {
            method: "POST".into(),
            path: "/v1/licenses/validate".into(),
            headers: vec![],
            body,
            client: Default::default(),
        };
        let out = second_isolate.handle(request, w.now).await;
        let answer: Value = serde_json::from_str(&out.response.body).unwrap();
        // THEN it answers from KV with the origin's receipt, without calling the origin
        assert_eq!(answer["code"], "VALID", "{answer}");
        assert_eq!(answer["receipt"], first["receipt"]);
        assert_eq!(w.origin.calls(), calls);
    });
}

#[test]
fn provisional_seats_queued_in_kv_count_for_every_isolate() {
    run(async {
        // GIVEN a license for 2 deployments, one live, the origin down, and one isolate that
        // admitted a second deployment provisionally
        let mut w = World::new(Some(2)).await;
        w.validate(Some("dep-a")).await;
        w.origin.0.up.set(false);
        w.advance(Duration::seconds(120));
        assert_eq!(w.validate(Some("dep-b")).await["deployment"]["provisional"], true);
        // WHEN a fresh isolate (a Spin instance) over the same KV sees a third deployment
        let config = w.edge.state().config.clone();
        let fresh = Edge::new(Arc::new(EdgeState::new(config).unwrap()), w.kv.clone(), w.origin.clone());
        let ask = |d: &str| EdgeRequest {
            method: "POST".into(),
            path: "/v1/licenses/validate".into(),
            headers: vec![],
            body: json!({"key": w.key, "deployment_id": d}).to_string().into_bytes(),
            client: Default::default(),
        };
        let third: Value =
            serde_json::from_str(&fresh.handle(ask("dep-c"), w.now).await.response.body).unwrap();
        let again: Value =
            serde_json::from_str(&fresh.handle(ask("dep-b"), w.now).await.response.body).unwrap();
        // THEN the third is refused and the provisional one still holds its seat
        assert_eq!(third["code"], "TOO_MANY_DEPLOYMENTS", "{third}");
        assert_eq!(
            (again["code"].as_str(), again["deployment"]["provisional"].as_bool()),
            (Some("VALID"), Some(true))
        );
    });
}

#[test]
fn usage_reported_through_the_edge_is_in_its_answers_within_the_snapshot_ttl() {
    run(async {
        // GIVEN a warm edge: the license's limited metric shows the fleet's count, 0
        let mut w = World::new(None).await;
        w.validate(Some("dep-1")).await;
        let warm = w.validate(Some("dep-1")).await;
        let as_of = w.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(
            warm["usage"]["seats"],
            json!({"used": 0, "limit": 100, "period": "2026-11", "as_of": as_of})
        );
        // WHEN a deployment reports 30 through the edge
        let batch = json!({"key": w.key, "deployment_id": "dep-1", "batch_id": "s-1",
            "records": [{"metric": "seats", "value": 30, "at": w.now.to_rfc3339()}]});
        assert_eq!(w.send("POST", "/v1/usage", batch).await.0, 202);
        assert_eq!(w.month_usage("seats").await, 30);
        // THEN within the memory freshness window the edge still answers from its snapshot
        assert_eq!(w.validate(Some("dep-1")).await["usage"]["seats"]["used"], 0);
        // AND once the snapshot is older than the TTL (the documented bound), the answer counts it
        w.advance(Duration::seconds(61));
        let later = w.validate(Some("dep-1")).await;
        assert_eq!(later["usage"]["seats"]["used"], 30, "{later}");
        assert_eq!(later["usage"]["seats"]["limit"], 100);
    });
}

/// Issue 19 item 5 at the edge: `fingerprint` and `app_version` over 256 characters are
/// refused as the origin refuses them (400 `invalid_request`), before any origin call or
/// outbox item; 256 characters (counted as characters, not bytes) pass.
#[test]
fn client_text_over_256_characters_is_refused_like_the_origin() {
    run(async {
        let w = World::new(None).await;
        let long = "f".repeat(257);
        let (s, b) = w
            .send(
                "POST",
                "/v1/licenses/validate",
                json!({"key": w.key, "deployment_id": "dep-1", "fingerprint": long}),
            )
            .await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "{b}");
        let (s, b) = w
            .send(
                "POST",
                "/v1/heartbeat",
                json!({"key": w.key, "deployment_id": "dep-1", "app_version": long}),
            )
            .await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "{b}");
        assert_eq!(w.origin.calls(), 0, "a refused request reaches no origin");

        let wide = "é".repeat(256);
        let (s, b) = w
            .send(
                "POST",
                "/v1/licenses/validate",
                json!({"key": w.key, "deployment_id": "dep-1", "fingerprint": wide}),
            )
            .await;
        assert_eq!(s, 200, "256 two-byte characters are within the bound: {b}");
        let (s, b) = w
            .send(
                "POST",
                "/v1/heartbeat",
                json!({"key": w.key, "deployment_id": "dep-1", "app_version": wide}),
            )
            .await;
        assert_ne!(s, 400, "{b}");
    });
}

// ------------------------------------------------------------------------------------------
// Key rotation at the edge (edge_keys): a new JWKS without a redeploy

/// The origin rotates: a new signer, the old key kept as a verifier. Returns a key for the
/// same license signed by the new key.
fn rotate_origin(w: &World) -> String {
    let old = SigningKey::from_seed([9; 32], None);
    let new = SigningKey::from_seed([11; 32], None);
    let ring = Arc::new(KeyRing::with_signer(new, vec![old.verifying_key()]).unwrap());
    let key = issue_key(&ring, &w.license, w.now).unwrap();
    *w.origin.0.ring.borrow_mut() = ring;
    key
}

/// The origin retires the old kid: its JWKS holds the new key only. Returns that JWKS.
fn retire_at_origin(w: &World) -> Value {
    let ring = Arc::new(KeyRing::with_signer(SigningKey::from_seed([11; 32], None), vec![]).unwrap());
    let jwks = serde_json::to_value(ring.jwks()).unwrap();
    *w.origin.0.ring.borrow_mut() = ring;
    jwks
}

fn jwks_fetches(w: &World) -> usize {
    w.origin.0.calls.borrow().get("jwks").copied().unwrap_or(0)
}

fn fresh_isolate(w: &World) -> Edge<FakeKv, FakeOrigin> {
    let config = w.edge.state().config.clone();
    Edge::new(Arc::new(EdgeState::new(config).unwrap()), w.kv.clone(), w.origin.clone())
}

async fn validate_with(edge: &Edge<FakeKv, FakeOrigin>, key: &str, now: Timestamp) -> Value {
    let request = EdgeRequest {
        method: "POST".into(),
        path: "/v1/licenses/validate".into(),
        headers: vec![],
        body: json!({"key": key}).to_string().into_bytes(),
        ..Default::default()
    };
    let outcome = edge.handle(request, now).await;
    for task in outcome.background {
        edge.run_background(task, now).await;
    }
    serde_json::from_str(&outcome.response.body).unwrap()
}

#[test]
fn a_key_with_an_unknown_kid_makes_the_edge_fetch_the_origins_jwks_at_most_once_a_minute() {
    run(async {
        // GIVEN a warm edge, and an origin that rotated its signing key
        let mut w = World::new(None).await;
        assert_eq!(w.validate(None).await["code"], "VALID");
        let new_key = rotate_origin(&w);

        // WHEN a key signed by the new kid arrives
        let answer = validate_with(&w.edge, &new_key, w.now).await;

        // THEN the edge fetched the JWKS once, accepts it, still accepts the old key, and
        // shares the new JWKS through KV
        assert_eq!(answer["code"], "VALID", "{answer}");
        assert_eq!(jwks_fetches(&w), 1);
        assert_eq!(w.validate(None).await["code"], "VALID", "the old kid still verifies");
        let stored = w.kv.0.map.borrow().get(nls_edge::edge_keys::JWKS_KV_KEY).cloned().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&stored).unwrap()["jwks"]["keys"].as_array().unwrap().len(),
            2
        );
        let (_, jwks) = w.send("GET", "/.well-known/jwks.json", Value::Null).await;
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");

        // WHEN keys of other unknown kids arrive within the minute
        let stranger = KeyRing::with_signer(SigningKey::from_seed([12; 32], None), vec![]).unwrap();
        let forged = issue_key(&stranger, &w.license, w.now).unwrap();
        for _ in 0..5 {
            assert_eq!(validate_with(&w.edge, &forged, w.now).await["code"], "BAD_SIGNATURE");
        }
        // THEN the origin was not asked again; a minute later it is, once
        assert_eq!(jwks_fetches(&w), 1);
        w.advance(Duration::seconds(61));
        assert_eq!(validate_with(&w.edge, &forged, w.now).await["code"], "BAD_SIGNATURE");
        assert_eq!(validate_with(&w.edge, &forged, w.now).await["code"], "BAD_SIGNATURE");
        assert_eq!(jwks_fetches(&w), 2);

        // AND a fresh isolate reads the new JWKS from KV, without asking the origin
        let fresh = fresh_isolate(&w);
        assert_eq!(validate_with(&fresh, &new_key, w.now).await["code"], "VALID");
        assert_eq!(jwks_fetches(&w), 2);
    });
}

#[test]
fn a_pushed_jwks_retires_a_kid_at_once_in_this_isolate_and_in_fresh_ones() {
    run(async {
        // GIVEN a warm edge that has verified (and cached) the old key
        let w = World::new(None).await;
        assert_eq!(w.validate(None).await["code"], "VALID");
        let new_key = rotate_origin(&w);
        let new_only = retire_at_origin(&w);
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];

        // WHEN a push comes without the service token, or with something that is not a JWKS
        let (status, _, _) = w.send_only("PUT", "/v1/internal/jwks", new_only.clone(), vec![]).await;
        assert_eq!(status, 401);
        let (status, body, _) =
            w.send_only("PUT", "/v1/internal/jwks", json!({"keys": []}), bearer.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
        let hs256 = json!({"keys": [{"kty": "oct", "crv": "", "x": "", "k": "c2VjcmV0"}]});
        let (status, _, _) = w.send_only("PUT", "/v1/internal/jwks", hs256, bearer.clone()).await;
        assert_eq!(status, 400);
        // THEN nothing changed
        assert_eq!(w.validate(None).await["code"], "VALID");

        // WHEN the origin pushes its JWKS after retiring the old kid
        let (status, _, _) = w.send_only("PUT", "/v1/internal/jwks", new_only.clone(), bearer).await;
        assert_eq!(status, 204);

        // THEN the old key is refused at once (not answered from the verified-key cache), the
        // new one verifies without a fetch, and a fresh isolate configured with the old
        // `NLS_JWKS` follows KV's copy
        let (_, old) = w.send("POST", "/v1/licenses/validate", json!({"key": w.key})).await;
        assert_eq!(old["code"], "BAD_SIGNATURE", "{old}");
        let fetches = jwks_fetches(&w);
        assert_eq!(validate_with(&w.edge, &new_key, w.now).await["code"], "VALID");
        assert_eq!(jwks_fetches(&w), fetches, "the pushed set already knows the new kid");
        let fresh = fresh_isolate(&w);
        let jwks_request =
            EdgeRequest { method: "GET".into(), path: "/.well-known/jwks.json".into(), ..Default::default() };
        let served: Value =
            serde_json::from_str(&fresh.handle(jwks_request, w.now).await.response.body).unwrap();
        let new_kid = SigningKey::from_seed([11; 32], None).kid;
        assert_eq!(
            served["keys"],
            json!([{"kty": "OKP", "crv": "Ed25519", "x": new_only["keys"][0]["x"], "kid": new_kid, "alg": "EdDSA", "use": "sig"}]),
            "a fresh isolate serves KV's JWKS"
        );
        assert_eq!(validate_with(&fresh, &w.key, w.now).await["code"], "BAD_SIGNATURE");
        assert_eq!(validate_with(&fresh, &new_key, w.now).await["code"], "VALID");
    });
}

// ------------------------------------------------------------------------------------------
// Validation events (issue 12)

impl World {
    async fn edge_aggregate(&self) -> Option<nls_core::validation_stats::ValidationDayAggregate> {
        self.origin.0.store.validation_day_aggregate(&self.license.id, self.now.date_naive()).await.unwrap()
    }
    fn event_calls(&self) -> usize {
        self.origin.0.calls.borrow().get("events").copied().unwrap_or(0)
    }
}

#[test]
fn every_validation_the_edge_answers_is_shipped_once_as_an_event() {
    run(async {
        // GIVEN an edge that answered a cold validation (relayed from the origin: not an event)
        let mut w = World::new(None).await;
        w.validate(Some("dep-1")).await;
        // WHEN it answers 250 warm validations, in memory
        let calls = w.origin.calls();
        for _ in 0..250 {
            assert_eq!(w.validate(Some("dep-1")).await["code"], "VALID");
        }
        // THEN full batches of 100 went out after the responses, and nothing else
        assert_eq!(w.event_calls(), 2, "two full batches");
        assert_eq!(w.origin.calls(), calls + 2, "no other origin call");
        assert_eq!(w.edge.state().pending_events(), 50);
        // AND the rest goes out once the oldest has waited the flush interval (the next request)
        w.advance(Duration::seconds(11));
        w.send("GET", "/health", Value::Null).await;
        assert_eq!(w.event_calls(), 3);
        let agg = w.edge_aggregate().await.expect("counted at the origin");
        assert_eq!(agg.by_code.get("VALID"), Some(&250), "each answer once, the relayed one not");
        let ips = &agg.distinct[&nls_core::validation_stats::DistinctKind::ClientIp];
        assert_eq!(
            (ips.distinct, ips.top[0].value.as_str()),
            (1, CLIENT_IP),
            "the platform's client address"
        );
        assert_eq!(agg.distinct_count(nls_core::validation_stats::DistinctKind::Country), 1);
    });
}

#[test]
fn an_isolate_adopts_a_jwks_another_isolate_stored_within_the_refresh_interval() {
    run(async {
        // GIVEN two warm isolates over one KV
        let mut w = World::new(None).await;
        let other = fresh_isolate(&w);
        assert_eq!(validate_with(&other, &w.key, w.now).await["code"], "VALID");
        assert_eq!(w.validate(None).await["code"], "VALID");
        // WHEN the first one receives a push retiring the old kid
        rotate_origin(&w);
        let new_only = retire_at_origin(&w);
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let (status, _, _) = w.send_only("PUT", "/v1/internal/jwks", new_only, bearer).await;
        assert_eq!(status, 204);
        // THEN the other still trusts its old set until its refresh is due, then follows KV
        assert_eq!(validate_with(&other, &w.key, w.now).await["code"], "VALID");
        w.advance(Duration::seconds(61));
        validate_with(&other, &w.key, w.now).await; // schedules the background re-read
        assert_eq!(validate_with(&other, &w.key, w.now).await["code"], "BAD_SIGNATURE");
    });
}

#[test]
fn events_wait_in_the_kv_outbox_while_the_origin_is_down_and_count_once() {
    run(async {
        // GIVEN a warm edge whose origin goes away
        let mut w = World::new(None).await;
        w.validate(None).await;
        w.origin.0.up.set(false);
        for _ in 0..30 {
            w.validate(None).await;
        }
        // WHEN the cron drains: the events cannot reach the origin and are queued in KV
        w.advance(Duration::seconds(11));
        w.edge.drain_outbox(w.now).await;
        assert_eq!(w.edge.state().pending_events(), 0, "out of isolate memory");
        let queued: Vec<String> =
            w.kv.0.map.borrow().keys().filter(|k| k.starts_with("outbox/5-events/")).cloned().collect();
        assert_eq!(queued.len(), 1, "one queued batch: {queued:?}");
        let batch_text = w.kv.0.map.borrow()[&queued[0]].clone();
        // AND once the origin is back, a drain delivers it, and a redelivery counts nothing
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(11));
        let report = w.edge.drain_outbox(w.now).await;
        assert_eq!(report.delivered, 1, "{report:?}");
        w.kv.0.map.borrow_mut().insert(queued[0].clone(), batch_text);
        w.advance(Duration::seconds(11));
        assert_eq!(w.edge.drain_outbox(w.now).await.delivered, 1, "the lost-acknowledgement replay");
        let agg = w.edge_aggregate().await.expect("counted");
        assert_eq!(agg.by_code.get("VALID"), Some(&30), "counted once");
    });
}

#[test]
fn events_over_the_isolate_bound_are_dropped_counted_and_reported() {
    run(async {
        // GIVEN an edge that holds at most 10 events and ships every 100 (so never by size)
        let mut w =
            World::with_vars(None, &[("NLS_EDGE_EVENTS_MAX", "10"), ("NLS_EDGE_EVENTS_FLUSH_SECS", "60")])
                .await;
        w.validate(None).await;
        // WHEN 25 warm validations arrive within the flush interval
        for _ in 0..25 {
            w.validate(None).await;
        }
        // THEN 10 wait, 15 are dropped and counted, and no answer waited for any of it
        assert_eq!(w.edge.state().pending_events(), 10);
        let metrics = w.edge.state().counters().prometheus_text();
        assert!(metrics.contains("nls_edge_events_dropped_total 15"), "{metrics}");
        // AND the next batch carries the 10 and reports the 15
        w.advance(Duration::seconds(61));
        w.send("GET", "/health", Value::Null).await;
        assert_eq!(*w.origin.0.events_dropped_reported.borrow(), 15);
        assert_eq!(w.edge_aggregate().await.expect("counted").validations(), 10);
    });
}

#[test]
fn events_can_be_turned_off() {
    run(async {
        // GIVEN an edge with a bound of 0 events (the benchmark's events-off Worker)
        let mut w = World::with_vars(None, &[("NLS_EDGE_EVENTS_MAX", "0")]).await;
        // WHEN it answers more than a batch of warm validations, then flushes and drains
        for _ in 0..151 {
            assert_eq!(w.validate(None).await["code"], "VALID");
        }
        w.advance(Duration::seconds(61));
        w.send("GET", "/health", Value::Null).await;
        w.edge.drain_outbox(w.now).await;
        // THEN nothing is held, shipped or counted as dropped: off, not overflowing
        assert_eq!((w.edge.state().pending_events(), w.event_calls()), (0, 0));
        let metrics = w.edge.state().counters().prometheus_text();
        assert!(metrics.contains("nls_edge_events_dropped_total 0"), "{metrics}");
    });
}

#[test]
fn forwarded_calls_carry_the_callers_address_even_when_delivered_later() {
    run(async {
        // GIVEN an edge forwarding an activation and a heartbeat at once
        let mut w = World::new(Some(5)).await;
        w.validate(Some("dep-1")).await;
        let (status, _) =
            w.send("POST", "/v1/heartbeat", json!({"key": w.key, "deployment_id": "dep-1"})).await;
        assert_eq!(status, 200);
        // WHEN the origin is down and a usage batch is queued, then delivered
        w.origin.0.up.set(false);
        let usage = json!({"key": w.key, "deployment_id": "dep-1", "batch_id": "b1",
            "records": [{"metric": "seats", "value": 1, "at": w.now}]});
        assert_eq!(w.send("POST", "/v1/usage", usage).await.0, 202);
        w.origin.0.up.set(true);
        w.advance(Duration::seconds(6));
        assert_eq!(w.edge.drain_outbox(w.now).await.delivered, 1);
        // THEN every call the origin received named the platform's client address
        let ips = w.origin.0.client_ips.borrow().clone();
        assert!(ips.len() >= 3, "{ips:?}");
        assert!(ips.iter().all(|ip| ip.as_deref() == Some(CLIENT_IP)), "{ips:?}");
    });
}

// ------------------------------------------------------------------------------------------
// Cloud access tokens (access_tokens): re-judged at the edge, signed only by the origin

impl World {
    /// Grants the license `workflows` (quota `quota` calls a month) at the origin.
    async fn grant_cloud(&mut self, quota: Option<u64>) {
        let current = self.origin.0.store.get_license(&self.license.id).await.unwrap().unwrap();
        let mut next = current.clone();
        let limits = CloudLimits { requests_per_minute: 60, burst: 10, monthly_quota: quota };
        next.cloud = Some(CloudGrant::from([("workflows".to_owned(), limits)]));
        next.version += 1;
        let write = Write::UpdateLicense { license: next.clone(), expected_version: current.version };
        self.origin.0.store.commit(None, vec![write]).await.unwrap();
        self.license = next;
    }

    async fn access_token(&self, deployment: &str, audience: &str) -> (u16, Value) {
        let body = json!({"key": self.key, "deployment_id": deployment, "audience": audience});
        self.send("POST", "/v1/access-tokens", body).await
    }

    fn token_calls(&self) -> usize {
        self.origin.0.calls.borrow().get("access_token").copied().unwrap_or(0)
    }

    fn ring(&self) -> KeyRing {
        KeyRing::parse_jwks_json(&serde_json::to_string(&self.origin.0.ring.borrow().jwks()).unwrap())
            .unwrap()
    }
}

#[test]
fn a_warm_access_token_request_is_answered_from_the_cache_with_no_network_request() {
    run(async {
        // GIVEN a license granted `workflows` and an edge that fetched one token from the origin
        let mut w = World::new(None).await;
        w.grant_cloud(None).await;
        let (status, cold) = w.access_token("dep-1", "workflows").await;
        assert_eq!(status, 200, "{cold}");
        assert_eq!(w.token_calls(), 1);
        let verified = verify_access_token(&w.ring(), cold["token"].as_str().unwrap(), "workflows", w.now)
            .expect("the origin signed it");
        assert_eq!(verified.claims.sub, w.license.id);
        let (origin_calls, kv_gets) = (w.origin.calls(), w.kv.0.gets.get());

        // WHEN the same key, deployment and audience ask again
        let (status, warm) = w.access_token("dep-1", "workflows").await;

        // THEN the same token comes back with no KV read and no origin call
        assert_eq!(status, 200, "{warm}");
        assert_eq!(warm["token"], cold["token"]);
        assert_eq!(warm["expires_at"], cold["expires_at"]);
        assert_eq!((w.origin.calls(), w.kv.0.gets.get()), (origin_calls, kv_gets));
        // AND another deployment or a token close to its end goes to the origin once more
        assert_eq!(w.access_token("dep-2", "workflows").await.0, 200);
        assert_eq!(w.token_calls(), 2);
    });
}

#[test]
fn a_cached_access_token_is_handed_out_only_while_more_than_a_minute_is_left() {
    run(async {
        let mut w = World::new(None).await;
        w.grant_cloud(None).await;
        let (_, first) = w.access_token("dep-1", "workflows").await;
        // 13 min 50 s later, 70 s are left: still handed out (the snapshot is refreshed first)
        w.advance(Duration::seconds(DEFAULT_ACCESS_TTL_SECS - 70));
        let (_, still) = w.access_token("dep-1", "workflows").await;
        assert_eq!(still["token"], first["token"]);
        assert_eq!(w.token_calls(), 1);
        // 20 s later only 50 s are left: the origin signs a new one
        w.advance(Duration::seconds(20));
        let (status, renewed) = w.access_token("dep-1", "workflows").await;
        assert_eq!(status, 200, "{renewed}");
        assert_ne!(renewed["token"], first["token"]);
        assert_eq!(w.token_calls(), 2);
    });
}

#[test]
fn another_isolate_hands_out_the_token_cached_in_kv() {
    run(async {
        let mut w = World::new(None).await;
        w.grant_cloud(None).await;
        let (_, first) = w.access_token("dep-1", "workflows").await;
        let other = fresh_isolate(&w);
        let body = json!({"key": w.key, "deployment_id": "dep-1", "audience": "workflows"});
        let request = EdgeRequest {
            method: "POST".into(),
            path: "/v1/access-tokens".into(),
            body: body.to_string().into_bytes(),
            ..Default::default()
        };
        let outcome = other.handle(request, w.now).await;
        assert_eq!(outcome.response.status, 200, "{}", outcome.response.body);
        let answer: Value = serde_json::from_str(&outcome.response.body).unwrap();
        assert_eq!(answer["token"], first["token"]);
        assert_eq!(w.token_calls(), 1, "the second isolate did not ask the origin for a token");
    });
}

#[test]
fn the_snapshot_refuses_at_the_edge_even_with_a_cached_token() {
    run(async {
        // GIVEN a cached token and a quota of 5 calls
        let mut w = World::new(None).await;
        w.grant_cloud(Some(5)).await;
        assert_eq!(w.access_token("dep-1", "workflows").await.0, 200);
        // THEN an audience outside the grant is FEATURE_NOT_ENTITLED, without the origin
        let (status, answer) = w.access_token("dep-1", "ai").await;
        assert_eq!((status, &answer["error"]["code"]), (403, &json!("FEATURE_NOT_ENTITLED")), "{answer}");
        assert_eq!(w.token_calls(), 1);
        // WHEN the license is suspended and the push reaches the edge
        w.set_status(LifecycleEvent::Suspend).await;
        let snapshot = w.origin.0.store.license_snapshot(&w.license.id, w.now).await.unwrap().unwrap();
        let bearer = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let path = format!("/v1/internal/snapshots/{}", w.license.id);
        let (pushed, ..) = w.send_only("PUT", &path, serde_json::to_value(&snapshot).unwrap(), bearer).await;
        assert_eq!(pushed, 204);
        // THEN no token is handed out, though one is cached
        let (status, answer) = w.access_token("dep-1", "workflows").await;
        assert_eq!((status, &answer["error"]["code"]), (403, &json!("SUSPENDED")), "{answer}");
        assert_eq!(w.token_calls(), 1);
        // AND after reactivation, a spent quota is refused too (fleet usage from the snapshot)
        w.set_status(LifecycleEvent::Reactivate).await;
        let batch = UsageBatch {
            license_id: w.license.id.clone(),
            deployment_id: "dep-1".into(),
            batch_id: "b-cloud".into(),
            records: vec![UsageRecord { metric: "cloud.workflows.calls".into(), value: 5, at: w.now }],
            received_at: w.now,
        };
        w.origin.0.store.record_usage_batch(&batch).await.unwrap();
        w.advance(Duration::seconds(61));
        let (status, answer) = w.access_token("dep-1", "workflows").await;
        assert_eq!((status, &answer["error"]["code"]), (403, &json!("USAGE_LIMIT_EXCEEDED")), "{answer}");
    });
}

#[test]
fn with_the_origin_down_and_no_usable_token_the_answer_is_503_unavailable() {
    run(async {
        let mut w = World::new(None).await;
        w.grant_cloud(None).await;
        assert_eq!(w.access_token("dep-1", "workflows").await.0, 200);
        w.origin.0.up.set(false);
        // A cached token with a fresh snapshot is still handed out
        assert_eq!(w.access_token("dep-1", "workflows").await.0, 200);
        // None for another deployment: 503, never a token the origin did not sign
        let (status, answer) = w.access_token("dep-2", "workflows").await;
        assert_eq!((status, &answer["error"]["code"]), (503, &json!("unavailable")), "{answer}");
        // Past the snapshot TTL the license cannot be re-judged: 503 even with a cached token
        w.advance(Duration::seconds(61));
        let (status, answer) = w.access_token("dep-1", "workflows").await;
        assert_eq!((status, &answer["error"]["code"]), (503, &json!("unavailable")), "{answer}");
        // And bad input is still a 4xx
        let (status, answer) = w
            .send("POST", "/v1/access-tokens", json!({"key": w.key, "deployment_id": "d", "audience": "Bad"}))
            .await;
        assert_eq!((status, &answer["error"]["code"]), (400, &json!("invalid_request")), "{answer}");
        let (status, answer) = w
            .send("POST", "/v1/access-tokens", json!({"key": "NLS-x", "deployment_id": "d", "audience": "a"}))
            .await;
        assert_eq!((status, &answer["error"]["code"]), (401, &json!("invalid_license_key")), "{answer}");
    });
}
