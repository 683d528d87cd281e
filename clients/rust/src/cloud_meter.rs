//! The cloud service's own count of the calls it allowed (docs/cloud-access.md, "Metering"):
//! [`NlsCallMeter`] is the [`CallMeter`] a service passes to
//! [`CloudAccess::with_meter`](crate::cloud_access::CloudAccess::with_meter). It counts every
//! call the layer let through per (audience, license, UTC day), and a flush seals the counts
//! into batches and posts them to `POST /v1/cloud-usage` with an API key whose only scope is
//! `meter`. A batch keeps its id until NLS acknowledged it (202): a flush whose answer was lost
//! sends the same batch again, and NLS counts a batch id once per license.
//!
//! ```text
//! let meter = NlsCallMeter::new("https://licenses.nectar.example", &std::env::var("NLS_METER_KEY")?);
//! meter.spawn_flusher(Duration::from_secs(10));
//! let access = CloudAccess::from_jwks_url(jwks_url)?.with_meter(Arc::new(meter));
//! ```
//!
//! The counts live in the service's memory: a crash loses what was not flushed yet (an
//! undercount, never a double count). Bounded: at most [`MAX_OPEN_COUNTS`] (audience, license,
//! day) counters and [`MAX_SEALED_BATCHES`] batches waiting; past that, calls are let through
//! uncounted, counted in [`NlsCallMeter::dropped_calls`] and logged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nls_core::access_token::VerifiedAccess;
use serde_json::json;

use crate::cloud_access::CallMeter;
use crate::http_transport::HttpTransport;
use crate::license_client::{Clock, SystemClock};

/// The route a meter posts to.
pub const CLOUD_USAGE_PATH: &str = "/v1/cloud-usage";
/// The most records one batch carries (the route's limit).
pub const MAX_RECORDS_PER_BATCH: usize = 1000;
/// The most (audience, license, day) counters held between flushes.
pub const MAX_OPEN_COUNTS: usize = 100_000;
/// The most sealed batches waiting for NLS (1,000 records each).
pub const MAX_SEALED_BATCHES: usize = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    /// No answer (or a 5xx / 429): the batch stays and is resent with the same id.
    #[error("NLS did not take the batch; it is kept and resent: {0}")]
    Unreachable(String),
    /// 401 or 403: the meter key is wrong or revoked. Batches are kept.
    #[error("NLS refused the meter key (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
}

/// What a flush delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterFlush {
    /// Batches NLS acknowledged in this flush.
    pub batches: usize,
    /// Calls in those batches.
    pub calls: u64,
    /// Batches NLS refused as malformed (400): dropped and logged, never resent.
    pub rejected: usize,
}

#[derive(Debug, Clone)]
struct SealedBatch {
    batch_id: String,
    audience: String,
    /// (license id, calls, first call's time)
    records: Vec<(String, u64, DateTime<Utc>)>,
}

impl SealedBatch {
    fn calls(&self) -> u64 {
        self.records.iter().map(|r| r.1).sum()
    }
}

#[derive(Default)]
struct Counts {
    /// (audience, license id, UTC day) → (calls, first call's time)
    open: BTreeMap<(String, String, String), (u64, DateTime<Utc>)>,
    sealed: VecDeque<SealedBatch>,
    dropped_calls: u64,
}

struct Inner {
    transport: HttpTransport,
    api_key: String,
    clock: Arc<dyn Clock>,
    counts: Mutex<Counts>,
    /// One flush at a time, so a batch is never in flight twice at once.
    flushing: Mutex<()>,
}

