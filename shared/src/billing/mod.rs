//! Billing: a license follows its Stripe subscription.
//!
//! [`handle_stripe_webhook`] is the one entry point: it checks the signature on the raw body,
//! parses the event, applies its effect and records the event id in one unit of work, then
//! sends the customer emails the event calls for, each once. See docs/billing.md for the event
//! → effect table and the ordering rules.

pub mod plans;
pub mod stripe_events;
pub mod stripe_signature;
mod stripe_webhook;

#[cfg(feature = "conformance")]
pub mod scenarios;

pub use plans::{Plan, PlanCatalogue, PlanCatalogueError};
pub use stripe_webhook::{
    BillingDeps, BillingPolicy, WebhookAck, WebhookError, WebhookOutcome, handle_stripe_webhook,
    license_id_for_subscription,
};

/// The audit actor of every change the webhook makes.
pub const STRIPE_ACTOR: &str = "stripe";
