//! Validation history is appended off the response path: handlers push into this buffer and
//! the host flushes it in batches (`AppState::flush_validation_log`), on a timer and at
//! shutdown. If the store falls behind, the oldest unflushed entries are dropped and counted
//! (`nls_validation_log_dropped_total`): history is analytics, never worth a slow answer.
//!
//! Identical validations (same license, deployment, fingerprint, client IP and code) are kept
//! once per [`REPEAT_WINDOW_SECS`]: the history is there to show who uses a key from where
//! (sharing shows up as many IPs or fingerprints), and a client hammering the API would
//! otherwise turn every answer into a database insert. Counts per code stay exact in
//! `/metrics` and `/v1/stats`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::ValidationLogEntry;
use crate::ports::{StoreResult, ValidationLogStore};

pub const REPEAT_WINDOW_SECS: i64 = 60;
const MAX_REMEMBERED: usize = 100_000;

pub struct ValidationLogBuffer {
    /// Fingerprint of a recent entry → when it was last kept (unix seconds).
    recent: Mutex<HashMap<u64, i64>>,
    pending: Mutex<VecDeque<ValidationLogEntry>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl ValidationLogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            recent: Mutex::default(),
            pending: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Keeps the entry `make` builds unless an identical one was kept within the repeat
    /// window; `make` runs only when it is kept, so a repeat allocates nothing.
    pub fn push_unless_repeated(
        &self,
        identity: (&str, Option<&str>, Option<&str>, Option<std::net::IpAddr>, &str),
        now_secs: i64,
        make: impl FnOnce() -> ValidationLogEntry,
    ) {
        let mut hasher = DefaultHasher::new();
        identity.hash(&mut hasher);
        let fingerprint = hasher.finish();
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.get(&fingerprint).is_some_and(|at| now_secs - at < REPEAT_WINDOW_SECS) {
                return;
            }
            if recent.len() >= MAX_REMEMBERED {
                recent.retain(|_, at| now_secs - *at < REPEAT_WINDOW_SECS);
                if recent.len() >= MAX_REMEMBERED {
                    recent.clear();
                }
            }
            recent.insert(fingerprint, now_secs);
        }
        self.push(make());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ValidationLogEntry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, entry: ValidationLogEntry) {
        let mut pending = self.lock();
        if pending.len() >= self.capacity {
            pending.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        pending.push_back(entry);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything pending in one append. On failure the batch is put back (ahead of
    /// anything pushed meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn ValidationLogStore) -> StoreResult<usize> {
        let batch: Vec<ValidationLogEntry> = std::mem::take(&mut *self.lock()).into();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.append_validation_logs(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.lock();
                let newer = std::mem::replace(&mut *pending, batch.into());
                pending.extend(newer);
                let excess = pending.len().saturating_sub(self.capacity);
                if excess > 0 {
                    pending.drain(..excess);
                    self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

impl ValidationLogBuffer {
    /// Forgets the repeat filter's entries older than the repeat window (they no longer
    /// suppress anything), and releases the filter's memory when most of it is empty. A host
    /// calls this on a timer so a burst of distinct callers does not stay resident after it
    /// stops. Returns how many were forgotten.
    pub fn sweep(&self, now_secs: i64) -> usize {
        let forgotten = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let before = recent.len();
            recent.retain(|_, at| now_secs - *at < REPEAT_WINDOW_SECS);
            if recent.len() < recent.capacity() / 4 {
                recent.shrink_to_fit();
            }
            before - recent.len()
        };
        let mut pending = self.lock();
        if pending.len() < pending.capacity() / 4 {
            pending.shrink_to_fit();
        }
        forgotten
    }

    /// Entries in the repeat filter, and the slots it holds memory for.
    pub fn repeat_filter_len_and_capacity(&self) -> (usize, usize) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        (recent.len(), recent.capacity())
    }
}

#[cfg(test)]
mod sweep_tests {
    use std::net::{IpAddr, Ipv4Addr};

    use chrono::{DateTime, Utc};

    use super::*;

    fn entry(i: u32, at: i64) -> ValidationLogEntry {
        ValidationLogEntry {
            license_id: "lic_1".into(),
            deployment_id: Some(format!("dep-{i}")),
            fingerprint: None,
            client_ip: None,
            code: "VALID".into(),
            at: DateTime::<Utc>::from_timestamp(at, 0).expect("a valid time"),
            registry: None,
        }
    }

    #[test]
    fn a_sweep_forgets_entries_past_the_repeat_window_and_gives_the_memory_back() {
        let buffer = ValidationLogBuffer::new(100_000);
        let t0 = 1_800_000_000;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            let dep = format!("dep-{i}");
            buffer.push_unless_repeated(("lic_1", Some(&dep), None, Some(ip), "VALID"), t0, || entry(i, t0));
        }
        let (len, grown) = buffer.repeat_filter_len_and_capacity();
        assert_eq!(len, 10_000);

        // Still inside the window: they still suppress repeats.
        assert_eq!(buffer.sweep(t0 + REPEAT_WINDOW_SECS - 1), 0);
        assert_eq!(buffer.repeat_filter_len_and_capacity().0, 10_000);

        assert_eq!(buffer.sweep(t0 + REPEAT_WINDOW_SECS), 10_000);
        let (len, capacity) = buffer.repeat_filter_len_and_capacity();
        assert_eq!(len, 0);
        assert!(capacity < grown / 4, "capacity {capacity} after the sweep, {grown} before");
        // The pending entries are history waiting for the flush: a sweep never drops them.
        assert_eq!(buffer.len(), 10_000);
    }
}
