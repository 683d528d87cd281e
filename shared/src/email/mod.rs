//! Customer emails: the templates (HTML and text, rendered with minijinja) and [`send_once`],
//! the claim → send → mark protocol that makes each notice go out once.

mod notice_delivery;

pub use notice_delivery::{DeliveryError, SendOnce, send_once};

use std::sync::OnceLock;

use minijinja::Environment;
use serde::Serialize;

use chrono::SecondsFormat;

use crate::model::{Customer, License, Timestamp};
use crate::ports::OutgoingEmail;

/// Every email NLS sends. The name is also the `notice` part of its [`crate::model::NotificationKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    KeyDelivery,
    RenewalReminder,
    ExpiryWarning,
    PaymentFailed,
    SuspensionNotice,
    TrialEnding,
}

impl NoticeKind {
    pub const ALL: [Self; 6] = [
        Self::KeyDelivery,
        Self::RenewalReminder,
        Self::ExpiryWarning,
        Self::PaymentFailed,
        Self::SuspensionNotice,
        Self::TrialEnding,
    ];

    /// Also the template's file stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyDelivery => "key_delivery",
            Self::RenewalReminder => "renewal_reminder",
            Self::ExpiryWarning => "expiry_warning",
            Self::PaymentFailed => "payment_failed",
            Self::SuspensionNotice => "suspension_notice",
            Self::TrialEnding => "trial_ending",
        }
    }

    fn subject_template(self) -> &'static str {
        match self {
            Self::KeyDelivery => "Your {{ product }} license key ({{ tier }})",
            Self::RenewalReminder => {
                "Your {{ product }} license expires in {{ days_left }} day{% if days_left != 1 %}s{% endif %}"
            }
            Self::ExpiryWarning => {
                "Your {{ product }} license has expired: grace period until {{ grace_ends_at }}"
            }
            Self::PaymentFailed => "Payment failed for your {{ product }} subscription",
            Self::SuspensionNotice => "Your {{ product }} license is {{ status }}",
            Self::TrialEnding => "Your {{ product }} trial ends on {{ trial_ends_at }}",
        }
    }
}

/// Everything a template may show. Fields a notice does not use stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoticeContext {
    pub product: String,
    pub customer_name: String,
    pub license_id: String,
    pub tier: String,
    pub status: String,
    pub features: Vec<String>,
    /// Only in the key delivery email.
    pub license_key: Option<String>,
    pub expires_at: Option<String>,
    pub grace_ends_at: Option<String>,
    pub days_left: Option<i64>,
    pub invoice_id: Option<String>,
    pub invoice_url: Option<String>,
    pub trial_ends_at: Option<String>,
    pub opt_out_hint: bool,
}

pub const PRODUCT_NAME: &str = "Nectar";

/// How dates appear in emails: unambiguous, UTC, to the minute.
pub fn format_email_date(at: Timestamp) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The window of notices about one expiry: the expiry instant itself, so a renewal (a new
/// expiry) opens new windows. Shared by the webhook and the scheduler so that their
/// suspension notices for one expiry are one notice.
pub fn expiry_window(expires_at: Option<Timestamp>) -> String {
    expires_at.map_or_else(|| "perpetual".to_owned(), |at| at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The facts every notice about `license` shows.
pub fn notice_context(license: &License, customer: &Customer) -> NoticeContext {
    NoticeContext {
        product: PRODUCT_NAME.to_owned(),
        customer_name: customer.name.clone(),
        license_id: license.id.clone(),
        tier: license.tier.clone(),
        status: license.status.as_str().to_owned(),
        features: license.features.clone(),
        expires_at: license.expires_at.map(format_email_date),
        grace_ends_at: license.grace_ends_at.map(format_email_date),
        ..NoticeContext::default()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rendering the {notice} email failed: {source}")]
pub struct RenderError {
    pub notice: &'static str,
    #[source]
    pub source: minijinja::Error,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("key_delivery.html", include_str!("templates/key_delivery.html")),
    ("key_delivery.txt", include_str!("templates/key_delivery.txt")),
    ("renewal_reminder.html", include_str!("templates/renewal_reminder.html")),
    ("renewal_reminder.txt", include_str!("templates/renewal_reminder.txt")),
    ("expiry_warning.html", include_str!("templates/expiry_warning.html")),
    ("expiry_warning.txt", include_str!("templates/expiry_warning.txt")),
    ("payment_failed.html", include_str!("templates/payment_failed.html")),
    ("payment_failed.txt", include_str!("templates/payment_failed.txt")),
    ("suspension_notice.html", include_str!("templates/suspension_notice.html")),
    ("suspension_notice.txt", include_str!("templates/suspension_notice.txt")),
    ("trial_ending.html", include_str!("templates/trial_ending.html")),
    ("trial_ending.txt", include_str!("templates/trial_ending.txt")),
];

/// The templates, parsed once. `.html` templates auto-escape every value (minijinja's default
/// for that extension); `.txt` ones and subjects do not.
fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are compiled into the binary and covered by tests, so a parse
            // failure is a build defect, not a runtime condition.
            env.add_template(name, source).expect("embedded email templates parse");
        }
        for kind in NoticeKind::ALL {
            let name: &'static str = match kind {
                NoticeKind::KeyDelivery => "key_delivery.subject",
                NoticeKind::RenewalReminder => "renewal_reminder.subject",
                NoticeKind::ExpiryWarning => "expiry_warning.subject",
                NoticeKind::PaymentFailed => "payment_failed.subject",
                NoticeKind::SuspensionNotice => "suspension_notice.subject",
                NoticeKind::TrialEnding => "trial_ending.subject",
            };
            env.add_template(name, kind.subject_template()).expect("embedded subject templates parse");
        }
        env
    })
}

