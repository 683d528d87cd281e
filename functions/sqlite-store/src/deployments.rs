//! Deployment leases. Activation is the seat-limit invariant: the live count, the churn budget
//! and the new lease are read and written in one `BEGIN IMMEDIATE` transaction.

use async_trait::async_trait;
use nls_core::model::*;
use nls_core::ports::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::row_codec::{exact_time, index_seconds, parse_exact_time, record_at, shifted, text_at, to_json};
use crate::{SqliteStore, sql_failure};

fn deployment_item(license_id: &str, deployment_id: &str) -> String {
    format!("deployment {license_id}/{deployment_id}")
}

fn load_deployment(
    connection: &Connection,
    license_id: &str,
    deployment_id: &str,
) -> StoreResult<Option<Deployment>> {
    let item = || deployment_item(license_id, deployment_id);
    connection
        .query_row(
            "SELECT record FROM deployments WHERE license_id = ?1 AND deployment_id = ?2",
            [license_id, deployment_id],
            |row| Ok(record_at(row, 0, &item)),
        )
        .optional()
        .map_err(sql_failure)?
        .transpose()
}

fn put_deployment(connection: &Connection, deployment: &Deployment) -> StoreResult<()> {
    let item = deployment_item(&deployment.license_id, &deployment.deployment_id);
    connection
        .execute(
            "INSERT INTO deployments (license_id, deployment_id, lease_expires_at_s, record)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (license_id, deployment_id) DO UPDATE SET
                 lease_expires_at_s = excluded.lease_expires_at_s, record = excluded.record",
            params![
                deployment.license_id,
                deployment.deployment_id,
                index_seconds(deployment.lease_expires_at),
                to_json(&item, deployment)?,
            ],
        )
        .map_err(sql_failure)?;
    Ok(())
}

