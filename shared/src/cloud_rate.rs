//! The token bucket behind a cloud service's per-license rate limit (an access token's `rate`),
//! as a pure step function so the in-process limiter and a store-backed shared one (a
//! conditional write per step) decide alike.
//!
//! The bucket holds up to `burst` calls and refills at `requests_per_minute / 60` per second.
//! The answer carries what the IETF draft `RateLimit-*` headers and `Retry-After` need.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::access_token::CloudLimits;

/// A bucket's state: whole milli-tokens (exact arithmetic, storable as an integer) and when it
/// was last refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    pub millitokens: u64,
    pub refilled_at_ms: i64,
}

/// One call's verdict and the header values that go with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateVerdict {
    pub allowed: bool,
    /// `RateLimit-Limit`: the bucket size.
    pub limit: u32,
    /// `RateLimit-Remaining`: whole calls left right now.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After` when refused: seconds until one call fits (at least 1).
    pub retry_after_secs: Option<u64>,
}

const MILLI: u64 = 1000;

/// Takes one call from `state` (a fresh, full bucket when `None`) at `now_ms`.
pub fn take(state: Option<BucketState>, limits: &CloudLimits, now_ms: i64) -> (BucketState, RateVerdict) {
    let capacity = u64::from(limits.burst.max(1)) * MILLI;
    // millitokens per second = rpm * 1000 / 60; kept as (rpm, per minute) to stay exact.
    let rpm = u64::from(limits.requests_per_minute.max(1));
    let mut state = state.unwrap_or(BucketState { millitokens: capacity, refilled_at_ms: now_ms });
    let elapsed_ms = u64::try_from(now_ms.saturating_sub(state.refilled_at_ms)).unwrap_or(0);
    // tokens gained = elapsed_ms * rpm / 60_000; in millitokens: elapsed_ms * rpm / 60.
    let gained = elapsed_ms.saturating_mul(rpm) / 60;
    if gained > 0 {
        state.millitokens = state.millitokens.saturating_add(gained).min(capacity);
        // Advance the clock only by the time that produced whole millitokens, so rounding
        // never loses refill.
        let used_ms = if state.millitokens == capacity { elapsed_ms } else { gained * 60 / rpm };
        state.refilled_at_ms =
            state.refilled_at_ms.saturating_add(i64::try_from(used_ms).unwrap_or(i64::MAX));
    }
    // A clock that went backwards gains nothing until it passes the last refill again.
    let allowed = state.millitokens >= MILLI;
    if allowed {
        state.millitokens -= MILLI;
    }
    let ms_for = |millitokens: u64| (millitokens.saturating_mul(60)).div_ceil(rpm);
    let secs_ceil = |ms: u64| ms.div_ceil(1000);
    let verdict = RateVerdict {
        allowed,
        limit: limits.burst,
        remaining: u32::try_from(state.millitokens / MILLI).unwrap_or(u32::MAX),
        reset_secs: secs_ceil(ms_for(capacity - state.millitokens)),
        retry_after_secs: (!allowed).then(|| secs_ceil(ms_for(MILLI - state.millitokens)).max(1)),
    };
    (state, verdict)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    /// The shared store did not answer (or kept losing races): the caller decides whether to
    /// fail open. The middlewares let the call through and log it, so a limiter outage never
    /// takes the service down.
    #[error("the rate limiter's store is unavailable: {0}")]
    Unavailable(String),
}

/// Where a service keeps its buckets: in-process ([`LicenseBuckets`]) or shared by every
/// instance (the DynamoDB limiter in `functions/aws`). `Send` like the core's ports.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    async fn take(
        &self,
        license_id: &str,
        limits: &CloudLimits,
        now_ms: i64,
    ) -> Result<RateVerdict, LimiterError>;
}

#[async_trait::async_trait]
impl RateLimiter for LicenseBuckets {
    async fn take(
        &self,
        license_id: &str,
        limits: &CloudLimits,
        now_ms: i64,
    ) -> Result<RateVerdict, LimiterError> {
        Ok(LicenseBuckets::take(self, license_id, limits, now_ms))
    }
}

/// In-process buckets, one per license, for a service with one instance (or one limit per
/// instance). Bounded: past `capacity` licenses, full buckets are dropped, then all.
pub struct LicenseBuckets {
    buckets: Mutex<HashMap<String, BucketState>>,
    capacity: usize,
}

impl LicenseBuckets {
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(capacity: usize) -> Self {
        Self { buckets: Mutex::new(HashMap::new()), capacity: capacity.max(16) }
    }

    pub fn take(&self, license_id: &str, limits: &CloudLimits, now_ms: i64) -> RateVerdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.capacity && !buckets.contains_key(license_id) {
            // A dropped bucket starts full again: the forgiving side of a memory bound.
            buckets.retain(|_, b| now_ms.saturating_sub(b.refilled_at_ms) < 60_000);
            if buckets.len() >= self.capacity {
                buckets.clear();
            }
        }
        let (state, verdict) = take(buckets.get(license_id).copied(), limits, now_ms);
        buckets.insert(license_id.to_owned(), state);
        verdict
    }
}

impl Default for LicenseBuckets {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u32, burst: u32) -> CloudLimits {
        CloudLimits { requests_per_minute: rpm, burst, monthly_quota: None }
    }

    #[test]
    fn a_burst_then_exactly_the_refill() {
        let l = limits(60, 5);
        let buckets = LicenseBuckets::new(100);
        let verdicts: Vec<_> = (0..8).map(|_| buckets.take("lic", &l, 1_000)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.allowed).count(), 5);
        assert_eq!(verdicts[4].remaining, 0);
        let refused = verdicts[5];
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.limit, 5);
        assert_eq!(refused.reset_secs, 5);
        // One second later, one call (60 per minute) fits, and only one.
        assert!(buckets.take("lic", &l, 2_000).allowed);
        assert!(!buckets.take("lic", &l, 2_000).allowed);
        // Another license has its own bucket.
        assert!(buckets.take("other", &l, 2_000).allowed);
    }

    #[test]
    fn slow_rates_refill_without_losing_fractions() {
        // 1 per minute: 100 steps of 0.6 s each add up to exactly one call.
        let l = limits(1, 1);
        let (mut state, v) = take(None, &l, 0);
        assert!(v.allowed);
        assert_eq!(v.reset_secs, 60);
        for step in 1..100 {
            let (next, v) = take(Some(state), &l, step * 600);
            assert!(!v.allowed, "step {step}");
            // A refused take consumes nothing.
            state = next;
        }
        let (_, v) = take(Some(state), &l, 60_000);
        assert!(v.allowed);
    }

    #[test]
    fn a_clock_going_backwards_grants_nothing_extra() {
        let l = limits(60, 1);
        let (state, _) = take(None, &l, 10_000);
        let (state, v) = take(Some(state), &l, 5_000);
        assert!(!v.allowed);
        let (_, v) = take(Some(state), &l, 5_999);
        assert!(!v.allowed);
    }

    #[test]
    fn the_map_is_bounded() {
        let l = limits(60, 1);
        let buckets = LicenseBuckets::new(16);
        for i in 0..1000 {
            buckets.take(&format!("lic{i}"), &l, 0);
        }
        assert!(buckets.buckets.lock().unwrap().len() <= 16);
    }
}
