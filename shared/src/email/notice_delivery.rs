//! Claim → send → mark: how one notice goes out once.
//!
//! 1. [`NotificationStore::claim_notification`] records the intent (`Pending`, with the
//!    claimant and time) with a conditional write. Only one caller wins; a notice already
//!    `Sent` is never claimed again.
//! 2. The winner sends through the [`Mailer`].
//! 3. [`NotificationStore::mark_notification_sent`] records the provider's message id.
//!
//! A crash between 1 and 3 leaves a `Pending` claim. Once it is older than `stale_after`,
//! the next caller takes it over and sends. If the crash came *before* the provider accepted
//! the mail, the notice goes out exactly once. If it came *after* the provider accepted it but
//! before the mark was written, the takeover sends it a second time: the one case of a
//! duplicate, and no case of a lost notice. `stale_after` must exceed the longest send (SES
//! answers in well under a second; the defaults are minutes).

use chrono::Duration;

use crate::model::{NotificationKey, NotificationRecord, NotificationState, Timestamp};
use crate::ports::{ClaimOutcome, MailError, Mailer, NotificationStore, OutgoingEmail, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOnce {
    /// This call sent it.
    Sent { message_id: String },
    /// An earlier call sent it; nothing was done.
    AlreadySent,
    /// Another caller claimed it moments ago and may be sending it now; nothing was done.
    HeldByOther,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("recording the notice failed: {0}")]
    Store(#[source] StoreError),
    /// The claim stays `Pending`; it is retried once it is stale.
    #[error("sending the notice failed: {0}")]
    Mail(#[source] MailError),
    /// The mail went out, but marking it failed: a takeover after `stale_after` would send it
    /// again. Reported so an operator sees the (rare) duplicate coming.
    #[error("notice sent as {message_id} but not marked: {source}")]
    MarkFailed {
        message_id: String,
        #[source]
        source: StoreError,
    },
}

impl DeliveryError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) | Self::MarkFailed { source: e, .. } => e.is_retryable(),
            Self::Mail(MailError::Unavailable(_)) => true,
            Self::Mail(MailError::Rejected(_)) => false,
        }
    }
}

/// Sends `email` as the notice `key` unless it was already sent or is being sent.
/// `claimant` names the caller in the claim (a run id, or the webhook event id).
pub async fn send_once<S: NotificationStore + ?Sized>(
    store: &S,
    mailer: &dyn Mailer,
    key: NotificationKey,
    email: &OutgoingEmail,
    claimant: &str,
    now: Timestamp,
    stale_after: Duration,
) -> Result<SendOnce, DeliveryError> {
    let record = NotificationRecord {
        key,
        recipient: email.to.clone(),
        subject: email.subject.clone(),
        state: NotificationState::Pending { claimed_by: claimant.to_owned(), claimed_at: now },
    };
    match store.claim_notification(&record, now, stale_after).await.map_err(DeliveryError::Store)? {
        ClaimOutcome::AlreadySent => return Ok(SendOnce::AlreadySent),
        ClaimOutcome::HeldByOther => return Ok(SendOnce::HeldByOther),
        ClaimOutcome::Claimed => {}
    }
    let message_id = mailer.send(email).await.map_err(DeliveryError::Mail)?;
    // One retry: a mark lost to a blip is the only path to a duplicate, so it is worth a second try.
    let mut marked = store.mark_notification_sent(&record.key, claimant, now, &message_id).await;
    if matches!(&marked, Err(StoreError::Unavailable(_))) {
        marked = store.mark_notification_sent(&record.key, claimant, now, &message_id).await;
    }
    match marked {
        Ok(()) => Ok(SendOnce::Sent { message_id }),
        Err(source) => Err(DeliveryError::MarkFailed { message_id, source }),
    }
}
