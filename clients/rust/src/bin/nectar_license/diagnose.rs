//! `nectar-license diagnose`: every check, in the order a problem would cause the next one
//! (configuration, key, state dir, network layer by layer, time, the server's answer, the
//! license state). The exit code is the class of the first failing check; 0 only when nothing
//! failed, which includes a usable license.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nls_client::{AnswerOutcome, GraceReason, InvalidCode, LicenseState};
use nls_core::key_ring::KeyRing;
use nls_core::validation::{ValidationCode, ValidationRequest, decide};
use serde::Serialize;

use crate::failure_class::FailureClass;
use crate::local_state::{self, CacheStatus, KeySummary};
use crate::network_probe::{self, Target};
use crate::resolved_config::ResolvedConfig;

/// Beyond this, the clocks disagree enough to matter (the client's rollback tolerance).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;
/// Below this, the state disk is about to fill up (the spool and cache need little).
const MIN_FREE_BYTES: u64 = 50 * 1024 * 1024;
const SLOW_LATENCY: Duration = Duration::from_secs(2);
const CERT_WARN_DAYS: i64 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub group: &'static str,
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub class: FailureClass,
    pub exit_code: u8,
    pub check: String,
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DiagnoseReport {
    pub tool_version: &'static str,
    pub at: DateTime<Utc>,
    pub usable: bool,
    pub exit_code: u8,
    pub failure: Option<Verdict>,
    pub key: KeySummary,
    pub server: Option<String>,
    pub deployment_id: Option<String>,
    pub license_state: Option<LicenseState>,
    pub checks: Vec<Check>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, group: &'static str, name: &'static str, status: CheckStatus, detail: String) {
        self.0.push(Check { group, name, status, detail, fix: None, class: None });
    }
    fn ok(&mut self, group: &'static str, name: &'static str, detail: impl Into<String>) {
        self.push(group, name, CheckStatus::Ok, detail.into());
    }
    fn warn(&mut self, group: &'static str, name: &'static str, detail: impl Into<String>, fix: &str) {
        self.push(group, name, CheckStatus::Warn, detail.into());
        self.0.last_mut().expect("just pushed").fix = Some(fix.to_owned());
    }
    fn skip(&mut self, group: &'static str, name: &'static str, detail: impl Into<String>) {
        self.push(group, name, CheckStatus::Skip, detail.into());
    }
    fn fail(
        &mut self,
        group: &'static str,
        name: &'static str,
        class: FailureClass,
        detail: impl Into<String>,
        fix: &str,
    ) {
        self.0.push(Check {
            group,
            name,
            status: CheckStatus::Fail,
            detail: detail.into(),
            fix: Some(fix.to_owned()),
            class: Some(class),
        });
    }
}

