//! The function's configuration: read from the environment once, at init. A missing or bad
//! value fails init with a message naming the variable. No secret lives here: the webhook
//! secret, the signing key and the edges' push token are fetched from Secrets Manager by id.

use chrono::Duration;
use nls_core::billing::{BillingPolicy, PlanCatalogue};
use nls_edge_push::{EdgePushSettings, SettingsError};

pub const TABLE_NAME_VAR: &str = "NLS_TABLE_NAME";
pub const SENDER_ADDRESS_VAR: &str = "NLS_SENDER_ADDRESS";
/// Secrets Manager id of the private Ed25519 JWK that signs the key emailed on checkout.
pub const SIGNING_KEY_SECRET_VAR: &str = "NLS_SIGNING_KEY_SECRET_ID";
/// Secrets Manager id of Stripe's endpoint secret (`whsec_...`).
pub const WEBHOOK_SECRET_VAR: &str = "NLS_STRIPE_WEBHOOK_SECRET_ID";
/// The plan catalogue as JSON text; takes precedence over [`PLANS_FILE_VAR`].
pub const PLANS_VAR: &str = "NLS_PLANS";
/// A file holding the plan catalogue (e.g. packaged next to `bootstrap`).
pub const PLANS_FILE_VAR: &str = "NLS_PLANS_FILE";
pub const TOLERANCE_SECS_VAR: &str = "NLS_STRIPE_TOLERANCE_SECS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("neither {PLANS_VAR} nor {PLANS_FILE_VAR} is set: the plan catalogue is required")]
    NoPlans,
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(transparent)]
    EdgePush(#[from] SettingsError),
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub table_name: String,
    pub sender_address: String,
    pub signing_key_secret_id: String,
    pub webhook_secret_id: String,
    pub plans: PlanCatalogue,
    pub policy: BillingPolicy,
    /// Where status changes are pushed; `None` without `NLS_EDGE_PUSH_URLS`.
    pub edge_push: Option<EdgePushSettings>,
}

fn required(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ConfigError> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing { name }),
    }
}

fn plans(
    lookup: &impl Fn(&str) -> Option<String>,
    read_file: &impl Fn(&str) -> std::io::Result<String>,
) -> Result<PlanCatalogue, ConfigError> {
    let (name, json) = match (lookup(PLANS_VAR).filter(|v| !v.trim().is_empty()), lookup(PLANS_FILE_VAR)) {
        (Some(json), _) => (PLANS_VAR, json),
        (None, Some(path)) if !path.trim().is_empty() => {
            let json = read_file(path.trim()).map_err(|e| ConfigError::Invalid {
                name: PLANS_FILE_VAR,
                reason: format!("reading {}: {e}", path.trim()),
            })?;
            (PLANS_FILE_VAR, json)
        }
        _ => return Err(ConfigError::NoPlans),
    };
    let catalogue =
        PlanCatalogue::parse(&json).map_err(|e| ConfigError::Invalid { name, reason: e.to_string() })?;
    if catalogue.is_empty() {
        // Every checkout would be acknowledged and ignored: surely a deployment mistake.
        return Err(ConfigError::Invalid { name, reason: "the catalogue lists no plans".into() });
    }
    Ok(catalogue)
}

fn tolerance(lookup: &impl Fn(&str) -> Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = lookup(TOLERANCE_SECS_VAR) else { return Ok(default) };
    match text.trim().parse::<u32>() {
        Ok(secs) if secs > 0 => Ok(Duration::seconds(i64::from(secs))),
        _ => Err(ConfigError::Invalid {
            name: TOLERANCE_SECS_VAR,
            reason: format!("{text:?} is not a positive whole number of seconds"),
        }),
    }
}

impl WebhookConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), |path| std::fs::read_to_string(path))
    }

    /// `lookup` gives a variable's value and `read_file` a file's text; tests pass maps.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&str) -> std::io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let defaults = BillingPolicy::default();
        Ok(Self {
            table_name: required(&lookup, TABLE_NAME_VAR)?,
            sender_address: required(&lookup, SENDER_ADDRESS_VAR)?,
            signing_key_secret_id: required(&lookup, SIGNING_KEY_SECRET_VAR)?,
            webhook_secret_id: required(&lookup, WEBHOOK_SECRET_VAR)?,
            plans: plans(&lookup, &read_file)?,
            policy: BillingPolicy {
                signature_tolerance: tolerance(&lookup, defaults.signature_tolerance)?,
                ..defaults
            },
            edge_push: EdgePushSettings::from_lookup(&lookup)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PLANS: &str = r#"{"plans":[{"stripe_price":"price_1","tier":"pro"}]}"#;

    fn check(vars: &[(&str, &str)], expected: Result<(), ConfigError>) {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let read_file = |path: &str| match path {
            "/var/task/plans.json" => Ok(PLANS.to_owned()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
        };
        let got = WebhookConfig::from_lookup(|name| map.get(name).cloned(), read_file).map(|_| ());
        assert_eq!(got, expected, "{vars:?}");
    }

    #[test]
    fn errors_name_the_variable() {
        let base = [
            (TABLE_NAME_VAR, "nls"),
            (SENDER_ADDRESS_VAR, "licenses@nectar.example"),
            (SIGNING_KEY_SECRET_VAR, "nls/signing-key"),
            (WEBHOOK_SECRET_VAR, "nls/stripe-webhook-secret"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| [&base[..], extra].concat();
        check(&with(&[(PLANS_VAR, PLANS)]), Ok(()));
        check(&with(&[(PLANS_FILE_VAR, "/var/task/plans.json")]), Ok(()));
        check(&base, Err(ConfigError::NoPlans));
        check(&base[1..], Err(ConfigError::Missing { name: TABLE_NAME_VAR }));
        check(&base[..3], Err(ConfigError::Missing { name: WEBHOOK_SECRET_VAR }));
        let bad_json = WebhookConfig::from_lookup(
            |name| with(&[(PLANS_VAR, "{")]).iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()),
            |_| Ok(String::new()),
        );
        assert!(matches!(bad_json, Err(ConfigError::Invalid { name: PLANS_VAR, .. })), "{bad_json:?}");
        check(
            &with(&[(PLANS_VAR, r#"{"plans":[]}"#)]),
            Err(ConfigError::Invalid { name: PLANS_VAR, reason: "the catalogue lists no plans".into() }),
        );
        let missing_file = WebhookConfig::from_lookup(
            |name| {
                (name == PLANS_FILE_VAR)
                    .then(|| "/nowhere.json".to_owned())
                    .or_else(|| base.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
            },
            |_| Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
        );
        assert!(
            matches!(missing_file, Err(ConfigError::Invalid { name: PLANS_FILE_VAR, .. })),
            "{missing_file:?}"
        );
        check(
            &with(&[(PLANS_VAR, PLANS), (TOLERANCE_SECS_VAR, "soon")]),
            Err(ConfigError::Invalid {
                name: TOLERANCE_SECS_VAR,
                reason: "\"soon\" is not a positive whole number of seconds".into(),
            }),
        );
        check(
            &with(&[(PLANS_VAR, PLANS), ("NLS_EDGE_PUSH_URLS", "https://edge.example")]),
            Err(ConfigError::EdgePush(SettingsError::NoTokenSecret)),
        );
        assert!(ConfigError::Missing { name: TABLE_NAME_VAR }.to_string().contains("NLS_TABLE_NAME"));
    }
}
