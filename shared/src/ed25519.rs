//! The core's one Ed25519 verifier: every NLS-signed document (license keys, receipts, offline
//! files, access tokens) is checked through [`PublicKey::verify`].
//!
//! Two implementations sit behind it. curve25519-dalek verifies on every target: measured
//! (docs/benchmarks.md, "Ed25519 verifier per target"), it is the faster one natively (AVX2,
//! picked at run time) and, by more, in wasm (V8 and wasmtime), where ed25519-compact's 128-bit
//! arithmetic is emulated. ed25519-compact stays as the second implementation (it also signs,
//! through jwt-compact): the tests run every vector through both. Both enforce exactly the
//! same rule, ed25519-compact's:
//!
//! - `S` must be canonical (`S < L`);
//! - `A` (the public key) and `R` must be canonical encodings of points that are not of small
//!   order;
//! - the equation is the cofactored one, `[8][S]B = [8]R + [8][k]A` with
//!   `k = SHA-512(R || A || M) mod L`.
//!
//! The public key is decoded once, when the key is loaded, not on every verify.

pub const SIGNATURE_BYTES: usize = 64;

/// Which implementation checks signatures. Both accept exactly the same signatures; the test
/// vectors run under each (`KeyRing::with_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ed25519-compact: small and portable; the reference for the rule.
    Compact,
    /// The rule on curve25519-dalek (SIMD where the CPU has it): the faster one everywhere.
    Dalek,
}

impl Backend {
    /// The implementation used unless a test or benchmark picks one.
    pub const DEFAULT: Backend = Backend::Dalek;

    pub const ALL: &'static [Backend] = &[Backend::Compact, Backend::Dalek];
}

