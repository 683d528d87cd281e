//! Token buckets in this process's memory, per client IP and per API key.
//!
//! They are per instance: N instances behind a load balancer allow N times the rate. That is
//! enough to blunt a runaway client on one machine; a fleet-wide quota belongs to the edge.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::model::Timestamp;

/// `per_second` tokens refill continuously up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at_ms: i64,
}

pub struct TokenBuckets<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Above `capacity` tracked clients, idle (full) buckets are dropped.
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()), capacity: capacity.max(16) }
    }

    /// Takes one token, or says how many whole seconds until one is available.
    pub fn take(&self, key: &K, now: Timestamp) -> Result<(), u64> {
        let now_ms = now.timestamp_millis();
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.capacity && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.tokens + refill(b, now_ms, per_second) < burst);
            if buckets.len() >= self.capacity {
                // Still full of active clients: forget the lot rather than grow without bound.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, refilled_at_ms: now_ms });
        bucket.tokens = (bucket.tokens + refill(bucket, now_ms, per_second)).min(burst);
        bucket.refilled_at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second.max(f64::MIN_POSITIVE);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Drops every bucket that has refilled to its burst: such a client is indistinguishable
    /// from a new one, so forgetting it changes no answer. A host calls this on a timer so a
    /// burst of distinct clients does not stay resident after it stops. Returns how many were
    /// dropped; the map's memory is released when most of it is empty.
    pub fn sweep(&self, now: Timestamp) -> usize {
        let now_ms = now.timestamp_millis();
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let before = buckets.len();
        buckets.retain(|_, b| b.tokens + refill(b, now_ms, per_second) < burst);
        if buckets.len() < buckets.capacity() / 4 {
            buckets.shrink_to_fit();
        }
        before - buckets.len()
    }

    /// Tracked clients, and the slots the map holds memory for.
    pub fn len_and_capacity(&self) -> (usize, usize) {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        (buckets.len(), buckets.capacity())
    }
}

fn refill(bucket: &Bucket, now_ms: i64, per_second: f64) -> f64 {
    let elapsed_ms = (now_ms - bucket.refilled_at_ms).max(0);
    elapsed_ms as f64 / 1000.0 * per_second
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    #[test]
    fn a_burst_is_allowed_then_refused_until_refilled() {
        let buckets = TokenBuckets::new(RateLimit { per_second: 1.0, burst: 3.0 }, 100);
        let t0 = Utc::now();
        for _ in 0..3 {
            assert_eq!(buckets.take(&"ip", t0), Ok(()));
        }
        assert_eq!(buckets.take(&"ip", t0), Err(1));
        assert_eq!(buckets.take(&"other", t0), Ok(()));
        assert_eq!(buckets.take(&"ip", t0 + Duration::milliseconds(1100)), Ok(()));
    }

    #[test]
    fn a_sweep_forgets_refilled_buckets_and_gives_the_memory_back() {
        let buckets = TokenBuckets::new(RateLimit { per_second: 10.0, burst: 20.0 }, 100_000);
        let t0 = Utc::now();
        for i in 0..10_000u32 {
            assert_eq!(buckets.take(&i, t0), Ok(()));
        }
        let (len, grown) = buckets.len_and_capacity();
        assert_eq!(len, 10_000);

        // Still refilling: nothing is forgotten, or the client would get a fresh burst.
        assert_eq!(buckets.sweep(t0 + Duration::milliseconds(50)), 0);
        assert_eq!(buckets.len_and_capacity().0, 10_000);

        // One token takes 100 ms to come back: every bucket is full again.
        assert_eq!(buckets.sweep(t0 + Duration::milliseconds(100)), 10_000);
        let (len, capacity) = buckets.len_and_capacity();
        assert_eq!(len, 0);
        assert!(capacity < grown / 4, "capacity {capacity} after the sweep, {grown} before");
    }

    #[test]
    fn a_sweep_keeps_a_bucket_that_is_still_short_of_tokens() {
        let buckets = TokenBuckets::new(RateLimit { per_second: 1.0, burst: 3.0 }, 100);
        let t0 = Utc::now();
        for _ in 0..3 {
            assert_eq!(buckets.take(&"busy", t0), Ok(()));
        }
        assert_eq!(buckets.take(&"idle", t0), Ok(()));
        assert_eq!(buckets.sweep(t0 + Duration::seconds(1)), 1, "only the refilled one goes");
        assert_eq!(buckets.take(&"busy", t0 + Duration::seconds(1)), Ok(()));
        assert_eq!(buckets.take(&"busy", t0 + Duration::seconds(1)), Err(1), "no fresh burst");
    }
}
