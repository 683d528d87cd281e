//! An in-memory store: the reference implementation of the ports, for unit tests and for the
//! edge's tests. One mutex makes every operation atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Duration;

use crate::model::*;
use crate::ports::*;
use crate::validation::StatusSnapshot;

#[derive(Default)]
struct State {
    customers: BTreeMap<String, Customer>,
    licenses: BTreeMap<String, License>,
    /// (license id, deployment id) → deployment
    deployments: BTreeMap<(String, String), Deployment>,
    /// license id → times of new activations, for churn protection
    activations: HashMap<String, Vec<Timestamp>>,
    usage_batches: BTreeSet<(String, String)>,
    /// (license id, metric, period) → total
    counters: BTreeMap<(String, String, String), u64>,
    api_keys: BTreeMap<String, ApiKeyRecord>,
    audit: Vec<AuditEntry>,
    webhook_events: BTreeMap<String, WebhookEventRecord>,
    notifications: BTreeMap<NotificationKey, NotificationRecord>,
    validation_logs: Vec<ValidationLogEntry>,
    staff_users: BTreeMap<String, StaffUser>,
    /// token hash → session
    sessions: BTreeMap<String, StaffSession>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Validation aggregates and compliance records (`validation_stats`): their own lock,
    /// since no operation touches both.
    validation_stats: Mutex<validation_stats::StatsState>,
}

mod validation_stats;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn page_by_id<T: Clone>(
    items: impl Iterator<Item = (String, T)>,
    page: &PageRequest,
) -> StoreResult<Page<T>> {
    let limit = page.effective_limit();
    let cursor = page.id_cursor()?;
    let mut rows: Vec<(String, T)> =
        items.filter(|(id, _)| cursor.is_none_or(|c| id.as_str() > c)).take(limit + 1).collect();
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(id, _)| id.clone())
    } else {
        None
    };
    Ok(Page { items: rows.into_iter().map(|(_, t)| t).collect(), next_cursor })
}

/// Applies a commit's writes to a copy of the state, so a failing write leaves nothing behind.
fn apply_writes(state: &mut State, writes: Vec<Write>) -> StoreResult<()> {
    for write in writes {
        match write {
            Write::CreateCustomer(c) => {
                let stripe_taken = c.stripe_customer_id.is_some()
                    && state.customers.values().any(|o| o.stripe_customer_id == c.stripe_customer_id);
                if state.customers.contains_key(&c.id) || stripe_taken {
                    return Err(StoreError::AlreadyExists(format!("customer {}", c.id)));
                }
                state.customers.insert(c.id.clone(), c);
            }
            Write::UpdateCustomer(c) => {
                let slot = state
                    .customers
                    .get_mut(&c.id)
                    .ok_or_else(|| StoreError::NotFound(format!("customer {}", c.id)))?;
                *slot = c;
            }
            Write::DeleteCustomer { id } => {
                if state.licenses.values().any(|l| l.customer_id == id) {
                    return Err(StoreError::StillReferenced(format!("customer {id}")));
                }
                state.customers.remove(&id).ok_or_else(|| StoreError::NotFound(format!("customer {id}")))?;
            }
            Write::CreateLicense(l) => {
                if state.licenses.contains_key(&l.id) {
                    return Err(StoreError::AlreadyExists(format!("license {}", l.id)));
                }
                if !state.customers.contains_key(&l.customer_id) {
                    return Err(StoreError::NotFound(format!("customer {}", l.customer_id)));
                }
                state.licenses.insert(l.id.clone(), l);
            }
            Write::UpdateLicense { license, expected_version } => {
                let slot = state
                    .licenses
                    .get_mut(&license.id)
                    .ok_or_else(|| StoreError::NotFound(format!("license {}", license.id)))?;
                if slot.version != expected_version {
                    return Err(StoreError::Conflict(format!("license {}", license.id)));
                }
                *slot = license;
            }
            Write::PutApiKey(k) => {
                state.api_keys.insert(k.id.clone(), k);
            }
            Write::CreateStaffUser(u) => {
                let email_taken = state.staff_users.values().any(|o| o.email == u.email);
                if state.staff_users.contains_key(&u.id) || email_taken {
                    return Err(StoreError::AlreadyExists(format!("staff user {}", u.id)));
                }
                state.staff_users.insert(u.id.clone(), u);
            }
            Write::UpdateStaffUser { user, expected_version } => {
                let slot = state
                    .staff_users
                    .get_mut(&user.id)
                    .ok_or_else(|| StoreError::NotFound(format!("staff user {}", user.id)))?;
                if slot.version != expected_version || slot.email != user.email {
                    return Err(StoreError::Conflict(format!("staff user {}", user.id)));
                }
                *slot = user;
            }
            Write::Audit(e) => state.audit.push(e),
        }
    }
    Ok(())
}

