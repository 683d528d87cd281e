//! The offline/grace state machine: what the client knows (evidence) and what it concludes.
//!
//! Evidence:
//! - the license key, checked locally (shape, checksum, Ed25519 signature) against the pinned
//!   public JWKS;
//! - the last good **signed receipt** (a `VALID`/`IN_GRACE` validation, not degraded), whose
//!   `iat` starts the offline clock;
//! - the last definite refusal (`REVOKED`, `SUSPENDED`, ...), which drops the receipt;
//! - the outcome of the last contact attempt (good, or failed and why);
//! - an effective clock (see [`crate::effective_clock`]) and, after a clock rollback, a
//!   "suspicion" whose grace ends at a fixed effective time;
//! - or, for an air-gapped install, a signed offline license file.
//!
//! Timeline (receipt issued at `t0`, license `offline_days` O and `grace_days` G):
//!
//! ```text
//! t0 ........ t0+O ............ t0+O+G
//! Valid/Offline | Grace (warn)   | Invalid OFFLINE_TOO_LONG
//! ```
//!
//! Each boundary belongs to the later phase: at exactly `t0+O` the app is in grace, at exactly
//! `t0+O+G` it is invalid. A good validation restarts the timeline at the new receipt.
//!
//! Persisted as one JSON cache, authenticated with an HMAC keyed by the license key. The
//! receipt inside is also verified by its Ed25519 signature on every load; a cache whose MAC,
//! format, license or receipt does not check out is ignored as a whole.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use nls_core::key_ring::KeyRing;
use nls_core::license_token::{KeyRejection, VerifiedLicense, verify_jws, verify_license_key};
use nls_core::receipt::{
    OFFLINE_FILE_TYP, OfflineFileClaims, OfflineFileError, OfflineLicenseFile, Receipt, ReceiptError,
    verify_offline_file, verify_receipt,
};
use nls_core::validation::{ValidationCode, ValidationRequest, decide};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::UnixSeconds;
use crate::effective_clock::{EffectiveClock, Observation};
use crate::fleet_usage::{FleetView, UsageLedger};
use crate::license_state::{GraceReason, InvalidCode, LicenseInfo, LicenseState, ProofSource, Timestamp};

pub const CACHE_FORMAT: &str = "nls-client-cache/1";
const DAY: i64 = 86_400;