/// Counts allowed calls and delivers them to NLS. Cheap to clone.
#[derive(Clone)]
pub struct NlsCallMeter {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NlsCallMeter {
    /// `nls_url`: the NLS base URL; `meter_api_key`: an API key created with the `meter` scope
    /// alone (`POST /v1/api-keys {"scopes": ["meter"]}`).
    pub fn new(nls_url: &str, meter_api_key: &str) -> Self {
        Self::with_clock(nls_url, meter_api_key, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), with the clock that dates the calls (their UTC day).
    pub fn with_clock(nls_url: &str, meter_api_key: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport: HttpTransport::new(nls_url, REQUEST_TIMEOUT),
                api_key: meter_api_key.trim().to_owned(),
                clock,
                counts: Mutex::new(Counts::default()),
                flushing: Mutex::new(()),
            }),
        }
    }

    /// Calls counted and not yet acknowledged by NLS.
    pub fn pending_calls(&self) -> u64 {
        let counts = lock(&self.inner.counts);
        counts.open.values().map(|c| c.0).sum::<u64>()
            + counts.sealed.iter().map(SealedBatch::calls).sum::<u64>()
    }

    /// Calls let through uncounted because the meter was full.
    pub fn dropped_calls(&self) -> u64 {
        lock(&self.inner.counts).dropped_calls
    }

    /// Seals what was counted into batches, then sends every waiting batch, oldest first,
    /// until one is not acknowledged. Blocking (bounded by the request timeout per batch).
    pub fn flush(&self) -> Result<MeterFlush, MeterError> {
        let _one_at_a_time = lock(&self.inner.flushing);
        self.seal();
        let mut delivered = MeterFlush::default();
        loop {
            let Some(batch) = lock(&self.inner.counts).sealed.front().cloned() else { return Ok(delivered) };
            let body = json!({
                "batch_id": batch.batch_id,
                "audience": batch.audience,
                "records": batch.records.iter().map(|(license_id, calls, at)| {
                    json!({"license_id": license_id, "calls": calls, "at": at})
                }).collect::<Vec<_>>(),
            });
            let reply = self
                .inner
                .transport
                .post_json_with_bearer(CLOUD_USAGE_PATH, &body, &self.inner.api_key)
                .map_err(|e| MeterError::Unreachable(e.to_string()))?;
            match reply.status {
                202 => {
                    delivered.batches += 1;
                    delivered.calls += batch.calls();
                }
                400 | 413 => {
                    tracing::error!(batch_id = %batch.batch_id, answer = %reply.body, "nls: NLS refused a cloud usage batch as malformed; dropped");
                    delivered.rejected += 1;
                }
                401 | 403 => return Err(MeterError::Refused { status: reply.status, body: reply.body }),
                status => return Err(MeterError::Unreachable(format!("HTTP {status}: {}", reply.body))),
            }
            let mut counts = lock(&self.inner.counts);
            if counts.sealed.front().is_some_and(|b| b.batch_id == batch.batch_id) {
                counts.sealed.pop_front();
            }
        }
    }

    /// Moves the open counters into new batches (fresh ids), as many as the queue has room for.
    fn seal(&self) {
        let mut counts = lock(&self.inner.counts);
        let open = std::mem::take(&mut counts.open);
        let mut by_audience: BTreeMap<String, Vec<(String, u64, DateTime<Utc>)>> = BTreeMap::new();
        for ((audience, license_id, _day), (calls, at)) in open {
            by_audience.entry(audience).or_default().push((license_id, calls, at));
        }
        for (audience, records) in by_audience {
            for chunk in records.chunks(MAX_RECORDS_PER_BATCH) {
                if counts.sealed.len() >= MAX_SEALED_BATCHES {
                    // No room: keep counting them in the open counters until NLS is back.
                    for (license_id, calls, at) in chunk {
                        let key = (audience.clone(), license_id.clone(), at.date_naive().to_string());
                        counts.open.insert(key, (*calls, *at));
                    }
                    continue;
                }
                let batch_id = nls_core::issuing::new_id("mb");
                counts.sealed.push_back(SealedBatch {
                    batch_id,
                    audience: audience.clone(),
                    records: chunk.to_vec(),
                });
            }
        }
    }

    /// Flushes every `every` on a background thread until the last clone of this meter is
    /// dropped. Failures are logged and retried at the next tick with the same batch ids.
    pub fn spawn_flusher(&self, every: Duration) -> std::thread::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (NlsCallMeter { inner }).flush() {
                    tracing::warn!(error = %e, "nls: cloud usage not delivered yet; will resend");
                }
            }
        })
    }
}

impl CallMeter for NlsCallMeter {
    fn record_call(&self, caller: &VerifiedAccess) {
        let now = self.inner.clock.now();
        let key = (caller.claims.aud.clone(), caller.claims.sub.clone(), now.date_naive().to_string());
        let mut counts = lock(&self.inner.counts);
        if let Some(count) = counts.open.get_mut(&key) {
            count.0 += 1;
        } else if counts.open.len() < MAX_OPEN_COUNTS {
            counts.open.insert(key, (1, now));
        } else {
            counts.dropped_calls += 1;
            if counts.dropped_calls.is_power_of_two() {
                tracing::warn!(
                    dropped = counts.dropped_calls,
                    "nls: the call meter is full; calls go uncounted"
                );
            }
        }
    }
}