#[async_trait]
impl UnitOfWork for MemoryStore {
    async fn commit(&self, guard: Option<OnceGuard>, writes: Vec<Write>) -> StoreResult<CommitOutcome> {
        let mut state = self.lock();
        if let Some(OnceGuard::WebhookEvent(event)) = &guard {
            if state.webhook_events.contains_key(&event.event_id) {
                return Ok(CommitOutcome::Duplicate);
            }
        }
        // Stage on clones of the touched maps: cheap enough for a test store.
        let mut staged = State {
            customers: state.customers.clone(),
            licenses: state.licenses.clone(),
            api_keys: state.api_keys.clone(),
            staff_users: state.staff_users.clone(),
            ..State::default()
        };
        apply_writes(&mut staged, writes)?;
        state.customers = staged.customers;
        state.licenses = staged.licenses;
        state.api_keys = staged.api_keys;
        state.staff_users = staged.staff_users;
        state.audit.extend(staged.audit);
        if let Some(OnceGuard::WebhookEvent(event)) = guard {
            state.webhook_events.insert(event.event_id.clone(), event);
        }
        Ok(CommitOutcome::Applied)
    }
}

#[async_trait]
impl CustomerStore for MemoryStore {
    async fn get_customer(&self, id: &str) -> StoreResult<Option<Customer>> {
        Ok(self.lock().customers.get(id).cloned())
    }
    async fn find_customer_by_stripe_id(&self, stripe_customer_id: &str) -> StoreResult<Option<Customer>> {
        Ok(self
            .lock()
            .customers
            .values()
            .find(|c| c.stripe_customer_id.as_deref() == Some(stripe_customer_id))
            .cloned())
    }
    async fn list_customers(&self, page: &PageRequest) -> StoreResult<Page<Customer>> {
        let state = self.lock();
        page_by_id(state.customers.iter().map(|(k, v)| (k.clone(), v.clone())), page)
    }
}

#[async_trait]
impl LicenseStore for MemoryStore {
    async fn get_license(&self, id: &str) -> StoreResult<Option<License>> {
        Ok(self.lock().licenses.get(id).cloned())
    }
    async fn find_license_by_subscription(&self, sub: &str) -> StoreResult<Option<License>> {
        Ok(self.lock().licenses.values().find(|l| l.stripe_subscription_id.as_deref() == Some(sub)).cloned())
    }
    async fn list_licenses(&self, filter: &LicenseFilter, page: &PageRequest) -> StoreResult<Page<License>> {
        let state = self.lock();
        let rows =
            state.licenses.iter().filter(|(_, l)| filter.matches(l)).map(|(k, v)| (k.clone(), v.clone()));
        page_by_id(rows, page)
    }
    async fn search_licenses(
        &self,
        query: &crate::license_search::LicenseQuery,
        page: &PageRequest,
    ) -> StoreResult<Page<License>> {
        let state = self.lock();
        let rows = state
            .licenses
            .values()
            .filter(|l| query.matches(l, state.customers.get(&l.customer_id)))
            .cloned();
        crate::license_search::page_in_memory(
            &query.sort,
            rows,
            page.cursor.as_deref(),
            page.effective_limit(),
        )
    }
    async fn licenses_expiring_between(&self, from: Timestamp, to: Timestamp) -> StoreResult<Vec<License>> {
        Ok(self
            .lock()
            .licenses
            .values()
            .filter(|l| l.expires_at.is_some_and(|e| e >= from && e < to))
            .cloned()
            .collect())
    }
    async fn license_snapshot(&self, id: &str, now: Timestamp) -> StoreResult<Option<StatusSnapshot>> {
        let state = self.lock();
        let Some(license) = state.licenses.get(id).cloned() else { return Ok(None) };
        let live_deployments = state
            .deployments
            .range((id.to_owned(), String::new())..)
            .take_while(|((lid, _), _)| lid == id)
            .filter(|(_, d)| d.is_live(now))
            .map(|((_, did), _)| did.clone())
            .collect();
        let month = UsagePeriod::month_of(now).key();
        let month_usage = state
            .counters
            .iter()
            .filter(|((lid, _, period), _)| lid == id && *period == month)
            .map(|((_, metric, _), total)| (metric.clone(), *total))
            .collect();
        Ok(Some(StatusSnapshot { license, live_deployments, month_usage, as_of: now }))
    }
}

