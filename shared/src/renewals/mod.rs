//! The renewals job: renewal reminders, expiry warnings, suspension notices, and expiring
//! licenses whose grace has run out. Run daily (EventBridge → `renewals` Lambda; in-process in
//! `nls serve`; `nls renewals run [--now]`).
//!
//! For each license with an expiry inside the window it reads (one
//! [`LicenseStore::licenses_expiring_between`] query, the expiry index, never a full scan):
//!
//! | where `now` falls | what happens |
//! | --- | --- |
//! | `expiry - 30/14/7/1 days <= now < expiry` | the reminder of the tightest threshold reached (`renewal_reminder_7d`, ...), unless the customer opted out |
//! | `expiry <= now < expiry + grace` | `expiry_warning` |
//! | `expiry + grace <= now` | the license becomes `expired` (transition table, audited as `scheduler`), then `suspension_notice` |
//!
//! Reminders and warnings go only to `active` and `past_due` licenses. Licenses billed through
//! a Stripe subscription get no reminders by default: Stripe renews them on its own.
//!
//! **Exactly once.** Each notice is keyed (license, notice, window = the expiry instant) and
//! goes through [`crate::email::send_once`]: claim (record the intent) → send → mark sent.
//! Two overlapping runs race on the claim and only one sends. A run that dies after claiming
//! leaves a `Pending` claim that the next run takes over once it is older than
//! `stale_claim_after`: if the crash came before the mail provider accepted the message, the
//! notice goes out exactly once; if it came after acceptance but before the mark, the takeover
//! sends a duplicate. No notice is ever lost.

use chrono::Duration;
use serde::Serialize;

use crate::email::{self, DeliveryError, NoticeContext, NoticeKind, SendOnce, expiry_window, notice_context};
use crate::issuing::{apply_event, new_id};
use crate::lifecycle::{LicenseStatus, LifecycleEvent};
use crate::model::{
    AuditEntry, Customer, License, NotificationKey, Timestamp, days_after, days_before, saturating_add,
};
use crate::panic_guard::catch_panic;
use crate::ports::{Clock, Mailer, Store, StoreError, Write};

/// The audit actor of the job's changes.
pub const SCHEDULER_ACTOR: &str = "scheduler";
/// The audit target of each run's record (`renewals.run`): the portal's System page shows the
/// newest as the job's last run.
pub const RUN_RECORD_TARGET: &str = "job:renewals";
pub const RUN_RECORD_ACTION: &str = "renewals.run";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalsConfig {
    /// Names this run in its claims (for the communication log and crash forensics).
    pub run_id: String,
    /// Days before expiry at which reminders go out.
    pub reminder_days: Vec<u32>,
    /// How far past expiry the job still looks, for warnings, expiries and suspension
    /// notices. Must exceed the longest grace period in use plus the longest outage of the job.
    pub lookback: Duration,
    /// A claim older than this is presumed dead and taken over.
    pub stale_claim_after: Duration,
    /// Send reminders for licenses billed through a Stripe subscription too.
    pub remind_subscriptions: bool,
    /// Attempts at the read → commit cycle when expiring a license that someone else updated.
    pub max_attempts: u32,
}

impl RenewalsConfig {
    pub fn new(run_id: impl Into<String>) -> Self {
        Self {
            run_id: run_id.into(),
            reminder_days: vec![30, 14, 7, 1],
            lookback: Duration::days(60),
            stale_claim_after: Duration::minutes(15),
            remind_subscriptions: false,
            max_attempts: 5,
        }
    }

    /// A config whose run id is fresh, for one run of the job.
    pub fn for_new_run() -> Self {
        Self::new(new_id("run"))
    }
}

/// One notice this run sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentNotice {
    pub license_id: String,
    pub notice: String,
    pub window: String,
    pub recipient: String,
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoticeFailure {
    pub license_id: String,
    pub notice: String,
    pub reason: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenewalsReport {
    pub run_id: String,
    pub now: Option<Timestamp>,
    /// Licenses the window query returned.
    pub examined: u32,
    pub sent: Vec<SentNotice>,
    /// Notices due but sent by an earlier run.
    pub already_sent: u32,
    /// Notices due but claimed by another run that is (presumably) sending them now.
    pub held_by_other: u32,
    /// Reminders not sent because the customer opted out.
    pub skipped_opt_out: u32,
    /// Licenses this run moved to `expired`.
    pub expired: Vec<String>,
    pub failures: Vec<NoticeFailure>,
}

impl RenewalsReport {
    /// Whether running the job again soon could finish what failed (EventBridge retry).
    pub fn has_retryable_failures(&self) -> bool {
        self.failures.iter().any(|f| f.retryable)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenewalsError {
    /// The window query failed: nothing was done.
    #[error("reading the licenses due failed: {0}")]
    Store(#[from] StoreError),
}

impl RenewalsError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
        }
    }
}

/// What is due for one license at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Reminder {
        days: u32,
    },
    ExpiryWarning,
    /// Past expiry and grace: expire (if not yet) and send the suspension notice.
    EndOfGrace,
    Nothing,
}

