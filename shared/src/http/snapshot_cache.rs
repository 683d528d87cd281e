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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use chrono::Duration;

use crate::model::Timestamp;
use crate::validation::{StatusSnapshot, ValidationCode};

pub struct SnapshotEntry {
    pub snapshot: StatusSnapshot,
    fetched_at: Timestamp,
    /// A handful per license at most (one per key and deployment), so a scan beats hashing.
    receipts: Mutex<Vec<CachedReceipt>>,
    answers: Mutex<Vec<CachedAnswer>>,
}

/// A serialized validation answer and its code (for metrics and the history).
#[derive(Clone)]
pub struct CachedAnswer {
    license_key: Box<str>,
    deployment_id: Option<Box<str>>,
    pub code: &'static str,
    pub json: Bytes,
}

struct CachedReceipt {
    license_key: Box<str>,
    deployment_id: Option<Box<str>>,
    code: ValidationCode,
    receipt: Arc<str>,
}

/// Per entry: one per (key, deployment) in use, so a handful; a scan beats hashing the key.
const MAX_MEMOS: usize = 64;

impl SnapshotEntry {
    pub fn cached_answer(&self, key: &str, deployment: Option<&str>) -> Option<CachedAnswer> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.iter().find(|a| &*a.license_key == key && a.deployment_id.as_deref() == deployment).cloned()
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

    pub fn put(&self, snapshot: StatusSnapshot, now: Timestamp) -> Arc<SnapshotEntry> {
        let entry = Arc::new(SnapshotEntry {
            snapshot,
            fetched_at: now,
            receipts: Mutex::default(),
            answers: Mutex::default(),
        });
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
