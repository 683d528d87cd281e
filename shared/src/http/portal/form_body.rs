//! An `application/x-www-form-urlencoded` body as (name, value) pairs, repeated names kept
//! (checkboxes). Read within the router's body limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use crate::http::app_error::{AppError, BodyLimit, DEFAULT_BODY_LIMIT};

#[derive(Debug, Clone, Default)]
pub struct FormBody(pub Vec<(String, String)>);

impl FormBody {
    pub fn parse(bytes: &[u8]) -> Self {
        Self(form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every non-blank value of `name`, trimmed.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    pub fn require(&self, name: &str) -> Result<&str, AppError> {
        self.get(name).ok_or_else(|| AppError::invalid(format!("`{name}` is required")))
    }
}

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let limit = req.extensions().get::<BodyLimit>().map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge { limit }
            } else {
                AppError::invalid("the form could not be read")
            }
        })?;
        Ok(Self::parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_blank_fields() {
        let form = FormBody::parse(b"a=1&f=sso&f=%20&f=audit+log&b=+&c=%3Cx%3E");
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), None);
        assert_eq!(form.get("c"), Some("<x>"));
        assert_eq!(form.all("f"), ["sso", "audit log"]);
        assert!(form.require("zzz").is_err());
    }
}
