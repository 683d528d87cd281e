//! The function's configuration: read from the environment once, at init. A missing or bad
//! value fails init with a message naming the variable.

use nls_core::renewals::RenewalsConfig;

pub const TABLE_NAME_VAR: &str = "NLS_TABLE_NAME";
pub const SENDER_ADDRESS_VAR: &str = "NLS_SENDER_ADDRESS";
/// Comma-separated days before expiry at which reminders go out (default 30,14,7,1).
pub const REMINDER_DAYS_VAR: &str = "NLS_REMINDER_DAYS";
/// `true` to remind Stripe-billed licenses too (Stripe renews those by itself).
pub const REMIND_SUBSCRIPTIONS_VAR: &str = "NLS_REMIND_SUBSCRIPTIONS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: &'static str },
}

#[derive(Debug, Clone)]
pub struct LambdaRenewalsConfig {
    pub table_name: String,
    pub sender_address: String,
    /// The job's tunables; each invocation sets its own run id.
    pub job: RenewalsConfig,
}

fn required(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ConfigError> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing { name }),
    }
}

impl LambdaRenewalsConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` gives a variable's value; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut job = RenewalsConfig::new("unset");
        if let Some(text) = lookup(REMINDER_DAYS_VAR) {
            let invalid =
                |reason| ConfigError::Invalid { name: REMINDER_DAYS_VAR, value: text.clone(), reason };
            let days = text
                .split(',')
                .map(|day| day.trim().parse::<u32>().map_err(|_| invalid("not a list of whole days")))
                .collect::<Result<Vec<_>, _>>()?;
            if days.is_empty() || days.contains(&0) {
                return Err(invalid("days must be at least 1"));
            }
            job.reminder_days = days;
        }
        if let Some(text) = lookup(REMIND_SUBSCRIPTIONS_VAR) {
            job.remind_subscriptions = match text.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: REMIND_SUBSCRIPTIONS_VAR,
                        value: text,
                        reason: "expected true or false",
                    });
                }
            };
        }
        Ok(Self {
            table_name: required(&lookup, TABLE_NAME_VAR)?,
            sender_address: required(&lookup, SENDER_ADDRESS_VAR)?,
            job,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn check(vars: &[(&str, &str)], expected: Result<(), ConfigError>) {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let got = LambdaRenewalsConfig::from_lookup(|name| map.get(name).cloned()).map(|_| ());
        assert_eq!(got, expected, "{vars:?}");
    }

    #[test]
    fn errors_name_the_variable() {
        let base = [(TABLE_NAME_VAR, "nls"), (SENDER_ADDRESS_VAR, "licenses@nectar.example")];
        check(&base, Ok(()));
        check(&[base[0], base[1], (REMINDER_DAYS_VAR, "14, 3")], Ok(()));
        check(&base[1..], Err(ConfigError::Missing { name: TABLE_NAME_VAR }));
        check(&base[..1], Err(ConfigError::Missing { name: SENDER_ADDRESS_VAR }));
        check(
            &[base[0], base[1], (REMINDER_DAYS_VAR, "7,0")],
            Err(ConfigError::Invalid {
                name: REMINDER_DAYS_VAR,
                value: "7,0".into(),
                reason: "days must be at least 1",
            }),
        );
        check(
            &[base[0], base[1], (REMIND_SUBSCRIPTIONS_VAR, "yes")],
            Err(ConfigError::Invalid {
                name: REMIND_SUBSCRIPTIONS_VAR,
                value: "yes".into(),
                reason: "expected true or false",
            }),
        );
    }
}
