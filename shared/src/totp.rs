//! The portal's optional second factor: HOTP (RFC 4226) and TOTP (RFC 6238) with HMAC-SHA-1,
//! 6 digits and 30-second steps, which every authenticator app speaks. A code is accepted for
//! the step before, the current one and the one after (clock drift), and only for a step
//! later than the last one the user signed in with, so a seen code cannot be replayed within
//! its window (the caller stores that step in the same conditional write that accepts it).
//!
//! Secrets are 20 random bytes (RFC 4226's recommended length), kept in base32 (RFC 4648, no
//! padding) as apps expect them. Nothing here logs; callers must not log a secret or a code.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::model::Timestamp;

pub const DIGITS: u32 = 6;
pub const STEP_SECS: i64 = 30;
/// Steps either side of the current one that are still accepted.
pub const DRIFT_STEPS: i64 = 1;
pub const SECRET_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code must be {DIGITS} digits")]
    Malformed,
    #[error("the code is not right")]
    Wrong,
    /// Right, but its step was already used (or an earlier one): a replay.
    #[error("the code was already used; wait for the next one")]
    AlreadyUsed,
    #[error("the stored second-factor secret is not base32")]
    BadSecret,
}

/// RFC 4226 §5.3: HMAC-SHA-1 of the big-endian counter, dynamically truncated to `digits`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([hash[offset], hash[offset + 1], hash[offset + 2], hash[offset + 3]])
        & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// The TOTP step (RFC 6238 `T`) of a Unix time: `floor(t / 30)`, with `T0 = 0`.
pub fn step_at(unix_secs: i64) -> u64 {
    u64::try_from(unix_secs.div_euclid(STEP_SECS)).unwrap_or(0)
}

/// The code of `step`, zero-padded to `digits`.
pub fn code_for_step(secret: &[u8], step: u64, digits: u32) -> String {
    format!("{:0width$}", hotp(secret, step, digits), width = digits as usize)
}

/// A fresh random secret, base32.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the platform random source is unavailable");
    base32_encode(&bytes)
}

/// Checks `code` against `secret_base32` at `now` (±[`DRIFT_STEPS`]), and returns the step it
/// matched. A step at or before `last_used_step` is refused as [`TotpError::AlreadyUsed`].
/// Every candidate is compared in constant time.
pub fn check_code(
    secret_base32: &str,
    code: &str,
    now: Timestamp,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let secret = base32_decode(secret_base32).ok_or(TotpError::BadSecret)?;
    let current = now.timestamp().div_euclid(STEP_SECS);
    let mut matched = None;
    for delta in -DRIFT_STEPS..=DRIFT_STEPS {
        let Ok(step) = u64::try_from(current + delta) else { continue };
        let expected = code_for_step(&secret, step, DIGITS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Wrong)?;
    if last_used_step.is_some_and(|last| step <= last) {
        return Err(TotpError::AlreadyUsed);
    }
    Ok(step)
}

/// The `otpauth://` URI an authenticator app reads (from a QR code or pasted): the secret,
/// SHA-1, 6 digits, 30 s, labelled `issuer:account`.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    let label = format!("{}:{}", percent_encode(issuer), percent_encode(account));
    format!(
        "otpauth://totp/{label}?secret={secret_base32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent_encode(issuer)
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, upper case, without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Base32 in either case, spaces and padding ignored; `None` for any other character or an
/// empty secret.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let upper = c.to_ascii_uppercase() as u32;
        let value = BASE32_ALPHABET.iter().position(|a| u32::from(*a) == upper)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    if out.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    /// RFC 6238 Appendix B, the SHA-1 rows (seed `12345678901234567890`, 8 digits).
    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let seed = b"12345678901234567890";
        for (time, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_for_step(seed, step_at(time), 8), expected, "T = {time}");
        }
    }

    /// RFC 4226 Appendix D: HOTP values for counters 0..9 with the same seed, 6 digits.
    #[test]
    fn rfc_4226_appendix_d_hotp_vectors() {
        let expected =
            [755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(b"12345678901234567890", counter as u64, 6), code, "counter {counter}");
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert_eq!(base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(), b"12345678901234567890");
        assert_eq!(base32_decode("not base32!"), None);
        assert_eq!(base32_decode(""), None);
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        assert_eq!(base32_decode(&secret).unwrap().len(), SECRET_BYTES);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_never_twice() {
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        let seed = base32_decode(secret).unwrap();
        let now = Utc.timestamp_opt(1_234_567_890, 0).unwrap();
        let step = step_at(now.timestamp());
        for (delta, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = code_for_step(&seed, (step as i64 + delta) as u64, DIGITS);
            let result = check_code(secret, &code, now, None);
            assert_eq!(result.is_ok(), accepted, "delta {delta}: {result:?}");
        }
        let code = code_for_step(&seed, step, DIGITS);
        assert_eq!(check_code(secret, &code, now, None), Ok(step));
        assert_eq!(check_code(secret, &code, now, Some(step)), Err(TotpError::AlreadyUsed));
        let earlier = code_for_step(&seed, step - 1, DIGITS);
        assert_eq!(check_code(secret, &earlier, now, Some(step)), Err(TotpError::AlreadyUsed));
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(check_code(secret, &spaced, now, Some(step - 1)), Ok(step));
        for bad in ["", "12345", "1234567", "12a456"] {
            assert_eq!(check_code(secret, bad, now, None), Err(TotpError::Malformed), "{bad:?}");
        }
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        assert_eq!(check_code(secret, &wrong, now, None), Err(TotpError::Wrong));
        assert_eq!(check_code("!!", &code, now, None), Err(TotpError::BadSecret));
    }

    #[test]
    fn otpauth_uri_names_every_parameter() {
        let uri = otpauth_uri("NLS admin", "ann@nectar.example", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/NLS%20admin:ann@nectar.example?secret=JBSWY3DPEHPK3PXP&issuer=NLS%20admin\
             &algorithm=SHA1&digits=6&period=30"
        );
    }
}