/// An Ed25519 public key, decoded once for every backend.
#[derive(Clone)]
pub struct PublicKey {
    bytes: [u8; 32],
    compact: ed25519_compact::PublicKey,
    /// `-A`, or `None` when the bytes are not a usable key (then nothing verifies).
    dalek_minus_a: Option<curve25519_dalek::EdwardsPoint>,
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            bytes,
            compact: ed25519_compact::PublicKey::new(bytes),
            dalek_minus_a: dalek::decode_point(&bytes).map(|a| -a),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Checks `signature` over `message` with the default backend.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_with(Backend::DEFAULT, message, signature)
    }

    pub fn verify_with(&self, backend: Backend, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; SIGNATURE_BYTES]>::try_from(signature) else {
            return false;
        };
        match backend {
            Backend::Compact => {
                self.compact.verify(message, &ed25519_compact::Signature::new(*signature)).is_ok()
            }
            Backend::Dalek => self
                .dalek_minus_a
                .as_ref()
                .is_some_and(|minus_a| dalek::verify(&self.bytes, minus_a, message, signature)),
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for PublicKey {}

// Self-contained (only curve25519-dalek and sha2), so the wasm benchmark in tests/bench
// compiles the very same code.
mod dalek;

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(seed: u8) -> ed25519_compact::KeyPair {
        ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]))
    }

    #[test]
    fn every_backend_accepts_a_good_signature_and_refuses_changes() {
        let pair = pair(3);
        let key = PublicKey::from_bytes(*pair.pk);
        let signature = pair.sk.sign(b"message", None);
        for &backend in Backend::ALL {
            assert!(key.verify_with(backend, b"message", signature.as_ref()), "{backend:?}");
            assert!(!key.verify_with(backend, b"messagE", signature.as_ref()), "{backend:?}");
            assert!(!key.verify_with(backend, b"message", &signature[..63]), "{backend:?}");
            let mut flipped = *signature;
            flipped[40] ^= 1;
            assert!(!key.verify_with(backend, b"message", &flipped), "{backend:?}");
        }
    }

    /// Signatures at the edges of the rule, built by hand with curve25519-dalek's arithmetic:
    /// every backend must give the same answer, which is ed25519-compact's.
    mod edges {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;

        use super::super::dalek::challenge_hash;
        use super::super::{Backend, PublicKey};

        const MESSAGE: &[u8] = b"edge case";

        /// A signature by secret scalar `a` with nonce `r`, where the encoded key is `A + a_twist`
        /// and the encoded `R` is `rB + r_twist` (twists are small-order points).
        fn sign(a: Scalar, a_twist: EdwardsPoint, r: Scalar, r_twist: EdwardsPoint) -> ([u8; 32], [u8; 64]) {
            let public = (a * B + a_twist).compress().to_bytes();
            let big_r = (r * B + r_twist).compress().to_bytes();
            let k = Scalar::from_bytes_mod_order_wide(&challenge_hash(&big_r, &public, MESSAGE));
            let s = r + k * a;
            let mut signature = [0; 64];
            signature[..32].copy_from_slice(&big_r);
            signature[32..].copy_from_slice(s.as_bytes());
            (public, signature)
        }

        fn sign_fixed(a: Scalar, r: Scalar) -> ([u8; 32], [u8; 64]) {
            sign(a, EdwardsPoint::default(), r, EdwardsPoint::default())
        }

        fn answers(public: [u8; 32], signature: &[u8; 64]) -> Vec<bool> {
            let key = PublicKey::from_bytes(public);
            Backend::ALL.iter().map(|&b| key.verify_with(b, MESSAGE, signature)).collect()
        }

        fn compact(public: [u8; 32], signature: &[u8; 64]) -> bool {
            ed25519_compact::PublicKey::new(public)
                .verify(MESSAGE, &ed25519_compact::Signature::new(*signature))
                .is_ok()
        }

        #[test]
        fn backends_agree_with_ed25519_compact_at_the_edges() {
            let a = Scalar::from(0x1234_5678_u64);
            let r = Scalar::from(0x9abc_def0_u64);
            let identity = EdwardsPoint::default();
            let torsion = EIGHT_TORSION[1]; // order 8
            let mut cases: Vec<(&str, [u8; 32], [u8; 64], bool)> = Vec::new();
            let (pk, sig) = sign(a, identity, r, identity);
            cases.push(("plain", pk, sig, true));
            // Cofactored equation: accepted by ed25519-compact (a cofactorless check refuses them).
            let (pk, sig) = sign(a, identity, r, torsion);
            cases.push(("R with a torsion component", pk, sig, true));
            let (pk, sig) = sign(a, torsion, r, identity);
            cases.push(("A with a torsion component", pk, sig, true));
            // S not reduced: S + L.
            let (pk, mut sig) = sign(a, identity, r, identity);
            let mut s_plus_l = [0u8; 32];
            let mut carry = 0u16;
            // L, the group order, little-endian.
            let l: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
                0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            for i in 0..32 {
                let sum = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
                s_plus_l[i] = sum as u8;
                carry = sum >> 8;
            }
            if carry == 0 && s_plus_l[31] < 0x80 {
                sig[32..].copy_from_slice(&s_plus_l);
                cases.push(("S + L", pk, sig, false));
            }
            // Small-order keys and R, with S = 0: "valid" for any message under a naive check.
            for (i, point) in EIGHT_TORSION.iter().enumerate() {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&point.compress().to_bytes());
                cases.push((["small-order A and R"; 8][i], point.compress().to_bytes(), sig, false));
            }
            // A non-canonical encoding of a key (y + p for y = 1, the identity) and "-0".
            let mut non_canonical = [0xffu8; 32];
            non_canonical[0] = 0xee;
            non_canonical[31] = 0x7f;
            let (_, sig) = sign(a, identity, r, identity);
            cases.push(("non-canonical A", non_canonical, sig, false));
            let mut minus_zero = [0u8; 32];
            minus_zero[0] = 1;
            minus_zero[31] = 0x80;
            cases.push(("A is -0", minus_zero, sig, false));
            // Every non-canonical y (p + 0 ..= p + 18), either sign: as the key and as R.
            for extra in 0..=18u8 {
                for sign in [0, 0x80] {
                    let mut encoding = [0xffu8; 32];
                    encoding[0] = 0xed + extra;
                    encoding[31] = 0x7f | sign;
                    cases.push(("non-canonical y as A", encoding, sig, false));
                    let (pk, mut with_r) = sign_fixed(a, r);
                    with_r[..32].copy_from_slice(&encoding);
                    cases.push(("non-canonical y as R", pk, with_r, false));
                }
            }
            // R non-canonical: the identity's y = 1 written as 1 + p.
            let (pk, mut sig) = sign(a, identity, r, identity);
            sig[..32].copy_from_slice(&non_canonical);
            cases.push(("non-canonical R", pk, sig, false));

            for (name, public, signature, expected) in cases {
                assert_eq!(compact(public, &signature), expected, "{name}: ed25519-compact itself");
                assert_eq!(answers(public, &signature), vec![expected; Backend::ALL.len()], "{name}");
            }
        }

        #[test]
        fn backends_agree_on_random_keys_and_tampering() {
            for seed in 1u8..33 {
                let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]));
                let message = [seed; 40];
                let signature = *pair.sk.sign(message, None);
                let key = PublicKey::from_bytes(*pair.pk);
                let mut tampered = signature;
                tampered[usize::from(seed) % 64] ^= 1 << (seed % 8);
                for sig in [signature, tampered] {
                    let expected = pair.pk.verify(message, &ed25519_compact::Signature::new(sig)).is_ok();
                    for &backend in Backend::ALL {
                        assert_eq!(
                            key.verify_with(backend, &message, &sig),
                            expected,
                            "{backend:?} seed {seed}"
                        );
                    }
                }
            }
        }
    }
}