fn due_for(license: &License, now: Timestamp, config: &RenewalsConfig) -> Due {
    let Some(expires_at) = license.expires_at else { return Due::Nothing };
    let grace_end = days_after(expires_at, license.grace_days);
    let in_service = matches!(license.status, LicenseStatus::Active | LicenseStatus::PastDue);
    if now >= grace_end {
        return if license.status == LicenseStatus::Revoked { Due::Nothing } else { Due::EndOfGrace };
    }
    if !in_service {
        return Due::Nothing;
    }
    if now >= expires_at {
        return Due::ExpiryWarning;
    }
    // The tightest threshold reached: a license found 10 days out gets the 14-day reminder
    // only, not a burst of 30 and 14.
    config
        .reminder_days
        .iter()
        .copied()
        .filter(|days| now >= days_before(expires_at, *days))
        .min()
        .map_or(Due::Nothing, |days| Due::Reminder { days })
}

/// Runs the job once at `clock.now()`.
pub async fn run_renewals(
    store: &dyn Store,
    mailer: &dyn Mailer,
    clock: &dyn Clock,
    config: &RenewalsConfig,
) -> Result<RenewalsReport, RenewalsError> {
    let now = clock.now();
    let longest_reminder = config.reminder_days.iter().copied().max().unwrap_or(0);
    let from = saturating_add(now, -config.lookback);
    // One day past the longest reminder, so a run that starts a little late still sees it.
    let to = days_after(now, longest_reminder.saturating_add(1));
    let mut licenses = store.licenses_expiring_between(from, to).await?;
    licenses.sort_by(|a, b| a.id.cmp(&b.id));

    let mut report =
        RenewalsReport { run_id: config.run_id.clone(), now: Some(now), ..RenewalsReport::default() };
    for license in licenses {
        report.examined += 1;
        let due = due_for(&license, now, config);
        if due == Due::Nothing {
            continue;
        }
        // One bad license is that license's failure, never the end of the run.
        let license_id = license.id.clone();
        let handled =
            catch_panic(handle_license(store, mailer, config, license, due, now, &mut report)).await;
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => report.failures.push(failure),
            Err(panicked) => report.failures.push(NoticeFailure {
                license_id,
                notice: "handle".to_owned(),
                reason: panicked.to_string(),
                retryable: false,
            }),
        }
    }
    record_run(store, &report, now).await;
    Ok(report)
}

/// Writes the run's summary to the audit log (actor `scheduler`, target
/// [`RUN_RECORD_TARGET`]). Best effort: the notices are sent and claimed whatever happens to
/// this record, so a failure to write it does not fail the run.
async fn record_run(store: &dyn Store, report: &RenewalsReport, now: Timestamp) {
    let summary = serde_json::json!({
        "run_id": report.run_id,
        "examined": report.examined,
        "sent": report.sent.len(),
        "expired": report.expired.len(),
        "failures": report.failures.len(),
    });
    let entry = AuditEntry {
        id: new_id("aud"),
        at: now,
        actor: SCHEDULER_ACTOR.to_owned(),
        action: RUN_RECORD_ACTION.to_owned(),
        target: RUN_RECORD_TARGET.to_owned(),
        before: None,
        after: Some(summary),
    };
    let _ = store.commit(None, vec![Write::Audit(entry)]).await;
}

