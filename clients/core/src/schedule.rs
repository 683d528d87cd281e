//! When to talk to the server next: check-ins at the server's `next_check_in` with jitter (so a
//! fleet restarted together does not call together), and capped exponential backoff while
//! offline. Randomness is passed in as a number in `[0, 1)`.

/// Never check again sooner than this, whatever the server says.
pub const MIN_CHECK_SECONDS: i64 = 10;
/// Never wait longer than this between checks.
pub const MAX_CHECK_SECONDS: i64 = 24 * 3600;
pub const BACKOFF_BASE_SECONDS: i64 = 5;
pub const BACKOFF_CAP_SECONDS: i64 = 15 * 60;

/// `base` spread over ±10 %.
pub fn jittered(base_seconds: i64, random: f64) -> i64 {
    let r = random.clamp(0.0, 1.0);
    let factor = 0.9 + 0.2 * r;
    ((base_seconds as f64) * factor).round() as i64
}

/// Seconds until the next validation, given the server's `next_check_in` (unix seconds).
pub fn next_check_delay(next_check_in: i64, now: i64, random: f64) -> i64 {
    let base = (next_check_in - now).clamp(MIN_CHECK_SECONDS, MAX_CHECK_SECONDS);
    jittered(base, random).max(1)
}

/// Seconds before retry number `attempt` (0 = first retry): 5 s, 10 s, 20 s ... up to 15 min,
/// each between half and all of that ("equal jitter").
pub fn backoff_delay(attempt: u32, random: f64) -> i64 {
    let full = BACKOFF_BASE_SECONDS.saturating_mul(1_i64 << attempt.min(20)).min(BACKOFF_CAP_SECONDS);
    let r = random.clamp(0.0, 1.0);
    ((full as f64) * (0.5 + 0.5 * r)).round().max(1.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_their_bounds() {
        assert_eq!(next_check_delay(1_000 + 900, 1_000, 0.5), 900);
        assert_eq!(next_check_delay(1_000 + 900, 1_000, 0.0), 810);
        assert_eq!(next_check_delay(1_000 + 900, 1_000, 1.0), 990);
        assert_eq!(next_check_delay(0, 1_000, 0.5), MIN_CHECK_SECONDS);
        assert_eq!(backoff_delay(0, 1.0), 5);
        assert_eq!(backoff_delay(3, 1.0), 40);
        assert_eq!(backoff_delay(30, 1.0), BACKOFF_CAP_SECONDS);
        assert_eq!(backoff_delay(30, 0.0), BACKOFF_CAP_SECONDS / 2);
    }
}
