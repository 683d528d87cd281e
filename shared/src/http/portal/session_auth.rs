//! Portal sessions: a random token in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` unless
//! the host is localhost), stored only as its SHA-256. A session ends after
//! [`IDLE_TIMEOUT`] without a request, [`ABSOLUTE_TIMEOUT`] after sign-in, at sign-out, and at
//! once when its user is disabled or changes password (`sessions_valid_after`): every request
//! reads the user, so no revocation list is needed.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::Duration;

use crate::http::AppState;
use crate::http::admin_auth::{Caller, token_sha256};
use crate::http::app_error::AppError;
use crate::http::portal::access::{PortalAction, allows, staff_caller};
use crate::http::portal::portal_error::PortalError;
use crate::key_format::hex_lower;
use crate::model::{StaffSession, StaffUser};

pub const SESSION_COOKIE: &str = "nls_session";
pub const IDLE_TIMEOUT: Duration = Duration::minutes(30);
pub const ABSOLUTE_TIMEOUT: Duration = Duration::hours(12);
/// `last_seen_at` is written at most this often, so reading pages costs no write each time.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// A signed-in staff user and their session.
#[derive(Debug, Clone)]
pub struct Staff {
    pub user: StaffUser,
    pub session: StaffSession,
}

impl Staff {
    pub fn can(&self, action: PortalAction) -> bool {
        allows(self.user.role, action)
    }

    /// Refuses with 403 unless the role allows `action`: called first by every handler.
    pub fn require(&self, action: PortalAction) -> Result<(), PortalError> {
        if self.can(action) { Ok(()) } else { Err(PortalError::Forbidden) }
    }

    /// Who the shared handler bodies audit this user's changes as.
    pub fn caller(&self) -> Caller {
        staff_caller(&self.user.id, self.user.role)
    }
}

/// 32 random bytes as hex: session tokens and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the platform random source is unavailable");
    hex_lower(&bytes)
}

pub fn token_hash(token: &str) -> String {
    hex_lower(&token_sha256(token))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// `Secure` everywhere but on a developer's own machine, where the portal is plain HTTP.
fn is_local_host(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// A `Set-Cookie` for the portal: `HttpOnly`, `SameSite=Strict`, path `/admin`; `max_age` 0
/// deletes it.
pub fn set_cookie(request_headers: &HeaderMap, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if is_local_host(request_headers) { "" } else { "; Secure" };
    let text =
        format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&text).expect("cookie names and values are ASCII tokens")
}

/// Starts a session for `user` (always a new token: nothing from before sign-in carries over)
/// and answers the cookie that holds it.
pub async fn start_session(
    state: &AppState,
    request_headers: &HeaderMap,
    user: &StaffUser,
) -> Result<HeaderValue, AppError> {
    let now = state.now();
    let token = random_token();
    let session = StaffSession {
        token_sha256: token_hash(&token),
        user_id: user.id.clone(),
        csrf_token: random_token(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE_TIMEOUT,
    };
    state.store().create_session(&session).await?;
    Ok(set_cookie(request_headers, SESSION_COOKIE, &token, ABSOLUTE_TIMEOUT.num_seconds()))
}

/// Why a stored session no longer lets its holder in, if it doesn't.
fn session_void(
    session: &StaffSession,
    user: Option<&StaffUser>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(user) = user else { return true };
    now >= session.expires_at
        || now - session.last_seen_at >= IDLE_TIMEOUT
        || user.disabled
        || session.created_at < user.sessions_valid_after
        || session.user_id != user.id
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PortalError> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(PortalError::SignInRequired)?;
        let hash = token_hash(token);
        let session = state.store().get_session(&hash).await?.ok_or(PortalError::SignInRequired)?;
        let user = state.store().get_staff_user(&session.user_id).await?;
        let now = state.now();
        if session_void(&session, user.as_ref(), now) {
            state.store().delete_session(&hash).await?;
            return Err(PortalError::SignInRequired);
        }
        let user = user.ok_or(PortalError::SignInRequired)?;
        if now - session.last_seen_at >= TOUCH_EVERY {
            state.store().touch_session(&hash, now).await?;
        }
        Ok(Staff { user, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_secure_off_localhost() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; nls_session=abc; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "nls"), None);
        for (host, secure) in
            [("127.0.0.1:8080", false), ("localhost", false), ("[::1]:80", false), ("nls.example", true)]
        {
            headers.insert(header::HOST, HeaderValue::from_static(host));
            let set = set_cookie(&headers, SESSION_COOKIE, "t", 60);
            let set = set.to_str().unwrap();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
            assert_eq!(set.ends_with("; Secure"), secure, "{host}: {set}");
        }
    }
}