async fn handle_license(
    store: &dyn Store,
    mailer: &dyn Mailer,
    config: &RenewalsConfig,
    mut license: License,
    due: Due,
    now: Timestamp,
    report: &mut RenewalsReport,
) -> Result<(), NoticeFailure> {
    let failure = |license: &License, notice: &str, reason: String, retryable: bool| NoticeFailure {
        license_id: license.id.clone(),
        notice: notice.to_owned(),
        reason,
        retryable,
    };
    if due == Due::EndOfGrace {
        license = expire_if_due(store, config, license, now, report)
            .await
            .map_err(|(l, e)| failure(&l, "expire", e.to_string(), e.is_retryable()))?;
        if !matches!(license.status, LicenseStatus::Expired | LicenseStatus::Suspended) {
            // Renewed or revoked meanwhile.
            return Ok(());
        }
    }
    let customer = match store.get_customer(&license.customer_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(failure(&license, "lookup", "customer not found".to_owned(), false)),
        Err(e) => return Err(failure(&license, "lookup", e.to_string(), e.is_retryable())),
    };
    let (kind, notice) = match due {
        Due::Reminder { days } => (NoticeKind::RenewalReminder, format!("renewal_reminder_{days}d")),
        Due::ExpiryWarning => (NoticeKind::ExpiryWarning, NoticeKind::ExpiryWarning.as_str().to_owned()),
        Due::EndOfGrace => (NoticeKind::SuspensionNotice, NoticeKind::SuspensionNotice.as_str().to_owned()),
        Due::Nothing => return Ok(()),
    };
    if let Due::Reminder { .. } = due {
        if customer.reminders_opt_out {
            report.skipped_opt_out += 1;
            return Ok(());
        }
        if license.stripe_subscription_id.is_some() && !config.remind_subscriptions {
            return Ok(());
        }
    }
    if customer.email.trim().is_empty() {
        return Err(failure(&license, &notice, "customer has no email address".to_owned(), false));
    }
    let context = reminder_context(&license, &customer, due, now);
    let email = email::render_email(kind, &context, &customer.email)
        .map_err(|e| failure(&license, &notice, e.to_string(), false))?;
    let window = expiry_window(license.expires_at);
    let key =
        NotificationKey { license_id: license.id.clone(), notice: notice.clone(), window: window.clone() };
    match email::send_once(store, mailer, key, &email, &config.run_id, now, config.stale_claim_after).await {
        Ok(SendOnce::Sent { message_id }) => report.sent.push(SentNotice {
            license_id: license.id.clone(),
            notice,
            window,
            recipient: customer.email.clone(),
            message_id,
        }),
        Ok(SendOnce::AlreadySent) => report.already_sent += 1,
        Ok(SendOnce::HeldByOther) => report.held_by_other += 1,
        Err(e @ DeliveryError::MarkFailed { .. }) => {
            return Err(failure(&license, &notice, e.to_string(), true));
        }
        Err(e) => return Err(failure(&license, &notice, e.to_string(), e.is_retryable())),
    }
    Ok(())
}

fn reminder_context(license: &License, customer: &Customer, due: Due, now: Timestamp) -> NoticeContext {
    let mut context = notice_context(license, customer);
    if let Some(expires_at) = license.expires_at {
        let grace_end = days_after(expires_at, license.grace_days);
        context.grace_ends_at = Some(email::format_email_date(grace_end));
        // Whole days left, rounded up: 23 hours before expiry is "1 day".
        let seconds_left = (expires_at - now).num_seconds().max(0);
        context.days_left = Some((seconds_left + 86_399) / 86_400);
    }
    context.opt_out_hint = matches!(due, Due::Reminder { .. });
    context
}

/// Moves a license past its grace to `expired`, re-reading on a concurrent update (another run,
/// or a renewal that arrived meanwhile and makes it no longer due).
async fn expire_if_due(
    store: &dyn Store,
    config: &RenewalsConfig,
    mut license: License,
    now: Timestamp,
    report: &mut RenewalsReport,
) -> Result<License, (License, StoreError)> {
    for _ in 0..config.max_attempts.max(1) {
        if due_for(&license, now, config) != Due::EndOfGrace {
            return Ok(license);
        }
        if license.status == LicenseStatus::Expired {
            return Ok(license);
        }
        let Ok(next) = apply_event(&license, LifecycleEvent::Expire, now) else { return Ok(license) };
        let audit = Write::Audit(AuditEntry {
            id: new_id("aud"),
            at: now,
            actor: SCHEDULER_ACTOR.to_owned(),
            action: "license.expired".to_owned(),
            target: format!("license:{}", license.id),
            before: serde_json::to_value(&license).ok(),
            after: serde_json::to_value(&next).ok(),
        });
        let update = Write::UpdateLicense { license: next.clone(), expected_version: license.version };
        match store.commit(None, vec![update, audit]).await {
            Ok(_) => {
                report.expired.push(next.id.clone());
                return Ok(next);
            }
            Err(StoreError::Conflict(_)) => match store.get_license(&license.id).await {
                Ok(Some(fresh)) => license = fresh,
                Ok(None) => {
                    return Err((license.clone(), StoreError::NotFound(format!("license {}", license.id))));
                }
                Err(e) => return Err((license, e)),
            },
            Err(e) => return Err((license, e)),
        }
    }
    let id = license.id.clone();
    Err((license, StoreError::Conflict(format!("license {id}"))))
}
