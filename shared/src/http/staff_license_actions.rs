//! License actions staff take by hand that the license-key API does not cover: free a
//! customer's deployment seat, and email the license key again. Each is audited as the caller
//! (`staff:<id>` from the portal). The offline license file is `license_routes::offline_file`,
//! shared with `POST /v1/licenses/{id}/offline-file`.

use chrono::Duration;

use crate::email::{NoticeContext, NoticeKind, SendOnce, notice_context, render_email, send_once};
use crate::http::AppState;
use crate::http::admin_auth::Caller;
use crate::http::app_error::AppError;
use crate::http::audit_routes::audit;
use crate::http::customer_routes;
use crate::http::license_routes::load;
use crate::http::wire::DeploymentView;
use crate::issuing::{issue_key, new_id};
use crate::lifecycle::LicenseStatus;
use crate::model::NotificationKey;

/// A resend claimed by a request that died is taken over after this long.
const STALE_CLAIM_AFTER: Duration = Duration::minutes(5);

/// Frees `deployment_id`'s seat on license `id`, so another install can take it.
///
/// The seat lives in the deployment store (one `release_deployment` operation), which is not
/// a [`Write`] of a commit, so the audit entry cannot share its transaction. It is written
/// first: a release is never unaudited, and if the release then fails the staff user sees the
/// error next to an entry that names the attempt.
pub async fn release_deployment(
    state: &AppState,
    caller: &Caller,
    id: &str,
    deployment_id: &str,
) -> Result<DeploymentView, AppError> {
    load(state, id).await?;
    let now = state.now();
    let deployment = state
        .store()
        .list_deployments(id)
        .await?
        .into_iter()
        .find(|d| d.deployment_id == deployment_id && d.is_live(now))
        .ok_or_else(|| AppError::DeploymentNotActive(deployment_id.to_owned()))?;
    let view = DeploymentView::new(&deployment, now);
    let entry =
        audit::<_, ()>(caller, "license.deployment_release", format!("license:{id}"), Some(&view), None, now);
    state.store().commit(None, vec![entry]).await?;
    state.store().release_deployment(id, deployment_id).await?;
    // The snapshot counts live seats: the edges learn of the free seat now.
    state.license_changed(id).await;
    Ok(view)
}

/// What a resend did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEmailSent {
    pub recipient: String,
    pub message_id: String,
}

/// Emails license `id`'s key to its customer again, through the host's mailer, as a
/// `key_delivery` notice of its own (so it shows in the license's communication log).
///
/// NLS keeps only key ids, never keys, so the email carries a freshly signed key with the
/// same key id (`jti`) and terms: the same license, and any earlier copy still works. The
/// audit entry is written after the mailer accepted the email.
pub async fn resend_key_email(state: &AppState, caller: &Caller, id: &str) -> Result<KeyEmailSent, AppError> {
    let mailer = state.mailer().ok_or_else(|| AppError::NotFound {
        code: "mailer_not_configured",
        what: "a mailer on this host".to_owned(),
    })?;
    let license = load(state, id).await?;
    if matches!(license.status, LicenseStatus::Revoked | LicenseStatus::Expired) {
        return Err(AppError::InvalidTransition(format!(
            "a {} license's key is not sent again",
            license.status.as_str()
        )));
    }
    let customer = customer_routes::load(state, &license.customer_id).await?;
    let now = state.now();
    let key = issue_key(state.key_ring(), &license, now)
        .map_err(|e| AppError::Internal(format!("signing a license key: {e}")))?;
    let context = NoticeContext { license_key: Some(key), ..notice_context(&license, &customer) };
    let email = render_email(NoticeKind::KeyDelivery, &context, &customer.email)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    // Its own window: a resend is a new notice, never "already sent".
    let notice = NotificationKey {
        license_id: license.id.clone(),
        notice: NoticeKind::KeyDelivery.as_str().to_owned(),
        window: format!("{}/resend/{}", license.key_id, new_id("rsnd")),
    };
    let sent =
        send_once(state.store(), &*mailer, notice.clone(), &email, &caller.actor, now, STALE_CLAIM_AFTER)
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    AppError::Unavailable(format!("the key email was not sent: {e}"))
                } else {
                    AppError::Conflict(format!("the key email was not sent: {e}"))
                }
            })?;
    let SendOnce::Sent { message_id } = sent else {
        return Err(AppError::Internal(format!(
            "a fresh notice window {} was already claimed",
            notice.window
        )));
    };
    let detail = serde_json::json!({
        "notice": notice.notice,
        "window": notice.window,
        "recipient": customer.email,
        "key_id": license.key_id,
    });
    let entry =
        audit::<(), _>(caller, "license.key_email_resend", format!("license:{id}"), None, Some(&detail), now);
    state.store().commit(None, vec![entry]).await?;
    Ok(KeyEmailSent { recipient: customer.email, message_id })
}
