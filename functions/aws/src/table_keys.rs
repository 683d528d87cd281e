//! The single-table key layout (docs/dynamodb.md). Every key the store reads or writes is built
//! here, so the layout can be read in one place.
//!
//! The license partition `LICENSE#<id>` is ordered so that `license_snapshot` is one Query:
//!
//! ```text
//! BATCH#<batch id>             usage batch markers          ('B' < 'C')
//! COUNTER#DAY#<yyyy-mm-dd>     day counters                 ("DAY" < "MONTH")
//! COUNTER#MONTH#<yyyy-mm>      month counters   ┐
//! LICENSE                      the license      │ snapshot: sk BETWEEN COUNTER#MONTH#<this month> AND SEATS
//! SEATS                        deployment leases┘
//! VLOG#<at>#<seq>#<writer>     validation logs              ('V' > 'S')
//! ```
//! Only future months can fall inside the snapshot range besides the three wanted items; the
//! reader drops them.

use chrono::{DateTime, SecondsFormat, Utc};

use nls_core::model::Timestamp;

pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// GSI `by_kind`: every customer, license, API key, audit entry and staff user, for admin
/// listings.
pub const GSI_BY_KIND: &str = "by_kind";
pub const KIND_PK: &str = "kind_pk";
pub const KIND_SK: &str = "kind_sk";
/// GSI `by_customer`: a customer's licenses, ordered by license id.
pub const GSI_BY_CUSTOMER: &str = "by_customer";
pub const CUSTOMER_PK: &str = "customer_pk";
pub const CUSTOMER_SK: &str = "customer_sk";
/// GSI `by_stripe`: a customer by Stripe customer id, a license by Stripe subscription id.
pub const GSI_BY_STRIPE: &str = "by_stripe";
pub const STRIPE_PK: &str = "stripe_pk";
pub const STRIPE_SK: &str = "stripe_sk";
/// GSI `by_expiry_day`: licenses per UTC expiry day, sorted by expiry, for the scheduler.
pub const GSI_BY_EXPIRY_DAY: &str = "by_expiry_day";
pub const EXPIRY_PK: &str = "expiry_pk";
pub const EXPIRY_SK: &str = "expiry_sk";
/// GSIs `licenses_by_created`, `licenses_by_expiry`, `licenses_by_customer_order`: every license
/// (partition `kind_pk` = `LICENSE`) in the portal's sort orders. Each sort key is the core's
/// `LicenseSort::key` (`<value>#<license id>`), so a cursor is a key-range bound.
pub const GSI_LICENSES_BY_CREATED: &str = "licenses_by_created";
pub const GSI_LICENSES_BY_EXPIRY: &str = "licenses_by_expiry";
pub const GSI_LICENSES_BY_CUSTOMER_ORDER: &str = "licenses_by_customer_order";
pub const LICENSE_CREATED_SK: &str = "license_created_sk";
pub const LICENSE_EXPIRY_SK: &str = "license_expiry_sk";
pub const LICENSE_CUSTOMER_SK: &str = "license_customer_sk";
/// The table's TTL attribute (epoch seconds): validation logs, processed webhook events and
/// staff sessions.
pub const TTL_ATTRIBUTE: &str = "ttl";

pub const KIND_CUSTOMER: &str = "CUSTOMER";
pub const KIND_LICENSE: &str = "LICENSE";
pub const KIND_API_KEY: &str = "API_KEY";
pub const KIND_AUDIT: &str = "AUDIT";
/// Staff users sort by email in `by_kind` (`kind_sk` = email), which is their listing order.
pub const KIND_STAFF_USER: &str = "STAFF_USER";

pub const CUSTOMER_ITEM_SK: &str = "CUSTOMER";
pub const LICENSE_ITEM_SK: &str = "LICENSE";
pub const SEATS_ITEM_SK: &str = "SEATS";
pub const API_KEY_ITEM_SK: &str = "API_KEY";
pub const AUDIT_ITEM_SK: &str = "AUDIT";
pub const WEBHOOK_EVENT_ITEM_SK: &str = "WEBHOOK_EVENT";
pub const STRIPE_CLAIM_ITEM_SK: &str = "CLAIM";
pub const STAFF_USER_ITEM_SK: &str = "STAFF_USER";
pub const STAFF_EMAIL_CLAIM_ITEM_SK: &str = "CLAIM";
pub const STAFF_SESSION_ITEM_SK: &str = "STAFF_SESSION";

pub const BATCH_SK_PREFIX: &str = "BATCH#";
pub const MONTH_COUNTER_SK_PREFIX: &str = "COUNTER#MONTH#";
pub const DAY_COUNTER_SK_PREFIX: &str = "COUNTER#DAY#";
pub const VALIDATION_LOG_SK_PREFIX: &str = "VLOG#";
pub const NOTICE_SK_PREFIX: &str = "NOTICE#";