/// Renders `kind` for `to`: subject, text and HTML.
pub fn render_email(
    kind: NoticeKind,
    context: &NoticeContext,
    to: &str,
) -> Result<OutgoingEmail, RenderError> {
    let env = environment();
    let render = |suffix: &str| -> Result<String, RenderError> {
        let name = format!("{}.{suffix}", kind.as_str());
        env.get_template(&name)
            .and_then(|t| t.render(context))
            .map_err(|source| RenderError { notice: kind.as_str(), source })
    };
    let subject = render("subject")?;
    Ok(OutgoingEmail {
        to: to.to_owned(),
        // A subject is one line, whatever a value held.
        subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
        text_body: render("txt")?,
        html_body: render("html")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> NoticeContext {
        NoticeContext {
            product: PRODUCT_NAME.to_owned(),
            customer_name: "Ada <Lovelace> & Co".to_owned(),
            license_id: "lic_123".to_owned(),
            tier: "pro".to_owned(),
            status: "suspended".to_owned(),
            features: vec!["sso".to_owned(), "audit".to_owned()],
            license_key: Some("NLS-abc.def.ghi-0123abcd".to_owned()),
            expires_at: Some("2026-12-31 00:00 UTC".to_owned()),
            grace_ends_at: Some("2027-01-07 00:00 UTC".to_owned()),
            days_left: Some(1),
            invoice_id: Some("in_42".to_owned()),
            invoice_url: Some("https://invoice.stripe.com/i/in_42".to_owned()),
            trial_ends_at: Some("2026-12-01 00:00 UTC".to_owned()),
            opt_out_hint: true,
        }
    }

    #[test]
    fn every_notice_renders_text_and_html() {
        for kind in NoticeKind::ALL {
            let email = render_email(kind, &context(), "ada@example.com").expect("renders");
            assert_eq!(email.to, "ada@example.com");
            assert!(email.subject.contains("Nectar"), "{kind:?}: {}", email.subject);
            assert!(!email.subject.contains('\n'));
            assert!(email.text_body.contains("Ada <Lovelace> & Co"), "{kind:?} text is not escaped");
            assert!(email.html_body.contains("Ada &lt;Lovelace&gt; &amp; Co"), "{kind:?} html is escaped");
            assert!(email.html_body.starts_with("<!DOCTYPE html>"), "{kind:?} uses the layout");
            assert!(email.text_body.contains("lic_123"));
        }
    }

    #[test]
    fn notices_show_their_own_facts() {
        let c = context();
        let key = render_email(NoticeKind::KeyDelivery, &c, "a@x").expect("renders");
        assert!(key.text_body.contains("NLS-abc.def.ghi-0123abcd"));
        assert!(key.html_body.contains("sso, audit"));
        let reminder = render_email(NoticeKind::RenewalReminder, &c, "a@x").expect("renders");
        assert_eq!(reminder.subject, "Your Nectar license expires in 1 day");
        let failed = render_email(NoticeKind::PaymentFailed, &c, "a@x").expect("renders");
        assert!(failed.text_body.contains("in_42") && failed.text_body.contains("2027-01-07"));
        let perpetual = NoticeContext { expires_at: None, ..c };
        let key = render_email(NoticeKind::KeyDelivery, &perpetual, "a@x").expect("renders");
        assert!(key.text_body.contains("does not expire"));
    }
}
