//! The three-layer status snapshot lookup (DESIGN §4, edge caching):
//!
//! 1. **isolate memory**: an entry read less than `memory_fresh` ago is served with no lookup
//!    at all; an older one is still served while its age (since the origin produced it) is under
//!    `snapshot_ttl`, and a background revalidation refreshes it (stale-while-revalidate);
//! 2. **platform KV** (`snap/<license_id>`): where the origin's pushes land, shared by every
//!    isolate; a record younger than `snapshot_ttl` is used and copied into memory;
//! 3. **the origin**'s internal snapshot route.
//!
//! Invariant: an answer not marked `degraded` never rests on a snapshot the origin produced more
//! than `snapshot_ttl` ago. When the origin is unreachable the newest snapshot known (memory or
//! KV, kept for `kv_retention`) is used, and the answer says `degraded: true`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nls_core::model::Timestamp;
use nls_core::validation::{StatusSnapshot, ValidationCode};

use crate::edge_wire::KvSnapshotRecord;

pub const SNAPSHOT_PREFIX: &str = "snap/";

pub fn snapshot_key(license_id: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{license_id}")
}

/// A snapshot in isolate memory.
#[derive(Debug, Clone)]
pub struct MemoryEntry {
    pub record: KvSnapshotRecord,
    /// When this isolate last read it from KV or the origin.
    pub loaded_at: Timestamp,
}

impl MemoryEntry {
    pub fn snapshot(&self) -> &StatusSnapshot {
        &self.record.snapshot
    }
}

/// Where a lookup found its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    Memory,
    /// Served from memory while a background revalidation runs.
    MemoryStale,
    Kv,
    Origin,
    /// Older than the TTL, used only because the origin is unreachable.
    LastKnown,
    /// Nothing known and the origin unreachable: the key's own claims decide.
    Nothing,
    /// The origin says the license is not on record.
    NotOnRecord,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub entry: Option<Arc<MemoryEntry>>,
    pub source: SnapshotSource,
}

impl Lookup {
    pub fn degraded(&self) -> bool {
        matches!(self.source, SnapshotSource::LastKnown | SnapshotSource::Nothing)
    }
}

/// A receipt the origin signed, handed out again by warm validations for a while.
#[derive(Debug, Clone)]
struct CachedReceipt {
    license_key: Box<str>,
    deployment_id: Option<Box<str>>,
    code: ValidationCode,
    license_version: u64,
    cached_at: Timestamp,
    receipt: Arc<str>,
}

/// The isolate's memory: snapshots, receipts from the origin, and revalidations in flight.
/// Bounded: a full map is emptied (an attacker cannot grow it; the hot set refills from KV).
pub struct MemoryLayer {
    capacity: usize,
    snapshots: Mutex<HashMap<String, Arc<MemoryEntry>>>,
    receipts: Mutex<HashMap<String, Vec<CachedReceipt>>>,
    revalidations: Mutex<HashMap<String, Timestamp>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No lock is held across an await or a panic point that could leave data half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryLayer {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            snapshots: Mutex::default(),
            receipts: Mutex::default(),
            revalidations: Mutex::default(),
        }
    }

    pub fn get(&self, license_id: &str) -> Option<Arc<MemoryEntry>> {
        lock(&self.snapshots).get(license_id).cloned()
    }

    /// Keeps `record` unless memory already holds a newer one.
    pub fn put(&self, record: KvSnapshotRecord, now: Timestamp) -> Arc<MemoryEntry> {
        let mut map = lock(&self.snapshots);
        let id = record.snapshot.license.id.clone();
        if let Some(existing) = map.get(&id) {
            if existing.record.fetched_at > record.fetched_at {
                let refreshed = Arc::new(MemoryEntry { record: existing.record.clone(), loaded_at: now });
                map.insert(id, Arc::clone(&refreshed));
                return refreshed;
            }
        }
        if map.len() >= self.capacity {
            map.clear();
        }
        let entry = Arc::new(MemoryEntry { record, loaded_at: now });
        map.insert(id, Arc::clone(&entry));
        entry
    }

    /// Marks an entry as just checked without changing it (the origin was unreachable), so the
    /// next requests do not all retry at once.
    pub fn touch(&self, license_id: &str, now: Timestamp) {
        let mut map = lock(&self.snapshots);
        if let Some(e) = map.get(license_id) {
            let touched = Arc::new(MemoryEntry { record: e.record.clone(), loaded_at: now });
            map.insert(license_id.to_owned(), touched);
        }
    }

    pub fn remove(&self, license_id: &str) {
        lock(&self.snapshots).remove(license_id);
        lock(&self.receipts).remove(license_id);
    }

    /// Edits the cached snapshot after this edge learned of a change (an activation it
    /// forwarded, a release). The origin's next snapshot replaces the edit.
    pub fn edit_live_deployments(&self, license_id: &str, edit: impl FnOnce(&mut Vec<String>)) {
        let mut map = lock(&self.snapshots);
        if let Some(e) = map.get(license_id) {
            let mut record = e.record.clone();
            edit(&mut record.snapshot.live_deployments);
            let edited = Arc::new(MemoryEntry { record, loaded_at: e.loaded_at });
            map.insert(license_id.to_owned(), edited);
        }
    }

    /// Claims the right to revalidate `license_id`; `false` if another request did so less
    /// than `every` ago.
    pub fn claim_revalidation(&self, license_id: &str, now: Timestamp, every: chrono::Duration) -> bool {
        let mut map = lock(&self.revalidations);
        match map.get(license_id) {
            Some(at) if now - *at < every && *at <= now => false,
            _ => {
                if map.len() >= self.capacity {
                    map.clear();
                }
                map.insert(license_id.to_owned(), now);
                true
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn remember_receipt(
        &self,
        license_id: &str,
        license_key: &str,
        deployment_id: Option<&str>,
        code: ValidationCode,
        license_version: u64,
        receipt: &str,
        now: Timestamp,
    ) {
        let mut map = lock(&self.receipts);
        if map.len() >= self.capacity {
            map.clear();
        }
        let list = map.entry(license_id.to_owned()).or_default();
        list.retain(|r| !(&*r.license_key == license_key && r.deployment_id.as_deref() == deployment_id));
        if list.len() >= 64 {
            list.clear();
        }
        list.push(CachedReceipt {
            license_key: license_key.into(),
            deployment_id: deployment_id.map(Into::into),
            code,
            license_version,
            cached_at: now,
            receipt: receipt.into(),
        });
    }

    /// A receipt for exactly this key, deployment, code and license version, cached after
    /// `not_before`.
    pub fn receipt(
        &self,
        license_id: &str,
        license_key: &str,
        deployment_id: Option<&str>,
        code: ValidationCode,
        license_version: u64,
        not_before: Timestamp,
    ) -> Option<Arc<str>> {
        let map = lock(&self.receipts);
        map.get(license_id)?
            .iter()
            .find(|r| {
                &*r.license_key == license_key
                    && r.deployment_id.as_deref() == deployment_id
                    && r.code == code
                    && r.license_version == license_version
                    && r.cached_at >= not_before
            })
            .map(|r| Arc::clone(&r.receipt))
    }
}
