//! The Stripe webhook: signature → event → one unit of work → notices.
//!
//! Rules (docs/billing.md has the full table):
//! - **Once.** The event id is the [`OnceGuard`] of the commit that carries the effect, so a
//!   replay commits nothing. Notices are sent after the commit through the notification
//!   store's claim → send → mark, so a replay re-sends only what a crash left unsent.
//! - **Never backwards.** The expiry only ever grows (the maximum of every paid-through date
//!   seen), whatever the order. Status and plan are last-writer-wins on Stripe's
//!   `event.created`, kept in `License::billing_event_at`: an older event changes neither.
//!   Every status change goes through [`apply_event`] and the transition table.
//! - **Concurrency.** License updates carry the version they read; on a conflict (or a
//!   creation race, made visible by the license id being derived from the subscription id)
//!   the event is re-read and re-applied, a few times.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::STRIPE_ACTOR;
use super::plans::PlanCatalogue;
use super::stripe_events::{
    CheckoutSession, Invoice, PayloadError, StripeEvent, StripeEventKind, Subscription, parse_event,
};
use super::stripe_signature::{DEFAULT_TOLERANCE, SignatureError, verify_stripe_signature};
use crate::email::{
    self, DeliveryError, NoticeContext, NoticeKind, RenderError, SendOnce, expiry_window, notice_context,
};
use crate::issuing::{
    LicenseTerms, TermsOutOfRange, apply_event, check_expiry, issue_key, new_id, new_license,
};
use crate::key_ring::KeyRing;
use crate::license_token::SigningError;
use crate::lifecycle::{LicenseStatus, LifecycleEvent};
use crate::model::{
    AuditEntry, Customer, License, NotificationKey, NotificationState, Timestamp, WebhookEventRecord,
    saturating_add,
};
use crate::ports::{Clock, CommitOutcome, MailError, Mailer, OnceGuard, Store, StoreError, Write};

/// Tunables, with defaults that suit Stripe's delivery and retry behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingPolicy {
    /// How far the signature's `t` may be from now.
    pub signature_tolerance: Duration,
    /// Added to the paid-through date to get the stored expiry, so the renewal invoice has
    /// time to be paid before the license reaches its own (validation) grace.
    pub period_grace: Duration,
    /// How long a `past_due` license stays valid (`IN_GRACE`) after a failed payment.
    pub payment_grace: Duration,
    /// A notice claim older than this is taken over by the next delivery of the event.
    pub notice_stale_after: Duration,
    /// Attempts at the read → commit cycle when a concurrent writer got there first.
    pub max_attempts: u32,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self {
            signature_tolerance: DEFAULT_TOLERANCE,
            period_grace: Duration::days(3),
            payment_grace: Duration::days(i64::from(crate::license_token::DEFAULT_GRACE_DAYS)),
            notice_stale_after: Duration::minutes(5),
            max_attempts: 5,
        }
    }
}

/// The ports and configuration the webhook needs.
pub struct BillingDeps<'a> {
    pub store: &'a dyn Store,
    pub mailer: &'a dyn Mailer,
    pub clock: &'a dyn Clock,
    /// Signs the key emailed on checkout (and after a tier change).
    pub key_ring: &'a KeyRing,
    pub plans: &'a PlanCatalogue,
    /// `NLS_STRIPE_WEBHOOK_SECRET`, as bytes (the whole `whsec_...` string is the HMAC key).
    pub webhook_secret: &'a [u8],
    pub policy: BillingPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// The event was recorded with its effect (which may be none, for an event older than
    /// what is stored).
    Applied,
    /// The event id was already recorded; nothing changed.
    Duplicate,
    /// Not an event NLS acts on (type, mode, unknown price); acknowledged so Stripe stops.
    Ignored,
}

