//! Wire types for the Stripe events NLS acts on, shaped like Stripe's API objects. Only the
//! fields NLS reads are declared; every other field is ignored, so new API versions that add
//! fields keep parsing. Both the pre-2025 layout (`invoice.subscription`,
//! `subscription.current_period_end`) and the newer one (`invoice.parent.subscription_details`,
//! `items.data[].current_period_end`) are read.
//!
//! Parse only after [`super::stripe_signature::verify_stripe_signature`] passed.

use serde::Deserialize;

/// A field Stripe sends either as an id or, when expanded, as the object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

pub trait HasId {
    fn id(&self) -> &str;
}

impl<T: HasId> Expandable<T> {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Object(object) => object.id(),
        }
    }
    pub fn object(&self) -> Option<&T> {
        match self {
            Self::Id(_) => None,
            Self::Object(object) => Some(object),
        }
    }
}

/// The event envelope. `data.object` is kept raw until the type is known.
#[derive(Debug, Clone, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds at which Stripe created the event: the order of a subscription's history.
    pub created: i64,
    #[serde(default)]
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StripeCustomer {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl HasId for StripeCustomer {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Price {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub price: Option<Price>,
    /// Since API version 2025-03-31 the period lives on the item.
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self { data: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable<StripeCustomer>,
    /// `active`, `trialing`, `past_due`, `unpaid`, `canceled`, `incomplete`,
    /// `incomplete_expired` or `paused`.
    pub status: String,
    #[serde(default)]
    pub items: List<SubscriptionItem>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default)]
    pub created: Option<i64>,
}

impl HasId for Subscription {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Subscription {
    /// The price of the first item that has one (NLS sells one plan per subscription).
    pub fn price_id(&self) -> Option<&str> {
        self.items.data.iter().find_map(|item| item.price.as_ref()).map(|p| p.id.as_str())
    }
    pub fn period_start(&self) -> Option<i64> {
        self.current_period_start
            .or_else(|| self.items.data.iter().filter_map(|i| i.current_period_start).min())
    }
    pub fn period_end(&self) -> Option<i64> {
        self.current_period_end.or_else(|| self.items.data.iter().filter_map(|i| i.current_period_end).max())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// `payment`, `setup` or `subscription`; only `subscription` concerns NLS.
    pub mode: String,
    #[serde(default)]
    pub customer: Option<Expandable<StripeCustomer>>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub subscription: Option<Expandable<Subscription>>,
}

impl CheckoutSession {
    pub fn email(&self) -> Option<&str> {
        let from_details = self.customer_details.as_ref().and_then(|d| d.email.as_deref());
        let from_customer = self.customer.as_ref().and_then(|c| c.object()).and_then(|c| c.email.as_deref());
        from_details.or(self.customer_email.as_deref()).or(from_customer).filter(|e| !e.trim().is_empty())
    }
    pub fn name(&self) -> Option<&str> {
        let from_details = self.customer_details.as_ref().and_then(|d| d.name.as_deref());
        let from_customer = self.customer.as_ref().and_then(|c| c.object()).and_then(|c| c.name.as_deref());
        from_details.or(from_customer).filter(|n| !n.trim().is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// Since 2025-03-31 a line's price sits under `pricing.price_details`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LinePricing {
    #[serde(default)]
    pub price_details: Option<PriceDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PriceDetails {
    pub price: Expandable<Price>,
}

impl HasId for Price {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceLine {
    pub period: Period,
    #[serde(default)]
    pub price: Option<Price>,
    #[serde(default)]
    pub pricing: Option<LinePricing>,
}

impl InvoiceLine {
    pub fn price_id(&self) -> Option<&str> {
        self.price
            .as_ref()
            .map(|p| p.id.as_str())
            .or_else(|| self.pricing.as_ref().and_then(|p| p.price_details.as_ref()).map(|d| d.price.id()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<Expandable<Subscription>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub customer: Expandable<StripeCustomer>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub customer_name: Option<String>,
    /// Before API version 2025-03-31.
    #[serde(default)]
    pub subscription: Option<Expandable<Subscription>>,
    /// Since API version 2025-03-31.
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    #[serde(default)]
    pub lines: List<InvoiceLine>,
    #[serde(default)]
    pub attempt_count: Option<u32>,
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
}

impl Invoice {
    pub fn subscription_id(&self) -> Option<&str> {
        let from_parent = || {
            self.parent
                .as_ref()
                .and_then(|p| p.subscription_details.as_ref())
                .and_then(|d| d.subscription.as_ref())
        };
        self.subscription.as_ref().or_else(from_parent).map(Expandable::id)
    }
    /// The lines that bill a subscription period with a price.
    fn priced_lines(&self) -> impl Iterator<Item = &InvoiceLine> {
        self.lines.data.iter().filter(|l| l.price_id().is_some())
    }
    /// The price of the latest period billed.
    pub fn price_id(&self) -> Option<&str> {
        self.priced_lines().max_by_key(|l| l.period.end).and_then(InvoiceLine::price_id)
    }
    /// The start and end of the subscription period this invoice bills.
    pub fn billed_period(&self) -> Option<Period> {
        let start = self.priced_lines().map(|l| l.period.start).min()?;
        let end = self.priced_lines().map(|l| l.period.end).max()?;
        Some(Period { start, end })
    }
}

/// A verified event, typed by what NLS does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeEventKind {
    CheckoutCompleted(CheckoutSession),
    SubscriptionCreated(Subscription),
    SubscriptionUpdated(Subscription),
    SubscriptionDeleted(Subscription),
    TrialWillEnd(Subscription),
    InvoicePaid(Invoice),
    InvoicePaymentFailed(Invoice),
    /// Acknowledged and ignored.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub kind: StripeEventKind,
}

#[derive(Debug, thiserror::Error)]
#[error("the event payload is not a Stripe event of the expected shape: {0}")]
pub struct PayloadError(#[from] pub serde_json::Error);

impl PayloadError {
    /// A payload that parsed but holds a value NLS cannot use.
    pub fn custom(why: &str) -> Self {
        Self(<serde_json::Error as serde::de::Error>::custom(why))
    }
}

/// Parses a verified body. An event of a type NLS does not handle parses as
/// [`StripeEventKind::Other`] whatever its object looks like.
pub fn parse_event(raw_body: &[u8]) -> Result<StripeEvent, PayloadError> {
    let envelope: EventEnvelope = serde_json::from_slice(raw_body)?;
    let object = envelope.data.object;
    let kind = match envelope.event_type.as_str() {
        "checkout.session.completed" => StripeEventKind::CheckoutCompleted(serde_json::from_value(object)?),
        "customer.subscription.created" => {
            StripeEventKind::SubscriptionCreated(serde_json::from_value(object)?)
        }
        "customer.subscription.updated" => {
            StripeEventKind::SubscriptionUpdated(serde_json::from_value(object)?)
        }
        "customer.subscription.deleted" => {
            StripeEventKind::SubscriptionDeleted(serde_json::from_value(object)?)
        }
        "customer.subscription.trial_will_end" => {
            StripeEventKind::TrialWillEnd(serde_json::from_value(object)?)
        }
        "invoice.paid" => StripeEventKind::InvoicePaid(serde_json::from_value(object)?),
        "invoice.payment_failed" => StripeEventKind::InvoicePaymentFailed(serde_json::from_value(object)?),
        _ => StripeEventKind::Other,
    };
    Ok(StripeEvent {
        id: envelope.id,
        event_type: envelope.event_type,
        created: envelope.created,
        livemode: envelope.livemode,
        kind,
    })
}
