//! `GET /v1/registry/token`: the Docker Registry v2 token service (docs/distribution.md).
//!
//! The registry sends clients here with `service` and `scope`; they authenticate with HTTP
//! Basic: a license key as the password (checked exactly as `POST /v1/licenses/validate`
//! checks it, by `public_routes::check_license_key` and `decide`), or an API key with the
//! `registry:push` scope. Bad credentials or a license that would not validate are 401 with
//! `WWW-Authenticate`, so `docker login` fails; good credentials asking for what they may not
//! have get a token whose `access` leaves it out, and the registry refuses the operation.
//! Errors use the registry protocol's body, `{"errors":[{"code","message"}]}`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::Duration;
use serde::Serialize;

use crate::http::admin_auth::{API_KEY_PREFIX, Caller, verify_api_key};
use crate::http::app_error::AppError;
use crate::http::audit_routes::audit;
use crate::http::public_routes::{CheckedKey, KeyCheck, NOT_ON_RECORD, check_license_key};
use crate::http::rate_limit::{RateLimit, TokenBuckets};
use crate::http::wire::RegistryTokenAnswer;
use crate::http::{AppState, ClientIp};
use crate::model::{RegistryAccessRecord, Scope, ValidationLogEntry};
use crate::registry_token::{
    RegistryClaims, RegistrySigningKey, Requester, ScopeDecision, ScopeError, access_claim, decide_scopes,
    parse_scopes,
};
use crate::validation::{ValidationRequest, decide};

/// Validation-history codes of registry token decisions.
pub const REGISTRY_GRANTED: &str = "REGISTRY_GRANTED";
pub const REGISTRY_DENIED: &str = "REGISTRY_DENIED";
/// The `WWW-Authenticate` challenge of a 401: send a license key (or API key) as the password.
const BASIC_CHALLENGE: &str = "Basic realm=\"nls registry token service\", charset=\"UTF-8\"";
const MAX_CREDENTIALS_LEN: usize = 8 * 1024;

/// How the token service behaves; hosts parse their flags or environment into this.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The tokens' `iss`: the registry's `auth.token.issuer`.
    pub issuer: String,
    /// The registry's `auth.token.service`: requests must name it, and it is the tokens' `aud`.
    pub service: String,
    pub token_ttl: Duration,
    pub per_license_limit: Option<RateLimit>,
    pub per_ip_limit: Option<RateLimit>,
}

impl RegistryConfig {
    pub fn new(issuer: &str, service: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            token_ttl: Duration::minutes(5),
            per_license_limit: Some(RateLimit { per_second: 5.0, burst: 100.0 }),
            per_ip_limit: Some(RateLimit { per_second: 20.0, burst: 200.0 }),
        }
    }
}

/// The signing key, configuration, rate limits and counters of the token service.
pub struct RegistryTokenService {
    key: RegistrySigningKey,
    config: RegistryConfig,
    per_license: Option<TokenBuckets<String>>,
    per_ip: Option<TokenBuckets<IpAddr>>,
    granted: AtomicU64,
    denied: AtomicU64,
    refused: AtomicU64,
}

impl RegistryTokenService {
    pub fn new(key: RegistrySigningKey, config: RegistryConfig) -> Self {
        Self {
            per_license: config.per_license_limit.map(|l| TokenBuckets::new(l, 100_000)),
            per_ip: config.per_ip_limit.map(|l| TokenBuckets::new(l, 100_000)),
            key,
            config,
            granted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn key(&self) -> &RegistrySigningKey {
        &self.key
    }

    /// `/metrics` series: scopes granted and denied, requests refused (bad credentials, a
    /// license that would not validate, rate limited).
    pub fn metric_series(&self) -> [(&'static str, &'static str, u64); 3] {
        [
            (
                "nls_registry_scopes_granted_total",
                "Registry token scopes granted.",
                self.granted.load(Relaxed),
            ),
            (
                "nls_registry_scopes_denied_total",
                "Registry token scopes asked for and not granted.",
                self.denied.load(Relaxed),
            ),
            (
                "nls_registry_token_requests_refused_total",
                "Registry token requests refused: credentials, license status or rate limit.",
                self.refused.load(Relaxed),
            ),
        ]
    }
}

/// The protocol's error answer.
#[derive(Debug)]
pub enum RegistryError {
    NotConfigured,
    BadRequest(&'static str, String),
    Unauthorized(String),
    RateLimited(u64),
    App(AppError),
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::NotConfigured => (
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "this server is not a registry token service".to_owned(),
            ),
            Self::BadRequest(code, message) => (StatusCode::BAD_REQUEST, *code, message.clone()),
            Self::Unauthorized(message) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message.clone()),
            Self::RateLimited(secs) => {
                (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", format!("retry after {secs} s"))
            }
            // Store trouble and bugs: the core's own logging and status, the protocol's body.
            Self::App(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(error = %e, "registry token request failed");
                }
                let code = if status == StatusCode::SERVICE_UNAVAILABLE { "UNAVAILABLE" } else { "UNKNOWN" };
                (status, code, "the token service could not answer; retry".to_owned())
            }
        };
        let body = serde_json::json!({"errors": [ErrorEntry { code, message: &message }]});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
            }
            Self::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

impl From<AppError> for RegistryError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::RateLimited { retry_after_secs } => Self::RateLimited(retry_after_secs),
            AppError::MissingCredentials | AppError::InvalidCredentials | AppError::InvalidLicenseKey(_) => {
                Self::Unauthorized("the credentials are not valid".to_owned())
            }
            other => Self::App(other),
        }
    }
}

