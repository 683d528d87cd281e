//! The license state machine: one table of allowed moves. Every status change, whether from an
//! admin, Stripe or the scheduler, goes through [`transition`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
    /// Payment failed; valid as `IN_GRACE` until `grace_ends_at`.
    PastDue,
    Suspended,
    Expired,
    /// Terminal.
    Revoked,
}

impl LicenseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::PastDue, Self::Suspended, Self::Expired, Self::Revoked]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    Suspend,
    Reactivate,
    /// Expiry extended (admin renew or invoice paid).
    Renew,
    Revoke,
    PaymentFailed,
    PaymentRecovered,
    /// The subscription ended, or the expiry (and its grace) passed.
    Expire,
    /// A `past_due` license ran out of payment grace.
    GraceEnded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} license cannot take {event:?}")]
pub struct TransitionRefused {
    pub from: LicenseStatus,
    pub event: LifecycleEvent,
}

use LicenseStatus::*;
use LifecycleEvent::*;

/// Every allowed move. Anything not listed is refused.
pub const TRANSITIONS: &[(LicenseStatus, LifecycleEvent, LicenseStatus)] = &[
    (Active, Suspend, Suspended),
    (Active, Renew, Active),
    (Active, Revoke, Revoked),
    (Active, PaymentFailed, PastDue),
    (Active, PaymentRecovered, Active),
    (Active, Expire, Expired),
    (PastDue, Suspend, Suspended),
    (PastDue, Renew, Active),
    (PastDue, Revoke, Revoked),
    (PastDue, PaymentFailed, PastDue),
    (PastDue, PaymentRecovered, Active),
    (PastDue, Expire, Expired),
    (PastDue, GraceEnded, Suspended),
    (Suspended, Reactivate, Active),
    (Suspended, Renew, Suspended),
    (Suspended, Revoke, Revoked),
    (Suspended, PaymentRecovered, Active),
    (Suspended, Expire, Expired),
    (Expired, Renew, Active),
    (Expired, PaymentRecovered, Active),
    (Expired, Revoke, Revoked),
];

pub fn transition(from: LicenseStatus, event: LifecycleEvent) -> Result<LicenseStatus, TransitionRefused> {
    TRANSITIONS
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(TransitionRefused { from, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATUSES: [LicenseStatus; 5] = [Active, PastDue, Suspended, Expired, Revoked];
    const ALL_EVENTS: [LifecycleEvent; 8] =
        [Suspend, Reactivate, Renew, Revoke, PaymentFailed, PaymentRecovered, Expire, GraceEnded];

    fn check(from: LicenseStatus, event: LifecycleEvent, expected: Option<LicenseStatus>) {
        assert_eq!(transition(from, event).ok(), expected, "{from:?} + {event:?}");
    }

    #[test]
    fn the_table_answers_every_pair() {
        check(Active, Suspend, Some(Suspended));
        check(Suspended, Reactivate, Some(Active));
        check(Active, Reactivate, None);
        check(PastDue, PaymentRecovered, Some(Active));
        check(PastDue, GraceEnded, Some(Suspended));
        check(Active, GraceEnded, None);
        check(Expired, Renew, Some(Active));
        check(Expired, Suspend, None);
        check(Suspended, Renew, Some(Suspended));
        for event in ALL_EVENTS {
            check(Revoked, event, None);
        }
        for status in ALL_STATUSES {
            let expected = if status == Revoked { None } else { Some(Revoked) };
            check(status, Revoke, expected);
        }
    }

    #[test]
    fn no_pair_is_listed_twice() {
        for (i, (f, e, _)) in TRANSITIONS.iter().enumerate() {
            assert!(!TRANSITIONS[..i].iter().any(|(f2, e2, _)| f2 == f && e2 == e), "{f:?} {e:?}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in ALL_STATUSES {
            assert_eq!(LicenseStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
