//! The core's Ed25519 rule (see `ed25519.rs`) on curve25519-dalek. Self-contained: the wasm
//! benchmark (tests/bench/ed25519_wasm) compiles this file as it is.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

/// `k = SHA-512(R || A || M)`, the 64 bytes reduced mod L.
pub fn challenge_hash(r: &[u8], public: &[u8; 32], message: &[u8]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(r);
    hasher.update(public);
    hasher.update(message);
    hasher.finalize().into()
}

/// A canonical encoding of a point that is not of small order, as ed25519-compact requires.
/// curve25519-dalek's decompression also takes a non-canonical `y` (`p <= y < 2^255`), so that
/// is refused first. (`x = 0` with the sign bit set, which ed25519-compact also refuses, only
/// encodes points of order 1 or 2, refused as small.)
pub fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical_y(bytes) {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (!point.is_small_order()).then_some(point)
}

/// `y` (the low 255 bits, little-endian) is below `p = 2^255 - 19`. Comparing bytes costs
/// nothing next to re-encoding the point, which needs a field inversion.
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    let at_least_p = bytes[0] >= 0xed && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[31] & 0x7f == 0x7f;
    !at_least_p
}

/// `minus_a` is `-A` for the key `public`, decoded once with [`decode_point`].
pub fn verify(public: &[u8; 32], minus_a: &EdwardsPoint, message: &[u8], signature: &[u8; 64]) -> bool {
    let (r_bytes, s_bytes) = signature.split_at(32);
    let (Ok(r_bytes), Ok(s_bytes)) = (<&[u8; 32]>::try_from(r_bytes), <[u8; 32]>::try_from(s_bytes)) else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let Some(r) = decode_point(r_bytes) else {
        return false;
    };
    let k = Scalar::from_bytes_mod_order_wide(&challenge_hash(r_bytes, public, message));
    // [S]B - [k]A - R must be of small order (the cofactored equation).
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, minus_a, &s);
    (sb_minus_ka - r).is_small_order()
}