pub fn run(config: &ResolvedConfig) -> DiagnoseReport {
    let now = Utc::now();
    let mut checks = Checks::default();

    // ---- configuration
    match &config.server_url {
        Some(url) => checks.ok("config", "server", url.clone()),
        None => checks.warn(
            "config",
            "server",
            "no server configured: air-gapped mode, the offline license file is the only proof",
            "set NECTAR_LICENSE_SERVER (or --server) unless this site is air-gapped",
        ),
    }
    let ring = match &config.jwks {
        Ok((path, text)) => match KeyRing::parse_jwks_json(text) {
            Ok(ring) => {
                let kids: Vec<String> = ring.jwks().keys.iter().filter_map(|k| k.kid.clone()).collect();
                checks.ok("config", "jwks", format!("{} (kids: {})", path.display(), kids.join(", ")));
                Some(ring)
            }
            Err(e) => {
                checks.fail(
                    "config",
                    "jwks",
                    FailureClass::Config,
                    format!("{}: not a usable JWKS: {e}", path.display()),
                    "point NECTAR_LICENSE_JWKS at the nls-jwks.json shipped with the install package",
                );
                None
            }
        },
        Err(why) => {
            checks.fail(
                "config",
                "jwks",
                FailureClass::Config,
                why.clone(),
                "set NECTAR_LICENSE_JWKS (or --jwks) to the nls-jwks.json shipped with the install package",
            );
            None
        }
    };
    let data_dir = config.data_dir.clone();
    if data_dir.is_none() {
        checks.fail(
            "config",
            "data_dir",
            FailureClass::Config,
            "no data dir configured",
            "set NECTAR_LICENSE_DATA_DIR (or --data-dir) to the app's license state directory",
        );
    }

    // ---- key
    let key = match &ring {
        Some(ring) => local_state::effective_key(ring, config.key.as_deref(), data_dir.as_deref()),
        None => config.key.clone(),
    };
    check_key(&mut checks, ring.as_ref(), key.as_deref(), config.server_url.is_some(), now);

    // ---- state dir
    let dir_ok = match &data_dir {
        Some(dir) => check_data_dir(&mut checks, dir),
        None => false,
    };
    let view = match (&ring, &key) {
        (Some(ring), Some(key)) => Some(local_state::load_view(
            ring.clone(),
            key,
            data_dir.as_deref(),
            config.fingerprint.as_deref(),
            now,
        )),
        _ => None,
    };
    if let Some(view) = &view {
        match &view.cache {
            CacheStatus::Absent => checks.ok("state", "receipt_cache", "no cached receipt yet"),
            CacheStatus::Loaded => {
                checks.ok("state", "receipt_cache", "readable, seal and receipt signature ok")
            }
            CacheStatus::Ignored { why } => checks.warn(
                "state",
                "receipt_cache",
                format!("ignored: {why}"),
                "nothing to do if the server is reachable: the next good check rewrites it",
            ),
            CacheStatus::Unreadable { why } => checks.fail(
                "state",
                "receipt_cache",
                FailureClass::DataDir,
                format!("unreadable: {why}"),
                "give the app's user read/write access to the data dir",
            ),
        }
    }
    let deployment_id = data_dir.as_deref().and_then(|dir| deployment_id(dir, dir_ok));

    // ---- time, from what the client recorded (before any new contact clears it)
    let mut view = view;
    let rollback = view.as_mut().map(|v| v.machine.state(now)).and_then(|state| match state {
        LicenseState::Grace { reason: GraceReason::ClockRollback, ends_at, .. } => {
            Some(format!("the clock was set back; grace until {}", ends_at.to_rfc3339()))
        }
        LicenseState::Invalid { code: InvalidCode::ClockRollback, reason } => Some(reason),
        _ => None,
    });

    // ---- network and server
    let mut server_date = None;
    let mut answer: Option<AnswerOutcome> = None;
    let mut answer_detail = String::new();
    if let Some(url) = &config.server_url {
        match network_probe::parse_target(url) {
            Err(why) => checks.fail(
                "network",
                "url",
                FailureClass::Config,
                why,
                "set NECTAR_LICENSE_SERVER to the https:// URL from your welcome email",
            ),
            Ok(target) => {
                if check_network(&mut checks, &target, config.timeout) {
                    let agent = network_probe::agent(config.timeout);
                    let health = format!("{}/health", url.trim_end_matches('/'));
                    match network_probe::exchange(&agent, &health, None) {
                        Err(failure) => checks.fail(
                            "network",
                            "http",
                            failure.class,
                            failure.message,
                            fix_for(failure.class),
                        ),
                        Ok(facts) if facts.status != 200 => checks.fail(
                            "network",
                            "http",
                            FailureClass::Http,
                            format!(
                                "GET /health answered HTTP {} in {} ms",
                                facts.status,
                                facts.latency.as_millis()
                            ),
                            fix_for(FailureClass::Http),
                        ),
                        Ok(facts) => {
                            let ms = facts.latency.as_millis();
                            if facts.latency > SLOW_LATENCY {
                                checks.warn(
                                    "network",
                                    "http",
                                    format!("GET /health: 200 in {ms} ms (slow)"),
                                    "check the proxy or the route to the license server",
                                );
                            } else {
                                checks.ok("network", "http", format!("GET /health: 200 in {ms} ms"));
                            }
                            server_date = facts.date;
                            if let (Some(key), Some(view)) = (&key, view.as_mut()) {
                                let (outcome, detail) =
                                    validate(&agent, url, key, deployment_id.as_deref(), view, now);
                                answer = Some(outcome);
                                answer_detail = detail;
                            }
                        }
                    }
                }
            }
        }
    } else {
        checks.skip("network", "all", "no server configured");
    }

    match server_date {
        Some(date) => {
            let skew = (now - date).num_seconds();
            let detail = format!(
                "this machine is {} {} the server ({})",
                local_state::human_duration(skew.abs()),
                if skew >= 0 { "ahead of" } else { "behind" },
                date.to_rfc2822()
            );
            if skew.abs() > MAX_CLOCK_SKEW_SECONDS {
                checks.fail(
                    "time",
                    "clock_skew",
                    FailureClass::ClockSkew,
                    detail,
                    "sync this machine's clock (enable NTP: timedatectl set-ntp true)",
                );
            } else {
                checks.ok("time", "clock_skew", detail);
            }
        }
        None if config.server_url.is_some() => {
            checks.skip("time", "clock_skew", "no Date header from the server (not reached)")
        }
        None => checks.skip("time", "clock_skew", "no server configured"),
    }
    match rollback {
        Some(detail) => checks.fail(
            "time",
            "clock_rollback",
            FailureClass::ClockRollback,
            detail,
            "set the clock right (NTP), then let the app reach the license server once",
        ),
        None if view.is_some() => checks.ok("time", "clock_rollback", "no rollback recorded"),
        None => checks.skip("time", "clock_rollback", "no key or JWKS to open the cache with"),
    }

    match &answer {
        None => checks.skip("server", "validation", "the server was not asked (see the checks above)"),
        Some(AnswerOutcome::Good { warning, .. }) => match warning {
            Some(w) => checks.warn(
                "server",
                "validation",
                format!("{answer_detail}; {w}"),
                "renew or settle the payment",
            ),
            None => checks.ok("server", "validation", answer_detail.clone()),
        },
        Some(AnswerOutcome::Refused { code, reason, .. }) => {
            let class = class_of(*code);
            checks.fail("server", "validation", class, format!("{code}: {reason}"), fix_for_code(*code));
        }
        Some(AnswerOutcome::Offline { why }) => {
            checks.fail("server", "validation", FailureClass::Http, why.clone(), fix_for(FailureClass::Http))
        }
    }

    // ---- the conclusion: the state the app would be in now
    let state = view.as_mut().map(|v| v.machine.state(now));
    match &state {
        Some(LicenseState::Invalid { code, reason }) => checks.fail(
            "license",
            "state",
            class_of(*code),
            format!("INVALID ({code}): {reason}"),
            fix_for_code(*code),
        ),
        Some(state) => {
            let warning = state.warning();
            match warning {
                Some(w) => {
                    checks.warn("license", "state", format!("usable: {w}"), "see the failing checks above")
                }
                None => checks.ok("license", "state", "usable: valid"),
            }
        }
        None => checks.skip("license", "state", "no key or JWKS: nothing to judge"),
    }

    let failure = checks.0.iter().find(|c| c.status == CheckStatus::Fail).map(|c| {
        let class = c.class.unwrap_or(FailureClass::Internal);
        Verdict {
            class,
            exit_code: class.exit_code(),
            check: format!("{}.{}", c.group, c.name),
            fix: c.fix.clone(),
        }
    });
    DiagnoseReport {
        tool_version: env!("CARGO_PKG_VERSION"),
        at: now,
        usable: state.as_ref().is_some_and(LicenseState::is_usable),
        exit_code: failure.as_ref().map_or(0, |f| f.exit_code),
        failure,
        key: key.as_deref().map(local_state::key_summary).unwrap_or_default(),
        server: config.server_url.clone(),
        deployment_id,
        license_state: state,
        checks: checks.0,
    }
}