/// The 200 answer. Adapters log `warnings` (unknown prices, refused transitions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookAck {
    pub received: bool,
    pub event_id: String,
    pub event_type: String,
    pub outcome: WebhookOutcome,
    pub license_id: Option<String>,
    /// Notice names sent by this delivery (`key_delivery`, `payment_failed`, ...).
    pub notices_sent: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A paid-through date outside the expiry bounds (`issuing::check_expiry`).
    #[error("the event's billing period is out of range: {0}")]
    TermsOutOfRange(#[from] TermsOutOfRange),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing the license key failed: {0}")]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("notice delivery: {0}")]
    Delivery(#[from] DeliveryError),
    /// Another delivery of this event claimed a notice moments ago. The state change is
    /// committed; Stripe's retry finishes (or confirms) the notice.
    #[error("a notice for this event is being sent by another delivery")]
    NoticeInFlight,
}

impl WebhookError {
    /// A stable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.code(),
            Self::Payload(_) => "payload_malformed",
            Self::TermsOutOfRange(_) => "terms_out_of_range",
            Self::Store(e) if e.is_retryable() => "store_unavailable",
            Self::Store(_) => "store_error",
            Self::Signing(_) => "key_signing_failed",
            Self::Render(_) => "email_render_failed",
            Self::Delivery(_) => "notice_delivery_failed",
            Self::NoticeInFlight => "notice_in_flight",
        }
    }

    /// 400 for what the sender got wrong (Stripe gives up after its retry window), 503 for
    /// what a retry can fix, 500 for a defect on our side.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Signature(_) | Self::Payload(_) | Self::TermsOutOfRange(_) => 400,
            _ if self.is_retryable() => 503,
            _ => 500,
        }
    }

    /// Whether Stripe's retry of this delivery can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Signature(_) | Self::Payload(_) | Self::TermsOutOfRange(_) | Self::Render(_) => false,
            Self::Store(e) => e.is_retryable(),
            Self::Delivery(e) => e.is_retryable(),
            // A missing signer is fixed by configuration; the committed event then gets its
            // key email on the retry.
            Self::Signing(_) | Self::NoticeInFlight => true,
        }
    }
}

