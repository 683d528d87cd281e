//! Gives memory back after a burst of traffic: the core's sweep of caller-keyed maps on a timer,
//! then, with glibc, `malloc_trim(0)`. glibc keeps freed pages in its arenas (one per busy
//! thread) rather than returning them to the kernel, so without the trim the process stayed at
//! its peak resident size after the load stopped (docs/benchmarks.md, "Bounded memory soak").

use std::time::Duration;

use nls_core::http::AppState;
use nls_core::http::memory_sweep::SWEEP_EVERY_SECS;

/// Sweeps every [`SWEEP_EVERY_SECS`]; trims the allocator after a sweep that forgot anything,
/// so an idle server does no work.
pub(super) async fn sweep_idle_entries_forever(state: AppState) {
    let every = Duration::from_secs(SWEEP_EVERY_SECS);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let swept = state.sweep_idle_entries();
        if swept.total() > 0 {
            tracing::debug!(
                rate_limit_buckets = swept.rate_limit_buckets,
                repeat_filter = swept.repeat_filter,
                snapshots = swept.snapshots,
                "forgot idle entries"
            );
            release_freed_memory();
        }
    }
}

/// Hands the allocator's free pages back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: `malloc_trim` only walks glibc's own arenas under their locks; it takes no
    // pointer from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl, macOS) return memory on their own terms; the sweep still shrinks the
/// maps.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