#[async_trait]
impl DeploymentStore for MemoryStore {
    async fn activate_deployment(
        &self,
        request: &Deployment,
        policy: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation> {
        let mut state = self.lock();
        let key = (request.license_id.clone(), request.deployment_id.clone());
        if let Some(existing) = state.deployments.get_mut(&key).filter(|d| d.is_live(now)) {
            existing.last_heartbeat_at = now;
            existing.lease_expires_at = now + policy.lease;
            return Ok(Activation::AlreadyActive(existing.clone()));
        }
        let live = state
            .deployments
            .iter()
            .filter(|((lid, _), d)| *lid == request.license_id && d.is_live(now))
            .count() as u32;
        if policy.max_deployments.is_some_and(|max| live >= max) {
            return Ok(Activation::LimitReached { live });
        }
        let recent = state.activations.entry(request.license_id.clone()).or_default();
        recent.retain(|t| *t > now - policy.churn_window);
        if recent.len() as u32 >= policy.churn_max {
            return Ok(Activation::ChurnLimited);
        }
        recent.push(now);
        let deployment = Deployment {
            activated_at: now,
            last_heartbeat_at: now,
            lease_expires_at: now + policy.lease,
            ..request.clone()
        };
        state.deployments.insert(key, deployment.clone());
        Ok(Activation::Activated(deployment))
    }

    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>> {
        let mut state = self.lock();
        let key = (license_id.to_owned(), deployment_id.to_owned());
        let Some(d) = state.deployments.get_mut(&key).filter(|d| d.is_live(now)) else { return Ok(None) };
        d.last_heartbeat_at = now;
        d.lease_expires_at = lease_expires_at;
        if let Some(v) = app_version {
            d.app_version = Some(v.to_owned());
        }
        Ok(Some(d.clone()))
    }

    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool> {
        let key = (license_id.to_owned(), deployment_id.to_owned());
        Ok(self.lock().deployments.remove(&key).is_some())
    }

    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>> {
        Ok(self.lock().deployments.values().filter(|d| d.license_id == license_id).cloned().collect())
    }
}

#[async_trait]
impl UsageStore for MemoryStore {
    async fn record_usage_batch(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        let mut state = self.lock();
        if state.usage_batches.contains(&(batch.license_id.clone(), batch.batch_id.clone())) {
            return Ok(BatchOutcome::Duplicate);
        }
        // Every new total is computed before any is written, so an overflow changes nothing.
        let mut totals = Vec::new();
        for ((metric, period), amount) in batch.counter_increments()? {
            let key = (batch.license_id.clone(), metric, period);
            let stored = state.counters.get(&key).copied().unwrap_or(0);
            totals.push((add_to_counter(stored, amount, &key.1, &key.2)?, key));
        }
        state.usage_batches.insert((batch.license_id.clone(), batch.batch_id.clone()));
        for (total, key) in totals {
            state.counters.insert(key, total);
        }
        Ok(BatchOutcome::Recorded)
    }

