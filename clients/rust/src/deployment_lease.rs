//! The deployment's seat lease as the server last stated it, kept in the data dir
//! (`deployment-lease.json`) so `nectar-license status` can show it without asking the server.
//! A heartbeat renews the lease and its answer carries the new expiry; a validation that
//! activated the seat carries it too. An edge that could not reach the origin acknowledges a
//! heartbeat without a lease (`queued`): then only the heartbeat times are known.
//!
//! Advisory: the server's own record rules. Written after each heartbeat (every few minutes),
//! so the write is atomic but not worth an fsync of its own.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable_file::{read_optional, write_atomic};

pub const LEASE_FILE: &str = "deployment-lease.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub deployment_id: String,
    /// When the seat's lease runs out unless renewed (the server's clock); `None` when the
    /// last answer did not say (an edge that queued the heartbeat).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The last heartbeat the server (or an edge) acknowledged, this machine's clock.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// When the server asked for the next heartbeat.
    pub next_heartbeat_at: Option<DateTime<Utc>>,
    /// What the record comes from: `heartbeat`, `heartbeat_queued` (an edge acknowledged it
    /// without the origin) or `activation`.
    pub source: String,
    pub recorded_at: DateTime<Utc>,
}

pub fn load(data_dir: &Path) -> Option<LeaseRecord> {
    read_optional(&data_dir.join(LEASE_FILE)).ok().flatten().and_then(|t| serde_json::from_str(&t).ok())
}

pub fn save(data_dir: &Path, record: &LeaseRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(&data_dir.join(LEASE_FILE), &json)
}

/// The lease a heartbeat answer states (the origin's `deployment.lease_expires_at`, or an
/// edge's queued acknowledgement), as a record.
pub fn from_heartbeat_answer(deployment_id: &str, body: &str, now: DateTime<Utc>) -> Option<LeaseRecord> {
    #[derive(Deserialize)]
    struct Beat {
        #[serde(default)]
        deployment: Option<Deployment>,
        #[serde(default)]
        next_heartbeat_at: Option<DateTime<Utc>>,
        #[serde(default)]
        queued: bool,
    }
    #[derive(Deserialize)]
    struct Deployment {
        #[serde(default)]
        lease_expires_at: Option<DateTime<Utc>>,
    }
    let beat: Beat = serde_json::from_str(body).ok()?;
    Some(LeaseRecord {
        deployment_id: deployment_id.to_owned(),
        lease_expires_at: beat.deployment.and_then(|d| d.lease_expires_at),
        last_heartbeat_at: Some(now),
        next_heartbeat_at: beat.next_heartbeat_at,
        source: if beat.queued { "heartbeat_queued" } else { "heartbeat" }.to_owned(),
        recorded_at: now,
    })
}

/// The lease a validation answer states, when it activated the seat (`deployment.lease_expires_at`).
pub fn from_validation_answer(
    deployment_id: &str,
    body: &str,
    previous: Option<LeaseRecord>,
    now: DateTime<Utc>,
) -> Option<LeaseRecord> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    let deployment = answer.get("deployment")?;
    if deployment.get("id")?.as_str()? != deployment_id {
        return None;
    }
    let lease: DateTime<Utc> = serde_json::from_value(deployment.get("lease_expires_at")?.clone()).ok()?;
    let previous = previous.filter(|p| p.deployment_id == deployment_id);
    Some(LeaseRecord {
        deployment_id: deployment_id.to_owned(),
        lease_expires_at: Some(lease),
        last_heartbeat_at: previous.as_ref().and_then(|p| p.last_heartbeat_at),
        next_heartbeat_at: previous.as_ref().and_then(|p| p.next_heartbeat_at),
        source: "activation".to_owned(),
        recorded_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_origins_and_an_edges_heartbeat_answers() {
        let now = Utc::now();
        let origin = r#"{"code":"VALID","valid":true,"deployment":{"deployment_id":"d1","license_id":"l","lease_expires_at":"2026-12-04T10:00:00Z","live":true},"next_heartbeat_at":"2026-12-04T09:05:00Z"}"#;
        let r = from_heartbeat_answer("d1", origin, now).unwrap();
        assert_eq!(r.lease_expires_at.unwrap().to_rfc3339(), "2026-12-04T10:00:00+00:00");
        assert_eq!(r.source, "heartbeat");
        let edge = r#"{"code":"VALID","valid":true,"deployment":{"deployment_id":"d1","license_id":"l","live":true},"next_heartbeat_at":"2026-12-04T09:05:00Z","degraded":true,"queued":true}"#;
        let r = from_heartbeat_answer("d1", edge, now).unwrap();
        assert_eq!((r.lease_expires_at, r.source.as_str()), (None, "heartbeat_queued"));
        assert!(from_heartbeat_answer("d1", "not json", now).is_none());
    }

    #[test]
    fn a_validation_answer_states_a_lease_only_when_it_activated_this_deployment() {
        let now = Utc::now();
        let activated =
            r#"{"code":"VALID","deployment":{"id":"d1","lease_expires_at":"2026-12-04T10:00:00Z"}}"#;
        assert!(from_validation_answer("d1", activated, None, now).is_some());
        assert!(from_validation_answer("d2", activated, None, now).is_none());
        let plain = r#"{"code":"VALID","deployment":{"id":"d1"}}"#;
        assert!(from_validation_answer("d1", plain, None, now).is_none());
    }
}