/// Knobs a deployment may tune. The license's own `offline_days`/`grace_days` come from the
/// signed receipt, never from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A backward clock step up to this many seconds is NTP slew, not a rollback.
    pub rollback_tolerance_seconds: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self { rollback_tolerance_seconds: 300 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Suspicion {
    reason: GraceReason,
    /// Effective time of detection.
    detected_at: UnixSeconds,
    /// Effective time at which the grace it opened ends.
    ends_at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Verdict {
    code: InvalidCode,
    reason: String,
    at: UnixSeconds,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Contact {
    Never,
    Good { at: UnixSeconds },
    Failed { at: UnixSeconds, why: String },
}

/// The cache body; its JSON (in this field order) is what the MAC covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheBody {
    format: String,
    license_id: String,
    receipt: Option<String>,
    clock: Option<EffectiveClock>,
    suspicion: Option<Suspicion>,
    verdict: Option<Verdict>,
    contact: Contact,
    server_grace_ends_at: Option<UnixSeconds>,
    /// The newest fleet-wide usage an answer showed (absent in caches from before it, which
    /// keeps their MAC valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet_usage: Option<FleetView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheFile {
    body: CacheBody,
    mac: String,
}

/// What loading a cache did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLoad {
    Loaded,
    /// The cache was ignored, as if absent; the reason is for logs.
    Ignored(String),
}

struct OfflineFileState {
    expires_at: UnixSeconds,
}

pub struct LicenseMachine {
    ring: KeyRing,
    key: String,
    key_check: Result<VerifiedLicense, KeyRejection>,
    policy: Policy,
    receipt: Option<(String, Receipt)>,
    clock: Option<EffectiveClock>,
    suspicion: Option<Suspicion>,
    verdict: Option<Verdict>,
    contact: Contact,
    server_grace_ends_at: Option<UnixSeconds>,
    offline_file: Option<OfflineFileState>,
    usage: UsageLedger,
}

/// The fleet view a receipt carries, if it carries one.
fn receipt_view(receipt: &Receipt) -> Option<FleetView> {
    let metrics = receipt.claims.usage.clone()?;
    Some(FleetView { as_of: receipt.claims.usage_as_of.unwrap_or(receipt.issued_at.timestamp()), metrics })
}

impl LicenseMachine {
    /// A machine for `license_key`, trusting the keys in `ring` (the pinned public JWKS).
    pub fn new(ring: KeyRing, license_key: &str, policy: Policy) -> Self {
        let key = license_key.trim().to_owned();
        let key_check = verify_license_key(&ring, &key);
        Self {
            ring,
            key,
            key_check,
            policy,
            receipt: None,
            clock: None,
            suspicion: None,
            verdict: None,
            contact: Contact::Never,
            server_grace_ends_at: None,
            offline_file: None,
            usage: UsageLedger::default(),
        }
    }

    /// Fleet-wide usage as the newest answer or receipt showed it, plus this process's
    /// deliveries since (see [`crate::fleet_usage`]).
    pub fn usage(&self) -> &UsageLedger {
        &self.usage
    }

    pub fn usage_mut(&mut self) -> &mut UsageLedger {
        &mut self.usage
    }

    pub fn license_key(&self) -> &str {
        &self.key
    }

    /// The license id from the verified key, if it verified.
    pub fn license_id(&self) -> Option<&str> {
        self.key_check.as_ref().ok().map(|k| k.claims.sub.as_str())
    }

    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The current receipt (JWS), e.g. to show to support.
    pub fn receipt(&self) -> Option<&str> {
        self.receipt.as_ref().map(|(jws, _)| jws.as_str())
    }

    // -----------------------------------------------------------------------------------------
    // Evidence

    /// Takes a wall-clock reading; a rollback past the tolerance opens a grace period that no
    /// later reading can close (only a good validation can).
    pub fn observe_clock(&mut self, now: Timestamp) {
        let now = now.timestamp();
        let clock = self.clock.get_or_insert_with(|| EffectiveClock::start(now));
        if let Observation::RolledBack { .. } = clock.observe(now, self.policy.rollback_tolerance_seconds) {
            let effective = clock.effective;
            self.suspect(GraceReason::ClockRollback, effective);
        }
    }

    fn suspect(&mut self, reason: GraceReason, effective: UnixSeconds) {
        if self.suspicion.is_some() {
            return; // never reopen (and so never extend) a grace already running
        }
        let grace_days = self.grace_days();
        self.suspicion =
            Some(Suspicion { reason, detected_at: effective, ends_at: plus_days(effective, grace_days) });
    }

    fn grace_days(&self) -> u32 {
        match (&self.receipt, &self.key_check) {
            (Some((_, r)), _) => r.claims.grace_days,
            (None, Ok(k)) => k.claims.grace_days,
            (None, Err(_)) => nls_core::license_token::DEFAULT_GRACE_DAYS,
        }
    }

    fn effective_now(&mut self, now: Timestamp) -> UnixSeconds {
        self.observe_clock(now);
        self.clock.map_or(now.timestamp(), |c| c.effective)
    }

    /// A good answer: `receipt` must verify, belong to this key, and say `VALID`/`IN_GRACE`.
    /// Returns why it was not accepted otherwise.
    pub fn record_good(
        &mut self,
        receipt_jws: &str,
        server_grace_ends_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), ReceiptError> {
        let receipt = self.check_receipt(receipt_jws)?;
        self.observe_clock(now);
        let issued = receipt.issued_at.timestamp();
        // Never trade a newer receipt for an older one (a replayed answer).
        let strictly_newer = self.receipt.as_ref().is_none_or(|(_, old)| receipt.issued_at > old.issued_at);
        if let Some(clock) = &mut self.clock {
            if strictly_newer {
                // Fresh server-signed time is the truth: resynchronise effective time to it.
                *clock = EffectiveClock { effective: issued, wall: now.timestamp() };
            } else {
                clock.raise_to(issued);
            }
        }
        if let Some(view) = receipt_view(&receipt) {
            self.usage.observe(view);
        }
        if strictly_newer {
            self.receipt = Some((receipt_jws.trim().to_owned(), receipt));
        }
        self.verdict = None;
        self.suspicion = None;
        self.server_grace_ends_at = server_grace_ends_at.map(|t| t.timestamp());
        self.contact = Contact::Good { at: now.timestamp() };
        Ok(())
    }

    fn check_receipt(&self, receipt_jws: &str) -> Result<Receipt, ReceiptError> {
        let receipt = verify_receipt(&self.ring, receipt_jws, &self.key)?;
        let same_license = self.license_id() == Some(receipt.claims.sub.as_str());
        if !same_license || !receipt.claims.code.is_valid() {
            return Err(ReceiptError::WrongKey);
        }
        Ok(receipt)
    }

    /// A definite "no" from the server. The cached receipt is dropped, so a restart while
    /// offline cannot bring the license back. `ACTIVATION_RATE_LIMITED` with a receipt in hand
    /// is only a "not now": it counts as a failed contact.
    pub fn record_refusal(&mut self, code: InvalidCode, reason: &str, now: Timestamp) {
        self.observe_clock(now);
        if code == InvalidCode::ActivationRateLimited && self.receipt.is_some() {
            self.record_unreachable(&format!("activation rate limited: {reason}"), now);
            return;
        }
        self.receipt = None;
        self.suspicion = None;
        self.verdict = Some(Verdict { code, reason: reason.to_owned(), at: now.timestamp() });
        self.contact = Contact::Good { at: now.timestamp() };
    }

    /// No usable answer: unreachable, 5xx, degraded, or an answer that does not verify.
    pub fn record_unreachable(&mut self, why: &str, now: Timestamp) {
        self.observe_clock(now);
        self.contact = Contact::Failed { at: now.timestamp(), why: why.to_owned() };
    }

    /// Loads an offline license file (air-gapped install): verified against the pinned JWKS,
    /// bound to this license key and, when it names one, to `fingerprint`; its TTL is judged in
    /// effective time, so a rolled-back clock cannot revive an expired file.
    pub fn load_offline_file(
        &mut self,
        file_json: &str,
        fingerprint: Option<&str>,
        now: Timestamp,
    ) -> Result<(), OfflineFileError> {
        let file: OfflineLicenseFile =
            serde_json::from_str(file_json).map_err(|_| OfflineFileError::Malformed)?;
        let (_, times, _) = verify_jws::<OfflineFileClaims>(&self.ring, OFFLINE_FILE_TYP, &file.token)
            .map_err(|_| OfflineFileError::BadSignature)?;
        let effective = self.effective_now(now);
        let at = DateTime::from_timestamp(effective, 0).unwrap_or(now);
        let claims = verify_offline_file(&self.ring, &file, fingerprint, at)?;
        if claims.license_key.trim() != self.key {
            return Err(OfflineFileError::Malformed);
        }
        let expires_at = times.expires_at.ok_or(OfflineFileError::Malformed)?.timestamp();
        if let (Some(clock), Some(issued)) = (&mut self.clock, times.issued_at) {
            clock.raise_to(issued.timestamp());
            // A file issued after a rollback was detected is fresh, trusted evidence.
            if self.suspicion.as_ref().is_some_and(|s| issued.timestamp() >= s.detected_at) {
                self.suspicion = None;
            }
        }
        self.offline_file = Some(OfflineFileState { expires_at });
        Ok(())
    }

    /// The license key inside an offline file, once the file's signature checks out (so an
    /// air-gapped app can be configured with the file alone).
    pub fn key_from_offline_file(ring: &KeyRing, file_json: &str) -> Result<String, OfflineFileError> {
        let file: OfflineLicenseFile =
            serde_json::from_str(file_json).map_err(|_| OfflineFileError::Malformed)?;
        let (_, _, claims) = verify_jws::<OfflineFileClaims>(ring, OFFLINE_FILE_TYP, &file.token)
            .map_err(|_| OfflineFileError::BadSignature)?;
        Ok(claims.license_key)
    }

    // -----------------------------------------------------------------------------------------
    // Persistence

    fn mac_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(CACHE_FORMAT.as_bytes());
        h.update([0]);
        h.update(self.key.as_bytes());
        h.finalize().into()
    }

    fn mac(&self, body: &CacheBody) -> String {
        let json = serde_json::to_vec(body).unwrap_or_default();
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key()).expect("HMAC takes any key length");
        mac.update(&json);
        hex(&mac.finalize().into_bytes())
    }

    /// The cache to write to disk (atomically, by the caller).
    pub fn to_cache(&self) -> String {
        let body = CacheBody {
            format: CACHE_FORMAT.to_owned(),
            license_id: self.license_id().unwrap_or_default().to_owned(),
            receipt: self.receipt.as_ref().map(|(jws, _)| jws.clone()),
            clock: self.clock,
            suspicion: self.suspicion.clone(),
            verdict: self.verdict.clone(),
            contact: self.contact.clone(),
            server_grace_ends_at: self.server_grace_ends_at,
            fleet_usage: self.usage.view().cloned(),
        };
        let mac = self.mac(&body);
        serde_json::to_string_pretty(&CacheFile { body, mac }).unwrap_or_default()
    }

    /// Loads a cache written by [`Self::to_cache`]. Anything that does not check out (edited,
    /// another license, a receipt that does not verify) is ignored as a whole.
    pub fn load_cache(&mut self, text: &str, now: Timestamp) -> CacheLoad {
        let outcome = self.try_load_cache(text);
        if let Err(why) = &outcome {
            self.observe_clock(now);
            return CacheLoad::Ignored(why.clone());
        }
        self.observe_clock(now);
        CacheLoad::Loaded
    }

    fn try_load_cache(&mut self, text: &str) -> Result<(), String> {
        let file: CacheFile = serde_json::from_str(text).map_err(|e| format!("unreadable cache: {e}"))?;
        let expected = self.mac(&file.body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), file.mac.as_bytes())) {
            return Err("the cache was edited or belongs to another license key (MAC mismatch)".to_owned());
        }
        let body = file.body;
        if body.format != CACHE_FORMAT {
            return Err(format!("unknown cache format {:?}", body.format));
        }
        if Some(body.license_id.as_str()) != self.license_id() {
            return Err("the cache is for another license".to_owned());
        }
        let receipt = match body.receipt {
            Some(jws) => {
                let r = self.check_receipt(&jws).map_err(|e| format!("cached receipt rejected: {e}"))?;
                Some((jws, r))
            }
            None => None,
        };
        if let Some(view) = receipt.as_ref().and_then(|(_, r)| receipt_view(r)) {
            self.usage.observe(view);
        }
        self.receipt = receipt;
        self.clock = body.clock;
        self.suspicion = body.suspicion;
        self.verdict = body.verdict;
        self.contact = body.contact;
        self.server_grace_ends_at = body.server_grace_ends_at;
        if let Some(view) = body.fleet_usage {
            self.usage.observe(view);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Conclusion

    /// The state at `now` (a wall-clock reading, which is also recorded).
    pub fn state(&mut self, now: Timestamp) -> LicenseState {
        let eff = self.effective_now(now);
        let clock = self.clock.unwrap_or(EffectiveClock::start(eff));
        let wall = |t: UnixSeconds| ts(clock.to_wall(t));
        let invalid = |code: InvalidCode, reason: String| LicenseState::Invalid { code, reason };

        let key = match &self.key_check {
            Ok(key) => key,
            Err(rejection) => {
                let code = InvalidCode::from_validation_code(ValidationCode::from(*rejection))
                    .unwrap_or(InvalidCode::Malformed);
                return invalid(code, format!("the license key is rejected: {rejection}"));
            }
        };
        if let Some(v) = &self.verdict {
            return invalid(v.code, v.reason.clone());
        }
        if let Some(file) = &self.offline_file {
            return self.offline_file_state(key, file.expires_at, eff, &wall);
        }
        let Some((_, receipt)) = &self.receipt else {
            let why = match &self.contact {
                Contact::Failed { why, .. } => format!("the license server cannot be reached ({why})"),
                _ => "the license has not been validated yet".to_owned(),
            };
            return invalid(
                InvalidCode::NotValidated,
                format!("{why} and no earlier validation is cached; connect to NLS once"),
            );
        };
        let claims = &receipt.claims;
        let license = LicenseInfo {
            id: claims.sub.clone(),
            customer_id: claims.customer_id.clone(),
            tier: claims.tier.clone(),
            features: claims.features.clone(),
            limits: claims.limits.clone(),
            offline_days: claims.offline_days,
            grace_days: claims.grace_days,
            expires_at: claims.license_expires_at.map(ts),
        };
        let t0 = receipt.issued_at.timestamp();
        let offline_until = plus_days(t0, claims.offline_days);
        let grace_until = plus_days(offline_until, claims.grace_days).min(receipt.expires_at.timestamp());
        let grace = |reason, ends_at: UnixSeconds, warning: String| LicenseState::Grace {
            license: license.clone(),
            reason,
            ends_at: wall(ends_at),
            warning,
        };

        if let Some(exp) = claims.license_expires_at {
            let end = plus_days(exp, claims.grace_days);
            if eff >= end {
                return invalid(
                    InvalidCode::Expired,
                    format!("the license expired at {}", ts(exp).to_rfc3339()),
                );
            }
        }
        if let Some(s) = &self.suspicion {
            let ends = s.ends_at.min(grace_until);
            if eff >= ends {
                return invalid(
                    InvalidCode::ClockRollback,
                    "the system clock was set back and no validation succeeded since".to_owned(),
                );
            }
            return grace(
                s.reason,
                ends,
                format!(
                    "the system clock was set back; fix it and let the app reach NLS before {}",
                    wall(ends).to_rfc3339()
                ),
            );
        }
        if eff >= grace_until {
            return invalid(
                InvalidCode::OfflineTooLong,
                format!("no successful validation since {}", receipt.issued_at.to_rfc3339()),
            );
        }
        if eff >= offline_until {
            return grace(
                GraceReason::OfflineTooLong,
                grace_until,
                format!(
                    "no successful validation since {}; the app stops at {} unless it reaches NLS",
                    receipt.issued_at.to_rfc3339(),
                    wall(grace_until).to_rfc3339()
                ),
            );
        }
        if let Some(exp) = claims.license_expires_at.filter(|e| eff >= *e) {
            let end = plus_days(exp, claims.grace_days);
            return grace(
                GraceReason::LicenseExpired,
                end,
                format!("the license expired; renew it before {}", wall(end).to_rfc3339()),
            );
        }
        if claims.code == ValidationCode::InGrace {
            let end = self.server_grace_ends_at.unwrap_or(grace_until);
            return grace(
                GraceReason::ServerGrace,
                end,
                format!(
                    "the license is in its grace period (payment past due or expired) until {}",
                    ts(end).to_rfc3339()
                ),
            );
        }
        match &self.contact {
            Contact::Good { .. } => LicenseState::Valid {
                license,
                source: ProofSource::Receipt,
                valid_until: wall(offline_until),
            },
            Contact::Never => LicenseState::Offline {
                license,
                last_validated_at: receipt.issued_at,
                offline_until: wall(offline_until),
                grace_until: wall(grace_until),
                why: "not checked since start".to_owned(),
            },
            Contact::Failed { why, .. } => LicenseState::Offline {
                license,
                last_validated_at: receipt.issued_at,
                offline_until: wall(offline_until),
                grace_until: wall(grace_until),
                why: why.clone(),
            },
        }
    }

    fn offline_file_state(
        &self,
        key: &VerifiedLicense,
        expires_at: UnixSeconds,
        eff: UnixSeconds,
        wall: &dyn Fn(UnixSeconds) -> Timestamp,
    ) -> LicenseState {
        let claims = &key.claims;
        let license = LicenseInfo {
            id: claims.sub.clone(),
            customer_id: claims.customer_id.clone(),
            tier: claims.tier.clone(),
            features: claims.features.clone(),
            limits: claims.limits.clone(),
            offline_days: claims.offline_days,
            grace_days: claims.grace_days,
            expires_at: key.expires_at,
        };
        if eff >= expires_at {
            return LicenseState::Invalid {
                code: InvalidCode::OfflineFileInvalid,
                reason: format!("the offline license file expired at {}", ts(expires_at).to_rfc3339()),
            };
        }
        let decision = decide(key, &ValidationRequest::default(), None, ts(eff));
        if let Some(code) = InvalidCode::from_validation_code(decision.code) {
            return LicenseState::Invalid {
                code,
                reason: format!("the license key says {}", decision.code.as_str()),
            };
        }
        if let Some(s) = &self.suspicion {
            let ends = s.ends_at.min(expires_at);
            if eff >= ends {
                return LicenseState::Invalid {
                    code: InvalidCode::ClockRollback,
                    reason: "the system clock was set back; load a newly issued offline file".to_owned(),
                };
            }
            return LicenseState::Grace {
                license,
                reason: GraceReason::ClockRollback,
                ends_at: wall(ends),
                warning: "the system clock was set back; load a newly issued offline license file".to_owned(),
            };
        }
        if decision.code == ValidationCode::InGrace {
            let end = decision.license.grace_ends_at.map_or(expires_at, |t| t.timestamp()).min(expires_at);
            return LicenseState::Grace {
                license,
                reason: GraceReason::LicenseExpired,
                ends_at: wall(end),
                warning: decision.warning.unwrap_or_else(|| "the license is in grace".to_owned()),
            };
        }
        LicenseState::Valid { license, source: ProofSource::OfflineFile, valid_until: wall(expires_at) }
    }
}

fn ts(secs: UnixSeconds) -> Timestamp {
    let out_of_range = if secs < 0 { DateTime::<Utc>::MIN_UTC } else { DateTime::<Utc>::MAX_UTC };
    DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or(out_of_range)
}

/// `at` plus `days` days, saturating: signed claims from before the server bounded license
/// terms may hold any `u32`, and time arithmetic on them must never overflow.
fn plus_days(at: UnixSeconds, days: u32) -> UnixSeconds {
    at.saturating_add(i64::from(days) * DAY)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