    async fn usage_counters(&self, license_id: &str, period: &str) -> StoreResult<BTreeMap<String, u64>> {
        Ok(self
            .lock()
            .counters
            .iter()
            .filter(|((lid, _, p), _)| lid == license_id && p == period)
            .map(|((_, metric, _), total)| (metric.clone(), *total))
            .collect())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        Ok(self.lock().api_keys.get(id).cloned())
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Ok(self.lock().api_keys.values().cloned().collect())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let state = self.lock();
        // Newest first; the cursor is the index of the last entry returned.
        let start = match page.cursor.as_deref() {
            None => state.audit.len(),
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|&i| i <= state.audit.len())
                .ok_or_else(|| StoreError::InvalidCursor(c.to_owned()))?,
        };
        let limit = page.effective_limit();
        let mut items = Vec::new();
        let mut next_cursor = None;
        for i in (0..start.min(state.audit.len())).rev() {
            if !filter.matches(&state.audit[i]) {
                continue;
            }
            if items.len() == limit {
                next_cursor = Some((i + 1).to_string());
                break;
            }
            items.push(state.audit[i].clone());
        }
        Ok(Page { items, next_cursor })
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn claim_notification(
        &self,
        record: &NotificationRecord,
        now: Timestamp,
        stale_after: Duration,
    ) -> StoreResult<ClaimOutcome> {
        let mut state = self.lock();
        if let Some(existing) = state.notifications.get(&record.key) {
            match &existing.state {
                NotificationState::Sent { .. } => return Ok(ClaimOutcome::AlreadySent),
                NotificationState::Pending { claimed_at, .. } if *claimed_at > now - stale_after => {
                    return Ok(ClaimOutcome::HeldByOther);
                }
                NotificationState::Pending { .. } => {}
            }
        }
        state.notifications.insert(record.key.clone(), record.clone());
        Ok(ClaimOutcome::Claimed)
    }

    async fn mark_notification_sent(
        &self,
        key: &NotificationKey,
        claimant: &str,
        sent_at: Timestamp,
        message_id: &str,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let record = state
            .notifications
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound(format!("notification {key:?}")))?;
        check_mark(key, &record.state, claimant, message_id)?;
        record.state = NotificationState::Sent { sent_at, message_id: message_id.to_owned() };
        Ok(())
    }

    async fn list_notifications(&self, license_id: &str) -> StoreResult<Vec<NotificationRecord>> {
        Ok(self.lock().notifications.values().filter(|n| n.key.license_id == license_id).cloned().collect())
    }
}

#[async_trait]
impl ValidationLogStore for MemoryStore {
    async fn append_validation_logs(&self, entries: &[ValidationLogEntry]) -> StoreResult<()> {
        self.lock().validation_logs.extend_from_slice(entries);
        Ok(())
    }
    async fn list_validation_logs(
        &self,
        license_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<ValidationLogEntry>> {
        Ok(self
            .lock()
            .validation_logs
            .iter()
            .rev()
            .filter(|e| e.license_id == license_id)
            .take(limit)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl StaffStore for MemoryStore {
    async fn get_staff_user(&self, id: &str) -> StoreResult<Option<StaffUser>> {
        Ok(self.lock().staff_users.get(id).cloned())
    }
    async fn find_staff_user_by_email(&self, email: &str) -> StoreResult<Option<StaffUser>> {
        let email = email.to_lowercase();
        Ok(self.lock().staff_users.values().find(|u| u.email == email).cloned())
    }
    async fn list_staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        let mut users: Vec<StaffUser> = self.lock().staff_users.values().cloned().collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }
    async fn create_session(&self, session: &StaffSession) -> StoreResult<()> {
        let mut state = self.lock();
        if state.sessions.contains_key(&session.token_sha256) {
            return Err(StoreError::AlreadyExists("session".into()));
        }
        state.sessions.insert(session.token_sha256.clone(), session.clone());
        Ok(())
    }
    async fn get_session(&self, token_sha256: &str) -> StoreResult<Option<StaffSession>> {
        Ok(self.lock().sessions.get(token_sha256).cloned())
    }
    async fn touch_session(&self, token_sha256: &str, last_seen_at: Timestamp) -> StoreResult<()> {
        if let Some(session) = self.lock().sessions.get_mut(token_sha256) {
            session.last_seen_at = session.last_seen_at.max(last_seen_at);
        }
        Ok(())
    }
    async fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        self.lock().sessions.remove(token_sha256);
        Ok(())
    }
}
