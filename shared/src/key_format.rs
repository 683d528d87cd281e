//! The outer license key format: `NLS-<JWS>-<checksum>` (docs/key-format.md).
//!
//! The checksum catches typos and truncation before any signature work or network call.

use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "NLS-";
/// Keys longer than this are rejected without being parsed.
pub const MAX_KEY_BYTES: usize = 4096;
const CHECKSUM_HEX_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("key does not have the NLS-<jws>-<checksum> shape")]
    Malformed,
    #[error("key checksum does not match")]
    ChecksumMismatch,
}

/// The first 4 bytes of SHA-256 over the JWS, as 8 lowercase hex characters.
pub fn checksum(jws: &str) -> String {
    let digest = Sha256::digest(jws.as_bytes());
    hex_lower(&digest[..4])
}

pub fn format_key(jws: &str) -> String {
    format!("{KEY_PREFIX}{jws}-{}", checksum(jws))
}

/// Splits a key into its JWS, checking size, shape and checksum (in that order).
/// Surrounding white space is ignored.
pub fn parse_key(key: &str) -> Result<&str, KeyFormatError> {
    split_key(key).and_then(|(jws, sum)| {
        if checksum_matches(jws, sum) { Ok(jws) } else { Err(KeyFormatError::ChecksumMismatch) }
    })
}

/// `checksum(jws) == sum`, without building the hex string.
pub fn checksum_matches(jws: &str, sum: &str) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(jws.as_bytes());
    let expected = digest[..CHECKSUM_HEX_LEN / 2]
        .iter()
        .flat_map(|b| [DIGITS[(b >> 4) as usize], DIGITS[(b & 0xf) as usize]]);
    sum.len() == CHECKSUM_HEX_LEN && expected.eq(sum.bytes())
}

/// Splits a key into (JWS, checksum) without checking the checksum.
pub fn split_key(key: &str) -> Result<(&str, &str), KeyFormatError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyFormatError::TooLong);
    }
    let key = key.trim();
    let rest = key.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Malformed)?;
    // The JWS may itself contain '-', so the checksum is found from the end.
    if rest.len() < CHECKSUM_HEX_LEN + 2 {
        return Err(KeyFormatError::Malformed);
    }
    // Not a character boundary: a multi-byte character where the hex must be.
    let (jws_dash, sum) =
        rest.split_at_checked(rest.len() - CHECKSUM_HEX_LEN).ok_or(KeyFormatError::Malformed)?;
    let jws = jws_dash.strip_suffix('-').ok_or(KeyFormatError::Malformed)?;
    let well_formed_sum = sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    // One pass: base64url characters and exactly two dots (three segments).
    let mut dots = 0;
    let base64url_and_dots = jws.bytes().all(|b| {
        dots += usize::from(b == b'.');
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
    });
    let well_formed_jws = base64url_and_dots && dots == 2;
    if !well_formed_sum || !well_formed_jws {
        return Err(KeyFormatError::Malformed);
    }
    Ok((jws, sum))
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expected: Result<&str, KeyFormatError>) {
        assert_eq!(parse_key(key), expected, "key: {key:?}");
    }

    #[test]
    fn parses_and_rejects_shapes() {
        let jws = "aGVhZGVy.Y2xhaW1z.c2ln-_x";
        let key = format_key(jws);
        check(&key, Ok(jws));
        check(&format!("  {key}\n"), Ok(jws));
        check(&key.replacen("NLS-", "NLX-", 1), Err(KeyFormatError::Malformed));
        check(&key[..key.len() - 1], Err(KeyFormatError::Malformed));
        check(&key.to_uppercase(), Err(KeyFormatError::Malformed));
        check("NLS-", Err(KeyFormatError::Malformed));
        check("", Err(KeyFormatError::Malformed));
        check(&format!("NLS-a.b-{}", checksum("a.b")), Err(KeyFormatError::Malformed));
        check(&format!("NLS-{jws}-00000000"), Err(KeyFormatError::ChecksumMismatch));
        let long = format!("NLS-{}.b.c-00000000", "a".repeat(MAX_KEY_BYTES));
        check(&long, Err(KeyFormatError::TooLong));
        // A multi-byte character across the checksum's start is malformed (it used to panic in
        // `split_at`), and so is one anywhere else.
        check("NLS-a.b.c-\u{e9}0000000", Err(KeyFormatError::Malformed));
        check("NLS-a.b.c-0000000\u{e9}", Err(KeyFormatError::Malformed));
        check("NLS-a.b.c\u{e9}-0000000", Err(KeyFormatError::Malformed));
    }

    #[test]
    fn checksum_matches_agrees_with_checksum() {
        for jws in ["", "abc", "a.b.c", "aGVhZGVy.Y2xhaW1z.c2ln-_x"] {
            let sum = checksum(jws);
            assert!(checksum_matches(jws, &sum));
            assert!(!checksum_matches(jws, &sum[..7]));
            assert!(!checksum_matches(jws, &format!("{sum}0")));
            let mut wrong = sum.into_bytes();
            wrong[7] = if wrong[7] == b'0' { b'1' } else { b'0' };
            assert!(!checksum_matches(jws, std::str::from_utf8(&wrong).expect("ascii")));
        }
    }

    #[test]
    fn checksum_is_first_four_sha256_bytes() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(checksum("abc"), "ba7816bf");
    }
}
