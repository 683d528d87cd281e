//! `POST /v1/access-tokens`: a license key buys a short-lived cloud access token
//! (`nls-access+jwt`, docs/cloud-access.md), decided as a validation decides and then by the
//! license's `cloud` grant and this month's calls. Also the wire form of that grant, which the
//! license routes accept and show.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;

use crate::access_token::{
    CloudGrant, CloudLimits, MAX_AUDIENCE_LEN, MAX_AUDIENCES, check_cloud_grant, decide_access,
    is_audience_name, sign_access_token,
};
use crate::http::AppState;
use crate::http::app_error::{AppError, JsonBody};
use crate::http::public_routes::{KeyCheck, NOT_ON_RECORD, check_license_key};
use crate::http::wire::LITERAL_SCHEMA_EXTENSION;
use crate::validation::{ValidationCode, ValidationRequest, decide};

/// The audience pattern the OpenAPI document states (`access_token::is_audience_name`).
pub const AUDIENCE_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
const MAX_DEPLOYMENT_ID: usize = 256;

#[derive(Debug, Deserialize, ToSchema)]
pub struct AccessTokenRequest {
    pub key: String,
    /// The deployment asking; carried in the token for the service's logs and metering.
    #[schema(min_length = 1, max_length = 256)]
    pub deployment_id: String,
    /// The cloud service the token is for; must be in the license's `cloud` grant.
    #[schema(schema_with = audience_schema)]
    pub audience: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessTokenAnswer {
    /// A compact JWS, `typ: nls-access+jwt`; send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Set while the license is in grace (`IN_GRACE`): the token is issued, with this warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

pub async fn issue_access_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AccessTokenRequest>,
) -> Result<Response, AppError> {
    let chars = body.deployment_id.chars().count();
    if chars == 0 || chars > MAX_DEPLOYMENT_ID {
        return Err(AppError::invalid(format!(
            "`deployment_id` must be 1 to {MAX_DEPLOYMENT_ID} characters"
        )));
    }
    if !is_audience_name(&body.audience) {
        return Err(AppError::invalid(format!("`audience` must match {AUDIENCE_PATTERN}")));
    }
    let now = state.now();
    let checked = match check_license_key(&state, &body.key, now).await? {
        KeyCheck::Checked(checked) => checked,
        KeyCheck::Refused(code) => return Err(AppError::InvalidLicenseKey(code.as_str())),
        KeyCheck::NotOnRecord(_) => {
            return Err(AppError::AccessRefused {
                code: ValidationCode::Revoked,
                message: NOT_ON_RECORD.to_owned(),
            });
        }
    };
    // A token carries limits only the store knows, and must not outlive a suspension the store
    // holds: with the store down, no token (the app falls back to its basic features).
    let Some(entry) = checked.entry.filter(|_| !checked.degraded) else {
        return Err(AppError::Unavailable("the store is unavailable; no access token issued".to_owned()));
    };
    let snapshot = &entry.snapshot;
    let decision = decide(&checked.key, &ValidationRequest::default(), Some(snapshot), now);
    let grant =
        decide_access(&decision, snapshot.license.cloud.as_ref(), &snapshot.month_usage, &body.audience)
            .map_err(|refused| AppError::AccessRefused { code: refused.code, message: refused.message })?;
    let ttl = state.config().access_token_ttl;
    let issued =
        sign_access_token(state.key_ring(), &decision, &grant, &body.deployment_id, &body.audience, now, ttl)
            .map_err(|e| AppError::Internal(format!("signing an access token: {e}")))?;
    Ok(Json(AccessTokenAnswer { token: issued.token, expires_at: issued.expires_at, warning: grant.warning })
        .into_response())
}

/// A `cloud` object from a request body, checked: 400 `invalid_request` for anything the
/// OpenAPI schema ([`cloud_grant_value`]) does not allow. Numbers are whole numbers as JSON
/// Schema counts them (`3.0` is 3).
pub fn parse_cloud_grant(value: Value) -> Result<CloudGrant, AppError> {
    let bad = |why: String| AppError::invalid(format!("`cloud`: {why}"));
    let Value::Object(audiences) = value else { return Err(bad("must be an object".to_owned())) };
    let mut grant = CloudGrant::new();
    for (audience, limits) in audiences {
        let Value::Object(fields) = limits else {
            return Err(bad(format!("{audience:?} must be an object")));
        };
        let mut rpm = None;
        let mut burst = None;
        let mut quota = None;
        for (name, number) in fields {
            let whole = whole_number(&number)
                .ok_or_else(|| bad(format!("{audience}.{name} must be a whole number")))?;
            let small = || {
                u32::try_from(whole).map_err(|_| bad(format!("{audience}.{name} is at most {}", u32::MAX)))
            };
            match name.as_str() {
                "requests_per_minute" => rpm = Some(small()?),
                "burst" => burst = Some(small()?),
                "monthly_quota" => quota = Some(whole),
                other => return Err(bad(format!("{audience}: unknown field {other:?}"))),
            }
        }
        let (Some(requests_per_minute), Some(burst)) = (rpm, burst) else {
            return Err(bad(format!("{audience} needs requests_per_minute and burst")));
        };
        grant.insert(audience, CloudLimits { requests_per_minute, burst, monthly_quota: quota });
    }
    check_cloud_grant(&grant).map_err(|e| bad(e.to_string()))?;
    Ok(grant)
}

fn whole_number(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else { return None };
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    // 2^64 as f64 is the first value past u64::MAX.
    (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0).then_some(f as u64)
}

/// The JSON Schema of a `cloud` object (plans and licenses).
pub fn cloud_grant_value() -> Value {
    let rate = json!({"type": "integer", "minimum": 1, "maximum": u32::MAX});
    json!({
        "type": "object",
        "maxProperties": MAX_AUDIENCES,
        "propertyNames": {"pattern": AUDIENCE_PATTERN, "maxLength": MAX_AUDIENCE_LEN},
        "additionalProperties": {
            "type": "object",
            "required": ["requests_per_minute", "burst"],
            "additionalProperties": false,
            "properties": {
                "requests_per_minute": rate,
                "burst": rate,
                "monthly_quota": {"type": "integer", "minimum": 0, "maximum": u64::MAX}
            }
        }
    })
}

fn literal(value: Value) -> Schema {
    let extensions =
        utoipa::openapi::extensions::ExtensionsBuilder::new().add(LITERAL_SCHEMA_EXTENSION, value).build();
    Schema::Object(utoipa::openapi::ObjectBuilder::new().extensions(Some(extensions)).build())
}

pub(crate) fn cloud_grant_schema() -> Schema {
    literal(cloud_grant_value())
}

pub(crate) fn nullable_cloud_grant_schema() -> Schema {
    let mut value = cloud_grant_value();
    value["type"] = json!(["object", "null"]);
    literal(value)
}

fn audience_schema() -> Schema {
    literal(json!({"type": "string", "pattern": AUDIENCE_PATTERN, "maxLength": MAX_AUDIENCE_LEN}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_objects_are_parsed_as_the_schema_states() {
        let grant = parse_cloud_grant(json!({
            "workflows": {"requests_per_minute": 600, "burst": 50.0, "monthly_quota": 100000},
            "ai": {"requests_per_minute": 1, "burst": 1}
        }))
        .unwrap();
        assert_eq!(
            grant["workflows"],
            CloudLimits { requests_per_minute: 600, burst: 50, monthly_quota: Some(100_000) }
        );
        assert_eq!(grant["ai"].monthly_quota, None);
        assert_eq!(parse_cloud_grant(json!({})).unwrap(), CloudGrant::new());
        for bad in [
            json!([]),
            json!({"w": 1}),
            json!({"w": {"burst": 1}}),
            json!({"w": {"requests_per_minute": 1, "burst": 0}}),
            json!({"w": {"requests_per_minute": 1.5, "burst": 1}}),
            json!({"w": {"requests_per_minute": -1, "burst": 1}}),
            json!({"w": {"requests_per_minute": 4_294_967_296_u64, "burst": 1}}),
            json!({"w": {"requests_per_minute": 1, "burst": 1, "monthly_quota": null}}),
            json!({"w": {"requests_per_minute": 1, "burst": 1, "rpm": 1}}),
            json!({"W": {"requests_per_minute": 1, "burst": 1}}),
        ] {
            assert!(parse_cloud_grant(bad.clone()).is_err(), "{bad}");
        }
    }
}
