//! How a server answer is classified, once for both clients.
//!
//! - A well-formed `valid` answer that is not `degraded` and carries a receipt that verifies
//!   against the pinned keys is **good**: the receipt becomes the new proof.
//! - A well-formed answer with a definite code (`REVOKED`, `SUSPENDED`, `EXPIRED`, ...) is a
//!   **refusal**: fail closed now.
//! - Everything else is **offline**: no answer, 5xx, 429, `degraded: true`, an unreadable
//!   body, or a "valid" answer whose receipt does not verify (which is what a spoofed server
//!   would send). Offline never ends the license by itself; the timeline does.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nls_core::validation::MetricUsage;
use serde::{Deserialize, Serialize};

use crate::fleet_usage::FleetView;

use crate::license_state::{InvalidCode, Timestamp};
use crate::state_machine::LicenseMachine;

#[derive(Debug, Deserialize)]
struct AnswerWire {
    code: String,
    valid: bool,
    #[serde(default)]
    warning: Option<String>,
    #[serde(default)]
    license: Option<LicenseWire>,
    #[serde(default)]
    next_check_in: Option<DateTime<Utc>>,
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    degraded: bool,
    #[serde(default)]
    usage: Option<BTreeMap<String, MetricUsageWire>>,
}

#[derive(Debug, Deserialize)]
struct MetricUsageWire {
    used: u64,
    limit: u64,
    period: String,
    as_of: DateTime<Utc>,
}

/// The answer's fleet view: every entry comes from one snapshot, so one `as_of`.
fn answer_view(usage: BTreeMap<String, MetricUsageWire>) -> Option<FleetView> {
    let as_of = usage.values().map(|m| m.as_of.timestamp()).min()?;
    let metrics = usage
        .into_iter()
        .map(|(metric, m)| (metric, MetricUsage { used: m.used, limit: m.limit, period: m.period }))
        .collect();
    Some(FleetView { as_of, metrics })
}

#[derive(Debug, Deserialize)]
struct LicenseWire {
    #[serde(default)]
    grace_ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct ErrorWire {
    error: ErrorDetailWire,
}

#[derive(Debug, Deserialize)]
struct ErrorDetailWire {
    code: String,
}

/// What one validation attempt amounted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AnswerOutcome {
    Good { next_check_in: Option<Timestamp>, warning: Option<String> },
    Refused { code: InvalidCode, reason: String, next_check_in: Option<Timestamp> },
    Offline { why: String },
}

impl LicenseMachine {
    /// Applies the HTTP status and body of `POST /v1/licenses/validate`.
    pub fn apply_validation_response(&mut self, status: u16, body: &str, now: Timestamp) -> AnswerOutcome {
        let outcome = classify(self, status, body, now);
        match &outcome {
            AnswerOutcome::Good { .. } => {}
            AnswerOutcome::Refused { code, reason, .. } => self.record_refusal(*code, reason, now),
            AnswerOutcome::Offline { why } => self.record_unreachable(why, now),
        }
        outcome
    }
}

fn classify(machine: &mut LicenseMachine, status: u16, body: &str, now: Timestamp) -> AnswerOutcome {
    let offline = |why: String| AnswerOutcome::Offline { why };
    if !(200..300).contains(&status) {
        let code = serde_json::from_str::<ErrorWire>(body).map(|e| e.error.code).unwrap_or_default();
        return offline(format!("HTTP {status} {code}").trim_end().to_owned());
    }
    let answer: AnswerWire = match serde_json::from_str(body) {
        Ok(a) => a,
        Err(e) => return offline(format!("unreadable answer: {e}")),
    };
    if answer.degraded {
        return offline(format!("the server is degraded (answered {} from the key alone)", answer.code));
    }
    if answer.valid {
        let Some(receipt) = answer.receipt.as_deref() else {
            return offline("a valid answer without a receipt".to_owned());
        };
        let grace_end = answer.license.as_ref().and_then(|l| l.grace_ends_at);
        return match machine.record_good(receipt, grace_end, now) {
            Ok(()) => {
                // Only beside a receipt that verified: the answer's usage is then the server's.
                if let Some(view) = answer.usage.and_then(answer_view) {
                    machine.usage_mut().observe(view);
                }
                AnswerOutcome::Good { next_check_in: answer.next_check_in, warning: answer.warning }
            }
            Err(e) => offline(format!("the answer's receipt is rejected ({e})")),
        };
    }
    match InvalidCode::from_server_code(&answer.code) {
        Some(code) => AnswerOutcome::Refused {
            code,
            reason: answer.warning.unwrap_or_else(|| format!("the server answered {}", answer.code)),
            next_check_in: answer.next_check_in,
        },
        None => offline(format!("unexpected answer code {}", answer.code)),
    }
}

/// Whether a heartbeat answer means "validate again now" (the seat is gone, or the license
/// changed). Heartbeat answers are not signed, so they never change the state directly.
pub fn heartbeat_needs_validation(status: u16, body: &str) -> bool {
    if status == 409 {
        return true; // deployment_not_active: the lease ran out; validating re-activates it
    }
    if !(200..300).contains(&status) {
        return false;
    }
    #[derive(Deserialize)]
    struct Beat {
        valid: bool,
    }
    serde_json::from_str::<Beat>(body).is_ok_and(|b| !b.valid)
}
