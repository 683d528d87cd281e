//! Ids in URL paths, for the origin↔edge calls (`/v1/internal/snapshots/{id}`,
//! `/v1/deployments/{id}`): any id becomes exactly one path segment and comes back unchanged.

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`] (and of any other encoder); `None` for a broken escape or
/// bytes that are not UTF-8.
pub fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_id_is_one_segment_and_round_trips() {
        assert_eq!(encode("lic_01HX-a.b~c"), "lic_01HX-a.b~c");
        assert_eq!(encode("a/b c%é"), "a%2Fb%20c%25%C3%A9");
        for id in ["lic_01HX", "a/b c%é", "", "%", "dep 1/2?x#y"] {
            assert_eq!(decode(&encode(id)).as_deref(), Some(id));
        }
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
    }
}
