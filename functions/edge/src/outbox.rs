//! Writes the origin must learn, kept in KV until it acknowledges them.
//!
//! The edge forwards heartbeats, usage batches, releases and activations at once when it can.
//! When the origin is unreachable it acknowledges them itself and queues them here, one KV key
//! per item. Delivery is at least once (a key is deleted only after the origin answered) and
//! counting is exactly once, because every item is idempotent at the origin:
//! - a usage batch carries its client-chosen `batch_id`, counted once per license;
//! - a heartbeat or activation of the same deployment overwrites the same key, and repeating
//!   it only renews a lease;
//! - a release of a seat already free is a no-op.
//!
//! - a batch of validation events carries its `batch_id`, counted once.
//!
//! Keys sort in delivery order: activations before heartbeats before usage before releases
//! before validation events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::edge_wire::{HeartbeatBody, UsageBody, ValidateBody};
use crate::validation_events::ValidationEventsBody;

pub const OUTBOX_PREFIX: &str = "outbox/";
pub const DEAD_LETTER_PREFIX: &str = "deadletter/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxItem {
    /// A deployment admitted provisionally while the origin was down: activated on delivery.
    Activation {
        body: ValidateBody,
    },
    Heartbeat {
        body: HeartbeatBody,
    },
    Usage {
        body: UsageBody,
    },
    Release {
        deployment_id: String,
        key: String,
    },
    /// A batch of validation events the origin did not take at once (counted once per
    /// `batch_id`).
    ValidationEvents {
        body: ValidationEventsBody,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub license_id: String,
    pub item: OutboxItem,
    pub queued_at: DateTime<Utc>,
    /// Deliveries the origin answered with a 5xx so far; at the configured maximum the item
    /// is dead-lettered.
    #[serde(default)]
    pub server_errors: u32,
    /// Not retried before this (backoff after a 5xx); later items are delivered meanwhile.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// The caller's address, forwarded with the item when it is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

pub(crate) fn sha_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl OutboxRecord {
    pub fn new(license_id: String, item: OutboxItem, queued_at: DateTime<Utc>) -> Self {
        Self { license_id, item, queued_at, server_errors: 0, retry_at: None, client_ip: None }
    }

    pub fn with_client_ip(mut self, client_ip: Option<&str>) -> Self {
        self.client_ip = client_ip.map(str::to_owned);
        self
    }

    /// The prefix of every queued activation of `license_id`; the last key segment is the
    /// SHA-256 of the deployment id.
    pub fn activation_prefix(license_id: &str) -> String {
        format!("{OUTBOX_PREFIX}1-activation/{}/", sha_hex(license_id))
    }

    /// The KV key: the same item always lands on the same key, so re-queuing overwrites.
    pub fn key(&self) -> String {
        let (order, id) = match &self.item {
            OutboxItem::Activation { body } => ("1-activation", body.deployment_id.as_deref().unwrap_or("")),
            OutboxItem::Heartbeat { body } => ("2-heartbeat", body.deployment_id.as_str()),
            OutboxItem::Usage { body } => ("3-usage", body.batch_id.as_str()),
            OutboxItem::Release { deployment_id, .. } => ("4-release", deployment_id.as_str()),
            OutboxItem::ValidationEvents { body } => ("5-events", body.batch_id.as_str()),
        };
        // Ids are client-chosen (any text up to 256 bytes): hash them to stay KV-key safe.
        format!("{OUTBOX_PREFIX}{order}/{}/{}", sha_hex(&self.license_id), sha_hex(id))
    }
}

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    pub delivered: usize,
    /// Refused by the origin for good (a 4xx, an unreadable item, or a 5xx on every one of
    /// the allowed tries): kept under `deadletter/` for inspection.
    pub rejected: usize,
    /// Still queued (the origin went away, or more than one drain's worth).
    pub remaining: usize,
    pub origin_unreachable: bool,
}
