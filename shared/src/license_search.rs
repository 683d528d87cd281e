//! Searching licenses: the typed query of [`crate::ports::LicenseStore::search_licenses`] (filters,
//! a sort and opaque cursors), written once so every store returns the same rows in the same
//! order. Stores narrow with their indexes; [`LicenseQuery::matches`] is the exact rule.
//!
//! Every sort is a total order on a *sort key*, a string that ends in `#<license id>`, so ties
//! never reorder between pages. A cursor is the sort key of the last row returned, tagged with
//! the sort it belongs to; a cursor from another sort is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::SecondsFormat;

use crate::lifecycle::LicenseStatus;
use crate::model::{Customer, License, Timestamp};
use crate::ports::{Page, StoreError, StoreResult};

/// What a license list is ordered by; every order ends with the license id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LicenseSortField {
    /// Creation time.
    #[default]
    Created,
    /// Expiry; perpetual licenses sort after every date.
    ExpiresAt,
    /// The customer id, so a customer's licenses come together.
    Customer,
}

impl LicenseSortField {
    pub const ALL: [LicenseSortField; 3] = [Self::Created, Self::ExpiresAt, Self::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::ExpiresAt => "expires_at",
            Self::Customer => "customer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDirection {
    Ascending,
    /// Newest first, for the default sort.
    #[default]
    Descending,
}

impl SortDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ascending => "asc",
            Self::Descending => "desc",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "asc" => Some(Self::Ascending),
            "desc" => Some(Self::Descending),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LicenseSort {
    pub field: LicenseSortField,
    pub direction: SortDirection,
}

/// The sort key's stand-in for "no expiry": after every fixed-width date (`~` > `9`).
const PERPETUAL: &str = "~";

/// Fixed-width UTC with nanoseconds: string order is time order.
pub fn fixed_width_time(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl LicenseSort {
    /// The string `l` sorts by. Ids hold only `[A-Za-z0-9_-]`, all above `#`, so comparing
    /// `<value>#<id>` strings orders by value, then id.
    pub fn key(&self, l: &License) -> String {
        match self.field {
            LicenseSortField::Created => format!("{}#{}", fixed_width_time(l.created_at), l.id),
            LicenseSortField::ExpiresAt => {
                let expiry = l.expires_at.map_or_else(|| PERPETUAL.to_owned(), fixed_width_time);
                format!("{expiry}#{}", l.id)
            }
            LicenseSortField::Customer => format!("{}#{}", l.customer_id, l.id),
        }
    }

    fn tag(&self) -> String {
        format!("{}.{}", self.field.as_str(), self.direction.as_str())
    }

    pub fn cursor_for(&self, sort_key: &str) -> String {
        format!("{}.{}", self.tag(), URL_SAFE_NO_PAD.encode(sort_key))
    }

    /// The sort key a cursor of this sort carries; `InvalidCursor` for anything else.
    pub fn decode_cursor(&self, cursor: &str) -> StoreResult<String> {
        let refused = || StoreError::InvalidCursor(cursor.to_owned());
        let encoded = cursor
            .strip_prefix(self.tag().as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|rest| rest.len() <= 2048)
            .ok_or_else(refused)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| refused())?;
        let key = String::from_utf8(bytes).map_err(|_| refused())?;
        if !key.contains('#') {
            return Err(refused());
        }
        Ok(key)
    }

    /// Whether a row with `key` comes after the cursor's `after` in this sort.
    pub fn is_after(&self, key: &str, after: &str) -> bool {
        match self.direction {
            SortDirection::Ascending => key > after,
            SortDirection::Descending => key < after,
        }
    }
}

/// A license search: every filter set must hold. `text` matches, ignoring ASCII case, any
/// part of the license id, its key id, or the customer's name or email.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LicenseQuery {
    pub status: Option<LicenseStatus>,
    pub tier: Option<String>,
    /// The license has this feature (exact).
    pub feature: Option<String>,
    /// `expires_at < expires_before`; perpetual licenses never match.
    pub expires_before: Option<Timestamp>,
    pub customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub text: Option<String>,
    pub sort: LicenseSort,
}

/// Most characters of a text search; longer is refused by callers, cut here.
pub const MAX_TEXT_LEN: usize = 200;

