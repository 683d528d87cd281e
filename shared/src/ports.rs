//! The ports: how the core reaches the world. Adapters (in-memory, SQLite, DynamoDB, Workers
//! KV, Spin KV) implement them; handlers depend only on these traits.
//!
//! Futures are `Send` (the `async_trait` default). axum, lambda_http and tokio's multi-threaded
//! runtime all require it; on wasm, where there is one thread, the Worker adapter wraps its
//! `!Send` JS futures in `worker::send::SendFuture`. See ARCHITECTURE.md.
//!
//! Each invariant is one operation, so no adapter can split it into a racy read-then-write:
//! [`DeploymentStore::activate_deployment`], [`UsageStore::record_usage_batch`],
//! [`UnitOfWork::commit`] with a [`OnceGuard`], and [`NotificationStore::claim_notification`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::lifecycle::LicenseStatus;
use crate::model::*;
use crate::validation::StatusSnapshot;
use crate::validation_stats::{
    ComplianceRecord, DayIncrementBatch, ValidationDayAggregate, ValidationEventBatch,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// An optimistic-concurrency check failed: someone else wrote first. Retry from a fresh read.
    #[error("concurrent update of {0}")]
    Conflict(String),
    /// A stored item could not be read back; names the item.
    #[error("stored item {item} is malformed: {reason}")]
    Corrupt { item: String, reason: String },
    /// The backing store failed or timed out; safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A page cursor this store never handed out (the caller's mistake; not retryable).
    #[error("the cursor {0:?} is not one this list returned")]
    InvalidCursor(String),
    /// Adding a usage batch would take a counter past `u64::MAX`; nothing was written.
    #[error(transparent)]
    CounterOverflow(#[from] crate::model::CounterOverflow),
    /// A delete refused because other records still point at the item (a customer that has
    /// licenses). Not retryable.
    #[error("{0} is still referenced")]
    StillReferenced(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Conflict(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opaque, store-specific continuation token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 100;
    pub fn first(limit: u32) -> Self {
        Self { limit: limit.clamp(1, Self::MAX_LIMIT), cursor: None }
    }
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, Self::MAX_LIMIT) as usize
    }

    /// The cursor of a list ordered by id, which is the last id returned: refuses one that no
    /// id could be (empty, over 256 bytes, or a character outside `[A-Za-z0-9_-]`).
    pub fn id_cursor(&self) -> StoreResult<Option<&str>> {
        match self.cursor.as_deref() {
            None => Ok(None),
            Some(c)
                if !c.is_empty()
                    && c.len() <= 256
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok(Some(c))
            }
            Some(c) => Err(StoreError::InvalidCursor(c.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseFilter {
    pub customer_id: Option<String>,
    pub status: Option<LicenseStatus>,
    pub expires_before: Option<Timestamp>,
}

impl LicenseFilter {
    pub fn matches(&self, l: &License) -> bool {
        self.customer_id.as_ref().is_none_or(|c| *c == l.customer_id)
            && self.status.is_none_or(|s| s == l.status)
            && self.expires_before.is_none_or(|t| l.expires_at.is_some_and(|e| e < t))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.target.as_ref().is_none_or(|t| *t == e.target)
            && self.since.is_none_or(|s| e.at >= s)
            && self.until.is_none_or(|u| e.at < u)
    }
}

/// One write in a [`UnitOfWork::commit`]. All writes of a commit happen, or none.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Fails with `AlreadyExists` if the id (or its Stripe customer id) is taken.
    CreateCustomer(Customer),
    /// Fails with `NotFound` if absent.
    UpdateCustomer(Customer),
    /// Fails with `NotFound` if absent and `StillReferenced` if any license names it, checked
    /// in the same atomic unit as the delete (so it cannot race a `CreateLicense`).
    DeleteCustomer {
        id: String,
    },
    /// Fails with `AlreadyExists` if the id is taken and `NotFound` if its customer neither
    /// exists nor is created earlier in the same commit, checked atomically with the insert:
    /// no license ever points at a deleted customer.
    CreateLicense(License),
    /// Writes `license` (whose `version` is already bumped) only if the stored version is
    /// `expected_version`; otherwise `Conflict`.
    UpdateLicense {
        license: License,
        expected_version: u64,
    },
    PutApiKey(ApiKeyRecord),
    /// Fails with `AlreadyExists` if the id or the (lower-case) email is taken.
    CreateStaffUser(StaffUser),
    /// Writes `user` (whose `version` is already bumped) only if the stored version is
    /// `expected_version`; otherwise `Conflict`. The email may not change.
    UpdateStaffUser {
        user: StaffUser,
        expected_version: u64,
    },
    Audit(AuditEntry),
}

/// Makes a commit happen at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceGuard {
    /// A Stripe event id: recorded in the same atomic unit as the event's effect.
    WebhookEvent(WebhookEventRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Applied,
    /// The guard was already recorded; nothing was written.
    Duplicate,
}

#[async_trait]
pub trait UnitOfWork: Send + Sync {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome>;
}

#[async_trait]
pub trait CustomerStore: Send + Sync {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>>;
    async fn find_customer_by_stripe_id(&self, stripe_customer_id: &str) -> StoreResult<Option<Customer>>;
    /// Ordered by id.
    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>>;
}

#[async_trait]
pub trait LicenseStore: Send + Sync {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>>;
    async fn find_license_by_subscription(
        &self,
        stripe_subscription_id: &str,
    ) -> StoreResult<Option<License>>;
    /// Ordered by id.
    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>>;
    /// One page of the licenses `query` matches, in its sort (the staff portal's list). The
    /// cursor is opaque (`license_search`); a store may return a short page, even an empty
    /// one, with a next cursor when it stops reading at a bound (docs/dynamodb.md), so callers
    /// page until `next_cursor` is `None`.
    async fn search_licenses(
        &self,
        query: &crate::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>>;
    /// Licenses with `from <= expires_at < to`, for the scheduler. Never a full scan.
    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>>;
    /// Everything validation needs, in one read: the license, its live deployments and this
    /// month's usage counters.
    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>>;
}

/// How activation is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationPolicy {
    /// `None` means unlimited.
    pub max_deployments: Option<u32>,
    /// A new deployment's lease; heartbeats extend it.
    pub lease: Duration,
    /// Churn protection: at most `churn_max` new activations per license in `churn_window`.
    pub churn_window: Duration,
    pub churn_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// A new seat was taken.
    Activated(Deployment),
    /// The deployment already held a live seat; its lease was renewed.
    AlreadyActive(Deployment),
    /// Every seat is taken by a live deployment.
    LimitReached { live: u32 },
    /// Too many new activations recently (release-and-reactivate churn).
    ChurnLimited,
}

#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Atomically: if `deployment_id` holds a live seat, renew it; otherwise take a seat only
    /// while fewer than `max_deployments` leases are live and the churn budget allows.
    /// No number of concurrent calls ever exceeds the limit.
    async fn activate_deployment(
        &self,
        request: &Deployment,
        policy: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation>;
    /// Extends a live lease to `lease_expires_at`. `None` if the deployment holds no live seat.
    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>>;
    /// Frees the seat. `false` if there was none.
    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool>;
    /// Live and lapsed deployments still on record.
    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Recorded,
    /// This `batch_id` was already counted for this license; nothing changed.
    Duplicate,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Atomically records the batch id and adds every record to its day and month counters,
    /// once per (license, batch_id) however often it is sent.
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome>;
    /// Counters for one period key (`2026-11` or `2026-11-30`): metric → total.
    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>>;
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Newest first.
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller owns the send now.
    Claimed,
    /// Already sent; do nothing.
    AlreadySent,
    /// Another run claimed it less than the stale-claim timeout ago; leave it to that run.
    HeldByOther,
}

#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Records the intent to send `record.key` (state `Pending`), unless it is already sent or
    /// freshly claimed by another run. A `Pending` claim older than `stale_after` can be taken
    /// over: its owner died between claiming and marking.
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome>;
    /// Marks a notice `claimant` holds as sent: `NotFound` if there is no claim, `Conflict` if
    /// another run holds it now (it took over a claim it saw as stale). Marking again with the
    /// same message id is a no-op, so a retry after a lost answer succeeds.
    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        sent_at: Timestamp,
        message_id: &str,
    ) -> StoreResult<()>;
    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>>;
}

/// The rule of [`NotificationStore::mark_notification_sent`], for stores that read the record
/// in the same transaction as the write: `claimant` may mark what it holds, or repeat its own
/// mark.
pub fn check_mark(
    key: &NotificationKey,
    state: &NotificationState,
    claimant: &str,
    message_id: &str,
) -> StoreResult<()> {
    match state {
        NotificationState::Pending { claimed_by, .. } if claimed_by == claimant => Ok(()),
        NotificationState::Sent { message_id: sent, .. } if sent == message_id => Ok(()),
        _ => Err(StoreError::Conflict(format!("notification {key:?} is held by another run"))),
    }
}

#[async_trait]
pub trait ValidationLogStore: Send + Sync {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()>;
    /// Newest first.
    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>>;
}

/// Validation events and what they add up to (issue 12, `crate::validation_stats`): one
/// operation per batch, counted once per `batch_id`, adding every event to its (license,
/// UTC day) aggregate: validations by code and the distinct deployments, fingerprints, client
/// IPs and countries (bounded by `DISTINCT_VALUES_KEPT` per kind and day).
#[async_trait]
pub trait ValidationStatsStore: Send + Sync {
    /// Atomically records `batch.batch_id` and adds every increment to its day's aggregate,
    /// once however often (and however concurrently) the batch is sent.
    async fn record_day_increments(&self, batch: &DayIncrementBatch) -> StoreResult<BatchOutcome>;
    /// An edge's batch of events: grouped by (license, day), then recorded as above.
    async fn record_validation_events(&self, batch: &ValidationEventBatch) -> StoreResult<BatchOutcome> {
        self.record_day_increments(&batch.tallied()).await
    }
    async fn validation_day_aggregate(
        &self,
        license_id: &str,
        day: NaiveDate,
    ) -> StoreResult<Option<ValidationDayAggregate>>;
    /// Replaces the (license, day) record.
    async fn put_compliance_record(&self, record: &ComplianceRecord) -> StoreResult<()>;
    /// A license's records from `since` on, newest day first.
    async fn list_compliance_records(
        &self,
        license_id: &str,
        since: NaiveDate,
    ) -> StoreResult<Vec<ComplianceRecord>>;
    /// Every flagged record of the days `since..=until`, newest day first, then by license id;
    /// at most `limit`.
    async fn list_flagged_compliance(
        &self,
        since: NaiveDate,
        until: NaiveDate,
        limit: usize,
    ) -> StoreResult<Vec<ComplianceRecord>>;
}

/// Staff users and their portal sessions. Users are created and changed through
/// [`UnitOfWork::commit`] (`CreateStaffUser`, `UpdateStaffUser`) so each change is audited in
/// the same commit; sessions are written directly (a login is not an admin mutation).
///
/// A store may drop a session once its `expires_at` has passed (DynamoDB's TTL; SQLite when
/// the next session is created), but need not do so promptly: readers check `expires_at`.
#[async_trait]
pub trait StaffStore: Send + Sync {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>>;
    /// `email` is matched lower case.
    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>>;
    /// Every staff user, ordered by email (a small set: no paging).
    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>>;
    /// Creates the session; `AlreadyExists` if the token hash is taken.
    async fn create_session(&self, session: &StaffSession) -> StoreResult<()>;
    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>>;
    /// Moves `last_seen_at` forward (idle timeout). A missing session is not an error.
    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()>;
    /// Logout. A missing session is not an error.
    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()>;
}

/// Everything a full origin needs. Edge adapters implement only the parts they serve.
pub trait Store:
    UnitOfWork
    + CustomerStore
    + LicenseStore
    + DeploymentStore
    + UsageStore
    + ApiKeyStore
    + AuditStore
    + NotificationStore
    + ValidationLogStore
    + StaffStore
    + ValidationStatsStore
{
}

impl<T> Store for T where
    T: UnitOfWork
        + CustomerStore
        + LicenseStore
        + DeploymentStore
        + UsageStore
        + ApiKeyStore
        + AuditStore
        + NotificationStore
        + ValidationLogStore
        + StaffStore
        + ValidationStatsStore
{
}

/// An outgoing email, already rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail rejected: {0}")]
    Rejected(String),
    #[error("mail service unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Returns the provider's message id.
    async fn send(&self, email: &OutgoingEmail) -> Result<String, MailError>;
}

/// Why a status push did not reach its targets. The change it reports is already committed:
/// callers log and count the failure, and the edges' snapshot TTL bounds how long they stay
/// stale (docs/edge.md).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No answer in time, a connection failure or a 5xx: a later push may succeed.
    #[error("{target} unreachable: {reason}")]
    Unavailable { target: String, reason: String },
    /// A 4xx answer (a wrong token, a refused snapshot): the same push will not succeed.
    #[error("{target} refused the snapshot with HTTP {status}")]
    Rejected { target: String, status: u16 },
    #[error("the snapshot could not be encoded: {0}")]
    Encoding(String),
    /// A push fans out to several targets and some failed (the others took it).
    #[error("{} of {total} targets failed: {}", .failures.len(), join_errors(.failures))]
    Several { total: usize, failures: Vec<PublishError> },
}

fn join_errors(errors: &[PublishError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Where the origin pushes a license's fresh status after a committed change, so that edges
/// follow within seconds instead of their snapshot TTL (DESIGN §4). Targets are addresses,
/// never secrets, so errors may name them.
#[async_trait]
pub trait StatusPublisher: Send + Sync {
    async fn publish(&self, snapshot: &StatusSnapshot) -> Result<(), PublishError>;
}

/// Time, injected so that every boundary can be tested to the second.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock, for native hosts. wasm hosts supply their own (`Date.now` on Workers), since
/// `std::time` panics on `wasm32-unknown-unknown`.
#[cfg(not(target_family = "wasm"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(target_family = "wasm"))]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// A clock tests set by hand.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self(std::sync::Mutex::new(at))
    }
    pub fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
