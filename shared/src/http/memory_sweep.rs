//! Gives back the memory of callers who went away. The in-memory maps keyed by caller input
//! (ARCHITECTURE.md, "Bounded memory") are capped, but a cap alone only evicts when new traffic
//! arrives: after a burst of distinct IPs, keys or licenses the entries, and the map's slots,
//! stayed resident until the next burst. A host calls [`AppState::sweep_idle_entries`] on a
//! timer (`nls serve` every [`SWEEP_EVERY_SECS`]); it does no I/O, and forgets only entries that
//! no longer change an answer: a refilled rate-limit bucket, a repeat-filter entry past its
//! window, a snapshot past its TTL.

use super::AppState;

/// How often a long-running host should sweep.
pub const SWEEP_EVERY_SECS: u64 = 15;

/// What one sweep forgot, per map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweptEntries {
    /// Per-IP and per-API-key buckets, and the portal's sign-in buckets.
    pub rate_limit_buckets: usize,
    /// The validation log's repeat filter.
    pub repeat_filter: usize,
    /// Status snapshots, with the answers and receipts memoized on them.
    pub snapshots: usize,
}

impl SweptEntries {
    pub fn total(&self) -> usize {
        self.rate_limit_buckets + self.repeat_filter + self.snapshots
    }
}

impl AppState {
    /// Forgets idle and expired entries in this process's caller-keyed maps and shrinks the maps
    /// left mostly empty. Never changes an answer (see the module comment).
    pub fn sweep_idle_entries(&self) -> SweptEntries {
        let now = self.now();
        let services = &self.inner;
        let buckets = [
            services.ip_buckets.as_ref().map(|b| b.sweep(now)),
            services.api_key_buckets.as_ref().map(|b| b.sweep(now)),
        ];
        SweptEntries {
            rate_limit_buckets: buckets.into_iter().flatten().sum::<usize>()
                + services.portal_logins.sweep(now),
            repeat_filter: services.validation_log.sweep(now.timestamp()),
            snapshots: services.snapshots.sweep(now),
        }
    }
}