/// The license's deployments whose lease outlives `now`, by deployment id.
pub(crate) fn live_deployments(
    connection: &Connection,
    license_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<Deployment>> {
    // `lease > now` implies `floor(lease) >= floor(now)`; `is_live` then decides exactly.
    let mut statement = connection
        .prepare_cached(
            "SELECT deployment_id, record FROM deployments
             WHERE license_id = ?1 AND lease_expires_at_s >= ?2 ORDER BY deployment_id",
        )
        .map_err(sql_failure)?;
    let mut rows = statement.query(params![license_id, index_seconds(now)]).map_err(sql_failure)?;
    let mut live = Vec::new();
    while let Some(row) = rows.next().map_err(sql_failure)? {
        let deployment_id = text_at(row, 0, &|| format!("deployment {license_id}/(id unreadable)"))?;
        let deployment: Deployment = record_at(row, 1, &|| deployment_item(license_id, &deployment_id))?;
        if deployment.is_live(now) {
            live.push(deployment);
        }
    }
    Ok(live)
}

/// Forgets the license's activations at or before `cutoff` and counts the rest.
fn recent_activations(connection: &Connection, license_id: &str, cutoff: Timestamp) -> StoreResult<u32> {
    let item = || format!("activation history of license {license_id}");
    let mut expired_rowids = Vec::new();
    let mut recent: u32 = 0;
    {
        let mut statement = connection
            .prepare_cached("SELECT rowid, activated_at FROM activations WHERE license_id = ?1")
            .map_err(sql_failure)?;
        let mut rows = statement.query([license_id]).map_err(sql_failure)?;
        while let Some(row) = rows.next().map_err(sql_failure)? {
            let rowid: i64 = row.get(0).map_err(sql_failure)?;
            let activated_at = parse_exact_time(&text_at(row, 1, &item)?, &item)?;
            if activated_at > cutoff {
                recent = recent.saturating_add(1);
            } else {
                expired_rowids.push(rowid);
            }
        }
    }
    let mut delete =
        connection.prepare_cached("DELETE FROM activations WHERE rowid = ?1").map_err(sql_failure)?;
    for rowid in expired_rowids {
        delete.execute([rowid]).map_err(sql_failure)?;
    }
    Ok(recent)
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn activate_deployment(
        &self,
        request: &Deployment,
        policy: &ActivationPolicy,
        now: Timestamp,
    ) -> StoreResult<Activation> {
        let (request, policy) = (request.clone(), *policy);
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let lease_end = shifted(now, policy.lease);
            let existing = load_deployment(&tx, &request.license_id, &request.deployment_id)?;
            if let Some(mut renewed) = existing.filter(|d| d.is_live(now)) {
                renewed.last_heartbeat_at = now;
                renewed.lease_expires_at = lease_end;
                put_deployment(&tx, &renewed)?;
                tx.commit().map_err(sql_failure)?;
                return Ok(Activation::AlreadyActive(renewed));
            }
            let live =
                u32::try_from(live_deployments(&tx, &request.license_id, now)?.len()).unwrap_or(u32::MAX);
            if policy.max_deployments.is_some_and(|max| live >= max) {
                return Ok(Activation::LimitReached { live });
            }
            let recent = recent_activations(&tx, &request.license_id, shifted(now, -policy.churn_window))?;
            if recent >= policy.churn_max {
                // Keep the pruning, as the reference store does.
                tx.commit().map_err(sql_failure)?;
                return Ok(Activation::ChurnLimited);
            }
            tx.execute(
                "INSERT INTO activations (license_id, activated_at) VALUES (?1, ?2)",
                params![request.license_id, exact_time(now)],
            )
            .map_err(sql_failure)?;
            let deployment = Deployment {
                activated_at: now,
                last_heartbeat_at: now,
                lease_expires_at: lease_end,
                ..request
            };
            put_deployment(&tx, &deployment)?;
            tx.commit().map_err(sql_failure)?;
            Ok(Activation::Activated(deployment))
        })
        .await
    }

    async fn heartbeat(
        &self,
        license_id: &str,
        deployment_id: &str,
        app_version: Option<&str>,
        now: Timestamp,
        lease_expires_at: Timestamp,
    ) -> StoreResult<Option<Deployment>> {
        let (license_id, deployment_id) = (license_id.to_owned(), deployment_id.to_owned());
        let app_version = app_version.map(str::to_owned);
        self.with_connection(move |connection| {
            let tx =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql_failure)?;
            let existing = load_deployment(&tx, &license_id, &deployment_id)?;
            let Some(mut deployment) = existing.filter(|d| d.is_live(now)) else { return Ok(None) };
            deployment.last_heartbeat_at = now;
            deployment.lease_expires_at = lease_expires_at;
            if app_version.is_some() {
                deployment.app_version = app_version;
            }
            put_deployment(&tx, &deployment)?;
            tx.commit().map_err(sql_failure)?;
            Ok(Some(deployment))
        })
        .await
    }

    async fn release_deployment(&self, license_id: &str, deployment_id: &str) -> StoreResult<bool> {
        let (license_id, deployment_id) = (license_id.to_owned(), deployment_id.to_owned());
        self.with_connection(move |connection| {
            let deleted = connection
                .execute(
                    "DELETE FROM deployments WHERE license_id = ?1 AND deployment_id = ?2",
                    [&license_id, &deployment_id],
                )
                .map_err(sql_failure)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn list_deployments(&self, license_id: &str) -> StoreResult<Vec<Deployment>> {
        let license_id = license_id.to_owned();
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT deployment_id, record FROM deployments WHERE license_id = ?1 ORDER BY deployment_id",
                )
                .map_err(sql_failure)?;
            let mut rows = statement.query([&license_id]).map_err(sql_failure)?;
            let mut deployments = Vec::new();
            while let Some(row) = rows.next().map_err(sql_failure)? {
                let deployment_id =
                    text_at(row, 0, &|| format!("deployment {license_id}/(id unreadable)"))?;
                deployments.push(record_at(row, 1, &|| deployment_item(&license_id, &deployment_id))?);
            }
            Ok(deployments)
        })
        .await
    }
}