fn check_key(
    checks: &mut Checks,
    ring: Option<&KeyRing>,
    key: Option<&str>,
    server_configured: bool,
    now: DateTime<Utc>,
) {
    let Some(key) = key else {
        checks.fail(
            "key",
            "present",
            FailureClass::Config,
            "no license key (flag, key file, NECTAR_LICENSE_KEY or an imported offline file)",
            "set NECTAR_LICENSE_KEY to the key from your welcome email",
        );
        return;
    };
    checks.ok("key", "present", format!("{} characters", key.len()));
    match nls_core::key_format::parse_key(key) {
        Err(nls_core::key_format::KeyFormatError::ChecksumMismatch) => {
            checks.fail(
                "key",
                "checksum",
                FailureClass::KeyFormat,
                "the key's checksum does not match: a typo or a truncated copy",
                "copy the key again from the welcome email, in full (it ends with -<8 hex characters>)",
            );
            return;
        }
        Err(_) => {
            checks.fail(
                "key",
                "format",
                FailureClass::KeyFormat,
                "this is not an NLS license key (expected NLS-<token>-<checksum>)",
                "use the license key from your welcome email, not a password or registry token",
            );
            return;
        }
        Ok(_) => checks.ok("key", "format", "NLS-<JWS>-<checksum>, checksum ok"),
    }
    let Some(ring) = ring else {
        checks.skip("key", "signature", "no JWKS to verify with");
        return;
    };
    let kid = local_state::key_summary(key).kid.unwrap_or_default();
    if ring.verifier(&kid).is_none() {
        checks.fail(
            "key",
            "kid",
            FailureClass::KeyUnknownKid,
            format!("the key is signed by kid {kid:?}, which the pinned JWKS does not hold"),
            "install the current nls-jwks.json (GET /.well-known/jwks.json), or use the key issued for this install",
        );
        return;
    }
    checks.ok("key", "kid", format!("kid {kid} is in the JWKS"));
    let verified = match nls_core::license_token::verify_license_key(ring, key) {
        Ok(v) => v,
        Err(e) => {
            checks.fail(
                "key",
                "signature",
                FailureClass::KeySignature,
                format!("the signature does not verify ({e}): the key was edited"),
                "use the key exactly as issued; an edited key never verifies",
            );
            return;
        }
    };
    checks.ok("key", "signature", "Ed25519 signature verifies");
    let decision = decide(&verified, &ValidationRequest::default(), None, now);
    let expiry =
        verified.expires_at.map_or("perpetual".to_owned(), |t| format!("expires {}", t.to_rfc3339()));
    match decision.code {
        ValidationCode::Expired | ValidationCode::NotYetValid if server_configured => checks.warn(
            "key",
            "expiry",
            format!(
                "the key alone says {} ({expiry}); the server's record decides (a renewal keeps the key)",
                decision.code.as_str()
            ),
            "see the server check below",
        ),
        ValidationCode::Expired => checks.fail(
            "key",
            "expiry",
            FailureClass::Expired,
            format!("expired ({expiry})"),
            fix_for(FailureClass::Expired),
        ),
        ValidationCode::NotYetValid => {
            checks.fail("key", "expiry", FailureClass::Refused, "not valid yet", "check this machine's clock")
        }
        ValidationCode::InGrace => checks.warn(
            "key",
            "expiry",
            format!("in its grace period ({expiry})"),
            fix_for(FailureClass::Expired),
        ),
        _ => checks.ok("key", "expiry", expiry),
    }
}

