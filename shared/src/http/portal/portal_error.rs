//! Why a portal request was refused, answered as an HTML page (never the API's JSON, never a
//! 5xx for bad input). The API's [`AppError`] keeps its status and message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use crate::http::app_error::AppError;
use crate::http::portal::layout::{Section, html_response, page};
use crate::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// No session, or one that ended: the browser is sent to the sign-in page.
    #[error("sign in first")]
    SignInRequired,
    /// The user's role does not allow the action.
    #[error("your role does not allow this")]
    Forbidden,
    /// The form's CSRF token or the request's origin is wrong: a forged or stale form.
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    ForgedForm,
    #[error("{0}")]
    App(#[from] AppError),
}

impl PortalError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SignInRequired => StatusCode::SEE_OTHER,
            Self::Forbidden | Self::ForgedForm => StatusCode::FORBIDDEN,
            Self::App(e) => e.status(),
        }
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        if let Self::SignInRequired = self {
            return Redirect::to("/admin/login").into_response();
        }
        let status = self.status();
        let message = match &self {
            // Logged once, inside AppError's own response path; the page names nothing internal.
            Self::App(e @ (AppError::Internal(_) | AppError::Unavailable(_))) => {
                tracing::error!(error = ?e, "portal request failed");
                e.to_string()
            }
            other => other.to_string(),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/admin/" { "Back to the portal" } }
        };
        let mut response = html_response(status, page(None, Section::SignIn, title, body));
        if let Self::App(AppError::RateLimited { retry_after_secs }) = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        Self::App(e.into())
    }
}

pub type PortalResult<T> = Result<T, PortalError>;
