//! The Node package's core: `nls-client-core` (receipt checks, offline/grace state machine,
//! clock-rollback detection, answer classification) exported with wasm-bindgen. Times cross
//! the boundary as unix seconds; structured values as JSON text (parsed by the TS layer,
//! which owns the types in `clients/node/src/types.ts`).

use chrono::{DateTime, Utc};
use nls_client_core::fleet_usage::standing;
use nls_client_core::schedule::{backoff_delay, next_check_delay};
use nls_client_core::validation_answer::heartbeat_needs_validation;
use nls_client_core::{CacheLoad, LicenseMachine, Policy};
use nls_core::key_ring::KeyRing;
use wasm_bindgen::prelude::*;

fn at(unix_seconds: f64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix_seconds.floor() as i64, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn ring(jwks_json: &str) -> Result<KeyRing, JsError> {
    KeyRing::parse_jwks_json(jwks_json)
        .map_err(|e| JsError::new(&format!("the pinned JWKS is not usable: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[wasm_bindgen]
pub struct LicenseCore {
    machine: LicenseMachine,
}

#[wasm_bindgen]
impl LicenseCore {
    #[wasm_bindgen(constructor)]
    pub fn new(
        jwks_json: &str,
        license_key: &str,
        rollback_tolerance_seconds: Option<f64>,
    ) -> Result<LicenseCore, JsError> {
        let mut policy = Policy::default();
        if let Some(t) = rollback_tolerance_seconds {
            policy.rollback_tolerance_seconds = t as i64;
        }
        Ok(Self { machine: LicenseMachine::new(ring(jwks_json)?, license_key, policy) })
    }

    #[wasm_bindgen(js_name = licenseKey)]
    pub fn license_key(&self) -> String {
        self.machine.license_key().to_owned()
    }

    #[wasm_bindgen(js_name = licenseId)]
    pub fn license_id(&self) -> Option<String> {
        self.machine.license_id().map(str::to_owned)
    }

    /// Loads the on-disk cache; returns `undefined` when loaded, or why it was ignored.
    #[wasm_bindgen(js_name = loadCache)]
    pub fn load_cache(&mut self, text: &str, now: f64) -> Option<String> {
        match self.machine.load_cache(text, at(now)) {
            CacheLoad::Loaded => None,
            CacheLoad::Ignored(why) => Some(why),
        }
    }

    #[wasm_bindgen(js_name = toCache)]
    pub fn to_cache(&self) -> String {
        self.machine.to_cache()
    }

    #[wasm_bindgen(js_name = observeClock)]
    pub fn observe_clock(&mut self, now: f64) {
        self.machine.observe_clock(at(now));
    }

    /// Applies a validation answer (HTTP status and body); returns the outcome as JSON.
    #[wasm_bindgen(js_name = applyValidationResponse)]
    pub fn apply_validation_response(&mut self, status: u16, body: &str, now: f64) -> String {
        json(&self.machine.apply_validation_response(status, body, at(now)))
    }

    #[wasm_bindgen(js_name = recordUnreachable)]
    pub fn record_unreachable(&mut self, why: &str, now: f64) {
        self.machine.record_unreachable(why, at(now));
    }

    #[wasm_bindgen(js_name = loadOfflineFile)]
    pub fn load_offline_file(
        &mut self,
        file_json: &str,
        fingerprint: Option<String>,
        now: f64,
    ) -> Result<(), JsError> {
        self.machine
            .load_offline_file(file_json, fingerprint.as_deref(), at(now))
            .map_err(|e| JsError::new(&format!("the offline license file is rejected: {e}")))
    }

    /// The license state as JSON (`{"state": "valid" | "offline" | "grace" | "invalid", ...}`).
    pub fn state(&mut self, now: f64) -> String {
        json(&self.machine.state(at(now)))
    }

    #[wasm_bindgen(js_name = hasFeature)]
    pub fn has_feature(&mut self, feature: &str, now: f64) -> bool {
        self.machine.state(at(now)).has_feature(feature)
    }

    /// A usage batch the server acknowledged: `records_json` is the batch's records
    /// (`[{metric, value, at}]`), `delivered_at` the server's `Date` (or the local clock).
    #[wasm_bindgen(js_name = noteDelivered)]
    pub fn note_delivered(&mut self, records_json: &str, delivered_at: f64) -> Result<(), JsError> {
        #[derive(serde::Deserialize)]
        struct Record {
            metric: String,
            value: u64,
            at: DateTime<Utc>,
        }
        let records: Vec<Record> =
            serde_json::from_str(records_json).map_err(|e| JsError::new(&format!("usage records: {e}")))?;
        let items = records.iter().map(|r| (r.metric.as_str(), r.value, r.at));
        self.machine.usage_mut().note_delivered(items, delivered_at.floor() as i64);
        Ok(())
    }

    /// `{fleet_used, delivered_unconfirmed, spooled, used}` for `metric` in `period`
    /// (`2026-12`) as JSON; `used` is what the limit check counts.
    #[wasm_bindgen(js_name = usageStanding)]
    pub fn usage_standing(&self, metric: &str, period: &str, spooled: f64, own_total: f64) -> String {
        json(&standing(self.machine.usage(), metric, period, spooled as u64, own_total as u64))
    }

    /// The newest fleet view (`{as_of, metrics: {metric: {used, limit, period}}}`) as JSON, or
    /// `undefined` when no answer carried one.
    #[wasm_bindgen(js_name = fleetUsage)]
    pub fn fleet_usage(&self) -> Option<String> {
        self.machine.usage().view().map(json)
    }

    /// `{allowed, limit, used, remaining}` as JSON.
    #[wasm_bindgen(js_name = checkLimit)]
    pub fn check_limit(&mut self, metric: &str, amount: f64, used: f64, now: f64) -> String {
        json(&self.machine.state(at(now)).check_limit(metric, amount as u64, used as u64))
    }
}

#[wasm_bindgen(js_name = keyFromOfflineFile)]
pub fn key_from_offline_file(jwks_json: &str, file_json: &str) -> Result<String, JsError> {
    LicenseMachine::key_from_offline_file(&ring(jwks_json)?, file_json)
        .map_err(|e| JsError::new(&format!("the offline license file is rejected: {e}")))
}

#[wasm_bindgen(js_name = heartbeatNeedsValidation)]
pub fn heartbeat_needs_validation_js(status: u16, body: &str) -> bool {
    heartbeat_needs_validation(status, body)
}

#[wasm_bindgen(js_name = nextCheckDelaySeconds)]
pub fn next_check_delay_seconds(next_check_in: f64, now: f64, random: f64) -> f64 {
    next_check_delay(next_check_in as i64, now as i64, random) as f64
}

#[wasm_bindgen(js_name = backoffDelaySeconds)]
pub fn backoff_delay_seconds(attempt: u32, random: f64) -> f64 {
    backoff_delay(attempt, random) as f64
}

/// A cloud service's access-token checks (docs/cloud-access.md): the core's `AccessVerifier`
/// (typ, kid, EdDSA, aud, nbf, exp; a cache of tokens that verified) and the per-license
/// token bucket, for the Express middleware `requireAccessToken`. Times are unix milliseconds.
#[wasm_bindgen]
pub struct AccessTokenCore {
    verifier: nls_core::access_token::AccessVerifier,
    buckets: nls_core::cloud_rate::LicenseBuckets,
}

#[wasm_bindgen]
impl AccessTokenCore {
    #[wasm_bindgen(constructor)]
    pub fn new(jwks_json: &str, audience: &str) -> Result<AccessTokenCore, JsError> {
        Ok(Self {
            verifier: nls_core::access_token::AccessVerifier::new(ring(jwks_json)?, audience),
            buckets: nls_core::cloud_rate::LicenseBuckets::default(),
        })
    }

    /// Trusts a freshly fetched JWKS from now on.
    #[wasm_bindgen(js_name = replaceJwks)]
    pub fn replace_jwks(&self, jwks_json: &str) -> Result<(), JsError> {
        self.verifier.replace_ring(ring(jwks_json)?);
        Ok(())
    }

    /// `{"ok": true, "claims": {...}, "expires_at": unix seconds}` or
    /// `{"ok": false, "code": "...", "message": "..."}` (code `unknown_kid`: refresh the JWKS).
    pub fn verify(&self, token: &str, now_ms: f64) -> String {
        let now = DateTime::from_timestamp_millis(now_ms as i64).unwrap_or(DateTime::<Utc>::MIN_UTC);
        match self.verifier.verify(token, now) {
            Ok(v) => json(&serde_json::json!({
                "ok": true,
                "claims": v.claims,
                "expires_at": v.expires_at.timestamp(),
            })),
            Err(rejection) => json(&serde_json::json!({
                "ok": false,
                "code": rejection.code(),
                "message": rejection.to_string(),
            })),
        }
    }

    /// Takes one call from the license's bucket; `rate_json` is the token's `rate` claim.
    /// `{allowed, limit, remaining, reset_secs, retry_after_secs}`.
    pub fn take(&self, license_id: &str, rate_json: &str, now_ms: f64) -> Result<String, JsError> {
        let limits: nls_core::access_token::CloudLimits =
            serde_json::from_str(rate_json).map_err(|e| JsError::new(&format!("rate: {e}")))?;
        let v = self.buckets.take(license_id, &limits, now_ms as i64);
        Ok(json(&serde_json::json!({
            "allowed": v.allowed,
            "limit": v.limit,
            "remaining": v.remaining,
            "reset_secs": v.reset_secs,
            "retry_after_secs": v.retry_after_secs,
        })))
    }
}
