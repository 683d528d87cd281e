//! Validation events (issue 12): one per validation this edge answered itself, warm or not,
//! so the origin's history, stats and key-sharing signals see traffic that never reached it.
//!
//! Recording is a push into isolate memory: the answer never waits. Events are shipped in
//! batches (`POST /v1/internal/validation-events`, service token, a fresh `batch_id` counted
//! once by the origin) after a response, when `events_batch` are pending or the oldest has
//! waited `events_flush`, and on every outbox drain (the Worker's cron, Spin's drain route).
//! A batch the origin does not take goes to the KV outbox like a usage batch and is delivered
//! by the same drains. An answer the origin produced (relayed by the edge) is not recorded
//! here: the origin logged it itself.
//!
//! Bound: at most `events_max` events wait per isolate; past it a new event is dropped,
//! counted in `nls_edge_events_dropped_total` and reported in the next batch's `dropped`.
//! What can be lost is what waits in memory: at most `events_max` events, and in practice what
//! arrived in the last `events_flush` (an isolate evicted or crashed before shipping them).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use nls_core::model::Timestamp;

/// Who called, as the platform says (not the client): the address, and where known the
/// country and the edge location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    /// ISO 3166-1 alpha-2 (Cloudflare's `request.cf.country`).
    pub country: Option<String>,
    /// The edge location (Cloudflare's colo), or the host's name.
    pub edge: Option<String>,
}

/// One event, as the origin's `POST /v1/internal/validation-events` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationEventBody {
    pub license_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub code: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationEventsBody {
    pub batch_id: String,
    /// Events this isolate dropped (over its bound) since the previous batch.
    #[serde(default)]
    pub dropped: u64,
    pub events: Vec<ValidationEventBody>,
}

/// The most events one batch carries (the origin's limit).
pub const MAX_EVENTS_PER_SHIPMENT: usize = 100;

/// What one isolate holds between shipments.
#[derive(Debug, Default)]
pub(crate) struct EventBuffer {
    inner: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    events: Vec<ValidationEventBody>,
    /// Dropped since the last batch was cut.
    dropped: u64,
    oldest_at: Option<Timestamp>,
    /// A shipment is scheduled and not finished: no second one is scheduled meanwhile.
    shipping: bool,
}

impl EventBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `event` unless `max` are waiting; false when it was dropped.
    pub(crate) fn push(&self, event: ValidationEventBody, max: usize, now: Timestamp) -> bool {
        let mut pending = self.lock();
        if pending.events.len() >= max {
            pending.dropped += 1;
            return false;
        }
        pending.oldest_at.get_or_insert(now);
        pending.events.push(event);
        true
    }

    /// True (once, until [`EventBuffer::finish_shipping`]) when a shipment is due.
    pub(crate) fn claim_shipment(&self, batch: usize, flush: chrono::Duration, now: Timestamp) -> bool {
        let mut pending = self.lock();
        let due = !pending.events.is_empty()
            && (pending.events.len() >= batch
                || pending.oldest_at.is_some_and(|t| now - t >= flush || t > now));
        if due && !pending.shipping {
            pending.shipping = true;
            return true;
        }
        false
    }

    pub(crate) fn finish_shipping(&self) {
        self.lock().shipping = false;
    }

    /// Cuts the next batch: at most [`MAX_EVENTS_PER_SHIPMENT`] events, oldest first, with the
    /// count of events dropped since the previous one.
    pub(crate) fn take_batch(&self, now: Timestamp) -> Option<ValidationEventsBody> {
        let mut pending = self.lock();
        if pending.events.is_empty() && pending.dropped == 0 {
            return None;
        }
        let n = pending.events.len().min(MAX_EVENTS_PER_SHIPMENT);
        let events: Vec<ValidationEventBody> = pending.events.drain(..n).collect();
        pending.oldest_at = if pending.events.is_empty() { None } else { Some(now) };
        let dropped = std::mem::take(&mut pending.dropped);
        Some(ValidationEventsBody { batch_id: nls_core::issuing::new_id("veb"), dropped, events })
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }
}
