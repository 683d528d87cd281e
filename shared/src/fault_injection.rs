//! Fault injection for tests: a [`Store`] wrapper that fails or delays operations by a seeded
//! schedule, so tests can show that the invariants hold when the store misbehaves the ways a
//! real one does (DynamoDB throttling, a busy SQLite file, a lost answer).
//!
//! The faults, per operation, drawn from one seeded generator (a failing run is reproduced from
//! its seed):
//!
//! - **Unavailable**: the operation is not run; `StoreError::Unavailable`.
//! - **Timeout**: the operation *is* run (and commits), then its answer is lost:
//!   `StoreError::Unavailable`. The caller cannot tell this from the first, which is the point:
//!   a retry must not count a batch, an event or a notice twice.
//! - **Conflict**: on commits only (where `Conflict` is a documented answer), not run;
//!   `StoreError::Conflict`.
//! - **Slow**: the operation runs after a pause (a real timer: run under tokio).
//!
//! Test support only (feature `conformance`): it does no I/O; the pause is a tokio timer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::Duration;

use crate::model::*;
use crate::ports::*;
use crate::validation::StatusSnapshot;
use crate::validation_stats::{ComplianceRecord, DayIncrementBatch, ValidationDayAggregate};

/// How often each fault happens, in parts per thousand of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRates {
    pub unavailable: u32,
    pub timeout: u32,
    pub conflict: u32,
    pub slow: u32,
    /// The pause of a slow operation.
    pub slow_by: StdDuration,
}

impl FaultRates {
    /// No faults.
    pub const NONE: Self =
        Self { unavailable: 0, timeout: 0, conflict: 0, slow: 0, slow_by: StdDuration::ZERO };

    /// About one operation in three misbehaves: enough that every retry path runs in a short
    /// test, while retrying callers still finish.
    pub fn harsh() -> Self {
        Self { unavailable: 120, timeout: 120, conflict: 60, slow: 60, slow_by: StdDuration::from_millis(2) }
    }

    /// Every operation fails (the store is down).
    pub fn down() -> Self {
        Self { unavailable: 1000, ..Self::NONE }
    }
}

/// What happened to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Unavailable,
    Timeout,
    Conflict,
    Slow,
}

/// Whether an operation writes (only writes can be `Conflict`ed; reads lose nothing on a
/// timeout, so theirs is plain unavailability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Commit,
}

/// The wrapper. Share it as `Arc<FaultyStore>`; [`FaultyStore::set_rates`] changes the
/// schedule (e.g. to [`FaultRates::NONE`] before checking the invariants on the inner store).
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    rates: Mutex<FaultRates>,
    /// xorshift64* state.
    state: AtomicU64,
    enabled: AtomicBool,
    injected: Mutex<BTreeMap<Fault, u64>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, seed: u64, rates: FaultRates) -> Self {
        Self {
            inner,
            rates: Mutex::new(rates),
            // xorshift must not start at zero.
            state: AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            enabled: AtomicBool::new(true),
            injected: Mutex::new(BTreeMap::new()),
        }
    }

    /// The wrapped store, for checks that must not be faulted.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn set_rates(&self, rates: FaultRates) {
        *self.rates.lock().unwrap_or_else(|p| p.into_inner()) = rates;
    }

    /// Turns every fault off (`false`) or back on.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    /// How many faults of each kind were injected so far (a test asserts its schedule bit).
    pub fn injected(&self) -> BTreeMap<Fault, u64> {
        self.injected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn next_random(&self) -> u64 {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let mut x = current;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            match self.state.compare_exchange_weak(current, x, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return x.wrapping_mul(0x2545_F491_4F6C_DD1D),
                Err(seen) => current = seen,
            }
        }
    }

    fn draw(&self, op: Op) -> Option<Fault> {
        if !self.enabled.load(Ordering::SeqCst) {
            return None;
        }
        let rates = *self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let roll = (self.next_random() % 1000) as u32;
        let conflict = if op == Op::Commit { rates.conflict } else { 0 };
        let fault = [
            (Fault::Unavailable, rates.unavailable),
            (Fault::Timeout, rates.timeout),
            (Fault::Conflict, conflict),
            (Fault::Slow, rates.slow),
        ]
        .into_iter()
        .scan(0, |upper, (fault, rate)| {
            *upper += rate;
            Some((fault, *upper))
        })
        .find(|(_, upper)| roll < *upper)
        .map(|(fault, _)| fault)?;
        // A read's lost answer loses nothing: it is plain unavailability.
        let fault = if fault == Fault::Timeout && op == Op::Read { Fault::Unavailable } else { fault };
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()).entry(fault).or_default() += 1;
        Some(fault)
    }

    async fn run<T, Fut>(&self, op: Op, what: &str, call: Fut) -> StoreResult<T>
    where
        Fut: Future<Output = StoreResult<T>>,
    {
        match self.draw(op) {
            None => call.await,
            Some(Fault::Unavailable) => Err(StoreError::Unavailable(format!("injected: {what} unavailable"))),
            Some(Fault::Conflict) => Err(StoreError::Conflict(format!("injected: {what}"))),
            Some(Fault::Timeout) => {
                // The store did the work; the caller never hears of it.
                let _lost = call.await;
                Err(StoreError::Unavailable(format!("injected: {what} timed out")))
            }
            Some(Fault::Slow) => {
                let pause = self.rates.lock().unwrap_or_else(|p| p.into_inner()).slow_by;
                tokio::time::sleep(pause).await;
                call.await
            }
        }
    }
}

#[async_trait]
impl UnitOfWork for FaultyStore {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome> {
        self.run(Op::Commit, "commit", self.inner.commit(guard, writes)).await
    }
}