pub fn customer_pk(id: &str) -> String {
    format!("CUSTOMER#{id}")
}

pub fn license_pk(id: &str) -> String {
    format!("LICENSE#{id}")
}

pub fn api_key_pk(id: &str) -> String {
    format!("API_KEY#{id}")
}

pub fn audit_pk(id: &str) -> String {
    format!("AUDIT#{id}")
}

pub fn webhook_event_pk(event_id: &str) -> String {
    format!("WEBHOOK_EVENT#{event_id}")
}

/// Uniqueness claim on a Stripe customer id, written in the same transaction as the customer.
pub fn stripe_customer_claim_pk(stripe_customer_id: &str) -> String {
    format!("STRIPE_CUSTOMER#{stripe_customer_id}")
}

pub fn staff_user_pk(id: &str) -> String {
    format!("STAFF_USER#{id}")
}

/// Uniqueness claim on a (lower-case) staff email, written in the same transaction as the
/// user; it also finds the user by email with consistent reads.
pub fn staff_email_claim_pk(email: &str) -> String {
    format!("STAFF_EMAIL#{email}")
}

pub fn staff_session_pk(token_sha256: &str) -> String {
    format!("STAFF_SESSION#{token_sha256}")
}

pub fn stripe_customer_gsi_pk(stripe_customer_id: &str) -> String {
    format!("STRIPE_CUSTOMER#{stripe_customer_id}")
}

pub fn stripe_subscription_gsi_pk(subscription_id: &str) -> String {
    format!("STRIPE_SUBSCRIPTION#{subscription_id}")
}

pub fn expiry_day_pk(day: chrono::NaiveDate) -> String {
    format!("EXPIRY#{}", day.format("%Y-%m-%d"))
}

pub fn expiry_sk(expires_at: Timestamp, license_id: &str) -> String {
    format!("{}#{license_id}", timestamp_key(expires_at))
}

pub fn notices_pk(license_id: &str) -> String {
    format!("NOTICES#{license_id}")
}

/// `notice` and `window` are free text: escaping `#` keeps ("a#b", "c") and ("a", "b#c") apart.
pub fn notice_sk(notice: &str, window: &str) -> String {
    format!("{NOTICE_SK_PREFIX}{}#{}", escape_key_part(notice), escape_key_part(window))
}

pub fn batch_sk(batch_id: &str) -> String {
    format!("{BATCH_SK_PREFIX}{batch_id}")
}

/// A period key is `yyyy-mm` (month) or `yyyy-mm-dd` (day); anything else has no counter item.
pub fn counter_sk(period: &str) -> Option<String> {
    match period.len() {
        7 => Some(format!("{MONTH_COUNTER_SK_PREFIX}{period}")),
        10 => Some(format!("{DAY_COUNTER_SK_PREFIX}{period}")),
        _ => None,
    }
}

pub fn validation_log_sk(at: Timestamp, sequence: u64, writer: &str) -> String {
    format!("{VALIDATION_LOG_SK_PREFIX}{}#{sequence:020}#{writer}", timestamp_key(at))
}

pub fn audit_kind_sk(at: Timestamp, id: &str) -> String {
    format!("{}#{id}", timestamp_key(at))
}

fn escape_key_part(part: &str) -> String {
    part.replace('%', "%25").replace('#', "%23")
}

/// Fixed-width UTC with nanoseconds, so string order is time order and values round-trip.
pub fn timestamp_key(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn parse_timestamp_key(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_range_holds_only_license_seats_and_month_counters() {
        let low = format!("{MONTH_COUNTER_SK_PREFIX}2026-11");
        let high = SEATS_ITEM_SK.to_owned();
        let inside = |sk: &str| sk >= low.as_str() && sk <= high.as_str();
        assert!(inside(LICENSE_ITEM_SK));
        assert!(inside(SEATS_ITEM_SK));
        assert!(inside(&counter_sk("2026-11").unwrap()));
        for outside in [
            counter_sk("2026-10").unwrap(),
            counter_sk("2026-11-30").unwrap(),
            counter_sk("2026-12-01").unwrap(),
            batch_sk("zzz"),
            validation_log_sk(Utc::now(), 1, "w"),
        ] {
            assert!(!inside(&outside), "{outside} must stay outside the snapshot range");
        }
    }

    #[test]
    fn timestamp_keys_sort_as_time_and_round_trip() {
        let a = parse_timestamp_key("2026-11-30T10:00:00.5Z").unwrap();
        let b = parse_timestamp_key("2026-11-30T10:00:00.123456789Z").unwrap();
        assert!(timestamp_key(b) < timestamp_key(a));
        assert_eq!(parse_timestamp_key(&timestamp_key(b)), Some(b));
    }

    #[test]
    fn notice_keys_do_not_collide() {
        assert_ne!(notice_sk("a#b", "c"), notice_sk("a", "b#c"));
    }
}
