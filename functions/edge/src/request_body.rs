//! The request body limit, for hosts that stream bodies (the Worker): a body is refused as
//! soon as it is known to pass [`BODY_LIMIT`] (its declared `Content-Length`, or the bytes read
//! so far), so an edge never buffers more than the limit.

use crate::edge_service::BODY_LIMIT;

/// The body passes [`BODY_LIMIT`]: answer [`crate::EdgeResponse::payload_too_large`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

/// A body read chunk by chunk, never past the limit.
#[derive(Debug, Default)]
pub struct BoundedBody {
    bytes: Vec<u8>,
}

impl BoundedBody {
    /// Refuses a body whose declared length is over the limit before any of it is read. An
    /// absent or unreadable header is left to the chunked check.
    pub fn check_declared(content_length: Option<&str>) -> Result<(), BodyTooLarge> {
        match content_length.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(length) if length > BODY_LIMIT as u64 => Err(BodyTooLarge),
            _ => Ok(()),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), BodyTooLarge> {
        if self.bytes.len().saturating_add(chunk.len()) > BODY_LIMIT {
            return Err(BodyTooLarge);
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_reading() {
        assert_eq!(BoundedBody::check_declared(Some(&(BODY_LIMIT + 1).to_string())), Err(BodyTooLarge));
        assert_eq!(BoundedBody::check_declared(Some(&BODY_LIMIT.to_string())), Ok(()));
        assert_eq!(BoundedBody::check_declared(None), Ok(()));
        assert_eq!(BoundedBody::check_declared(Some("lots")), Ok(()));
    }

    #[test]
    fn chunks_are_refused_once_they_pass_the_limit() {
        let mut body = BoundedBody::default();
        let chunk = vec![b'x'; BODY_LIMIT / 2];
        assert_eq!(body.push(&chunk), Ok(()));
        assert_eq!(body.push(&chunk), Ok(()));
        assert_eq!(body.push(b"x"), Err(BodyTooLarge));
        assert_eq!(body.into_bytes().len(), BODY_LIMIT);
    }
}