#[async_trait]
impl CustomerStore for FaultyStore {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>> {
        self.run(Op::Read, "get_customer", self.inner.get_customer(id)).await
    }
    async fn find_customer_by_stripe_id(&self, id: &str) -> StoreResult<Option<Customer>> {
        self.run(Op::Read, "find_customer_by_stripe_id", self.inner.find_customer_by_stripe_id(id)).await
    }
    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>> {
        self.run(Op::Read, "list_customers", self.inner.list_customers(page)).await
    }
}

#[async_trait]
impl LicenseStore for FaultyStore {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        self.run(Op::Read, "get_license", self.inner.get_license(id)).await
    }
    async fn find_license_by_subscription(&self, sub: &str) -> StoreResult<Option<License>> {
        self.run(Op::Read, "find_license_by_subscription", self.inner.find_license_by_subscription(sub)).await
    }
    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>> {
        self.run(Op::Read, "list_licenses", self.inner.list_licenses(filter, page)).await
    }
    async fn search_licenses(
        &self,
        query: &crate::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        self.run(Op::Read, "search_licenses", self.inner.search_licenses(query, page)).await
    }
    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>> {
        self.run(Op::Read, "licenses_expiring_between", self.inner.licenses_expiring_between(from, to)).await
    }
    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>> {
        self.run(Op::Read, "license_snapshot", self.inner.license_snapshot(id, now)).await
    }
}

#[async_trait]
impl DeploymentStore for FaultyStore {
    async fn activate_deployment(
        &self,
        request: &Deployment,
        policy: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation> {
        self.run(Op::Write, "activate_deployment", self.inner.activate_deployment(request, policy, now)).await
    }
    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>> {
        let call = self.inner.heartbeat(license_id, deployment_id, app_version, now, lease_expires_at);
        self.run(Op::Write, "heartbeat", call).await
    }
    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool> {
        self.run(Op::Write, "release_deployment", self.inner.release_deployment(license_id, deployment_id))
            .await
    }
    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>> {
        self.run(Op::Read, "list_deployments", self.inner.list_deployments(license_id)).await
    }
}

#[async_trait]
impl UsageStore for FaultyStore {
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        self.run(Op::Write, "record_usage_batch", self.inner.record_usage_batch(batch)).await
    }
    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>> {
        self.run(Op::Read, "usage_counters", self.inner.usage_counters(license_id, period)).await
    }
}

#[async_trait]
impl ApiKeyStore for FaultyStore {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        self.run(Op::Read, "get_api_key", self.inner.get_api_key(id)).await
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.run(Op::Read, "list_api_keys", self.inner.list_api_keys()).await
    }
}

#[async_trait]
impl AuditStore for FaultyStore {
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        self.run(Op::Read, "list_audit", self.inner.list_audit(filter, page)).await
    }
}

#[async_trait]
impl NotificationStore for FaultyStore {
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome> {
        self.run(Op::Write, "claim_notification", self.inner.claim_notification(record, now, stale_after))
            .await
    }
    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        sent_at: Timestamp,
        message_id: &str,
    ) -> StoreResult<()> {
        let call = self.inner.mark_notification_sent(key, claimant, sent_at, message_id);
        self.run(Op::Write, "mark_notification_sent", call).await
    }
    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>> {
        self.run(Op::Read, "list_notifications", self.inner.list_notifications(license_id)).await
    }
}

#[async_trait]
impl ValidationLogStore for FaultyStore {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()> {
        self.run(Op::Write, "append_validation_logs", self.inner.append_validation_logs(entries)).await
    }
    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>> {
        self.run(Op::Read, "list_validation_logs", self.inner.list_validation_logs(license_id, limit)).await
    }
}

#[async_trait]
impl ValidationStatsStore for FaultyStore {
    async fn record_day_increments(&self, batch: &DayIncrementBatch) -> StoreResult<BatchOutcome> {
        self.run(Op::Write, "record_day_increments", self.inner.record_day_increments(batch)).await
    }
    async fn validation_day_aggregate(
        &self,
        license_id: &str,
        day: chrono::NaiveDate,
    ) -> StoreResult<Option<ValidationDayAggregate>> {
        self.run(Op::Read, "validation_day_aggregate", self.inner.validation_day_aggregate(license_id, day))
            .await
    }
    async fn put_compliance_record(&self, record: &ComplianceRecord) -> StoreResult<()> {
        self.run(Op::Write, "put_compliance_record", self.inner.put_compliance_record(record)).await
    }
    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: chrono::NaiveDate,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        self.run(Op::Read, "list_compliance_records", self.inner.list_compliance_records(license_id, since))
            .await
    }
    async fn list_flagged_compliance(
        &self,
        since: chrono::NaiveDate,
        until: chrono::NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<ComplianceRecord>> {
        let call = self.inner.list_flagged_compliance(since, until, limit);
        self.run(Op::Read, "list_flagged_compliance", call).await
    }
}

#[async_trait]
impl StaffStore for FaultyStore {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>> {
        self.run(Op::Read, "get_staff_user", self.inner.get_staff_user(id)).await
    }
    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>> {
        self.run(Op::Read, "find_staff_user_by_email", self.inner.find_staff_user_by_email(email)).await
    }
    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        self.run(Op::Read, "list_staff_users", self.inner.list_staff_users()).await
    }
    async fn create_session(&self, session: &StaffSession) -> StoreResult<()> {
        self.run(Op::Write, "create_session", self.inner.create_session(session)).await
    }
    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
        self.run(Op::Read, "get_session", self.inner.get_session(token_sha256)).await
    }
    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()> {
        self.run(Op::Write, "touch_session", self.inner.touch_session(token_sha256, last_seen_at)).await
    }
    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        self.run(Op::Write, "delete_session", self.inner.delete_session(token_sha256)).await
    }
}
