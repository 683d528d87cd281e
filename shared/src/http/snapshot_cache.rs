//! A short-lived, in-process cache of status snapshots, so a warm validation reads no store.
//!
//! Entries live for a few seconds (`HttpConfig::snapshot_ttl`) and are dropped at once when
//! this process changes the license (admin update, activation, release, usage). Changes made
//! by another instance show up within the TTL: that is the documented staleness bound.
//!
//! Each entry also keeps what was derived from it, keyed by (license key, deployment):
//! - the receipts signed from it: a receipt only depends on the snapshot and the code, so
//!   re-signing on every warm validation would spend an Ed25519 signature per request;
//! - the serialized answers to plain check-ins (no `features`, no `metrics`, no activation):
//!   `decide` is a pure function of the snapshot, the key and the time, so within the
//!   snapshot's lifetime the answer is the same bytes (its `next_check_in` may then be up to
//!   the TTL earlier than "now + interval", which only asks the client back a little sooner).
//!
//! Refresh ahead: once an entry is past [`REFRESH_AFTER`] of its TTL, the first request to see
//! it re-reads the store ([`SnapshotCache::claim_refresh`]) while the others keep being answered
//! from the entry, which is still fresh. Without it, every request arriving during the re-read
//! after an expiry missed and read the store too, one after another behind the store's
//! connection: a herd every TTL, seen as stalls of 0.2–2 s at 10,000 connections
//! (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use chrono::Duration;

use crate::model::Timestamp;
use crate::validation::{StatusSnapshot, ValidationCode};

pub struct SnapshotEntry {
    pub snapshot: StatusSnapshot,
    fetched_at: Timestamp,
    /// A request has taken on re-reading this entry's snapshot ahead of its expiry.
    refresh_claimed: AtomicBool,
    /// A handful per license at most (one per key and deployment), so a scan beats hashing.
    receipts: Mutex<Vec<CachedReceipt>>,
    answers: Mutex<Vec<CachedAnswer>>,
}

/// A serialized validation answer and its code (for metrics and the history).
pub struct CachedAnswer {
    license_key: Box<str>,
    deployment_id: Option<Box<str>>,
    code: &'static str,
    json: Bytes,
}

/// A memoized answer as a warm validation returns it (no copy of the ~600-byte key).
pub struct MemoizedAnswer {
    pub code: &'static str,
    pub json: Bytes,
}

struct CachedReceipt {
    license_key: Box<str>,
    deployment_id: Option<Box<str>>,
    code: ValidationCode,
    receipt: Arc<str>,
}

/// The fraction of the TTL after which the next request re-reads the store.
const REFRESH_AFTER: (i32, i32) = (3, 4);

/// Per entry: one per (key, deployment) in use, so a handful; a scan beats hashing the key.
const MAX_MEMOS: usize = 64;

impl SnapshotEntry {
    fn new(snapshot: StatusSnapshot, fetched_at: Timestamp) -> Self {
        Self {
            snapshot,
            fetched_at,
            refresh_claimed: AtomicBool::new(false),
            receipts: Mutex::default(),
            answers: Mutex::default(),
        }
    }

    pub fn cached_answer(&self, key: &str, deployment: Option<&str>) -> Option<MemoizedAnswer> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .find(|a| &*a.license_key == key && a.deployment_id.as_deref() == deployment)
            .map(|a| MemoizedAnswer { code: a.code, json: a.json.clone() })
    }

    pub fn remember_answer(&self, key: &str, deployment: Option<&str>, code: &'static str, json: Bytes) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|a| !(&*a.license_key == key && a.deployment_id.as_deref() == deployment));
        if answers.len() >= MAX_MEMOS {
            answers.clear();
        }
        answers.push(CachedAnswer {
            license_key: key.into(),
            deployment_id: deployment.map(Into::into),
            code,
            json,
        });
    }

    pub fn cached_receipt(
        &self,
        key: &str,
        deployment: Option<&str>,
        code: ValidationCode,
    ) -> Option<Arc<str>> {
        let receipts = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        receipts
            .iter()
            .find(|r| &*r.license_key == key && r.deployment_id.as_deref() == deployment && r.code == code)
            .map(|r| Arc::clone(&r.receipt))
    }

    pub fn remember_receipt(
        &self,
        key: &str,
        deployment: Option<&str>,
        code: ValidationCode,
        receipt: Arc<str>,
    ) {
        let mut receipts = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        receipts.retain(|r| !(&*r.license_key == key && r.deployment_id.as_deref() == deployment));
        if receipts.len() >= MAX_MEMOS {
            receipts.clear();
        }
        receipts.push(CachedReceipt {
            license_key: key.into(),
            deployment_id: deployment.map(Into::into),
            code,
            receipt,
        });
    }
}

pub struct SnapshotCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<SnapshotEntry>>>,
    capacity: usize,
}