fn check_data_dir(checks: &mut Checks, dir: &Path) -> bool {
    let fix = "point NECTAR_LICENSE_DATA_DIR at a writable directory on a persistent volume";
    if let Err(e) = std::fs::create_dir_all(dir) {
        checks.fail(
            "state",
            "data_dir",
            FailureClass::DataDir,
            format!("{} cannot be created: {e}", dir.display()),
            fix,
        );
        return false;
    }
    let probe = dir.join(format!(".nectar-license-probe-{}", std::process::id()));
    let written = nls_client::durable_file::write_atomic(&probe, b"probe");
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = written {
        checks.fail(
            "state",
            "data_dir",
            FailureClass::DataDir,
            format!("{} is not writable (write + fsync): {e}", dir.display()),
            fix,
        );
        return false;
    }
    checks.ok("state", "data_dir", format!("{}: writable, fsync works", dir.display()));
    match free_bytes(dir) {
        Some(free) if free < MIN_FREE_BYTES => checks.fail(
            "state",
            "disk",
            FailureClass::DataDir,
            format!("{} MB free", free / 1_048_576),
            "free disk space on the volume holding the data dir",
        ),
        Some(free) => checks.ok("state", "disk", format!("{} MB free", free / 1_048_576)),
        None => checks.skip("state", "disk", "free space unknown"),
    }
    match local_state::spool_summary(dir) {
        Ok(s) => checks.ok(
            "state",
            "usage_spool",
            format!("{} records pending, {} rejected batches", s.pending_records, s.rejected_batches),
        ),
        Err(e) => checks.fail(
            "state",
            "usage_spool",
            FailureClass::DataDir,
            format!("unreadable: {e}"),
            "give the app's user read/write access to the data dir",
        ),
    }
    true
}

