//! The host's periodic sweep (`http::memory_sweep`) through the router: what a burst of
//! distinct callers left behind is forgotten once it no longer changes an answer, and never
//! before.

use super::*;
use crate::http::memory_sweep::SweptEntries;

#[tokio::test]
async fn a_sweep_forgets_a_finished_burst_and_changes_no_answer() {
    let h = harness();
    let (_, key) = h.license(json!({})).await;
    for i in 0..50 {
        let answer = h.validate(json!({"key": key, "fingerprint": format!("fp-{i}")})).await;
        assert_eq!(answer["code"], "VALID");
    }

    // Right after the burst everything still matters: the snapshot is fresh, the repeat filter
    // still suppresses repeats and the caller's bucket is short of its burst.
    assert_eq!(h.state.sweep_idle_entries(), SweptEntries::default());

    h.clock.advance(Duration::seconds(super::validation_log_buffer::REPEAT_WINDOW_SECS));
    let swept = h.state.sweep_idle_entries();
    assert_eq!(swept, SweptEntries { rate_limit_buckets: 1, repeat_filter: 50, snapshots: 1 });
    assert_eq!(h.state.sweep_idle_entries().total(), 0, "a second sweep finds nothing left");

    // The same callers get the same answers afterwards.
    for i in 0..50 {
        let answer = h.validate(json!({"key": key, "fingerprint": format!("fp-{i}")})).await;
        assert_eq!(answer["code"], "VALID");
    }
}