/// Verifies, parses and applies one Stripe webhook delivery.
pub async fn handle_stripe_webhook(
    deps: &BillingDeps<'_>,
    signature_header: Option<&str>,
    raw_body: &[u8],
) -> Result<WebhookAck, WebhookError> {
    let now = deps.clock.now();
    verify_stripe_signature(
        signature_header,
        raw_body,
        deps.webhook_secret,
        deps.policy.signature_tolerance,
        now,
    )?;
    let event = parse_event(raw_body)?;
    let mut ack = WebhookAck {
        received: true,
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        outcome: WebhookOutcome::Ignored,
        license_id: None,
        notices_sent: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(observation) = Observation::of(&event) else { return Ok(ack) };
    let expiry = observation
        .paid_through
        .map(|secs| from_unix(secs).map(|at| saturating_add(at, deps.policy.period_grace)));
    match expiry {
        Some(None) => return Err(PayloadError::custom("the billing period is not a valid Unix time").into()),
        Some(Some(at)) => check_expiry(Some(at))?,
        None => {}
    }

    let mut attempt = 1;
    let applied = loop {
        let mut warnings = Vec::new();
        match apply_once(deps, &event, &observation, now, &mut warnings).await {
            Err(StoreError::Conflict(_) | StoreError::AlreadyExists(_))
                if attempt < deps.policy.max_attempts =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
            Ok(outcome) => {
                ack.warnings = warnings;
                break outcome;
            }
        }
    };
    ack.outcome = match applied {
        Some(CommitOutcome::Applied) => WebhookOutcome::Applied,
        Some(CommitOutcome::Duplicate) => WebhookOutcome::Duplicate,
        None => WebhookOutcome::Ignored,
    };
    if applied.is_some() {
        deliver_notices(deps, &event, &observation, now, &mut ack).await?;
    }
    Ok(ack)
}

/// The license id for a subscription: derived, so two deliveries racing to create it collide
/// on the store's uniqueness check instead of creating two licenses.
pub fn license_id_for_subscription(stripe_subscription_id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let digest = Sha256::digest(format!("stripe-subscription:{stripe_subscription_id}").as_bytes());
    let mut out = String::from("lic_");
    let (mut acc, mut bits) = (0u32, 0);
    for byte in digest.iter().take(17) {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 && out.len() < 4 + 26 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// What one event says about a subscription, in NLS terms.
#[derive(Debug, Clone)]
struct Observation<'e> {
    subscription_id: Option<&'e str>,
    stripe_customer_id: &'e str,
    email: Option<&'e str>,
    name: Option<&'e str>,
    price_id: Option<&'e str>,
    /// Up to when the customer has paid, per this event. Only ever extends the expiry.
    paid_through: Option<i64>,
    /// The status this event implies; `None` for events that carry no status.
    target: Option<LicenseStatus>,
    /// May this event create the license when none exists yet?
    may_create: bool,
    /// Whether the customer record should be created from this event alone.
    creates_customer: bool,
}

impl<'e> Observation<'e> {
    fn of(event: &'e StripeEvent) -> Option<Self> {
        match &event.kind {
            StripeEventKind::CheckoutCompleted(session) => Self::of_checkout(session),
            StripeEventKind::SubscriptionCreated(sub)
            | StripeEventKind::SubscriptionUpdated(sub)
            | StripeEventKind::TrialWillEnd(sub) => Self::of_subscription(sub, false),
            StripeEventKind::SubscriptionDeleted(sub) => Self::of_subscription(sub, true),
            StripeEventKind::InvoicePaid(invoice) => Self::of_invoice(invoice, true),
            StripeEventKind::InvoicePaymentFailed(invoice) => Self::of_invoice(invoice, false),
            StripeEventKind::Other => None,
        }
    }

    fn of_checkout(session: &'e CheckoutSession) -> Option<Self> {
        if session.mode != "subscription" {
            return None;
        }
        let customer = session.customer.as_ref()?;
        let expanded = session
            .subscription
            .as_ref()
            .and_then(|s| s.object())
            .and_then(|s| Self::of_subscription(s, false));
        let base = Self {
            subscription_id: session.subscription.as_ref().map(|s| s.id()),
            stripe_customer_id: customer.id(),
            email: session.email(),
            name: session.name(),
            price_id: None,
            paid_through: None,
            target: None,
            may_create: false,
            creates_customer: true,
        };
        Some(match expanded {
            Some(sub) => Self {
                email: base.email.or(sub.email),
                name: base.name.or(sub.name),
                creates_customer: true,
                ..sub
            },
            None => base,
        })
    }

    fn of_subscription(sub: &'e Subscription, deleted: bool) -> Option<Self> {
        let target = if deleted {
            LicenseStatus::Expired
        } else {
            match sub.status.as_str() {
                "active" | "trialing" => LicenseStatus::Active,
                "past_due" => LicenseStatus::PastDue,
                "unpaid" | "paused" => LicenseStatus::Suspended,
                "canceled" => LicenseStatus::Expired,
                // `incomplete`: the first payment has not happened; `incomplete_expired`: it
                // never will. No license either way.
                _ => return None,
            }
        };
        let customer = sub.customer.object();
        let paid_through =
            if target == LicenseStatus::Active { sub.period_end() } else { sub.period_start() };
        Some(Self {
            subscription_id: Some(&sub.id),
            stripe_customer_id: sub.customer.id(),
            email: customer.and_then(|c| c.email.as_deref()),
            name: customer.and_then(|c| c.name.as_deref()),
            price_id: sub.price_id(),
            paid_through,
            target: Some(target),
            may_create: true,
            creates_customer: false,
        })
    }

    fn of_invoice(invoice: &'e Invoice, paid: bool) -> Option<Self> {
        // One-off invoices do not concern a license.
        let subscription_id = invoice.subscription_id()?;
        let period = invoice.billed_period();
        Some(Self {
            subscription_id: Some(subscription_id),
            stripe_customer_id: invoice.customer.id(),
            email: invoice.customer_email.as_deref().filter(|e| !e.trim().is_empty()),
            name: invoice.customer_name.as_deref().filter(|n| !n.trim().is_empty()),
            price_id: invoice.price_id(),
            // A paid invoice pays its period; a failed one means the customer paid up to its start.
            paid_through: period.map(|p| if paid { p.end } else { p.start }),
            target: Some(if paid { LicenseStatus::Active } else { LicenseStatus::PastDue }),
            may_create: true,
            creates_customer: false,
        })
    }
}

fn from_unix(secs: i64) -> Option<Timestamp> {
    DateTime::<Utc>::from_timestamp(secs, 0)
}

/// The lifecycle event that moves `from` to `to`, or `None` when there is nothing to do.
fn lifecycle_step(from: LicenseStatus, to: LicenseStatus) -> Option<LifecycleEvent> {
    use LicenseStatus::*;
    match (from, to) {
        // A new failure restarts the payment grace from that failure.
        (PastDue, PastDue) => Some(LifecycleEvent::PaymentFailed),
        (f, t) if f == t => None,
        (_, Active) => Some(LifecycleEvent::PaymentRecovered),
        (_, PastDue) => Some(LifecycleEvent::PaymentFailed),
        (PastDue, Suspended) => Some(LifecycleEvent::GraceEnded),
        (_, Suspended) => Some(LifecycleEvent::BillingSuspend),
        (_, Expired) => Some(LifecycleEvent::Expire),
        (_, Revoked) => Some(LifecycleEvent::Revoke),
    }
}

/// Moves `license` toward `target` through the transition table. A refused move keeps the
/// status and is reported.
fn move_status(
    license: &mut License,
    target: LicenseStatus,
    event_created: i64,
    policy: &BillingPolicy,
    now: Timestamp,
    warnings: &mut Vec<String>,
) {
    let Some(step) = lifecycle_step(license.status, target) else { return };
    match apply_event(license, step, now) {
        Ok(next) => {
            *license = next;
            if license.status == LicenseStatus::PastDue {
                license.grace_ends_at =
                    from_unix(event_created).map(|at| saturating_add(at, policy.payment_grace));
            }
        }
        Err(refused) => warnings.push(format!("license {}: {refused}; status kept", license.id)),
    }
}

fn audit(
    action: &str,
    target: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    now: Timestamp,
) -> Write {
    Write::Audit(AuditEntry {
        id: new_id("aud"),
        at: now,
        actor: STRIPE_ACTOR.to_owned(),
        action: action.to_owned(),
        target,
        before,
        after,
    })
}

fn to_json<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

/// The part of a license the webhook may change, for "did anything change" checks.
fn billing_view(l: &License) -> impl PartialEq + '_ {
    (
        l.status,
        &l.tier,
        &l.features,
        &l.limits,
        l.max_deployments,
        l.expires_at,
        l.grace_ends_at,
        &l.key_id,
        (&l.stripe_price_id, l.billing_event_at),
    )
}

/// One read → decide → commit cycle. `None` when the event concerns no license of ours.
async fn apply_once(
    deps: &BillingDeps<'_>,
    event: &StripeEvent,
    observation: &Observation<'_>,
    now: Timestamp,
    warnings: &mut Vec<String>,
) -> Result<Option<CommitOutcome>, StoreError> {
    let store = deps.store;
    let guard = OnceGuard::WebhookEvent(WebhookEventRecord {
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        received_at: now,
    });
    let existing_license = match observation.subscription_id {
        Some(sub) => store.find_license_by_subscription(sub).await?,
        None => None,
    };
    let plan = observation.price_id.and_then(|p| deps.plans.plan_for_price(p));
    if let (Some(price), None) = (observation.price_id, plan) {
        warnings.push(format!("unknown price {price}: not in the plan catalogue; plan kept"));
    }
    let creating = existing_license.is_none()
        && observation.may_create
        && plan.is_some()
        && observation.paid_through.is_some()
        && observation.target.is_some();
    if existing_license.is_none() && !creating && !observation.creates_customer {
        // Nothing of ours: a subscription on a price outside the catalogue, or an event that
        // cannot start a license. Recorded so a replay is recognized.
        let outcome = store.commit(Some(guard), Vec::new()).await?;
        return Ok(if outcome == CommitOutcome::Duplicate { Some(outcome) } else { None });
    }

    let mut writes = Vec::new();
    let customer = upsert_customer(deps, observation, creating, now, &mut writes).await?;

    match (existing_license, plan) {
        (None, Some(plan)) if creating => {
            let Some(customer) = customer else { return Ok(None) };
            let paid_through = observation.paid_through.and_then(from_unix);
            let terms = LicenseTerms {
                tier: Some(plan.tier.clone()),
                features: plan.features.clone(),
                limits: plan.limits.clone(),
                max_deployments: plan.max_deployments,
                expires_at: paid_through.map(|at| saturating_add(at, deps.policy.period_grace)),
                offline_days: None,
                grace_days: None,
                registry: plan.registry.clone(),
            };
            let mut license = new_license(&customer.id, terms, now);
            license.id = observation.subscription_id.map(license_id_for_subscription).unwrap_or(license.id);
            license.stripe_subscription_id = observation.subscription_id.map(str::to_owned);
            license.stripe_price_id = Some(plan.stripe_price.clone());
            license.cloud = plan.cloud.clone();
            license.billing_event_at = Some(event.created);
            if let Some(target) = observation.target {
                move_status(&mut license, target, event.created, &deps.policy, now, warnings);
            }
            // A new record starts at version 1 whatever moves it took to reach its status.
            license.version = 1;
            writes.push(audit(
                "license.created",
                format!("license:{}", license.id),
                None,
                to_json(&license),
                now,
            ));
            writes.push(Write::CreateLicense(license));
        }
        (Some(current), _) if current.status == LicenseStatus::Revoked => {
            // Revocation is final: Stripe may go on billing, but the license stays as staff left it.
            warnings.push(format!("license {} is revoked; the event changes nothing", current.id));
        }
        (Some(current), _) => {
            let mut next = current.clone();
            if let (Some(paid_through), Some(expires_at)) =
                (observation.paid_through.and_then(from_unix), current.expires_at)
            {
                let candidate = saturating_add(paid_through, deps.policy.period_grace);
                if candidate > expires_at {
                    next.expires_at = Some(candidate);
                }
            }
            let fresh = current.billing_event_at.is_none_or(|at| event.created >= at);
            match observation.target {
                Some(_) if !fresh => warnings.push(format!(
                    "event is older than the license's last billing event ({} < {}); status and plan kept",
                    event.created,
                    current.billing_event_at.unwrap_or_default()
                )),
                Some(target) => move_status(&mut next, target, event.created, &deps.policy, now, warnings),
                // Checkout carries no status or plan, and does not move the ordering clock.
                None => {}
            }
            if observation.target.is_some() && fresh {
                if let Some(plan) = plan {
                    let entitlements_changed = next.tier != plan.tier || next.features != plan.features;
                    next.tier = plan.tier.clone();
                    next.features = plan.features.clone();
                    next.limits = plan.limits.clone();
                    next.max_deployments = plan.max_deployments;
                    next.registry = plan.registry.clone();
                    next.cloud = plan.cloud.clone();
                    next.stripe_price_id = Some(plan.stripe_price.clone());
                    if entitlements_changed {
                        // The key carries tier and features: a new key (emailed after the
                        // commit) keeps an offline install's claims true.
                        next.key_id = new_id("key");
                    }
                }
                next.billing_event_at =
                    Some(current.billing_event_at.map_or(event.created, |at| at.max(event.created)));
            }
            if billing_view(&next) != billing_view(&current) {
                next.version = current.version + 1;
                next.updated_at = now;
                writes.push(audit(
                    &format!("license.stripe.{}", event.event_type),
                    format!("license:{}", current.id),
                    to_json(&current),
                    to_json(&next),
                    now,
                ));
                writes.push(Write::UpdateLicense { license: next, expected_version: current.version });
            }
        }
        _ => {}
    }
    Ok(Some(store.commit(Some(guard), writes).await?))
}

/// Finds the customer by Stripe id, creating it when this event may, and fills in an email or
/// name Stripe now knows and the record lacks. An existing email is never overwritten: staff
/// may have changed it.
async fn upsert_customer(
    deps: &BillingDeps<'_>,
    observation: &Observation<'_>,
    creating_license: bool,
    now: Timestamp,
    writes: &mut Vec<Write>,
) -> Result<Option<Customer>, StoreError> {
    let existing = deps.store.find_customer_by_stripe_id(observation.stripe_customer_id).await?;
    match existing {
        Some(mut customer) => {
            let mut changed = false;
            if customer.email.trim().is_empty() {
                if let Some(email) = observation.email {
                    customer.email = email.to_owned();
                    changed = true;
                }
            }
            if customer.name == observation.stripe_customer_id {
                if let Some(name) = observation.name.or(observation.email) {
                    customer.name = name.to_owned();
                    changed = true;
                }
            }
            if changed {
                customer.updated_at = now;
                writes.push(audit(
                    "customer.stripe_update",
                    format!("customer:{}", customer.id),
                    None,
                    to_json(&customer),
                    now,
                ));
                writes.push(Write::UpdateCustomer(customer.clone()));
            }
            Ok(Some(customer))
        }
        None if creating_license || observation.creates_customer => {
            let customer = Customer {
                id: new_id("cus"),
                // Until Stripe tells a name, the Stripe id is the most useful label for staff.
                name: observation
                    .name
                    .or(observation.email)
                    .unwrap_or(observation.stripe_customer_id)
                    .to_owned(),
                // Subscription events carry no email; checkout or an invoice fills it in.
                email: observation.email.unwrap_or_default().to_owned(),
                stripe_customer_id: Some(observation.stripe_customer_id.to_owned()),
                reminders_opt_out: false,
                created_at: now,
                updated_at: now,
            };
            writes.push(audit(
                "customer.created",
                format!("customer:{}", customer.id),
                None,
                to_json(&customer),
                now,
            ));
            writes.push(Write::CreateCustomer(customer.clone()));
            Ok(Some(customer))
        }
        None => Ok(None),
    }
}

/// Sends what the event calls for, judged on the state after the commit, so a replay after a
/// crash finishes exactly what the first delivery left unsent.
async fn deliver_notices(
    deps: &BillingDeps<'_>,
    event: &StripeEvent,
    observation: &Observation<'_>,
    now: Timestamp,
    ack: &mut WebhookAck,
) -> Result<(), WebhookError> {
    let Some(subscription_id) = observation.subscription_id else { return Ok(()) };
    let Some(license) = deps.store.find_license_by_subscription(subscription_id).await? else {
        return Ok(());
    };
    ack.license_id = Some(license.id.clone());
    let Some(customer) = deps.store.get_customer(&license.customer_id).await? else { return Ok(()) };
    if customer.email.trim().is_empty() {
        return Ok(());
    }
    let usable = matches!(license.status, LicenseStatus::Active | LicenseStatus::PastDue);
    let base = notice_context(&license, &customer);
    let mut notices: Vec<(NoticeKind, String, NoticeContext)> = Vec::new();

    if usable {
        let key = issue_key(deps.key_ring, &license, now)?;
        let context = NoticeContext { license_key: Some(key), ..base.clone() };
        notices.push((NoticeKind::KeyDelivery, license.key_id.clone(), context));
    }
    match &event.kind {
        StripeEventKind::InvoicePaymentFailed(invoice) if license.status == LicenseStatus::PastDue => {
            let context = NoticeContext {
                invoice_id: Some(invoice.id.clone()),
                invoice_url: invoice.hosted_invoice_url.clone(),
                ..base.clone()
            };
            notices.push((NoticeKind::PaymentFailed, invoice.id.clone(), context));
        }
        StripeEventKind::TrialWillEnd(sub) if usable => {
            if let Some(trial_end) = sub.trial_end.and_then(from_unix) {
                let context = NoticeContext {
                    trial_ends_at: Some(email::format_email_date(trial_end)),
                    ..base.clone()
                };
                notices.push((NoticeKind::TrialEnding, expiry_window(Some(trial_end)), context));
            }
        }
        _ => {}
    }
    let stopped = matches!(license.status, LicenseStatus::Suspended | LicenseStatus::Expired);
    if stopped && matches!(observation.target, Some(LicenseStatus::Suspended | LicenseStatus::Expired)) {
        // Same window as the scheduler's suspension notice, so the two never both send.
        notices.push((NoticeKind::SuspensionNotice, expiry_window(license.expires_at), base.clone()));
    }

    let claimant = format!("stripe:{}", event.id);
    for (kind, window, context) in notices {
        let email = email::render_email(kind, &context, &customer.email)?;
        let key =
            NotificationKey { license_id: license.id.clone(), notice: kind.as_str().to_owned(), window };
        let sent = email::send_once(
            deps.store,
            deps.mailer,
            key.clone(),
            &email,
            &claimant,
            now,
            deps.policy.notice_stale_after,
        )
        .await;
        match sent {
            Ok(SendOnce::Sent { .. }) => ack.notices_sent.push(kind.as_str().to_owned()),
            Ok(SendOnce::AlreadySent) => {}
            Ok(SendOnce::HeldByOther) => {
                // Signup sends several events at once and each offers the key email. A claim
                // held by another event's delivery is that delivery's to finish (Stripe
                // redelivers it if it dies); only our own event's claim needs us back.
                if claim_holder(deps, &key).await?.as_deref() == Some(claimant.as_str()) {
                    return Err(WebhookError::NoticeInFlight);
                }
            }
            // A refused address will not get better with retries: acknowledge and report.
            Err(DeliveryError::Mail(MailError::Rejected(reason))) => {
                ack.warnings.push(format!("{} to {} rejected: {reason}", kind.as_str(), customer.email));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Who holds the pending claim on `key`, if anyone.
async fn claim_holder(deps: &BillingDeps<'_>, key: &NotificationKey) -> Result<Option<String>, StoreError> {
    let records = deps.store.list_notifications(&key.license_id).await?;
    Ok(records.into_iter().find(|r| r.key == *key).and_then(|r| match r.state {
        NotificationState::Pending { claimed_by, .. } => Some(claimed_by),
        NotificationState::Sent { .. } => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// axum and lambda_http need `Send` futures.
    #[allow(dead_code)]
    fn the_webhook_future_is_send(deps: &BillingDeps<'_>) {
        fn is_send<T: Send>(_: &T) {}
        is_send(&handle_stripe_webhook(deps, None, &[]));
    }

    #[test]
    fn lifecycle_steps_follow_the_table() {
        use crate::lifecycle::{LifecycleState, SuspensionReason, transition};
        use LicenseStatus::*;
        // The suspensions billing itself makes are billing ones.
        let state_of = |status| LifecycleState::of(status, Some(SuspensionReason::Billing));
        for from in [Active, PastDue, Suspended, Expired] {
            for to in [Active, PastDue, Suspended, Expired] {
                let step = lifecycle_step(from, to);
                match step {
                    None => assert_eq!(from, to, "{from:?} -> {to:?} needs a step"),
                    Some(event) => {
                        let allowed = transition(state_of(from), event);
                        // The only refused steps are those the table forbids on purpose.
                        if let Ok(reached) = allowed {
                            assert_eq!(reached.status(), to, "{from:?} -> {to:?} via {event:?}");
                        } else {
                            assert!(
                                matches!((from, to), (Suspended | Expired, PastDue) | (Expired, Suspended)),
                                "{from:?} -> {to:?}"
                            );
                        }
                    }
                }
            }
        }
        // An admin suspension: no billing step leaves it.
        let admin = LifecycleState::of(Suspended, Some(SuspensionReason::Admin));
        for to in [Active, PastDue, Expired] {
            let event = lifecycle_step(Suspended, to).expect("a step");
            assert!(transition(admin, event).is_err(), "billing moved an admin suspension to {to:?}");
        }
    }
}