/// The deployment id to validate with: the app's, else a new one saved for the app to reuse
/// (so this check takes the seat the app will hold, not another one).
fn deployment_id(dir: &Path, writable: bool) -> Option<String> {
    if let Some(id) = local_state::read_deployment_id(dir) {
        return Some(id);
    }
    let id = format!("dep-{}", nls_client::durable_file::random_id());
    (writable
        && nls_client::durable_file::write_atomic(&dir.join(local_state::DEPLOYMENT_FILE), id.as_bytes())
            .is_ok())
    .then_some(id)
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs the call fills in.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// DNS, TCP and TLS one by one (to the proxy when one applies). True when all passed.
fn check_network(checks: &mut Checks, target: &Target, timeout: Duration) -> bool {
    let env = network_probe::proxy_env();
    let proxy = network_probe::proxy_for(target);
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let (host, port) = match &proxy {
        Some(p) => {
            checks.ok(
                "network",
                "proxy",
                format!("through proxy {}:{} ({})", p.host(), p.port(), shown.join(" ")),
            );
            (p.host().to_owned(), p.port())
        }
        None if env.is_empty() => {
            checks.ok("network", "proxy", "direct (no HTTPS_PROXY/HTTP_PROXY/ALL_PROXY set)");
            (target.host.clone(), target.port)
        }
        None => {
            checks.ok(
                "network",
                "proxy",
                format!("direct: NO_PROXY matches or no proxy for this scheme ({})", shown.join(" ")),
            );
            (target.host.clone(), target.port)
        }
    };
    let addrs = match network_probe::resolve(&host, port) {
        Ok(addrs) => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            checks.ok("network", "dns", format!("{host} → {}", list.join(", ")));
            addrs
        }
        Err(f) => {
            checks.fail("network", "dns", f.class, f.message, fix_for(f.class));
            return false;
        }
    };
    let stream = match network_probe::connect(&addrs, timeout) {
        Ok((stream, took)) => {
            checks.ok("network", "tcp", format!("connected to {host}:{port} in {} ms", took.as_millis()));
            stream
        }
        Err(f) => {
            checks.fail("network", "tcp", f.class, f.message, fix_for(f.class));
            return false;
        }
    };
    if !target.https {
        network_probe::close(stream);
        checks.warn(
            "network",
            "tls",
            "plain http: no TLS",
            "use the https:// URL unless this is a local test server",
        );
        return true;
    }
    if proxy.is_some() {
        network_probe::close(stream);
        checks.skip("network", "tls", "through the proxy: the HTTP check below covers TLS");
        return true;
    }
    match network_probe::tls_handshake(stream, &target.host, timeout) {
        Ok(facts) => {
            let detail = match facts.certificate_expires_at {
                Some(at) => format!("{}; certificate valid until {}", facts.protocol, at.to_rfc3339()),
                None => format!("{}; certificate expiry unreadable", facts.protocol),
            };
            match facts.certificate_expires_at.map(|at| (at - Utc::now()).num_days()) {
                Some(days) if days < CERT_WARN_DAYS => checks.warn(
                    "network",
                    "tls",
                    format!("{detail} ({days} days left)"),
                    "tell the license server's operator: its certificate expires soon",
                ),
                _ => checks.ok("network", "tls", detail),
            }
            true
        }
        Err(f) => {
            let fix = f.fix.unwrap_or_else(|| fix_for(f.class));
            checks.fail("network", "tls", f.class, f.message, fix);
            false
        }
    }
}

/// One validation, as the app makes it, applied to the in-memory machine (nothing is saved:
/// the app owns the cache).
fn validate(
    agent: &ureq::Agent,
    url: &str,
    key: &str,
    deployment_id: Option<&str>,
    view: &mut local_state::LocalView,
    now: DateTime<Utc>,
) -> (AnswerOutcome, String) {
    let mut body = serde_json::json!({ "key": key });
    if let Some(id) = deployment_id {
        body["deployment_id"] = id.into();
    }
    let endpoint = format!("{}/v1/licenses/validate", url.trim_end_matches('/'));
    match network_probe::exchange(agent, &endpoint, Some(&body)) {
        Err(f) => {
            view.machine.record_unreachable(&f.message, now);
            (AnswerOutcome::Offline { why: f.message }, String::new())
        }
        Ok(facts) => {
            let outcome = view.machine.apply_validation_response(facts.status, &facts.body, now);
            let answer: serde_json::Value = serde_json::from_str(&facts.body).unwrap_or_default();
            let usage: Vec<String> = answer["usage"]
                .as_object()
                .map(|metrics| {
                    metrics
                        .iter()
                        .map(|(metric, m)| format!("{metric} {}/{}", m["used"], m["limit"]))
                        .collect()
                })
                .unwrap_or_default();
            let detail = format!(
                "{} in {} ms; deployment {} lease until {}; seats {}; fleet usage {}",
                answer["code"].as_str().unwrap_or("?"),
                facts.latency.as_millis(),
                answer["deployment"]["id"].as_str().unwrap_or("-"),
                answer["deployment"]["lease_expires_at"].as_str().unwrap_or("-"),
                answer["license"]["max_deployments"]
                    .as_u64()
                    .map_or("unlimited".to_owned(), |n| n.to_string()),
                if usage.is_empty() { "-".to_owned() } else { usage.join(", ") },
            );
            (outcome, detail)
        }
    }
}