impl LicenseQuery {
    /// The text filter as stores compare it: trimmed, ASCII lower case; `None` when blank.
    pub fn normalized_text(&self) -> Option<String> {
        let text = self.text.as_deref()?.trim();
        let mut text = text.to_ascii_lowercase();
        if text.is_empty() {
            return None;
        }
        if text.len() > MAX_TEXT_LEN {
            let mut end = MAX_TEXT_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        Some(text)
    }

    /// The filters on the license's own fields (all but the customer's name and email).
    pub fn matches_license_fields(&self, l: &License) -> bool {
        self.status.is_none_or(|s| s == l.status)
            && self.tier.as_ref().is_none_or(|t| *t == l.tier)
            && self.feature.as_ref().is_none_or(|f| l.features.iter().any(|x| x == f))
            && self.expires_before.is_none_or(|t| l.expires_at.is_some_and(|e| e < t))
            && self.customer_id.as_ref().is_none_or(|c| *c == l.customer_id)
            && self
                .stripe_subscription_id
                .as_ref()
                .is_none_or(|s| l.stripe_subscription_id.as_ref() == Some(s))
    }

    /// The exact rule: `customer` is the license's customer, if it exists.
    pub fn matches(&self, l: &License, customer: Option<&Customer>) -> bool {
        if !self.matches_license_fields(l) {
            return false;
        }
        let Some(text) = self.normalized_text() else { return true };
        let has = |haystack: &str| haystack.to_ascii_lowercase().contains(text.as_str());
        has(&l.id) || has(&l.key_id) || customer.is_some_and(|c| has(&c.name) || has(&c.email))
    }

    /// Whether the text filter needs the customer record to decide.
    pub fn needs_customer(&self) -> bool {
        self.normalized_text().is_some()
    }
}

/// One page of `rows` (already filtered) in the query's order after `cursor`: for stores that
/// sort in memory (the reference store, and small candidate sets such as one customer's).
pub fn page_in_memory(
    sort: &LicenseSort,
    rows: impl IntoIterator<Item = License>,
    cursor: Option<&str>,
    limit: usize,
) -> StoreResult<Page<License>> {
    let after = cursor.map(|c| sort.decode_cursor(c)).transpose()?;
    let mut keyed: Vec<(String, License)> = rows
        .into_iter()
        .map(|l| (sort.key(&l), l))
        .filter(|(key, _)| after.as_deref().is_none_or(|a| sort.is_after(key, a)))
        .collect();
    keyed.sort_by(|a, b| match sort.direction {
        SortDirection::Ascending => a.0.cmp(&b.0),
        SortDirection::Descending => b.0.cmp(&a.0),
    });
    let next_cursor = if keyed.len() > limit {
        keyed.truncate(limit);
        keyed.last().map(|(key, _)| sort.cursor_for(key))
    } else {
        None
    };
    Ok(Page { items: keyed.into_iter().map(|(_, l)| l).collect(), next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn license(id: &str, created_days: i64, expires: Option<i64>) -> License {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut l =
            crate::issuing::new_license("cus_1", Default::default(), t0 + Duration::days(created_days));
        l.id = id.to_owned();
        l.expires_at = expires.map(|d| t0 + Duration::days(d));
        l
    }

    #[test]
    fn cursors_round_trip_and_are_tied_to_their_sort() {
        let by_expiry =
            LicenseSort { field: LicenseSortField::ExpiresAt, direction: SortDirection::Ascending };
        let key = by_expiry.key(&license("lic_a", 0, None));
        assert_eq!(key, "~#lic_a");
        let cursor = by_expiry.cursor_for(&key);
        assert_eq!(by_expiry.decode_cursor(&cursor).unwrap(), key);
        let other = LicenseSort { direction: SortDirection::Descending, ..by_expiry };
        assert!(matches!(other.decode_cursor(&cursor), Err(StoreError::InvalidCursor(_))));
        for garbage in ["", "lic_a", "expires_at.asc.!!", "expires_at.asc.bm9oYXNo"] {
            assert!(by_expiry.decode_cursor(garbage).is_err(), "{garbage}");
        }
    }

    #[test]
    fn perpetual_sorts_last_and_pages_do_not_overlap() {
        let sort = LicenseSort { field: LicenseSortField::ExpiresAt, direction: SortDirection::Ascending };
        let rows =
            vec![license("lic_c", 0, None), license("lic_b", 0, Some(5)), license("lic_a", 0, Some(5))];
        let first = page_in_memory(&sort, rows.clone(), None, 2).unwrap();
        let ids: Vec<_> = first.items.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["lic_a", "lic_b"]);
        let second = page_in_memory(&sort, rows, first.next_cursor.as_deref(), 2).unwrap();
        assert_eq!(second.items.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["lic_c"]);
        assert_eq!(second.next_cursor, None);
    }

    #[test]
    fn text_matches_ids_and_the_customer_ignoring_ascii_case() {
        let l = license("lic_AbC", 0, None);
        let customer = Customer {
            id: "cus_1".into(),
            name: "Zeta Works".into(),
            email: "ops@zeta.example".into(),
            stripe_customer_id: None,
            reminders_opt_out: false,
            created_at: l.created_at,
            updated_at: l.created_at,
        };
        let q = |t: &str| LicenseQuery { text: Some(t.into()), ..Default::default() };
        assert!(q("abc").matches(&l, None));
        assert!(q(" ZETA ").matches(&l, Some(&customer)));
        assert!(q("ops@").matches(&l, Some(&customer)));
        assert!(!q("zeta").matches(&l, None));
        assert!(!q("nothing").matches(&l, Some(&customer)));
        assert!(q("   ").matches(&l, None));
    }
}