/// The Basic credentials' password; `None` when the request is anonymous.
fn basic_password(headers: &HeaderMap) -> Result<Option<String>, RegistryError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || RegistryError::Unauthorized("send HTTP Basic credentials".to_owned());
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > MAX_CREDENTIALS_LEN {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (_user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(password.to_owned()))
}

/// Who the credentials name, once they checked out.
enum Authenticated {
    Staff { key_id: String },
    Customer { license_id: String, grant: Option<crate::model::RegistryGrant> },
}

impl Authenticated {
    fn subject(&self) -> &str {
        match self {
            Self::Staff { key_id } => key_id,
            Self::Customer { license_id, .. } => license_id,
        }
    }
}

pub async fn registry_token(
    State(state): State<AppState>,
    client_ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, RegistryError> {
    let service = state.registry().ok_or(RegistryError::NotConfigured)?;
    let ip = client_ip.map(|ip| ip.0.0);
    let outcome = answer(&state, service, ip, &headers, &params).await;
    if matches!(&outcome, Err(RegistryError::Unauthorized(_) | RegistryError::RateLimited(_))) {
        service.refused.fetch_add(1, Relaxed);
    }
    outcome
}

async fn answer(
    state: &AppState,
    service: &RegistryTokenService,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<Response, RegistryError> {
    let now = state.now();
    let config = &service.config;
    let named = |name: &'static str| params.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str());
    match named("service").next() {
        Some(asked) if asked == config.service => {}
        Some(_) => {
            return Err(RegistryError::BadRequest(
                "INVALID_SERVICE",
                format!("this token service serves the registry {:?}", config.service),
            ));
        }
        None => return Err(RegistryError::BadRequest("INVALID_SERVICE", "`service` is required".to_owned())),
    }
    let scopes = parse_scopes(named("scope"))
        .map_err(|e: ScopeError| RegistryError::BadRequest("INVALID_SCOPE", e.to_string()))?;
    if let (Some(buckets), Some(ip)) = (&service.per_ip, ip) {
        buckets.take(&ip, now).map_err(RegistryError::RateLimited)?;
    }
    let Some(password) = basic_password(headers)? else {
        return Err(RegistryError::Unauthorized(
            "sign in: the password is your license key (or an API key with registry:push)".to_owned(),
        ));
    };
    let who = authenticate(state, service, &password, ip, now).await?;
    let requester = match &who {
        Authenticated::Staff { .. } => Requester::Staff,
        Authenticated::Customer { grant, .. } => Requester::Customer(grant.as_ref()),
    };
    let decisions = decide_scopes(requester, &scopes);
    record_decisions(state, service, &who, &decisions, ip, now);
    if let Authenticated::Staff { key_id } = &who {
        audit_staff_grant(state, key_id, &decisions, ip, now).await?;
    }
    let claims = RegistryClaims::new(
        &config.issuer,
        who.subject(),
        &config.service,
        access_claim(&decisions),
        now,
        config.token_ttl,
    );
    let token = service.key.sign(&claims);
    let answer = RegistryTokenAnswer {
        access_token: token.clone(),
        token,
        expires_in: config.token_ttl.num_seconds(),
        issued_at: now,
    };
    // `Cache-Control: no-store` comes with every answer (request_layers).
    Ok((StatusCode::OK, Json(answer)).into_response())
}

async fn authenticate(
    state: &AppState,
    service: &RegistryTokenService,
    password: &str,
    ip: Option<IpAddr>,
    now: crate::model::Timestamp,
) -> Result<Authenticated, RegistryError> {
    if password.starts_with(API_KEY_PREFIX) {
        let record = verify_api_key(state, password).await?;
        if !record.grants(Scope::RegistryPush) {
            return Err(RegistryError::Unauthorized("this API key lacks the registry:push scope".to_owned()));
        }
        return Ok(Authenticated::Staff { key_id: record.id });
    }
    let refused = |license_id: &str, code: &str, why: String| {
        tracing::info!(license_id, code, client_ip = ?ip, "registry token refused");
        record_entry(state, license_id, code, ip, None, now);
        RegistryError::Unauthorized(why)
    };
    let CheckedKey { key, entry, degraded } = match check_license_key(state, password, now).await? {
        KeyCheck::Checked(checked) => checked,
        KeyCheck::Refused(code) => {
            return Err(RegistryError::Unauthorized(format!(
                "the license key is not valid ({})",
                code.as_str()
            )));
        }
        KeyCheck::NotOnRecord(license_id) => {
            return Err(refused(&license_id, "REVOKED", NOT_ON_RECORD.to_owned()));
        }
    };
    let license_id = key.claims.sub.clone();
    if let Some(buckets) = &service.per_license {
        buckets.take(&license_id, now).map_err(RegistryError::RateLimited)?;
    }
    // Without the store there is no registry grant to go by: retry rather than guess.
    let snapshot = entry.as_ref().map(|e| &e.snapshot).filter(|_| !degraded);
    let Some(snapshot) = snapshot else {
        return Err(RegistryError::App(AppError::Unavailable("store unavailable".to_owned())));
    };
    let decision = decide(&key, &ValidationRequest::default(), Some(snapshot), now);
    if !decision.code.is_valid() {
        let code = decision.code.as_str();
        return Err(refused(&license_id, code, format!("the license is not valid ({code})")));
    }
    Ok(Authenticated::Customer { license_id, grant: snapshot.license.registry.clone() })
}

/// Logs, counts and (for licenses) adds to the validation history every scope's outcome.
fn record_decisions(
    state: &AppState,
    service: &RegistryTokenService,
    who: &Authenticated,
    decisions: &[ScopeDecision],
    ip: Option<IpAddr>,
    now: crate::model::Timestamp,
) {
    for d in decisions {
        let granted = !d.granted.is_empty();
        let counter = if granted { &service.granted } else { &service.denied };
        counter.fetch_add(1, Relaxed);
        let code = if granted { REGISTRY_GRANTED } else { REGISTRY_DENIED };
        tracing::info!(
            subject = who.subject(),
            code,
            scope_type = %d.scope.resource_type,
            repository = %d.scope.name,
            requested = ?d.scope.actions,
            granted = ?d.granted,
            client_ip = ?ip,
            "registry token scope"
        );
        if let Authenticated::Customer { license_id, .. } = who {
            let access = RegistryAccessRecord {
                repository: d.scope.name.clone(),
                requested: d.scope.actions.clone(),
                granted: d.granted.clone(),
            };
            record_entry(state, license_id, code, ip, Some(access), now);
        }
    }
}

/// A staff token can push: it goes in the audit log (`registry.token`, target the API key),
/// written before the token is handed out.
async fn audit_staff_grant(
    state: &AppState,
    key_id: &str,
    decisions: &[ScopeDecision],
    ip: Option<IpAddr>,
    now: crate::model::Timestamp,
) -> Result<(), RegistryError> {
    let caller = Caller { actor: key_id.to_owned(), scope: Scope::RegistryPush };
    let access: Vec<RegistryAccessRecord> = decisions
        .iter()
        .map(|d| RegistryAccessRecord {
            repository: d.scope.name.clone(),
            requested: d.scope.actions.clone(),
            granted: d.granted.clone(),
        })
        .collect();
    let after = serde_json::json!({"access": access, "client_ip": ip.map(|ip| ip.to_string())});
    let entry =
        audit::<(), _>(&caller, "registry.token", format!("api_key:{key_id}"), None, Some(&after), now);
    state.store().commit(None, vec![entry]).await.map_err(AppError::from)?;
    Ok(())
}

fn record_entry(
    state: &AppState,
    license_id: &str,
    code: &str,
    ip: Option<IpAddr>,
    access: Option<RegistryAccessRecord>,
    now: crate::model::Timestamp,
) {
    // The repository and actions stand in the fingerprint slot of the repeat check, so each
    // distinct request is kept once per window.
    let what = access
        .as_ref()
        .map(|a| format!("{}:{}:{}", a.repository, a.requested.join(","), a.granted.join(",")));
    let identity = (license_id, None, what.as_deref(), ip, code);
    state.validation_log().push_unless_repeated(identity, now.timestamp(), || ValidationLogEntry {
        license_id: license_id.to_owned(),
        at: now,
        code: code.to_owned(),
        deployment_id: None,
        fingerprint: None,
        client_ip: ip.map(|ip| ip.to_string()),
        registry: access,
    });
}

impl AppState {
    /// A state that also serves `GET /v1/registry/token`.
    pub fn with_registry(mut self, service: RegistryTokenService) -> Self {
        self.registry = Some(Arc::new(service));
        self
    }

    pub fn registry(&self) -> Option<&RegistryTokenService> {
        self.registry.as_deref()
    }
}
