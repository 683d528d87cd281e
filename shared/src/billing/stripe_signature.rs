//! Verifies Stripe's `Stripe-Signature` header before a webhook body is read.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`. Each `v1` is the hex
//! HMAC-SHA256, keyed with the endpoint secret, of `"{t}.{raw body}"`. Several `v1` appear while
//! a secret is being rolled; any one matching is enough. `v0` (test-mode legacy) and unknown
//! schemes are ignored. The MAC is computed over the raw bytes, never over re-serialized JSON.

use chrono::Duration;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::model::Timestamp;

/// Stripe's own default: a signature older (or newer) than this is refused as a replay.
pub const DEFAULT_TOLERANCE: Duration = Duration::seconds(300);

/// Stripe signatures are 32-byte MACs; a header far larger than any real one is refused unread.
const MAX_HEADER_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature matches the payload")]
    NoMatchingSignature,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
}

impl SignatureError {
    /// A stable, machine-readable code for the 400 answer.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed(_) => "signature_malformed",
            Self::NoMatchingSignature => "signature_mismatch",
            Self::Stale => "signature_stale",
        }
    }
}

/// The parts of a `Stripe-Signature` header that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    pub timestamp: i64,
    /// Every `v1` value, decoded from hex.
    pub v1: Vec<[u8; 32]>,
}

pub fn parse_signature_header(header: &str) -> Result<ParsedSignature, SignatureError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed("header too long"));
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((name, value)) = item.trim().split_once('=') else {
            return Err(SignatureError::Malformed("an item is not name=value"));
        };
        match name.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t"));
                }
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("t is not a number"))?;
                timestamp = Some(t);
            }
            // A v1 that is not 64 hex digits can never match: skip it like an unknown scheme
            // rather than refusing a header that also carries a good one.
            "v1" => v1.extend(decode_hex_32(value.trim())),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(ParsedSignature { timestamp, v1 })
}

/// Checks `header` against `raw_body`: a matching `v1` (constant-time) and a timestamp within
/// `tolerance` of `now` either way. The MAC is checked before the time so that a forged header
/// learns nothing from which check failed.
pub fn verify_stripe_signature(
    header: Option<&str>,
    raw_body: &[u8],
    secret: &[u8],
    tolerance: Duration,
    now: Timestamp,
) -> Result<ParsedSignature, SignatureError> {
    let header = header.filter(|h| !h.trim().is_empty()).ok_or(SignatureError::Missing)?;
    let parsed = parse_signature_header(header)?;
    let expected = compute_signature(secret, parsed.timestamp, raw_body);
    // Fold over every candidate so the time taken does not depend on which one matched.
    let matched =
        parsed.v1.iter().fold(subtle::Choice::from(0u8), |acc, candidate| acc | candidate.ct_eq(&expected));
    if !bool::from(matched) {
        return Err(SignatureError::NoMatchingSignature);
    }
    let age = now.timestamp().saturating_sub(parsed.timestamp);
    if age.unsigned_abs() > tolerance.num_seconds().unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(parsed)
}

/// The raw MAC Stripe puts in `v1` for `timestamp` and `raw_body`.
pub fn compute_signature(secret: &[u8], timestamp: i64, raw_body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(raw_body);
    mac.finalize().into_bytes().into()
}

/// A complete header for `raw_body`, as Stripe would send it. For tests, fixtures and the CLI's
/// "send a signed test event".
pub fn sign_stripe_payload(secret: &[u8], timestamp: i64, raw_body: &[u8]) -> String {
    let mac = compute_signature(secret, timestamp, raw_body);
    format!("t={timestamp},v1={}", encode_hex(&mac))
}

fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *slot = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SECRET: &[u8] = b"whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn at(secs: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(secs, 0).single().expect("valid time")
    }

    fn check(header: Option<&str>, body: &[u8], now: i64, expected: Result<(), SignatureError>) {
        let got = verify_stripe_signature(header, body, SECRET, DEFAULT_TOLERANCE, at(now)).map(|_| ());
        assert_eq!(got, expected, "header {header:?}");
    }

    #[test]
    fn signatures_are_judged() {
        let good = sign_stripe_payload(SECRET, 1_000_000, BODY);
        let good_mac = good.split("v1=").nth(1).expect("v1").to_owned();
        let other = sign_stripe_payload(b"another secret", 1_000_000, BODY);
        let other_mac = other.split("v1=").nth(1).expect("v1").to_owned();

        check(Some(&good), BODY, 1_000_000, Ok(()));
        check(Some(&good), BODY, 1_000_300, Ok(()));
        check(Some(&good), BODY, 999_700, Ok(()));
        check(Some(&good), BODY, 1_000_301, Err(SignatureError::Stale));
        check(Some(&good), BODY, 999_699, Err(SignatureError::Stale));
        check(Some(&other), BODY, 1_000_000, Err(SignatureError::NoMatchingSignature));
        check(
            Some(&good),
            br#"{"id":"evt_2","type":"invoice.paid"}"#,
            1_000_000,
            Err(SignatureError::NoMatchingSignature),
        );
        // Several v1 (a secret roll), in either order, and v0 and unknown schemes ignored.
        let rolled = format!("t=1000000,v1={other_mac},v1={good_mac},v0=abcd,v9=zz");
        check(Some(&rolled), BODY, 1_000_000, Ok(()));
        let rolled = format!("t=1000000, v1={good_mac}, v1={other_mac}");
        check(Some(&rolled), BODY, 1_000_000, Ok(()));
        // Only a v0 that "matches" is not enough.
        check(
            Some(&format!("t=1000000,v0={good_mac}")),
            BODY,
            1_000_000,
            Err(SignatureError::Malformed("no v1 signature")),
        );
        check(None, BODY, 1_000_000, Err(SignatureError::Missing));
        check(Some("  "), BODY, 1_000_000, Err(SignatureError::Missing));
        check(Some(&format!("v1={good_mac}")), BODY, 1_000_000, Err(SignatureError::Malformed("no t")));
        check(
            Some(&format!("t=soon,v1={good_mac}")),
            BODY,
            1_000_000,
            Err(SignatureError::Malformed("t is not a number")),
        );
        check(Some("garbage"), BODY, 1_000_000, Err(SignatureError::Malformed("an item is not name=value")));
        check(Some("t=1000000,v1=xyz"), BODY, 1_000_000, Err(SignatureError::Malformed("no v1 signature")));
        check(Some(&"t=1,v1=".repeat(1000)), BODY, 1, Err(SignatureError::Malformed("header too long")));
    }

    #[test]
    fn the_mac_matches_stripe_reference_construction() {
        // Computed independently (Python's hmac module): HMAC-SHA256(key="whsec_test_secret", "1000000.{BODY}").
        let header = sign_stripe_payload(SECRET, 1_000_000, BODY);
        let expected = "t=1000000,v1=8318639b49984f37cf23622da97862b6bfebe393002a77e65e6bcdadfa08aff8";
        assert_eq!(header, expected);
    }
}
