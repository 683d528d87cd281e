//! "Publish after commit", written once for every origin host (the router in `http`, the
//! Stripe webhook Lambda): after a change an edge's snapshot reflects is committed, read the
//! license's snapshot from the store, as the edges' own `GET /v1/internal/snapshots/{id}` does,
//! and hand it to the [`StatusPublisher`]. Callers log and count a failure; they never fail the
//! committed request because of it (the edges' snapshot TTL bounds a lost push).

use crate::model::Timestamp;
use crate::ports::{LicenseStore, PublishError, StatusPublisher, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("reading the snapshot: {0}")]
    Snapshot(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Pushes `license_id`'s status as of `now`. `Ok(false)`: no such license, nothing to push.
pub async fn push_license_status<S: LicenseStore + ?Sized>(
    store: &S,
    publisher: &dyn StatusPublisher,
    license_id: &str,
    now: Timestamp,
) -> Result<bool, PushError> {
    let Some(snapshot) = store.license_snapshot(license_id, now).await? else { return Ok(false) };
    publisher.publish(&snapshot).await?;
    Ok(true)
}
