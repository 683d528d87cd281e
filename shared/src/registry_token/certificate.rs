//! A self-signed X.509 v3 certificate of the registry signing key, DER-encoded by hand: the
//! registry only reads the public key out of its `rootcertbundle`, so a dozen DER values do
//! and no X.509 crate (and its C or wasm baggage) is needed.

use chrono::Datelike as _;
use sha2::{Digest, Sha256};

use super::RegistrySigningKey;
use crate::model::Timestamp;

const OID_ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn time(at: Timestamp) -> Vec<u8> {
    // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime after.
    if at.year() < 2050 {
        tlv(0x17, at.format("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        tlv(0x18, at.format("%Y%m%d%H%M%SZ").to_string().as_bytes())
    }
}

fn name(common_name: &str) -> Vec<u8> {
    let attribute = sequence(&[tlv(0x06, OID_COMMON_NAME), tlv(0x0c, common_name.as_bytes())]);
    sequence(&[tlv(0x31, &attribute)])
}

/// The certificate, valid from `not_before` to `not_after`, subject and issuer `common_name`.
pub fn self_signed_certificate_der(
    key: &RegistrySigningKey,
    common_name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Vec<u8> {
    let algorithm = sequence(&[tlv(0x06, OID_ECDSA_WITH_SHA256)]);
    // A positive 16-byte serial derived from the key, so the same key gives the same serial.
    let mut serial = Sha256::digest(key.public_key_spki_der())[..16].to_vec();
    serial[0] &= 0x7f;
    serial[0] |= 0x40;
    // CA: true (critical), keyUsage digitalSignature + keyCertSign (critical): a root that
    // also signs, which is what an `x5c` chain to it would need.
    let basic_constraints = sequence(&[tlv(0x06, OID_BASIC_CONSTRAINTS), tlv(0x01, &[0xff]), {
        tlv(0x04, &sequence(&[tlv(0x01, &[0xff])]))
    }]);
    let key_usage =
        sequence(&[tlv(0x06, OID_KEY_USAGE), tlv(0x01, &[0xff]), tlv(0x04, &tlv(0x03, &[0x02, 0x84]))]);
    let extensions = tlv(0xa3, &sequence(&[basic_constraints, key_usage]));
    let tbs = sequence(&[
        tlv(0xa0, &tlv(0x02, &[0x02])),
        tlv(0x02, &serial),
        algorithm.clone(),
        name(common_name),
        sequence(&[time(not_before), time(not_after)]),
        name(common_name),
        key.public_key_spki_der(),
        extensions,
    ]);
    let signature = key.sign_der(&tbs);
    let mut bit_string = vec![0u8];
    bit_string.extend(signature);
    sequence(&[tbs, algorithm, tlv(0x03, &bit_string)])
}