pub fn class_of(code: InvalidCode) -> FailureClass {
    match code {
        InvalidCode::Malformed | InvalidCode::ChecksumMismatch => FailureClass::KeyFormat,
        InvalidCode::BadSignature => FailureClass::KeySignature,
        InvalidCode::Expired => FailureClass::Expired,
        InvalidCode::TooManyDeployments | InvalidCode::ActivationRateLimited => FailureClass::NoSeat,
        InvalidCode::NotValidated | InvalidCode::OfflineTooLong => FailureClass::Http,
        InvalidCode::ClockRollback => FailureClass::ClockRollback,
        InvalidCode::OfflineFileInvalid => FailureClass::OfflineFile,
        InvalidCode::NotYetValid | InvalidCode::Suspended | InvalidCode::Revoked | InvalidCode::Refused => {
            FailureClass::Refused
        }
    }
}

fn fix_for_code(code: InvalidCode) -> &'static str {
    match code {
        InvalidCode::Suspended => {
            "the license is suspended (usually billing): contact your Nectar account manager"
        }
        InvalidCode::Revoked => {
            "the license is revoked or unknown to the server: use the current key, or contact Nectar"
        }
        InvalidCode::TooManyDeployments => {
            "every seat is in use: run `nectar-license release` on a decommissioned install, or wait for its lease to end"
        }
        InvalidCode::ActivationRateLimited => {
            "too many new installs in the last hour: wait, then run diagnose again"
        }
        InvalidCode::NotValidated | InvalidCode::OfflineTooLong => {
            "let this machine reach the license server once (see the network checks)"
        }
        InvalidCode::OfflineFileInvalid => {
            "import a newly issued offline file: nectar-license activate-offline FILE"
        }
        code => fix_for(class_of(code)),
    }
}

pub fn fix_for(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Dns => "check the server name and this machine's DNS (or the proxy's name)",
        FailureClass::Tcp => {
            "check that the license server is up and that the firewall allows outbound HTTPS to it"
        }
        FailureClass::Tls => {
            "a TLS-inspecting proxy or a wrong certificate: trust the real certificate or bypass inspection for the license server"
        }
        FailureClass::Http => "the server answered but not as NLS: check the URL and any proxy in between",
        FailureClass::Expired => "the license expired: renew it, then run diagnose again",
        FailureClass::KeyFormat => "copy the license key again, in full",
        FailureClass::KeySignature => "use the license key exactly as issued",
        FailureClass::KeyUnknownKid => {
            "install the current nls-jwks.json, or use the key issued for this install"
        }
        FailureClass::ClockSkew | FailureClass::ClockRollback => "sync this machine's clock with NTP",
        FailureClass::DataDir => "point NECTAR_LICENSE_DATA_DIR at a writable directory",
        FailureClass::Refused => "contact your Nectar account manager",
        FailureClass::NoSeat => "free a seat with `nectar-license release` on an old install",
        FailureClass::OfflineFile => "import a newly issued offline file",
        FailureClass::Config => "set the NECTAR_LICENSE_* variables (docs/install.md)",
        FailureClass::Internal | FailureClass::NotUsable => "see the message above",
    }
}

/// The human form: one line per check, the fix under each failing one.
pub fn render(report: &DiagnoseReport) -> String {
    let mut out = String::new();
    let mut group = "";
    for check in &report.checks {
        if check.group != group {
            group = check.group;
            out.push_str(&format!("{group}\n"));
        }
        let mark = match check.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skip => "skip",
        };
        out.push_str(&format!("  [{mark}] {:<15} {}\n", check.name, check.detail));
        if let (CheckStatus::Warn | CheckStatus::Fail, Some(fix)) = (check.status, &check.fix) {
            out.push_str(&format!("         fix: {fix}\n"));
        }
    }
    match &report.failure {
        None => out.push_str("\nresult: the license is usable (exit 0)\n"),
        Some(v) => out.push_str(&format!(
            "\nresult: {} failed ({:?}, exit {}); fix: {}\n",
            v.check,
            v.class,
            v.exit_code,
            v.fix.as_deref().unwrap_or("-")
        )),
    }
    out
}
