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

/// Who suspended a license. Staff suspend for abuse or fraud; billing suspends for unpaid
/// subscriptions. Only a billing suspension may be lifted by a billing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionReason {
    Admin,
    Billing,
}

impl SuspensionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Billing => "billing",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Admin, Self::Billing].into_iter().find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleEvent {
    /// Staff suspend the license (admin API, portal).
    Suspend,
    /// Staff lift a suspension, whoever made it.
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
    /// Billing stops the subscription without a payment grace (Stripe `unpaid`, `paused`).
    BillingSuspend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} license cannot take {event:?}")]
pub struct TransitionRefused {
    pub from: LicenseStatus,
    pub event: LifecycleEvent,
}

/// A license's place in the lifecycle: its status and, while suspended, who suspended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleState {
    Active,
    PastDue,
    Suspended(SuspensionReason),
    Expired,
    Revoked,
}

impl LifecycleState {
    /// A stored status and reason. A suspension with no recorded reason (stored before reasons
    /// were kept) counts as an admin one: billing must not lift what staff may have imposed.
    pub fn of(status: LicenseStatus, reason: Option<SuspensionReason>) -> Self {
        match status {
            LicenseStatus::Active => Self::Active,
            LicenseStatus::PastDue => Self::PastDue,
            LicenseStatus::Suspended => Self::Suspended(reason.unwrap_or(SuspensionReason::Admin)),
            LicenseStatus::Expired => Self::Expired,
            LicenseStatus::Revoked => Self::Revoked,
        }
    }
    pub fn status(self) -> LicenseStatus {
        match self {
            Self::Active => LicenseStatus::Active,
            Self::PastDue => LicenseStatus::PastDue,
            Self::Suspended(_) => LicenseStatus::Suspended,
            Self::Expired => LicenseStatus::Expired,
            Self::Revoked => LicenseStatus::Revoked,
        }
    }
    pub fn suspension_reason(self) -> Option<SuspensionReason> {
        match self {
            Self::Suspended(reason) => Some(reason),
            _ => None,
        }
    }
}

use LifecycleEvent::*;
use LifecycleState::*;
use SuspensionReason::{Admin, Billing};

/// Every allowed move. Anything not listed is refused. An admin suspension ends only by an
/// admin (`Reactivate`) or `Revoke`: no billing event and no expiry moves it, so a payment or
/// a lapsed subscription never brings back a license staff stopped.
pub const TRANSITIONS: &[(LifecycleState, LifecycleEvent, LifecycleState)] = &[
    (Active, Suspend, Suspended(Admin)),
    (Active, BillingSuspend, Suspended(Billing)),
    (Active, Renew, Active),
    (Active, Revoke, Revoked),
    (Active, PaymentFailed, PastDue),
    (Active, PaymentRecovered, Active),
    (Active, Expire, Expired),
    (PastDue, Suspend, Suspended(Admin)),
    (PastDue, BillingSuspend, Suspended(Billing)),
    (PastDue, Renew, Active),
    (PastDue, Revoke, Revoked),
    (PastDue, PaymentFailed, PastDue),
    (PastDue, PaymentRecovered, Active),
    (PastDue, Expire, Expired),
    (PastDue, GraceEnded, Suspended(Billing)),
    (Suspended(Admin), Reactivate, Active),
    (Suspended(Admin), Renew, Suspended(Admin)),
    (Suspended(Admin), Revoke, Revoked),
    (Suspended(Billing), Suspend, Suspended(Admin)),
    (Suspended(Billing), Reactivate, Active),
    (Suspended(Billing), Renew, Suspended(Billing)),
    (Suspended(Billing), Revoke, Revoked),
    (Suspended(Billing), PaymentRecovered, Active),
    (Suspended(Billing), Expire, Expired),
    (Expired, Renew, Active),
    (Expired, PaymentRecovered, Active),
    (Expired, Revoke, Revoked),
];

pub fn transition(from: LifecycleState, event: LifecycleEvent) -> Result<LifecycleState, TransitionRefused> {
    TRANSITIONS
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(TransitionRefused { from: from.status(), event })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [LifecycleState; 6] =
        [Active, PastDue, Suspended(Admin), Suspended(Billing), Expired, Revoked];
    const ALL_EVENTS: [LifecycleEvent; 9] = [
        Suspend,
        Reactivate,
        Renew,
        Revoke,
        PaymentFailed,
        PaymentRecovered,
        Expire,
        GraceEnded,
        BillingSuspend,
    ];
    /// What billing may send: none of these may lift or move an admin suspension.
    const BILLING_EVENTS: [LifecycleEvent; 6] =
        [PaymentFailed, PaymentRecovered, Expire, GraceEnded, BillingSuspend, Renew];

    fn check(from: LifecycleState, event: LifecycleEvent, expected: Option<LifecycleState>) {
        assert_eq!(transition(from, event).ok(), expected, "{from:?} + {event:?}");
    }

    #[test]
    fn the_table_answers_every_pair() {
        check(Active, Suspend, Some(Suspended(Admin)));
        check(Suspended(Admin), Reactivate, Some(Active));
        check(Suspended(Billing), Reactivate, Some(Active));
        check(Active, Reactivate, None);
        check(PastDue, PaymentRecovered, Some(Active));
        check(PastDue, GraceEnded, Some(Suspended(Billing)));
        check(Active, BillingSuspend, Some(Suspended(Billing)));
        check(Active, GraceEnded, None);
        check(Expired, Renew, Some(Active));
        check(Expired, Suspend, None);
        check(Suspended(Admin), Renew, Some(Suspended(Admin)));
        check(Suspended(Billing), PaymentRecovered, Some(Active));
        check(Suspended(Billing), Suspend, Some(Suspended(Admin)));
        for event in ALL_EVENTS {
            check(Revoked, event, None);
        }
        for state in ALL_STATES {
            let expected = if state == Revoked { None } else { Some(Revoked) };
            check(state, Revoke, expected);
        }
    }

    /// Issue 19 item 4: `invoice.paid` or a plan change in the Stripe portal lifted a
    /// suspension staff imposed for abuse.
    #[test]
    fn billing_events_never_move_an_admin_suspension() {
        for event in BILLING_EVENTS {
            let moved = transition(Suspended(Admin), event).ok().filter(|to| *to != Suspended(Admin));
            assert_eq!(moved, None, "{event:?} moved an admin suspension");
        }
        check(Suspended(Billing), PaymentRecovered, Some(Active));
    }

    #[test]
    fn a_suspension_with_no_recorded_reason_is_an_admin_one() {
        assert_eq!(LifecycleState::of(LicenseStatus::Suspended, None), Suspended(Admin));
        for state in ALL_STATES {
            assert_eq!(LifecycleState::of(state.status(), state.suspension_reason()), state);
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
        for s in ALL_STATES.map(LifecycleState::status) {
            assert_eq!(LicenseStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for r in [Admin, Billing] {
            assert_eq!(SuspensionReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