impl SnapshotCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SnapshotEntry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh entry, if any.
    pub fn get(&self, license_id: &str, now: Timestamp) -> Option<Arc<SnapshotEntry>> {
        let entries = self.lock();
        let entry = entries.get(license_id)?;
        (now - entry.fetched_at < self.ttl && entry.fetched_at <= now).then(|| Arc::clone(entry))
    }

    /// True for the one caller that should re-read `entry`'s snapshot now: it is past
    /// [`REFRESH_AFTER`] of its TTL and nobody has taken the re-read on yet.
    pub fn claim_refresh(&self, entry: &SnapshotEntry, now: Timestamp) -> bool {
        let (num, den) = REFRESH_AFTER;
        now - entry.fetched_at >= self.ttl * num / den && !entry.refresh_claimed.swap(true, Ordering::AcqRel)
    }

    /// Replaces `previous` by a re-read snapshot, unless `previous` was invalidated or replaced
    /// meanwhile: the re-read may have started before that change, so it must not overwrite
    /// what came after. The new entry is returned either way, for the caller's own answer.
    pub fn put_refreshed(
        &self,
        previous: &Arc<SnapshotEntry>,
        snapshot: StatusSnapshot,
        now: Timestamp,
    ) -> Arc<SnapshotEntry> {
        let entry = Arc::new(SnapshotEntry::new(snapshot, now));
        let mut entries = self.lock();
        if let Some(current) = entries.get_mut(&entry.snapshot.license.id) {
            if Arc::ptr_eq(current, previous) {
                *current = Arc::clone(&entry);
            }
        }
        entry
    }

    pub fn put(&self, snapshot: StatusSnapshot, now: Timestamp) -> Arc<SnapshotEntry> {
        let entry = Arc::new(SnapshotEntry::new(snapshot, now));
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, e| now - e.fetched_at < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(entry.snapshot.license.id.clone(), Arc::clone(&entry));
        entry
    }

    pub fn invalidate(&self, license_id: &str) {
        self.lock().remove(license_id);
    }
}

impl SnapshotCache {
    /// Drops every entry [`SnapshotCache::get`] would no longer return (past its TTL), with
    /// the answers and receipts memoized on it, and releases the map's memory when most of it
    /// is empty. A host calls this on a timer so licenses validated once do not stay resident
    /// until the map fills. Returns how many entries were dropped.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let ttl = self.ttl;
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| now - e.fetched_at < ttl && e.fetched_at <= now);
        if entries.len() < entries.capacity() / 4 {
            entries.shrink_to_fit();
        }
        before - entries.len()
    }

    /// Cached licenses, and the slots the map holds memory for.
    pub fn len_and_capacity(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.len(), entries.capacity())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::issuing::{LicenseTerms, new_license};

    fn at(secs: i64) -> Timestamp {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).expect("a valid time")
    }

    fn snapshot(as_of: Timestamp) -> (String, StatusSnapshot) {
        let license = new_license("cus_1", LicenseTerms::default(), at(0));
        let snapshot = StatusSnapshot {
            license: license.clone(),
            live_deployments: vec![],
            month_usage: Default::default(),
            as_of,
        };
        (license.id, snapshot)
    }

    #[test]
    fn one_caller_claims_the_re_read_and_only_in_the_last_quarter_of_the_ttl() {
        let cache = SnapshotCache::new(Duration::seconds(4), 10);
        let (_, s) = snapshot(at(0));
        let entry = cache.put(s, at(0));
        assert!(!cache.claim_refresh(&entry, at(2)), "half way through the TTL");
        assert!(cache.claim_refresh(&entry, at(3)));
        assert!(!cache.claim_refresh(&entry, at(3)), "claimed twice");
    }

    #[test]
    fn a_re_read_replaces_its_entry_but_never_one_invalidated_or_replaced_meanwhile() {
        let cache = SnapshotCache::new(Duration::seconds(4), 10);
        let (id, s) = snapshot(at(0));
        let first = cache.put(s.clone(), at(0));
        let refreshed = cache.put_refreshed(&first, s.clone(), at(3));
        assert!(Arc::ptr_eq(&cache.get(&id, at(3)).expect("cached"), &refreshed));

        // Invalidated while the re-read was in flight: the re-read must not come back.
        cache.invalidate(&id);
        cache.put_refreshed(&refreshed, s.clone(), at(3));
        assert!(cache.get(&id, at(3)).is_none());

        // Replaced by a newer read meanwhile: that one stays.
        let newer = cache.put(s.clone(), at(3));
        cache.put_refreshed(&refreshed, s, at(3));
        assert!(Arc::ptr_eq(&cache.get(&id, at(3)).expect("cached"), &newer));
    }

    #[test]
    fn a_sweep_drops_expired_entries_and_gives_the_memory_back() {
        let cache = SnapshotCache::new(Duration::seconds(4), 100_000);
        let (_, s) = snapshot(at(0));
        for i in 0..5_000 {
            let mut s = s.clone();
            s.license.id = format!("lic_{i}");
            let entry = cache.put(s, at(0));
            entry.remember_answer("key", Some("dep"), "VALID", Bytes::from_static(b"{}"));
        }
        let (len, grown) = cache.len_and_capacity();
        assert_eq!(len, 5_000);

        // Fresh entries stay: they still answer warm validations.
        assert_eq!(cache.sweep(at(3)), 0);
        assert!(cache.get("lic_1", at(3)).is_some());

        assert_eq!(cache.sweep(at(4)), 5_000);
        let (len, capacity) = cache.len_and_capacity();
        assert_eq!(len, 0);
        assert!(capacity < grown / 4, "capacity {capacity} after the sweep, {grown} before");
    }
}
