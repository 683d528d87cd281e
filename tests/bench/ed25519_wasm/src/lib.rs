//! Exports one loop per Ed25519 verifier, each verifying the same license-key-sized signature
//! `n` times and returning how many verified (so nothing can be optimised away). The host
//! times the calls. No imports: the module runs on any wasm engine as it is.

use std::sync::OnceLock;

use curve25519_dalek::EdwardsPoint;

// The core's own curve25519-dalek backend: the very file nls-core compiles.
#[path = "../../../../shared/src/ed25519/dalek.rs"]
mod dalek;

struct Fixture {
    public: [u8; 32],
    message: Vec<u8>,
    signature: [u8; 64],
    compact_key: ed25519_compact::PublicKey,
    dalek_minus_a: EdwardsPoint,
    ed25519_dalek_key: ed25519_dalek::VerifyingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([42; 32]));
        // About the size of a license key's signing input (header and claims, base64url).
        let message: Vec<u8> =
            (0..420u32).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789._-"[(i % 39) as usize]).collect();
        let signature = *pair.sk.sign(&message, None);
        let public = *pair.pk;
        Fixture {
            public,
            compact_key: pair.pk,
            dalek_minus_a: -dalek::decode_point(&public).expect("valid key"),
            ed25519_dalek_key: ed25519_dalek::VerifyingKey::from_bytes(&public).expect("valid key"),
            message,
            signature,
        }
    })
}

fn count(n: u32, verify: impl Fn(&Fixture) -> bool) -> u32 {
    let f = fixture();
    (0..n).map(|_| u32::from(verify(std::hint::black_box(f)))).sum()
}

/// Builds the fixture, so the timed calls do not include it.
#[unsafe(no_mangle)]
pub extern "C" fn setup() -> u32 {
    count(1, |f| f.compact_key.verify(&f.message, &ed25519_compact::Signature::new(f.signature)).is_ok())
}

#[unsafe(no_mangle)]
pub extern "C" fn verify_compact(n: u32) -> u32 {
    count(n, |f| f.compact_key.verify(&f.message, &ed25519_compact::Signature::new(f.signature)).is_ok())
}

#[unsafe(no_mangle)]
pub extern "C" fn verify_dalek(n: u32) -> u32 {
    count(n, |f| dalek::verify(&f.public, &f.dalek_minus_a, &f.message, &f.signature))
}

#[unsafe(no_mangle)]
pub extern "C" fn verify_ed25519_dalek(n: u32) -> u32 {
    use ed25519_dalek::Verifier as _;
    count(n, |f| {
        f.ed25519_dalek_key.verify(&f.message, &ed25519_dalek::Signature::from_bytes(&f.signature)).is_ok()
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn verify_ed25519_dalek_strict(n: u32) -> u32 {
    count(n, |f| {
        f.ed25519_dalek_key
            .verify_strict(&f.message, &ed25519_dalek::Signature::from_bytes(&f.signature))
            .is_ok()
    })
}
