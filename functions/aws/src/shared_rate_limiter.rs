//! A per-license token bucket shared by every instance of a cloud service, on DynamoDB
//! (docs/cloud-access.md, "Shared limiter"). The core's pure step `cloud_rate::take` decides;
//! this file only stores its state, one item per (audience, license):
//!
//! ```text
//! pk = RATE#<audience>#<license id>   sk = BUCKET   millitokens, refilled_at_ms, ttl
//! ```
//!
//! Each call is a consistent read, the step, and — only when the call is allowed — a
//! conditional write that succeeds only if the item is still the one read (compare-and-set on
//! both numbers). A lost race re-reads and tries again. So every allowed call is one committed
//! step from the state before it, as if one process held the bucket: instances never overshoot
//! the bucket through races. The bound on overshoot comes from clocks alone: an instance whose
//! clock runs `d` ahead credits the refill `d` early, at most `requests_per_minute * d / 60 s`
//! calls (a clock behind gains nothing: `take` never credits negative time). When DynamoDB
//! cannot answer, or the races go on past [`MAX_ATTEMPTS`], the limiter says so
//! (`LimiterError::Unavailable`) and the middleware lets the call through: that is the other,
//! deliberate, overshoot (fail open), logged per call.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use nls_core::access_token::CloudLimits;
use nls_core::cloud_rate::{BucketState, LimiterError, RateLimiter, RateVerdict, take};

use crate::store_errors::sdk_error;
use crate::table_keys::{PK, SK, TTL_ATTRIBUTE};

/// Read-step-write rounds before giving up on a hot bucket.
pub const MAX_ATTEMPTS: usize = 25;
const BUCKET_SK: &str = "BUCKET";
/// A bucket untouched for a day is full again anyway: DynamoDB's TTL deletes it.
const IDLE_TTL_SECS: i64 = 24 * 3600;

/// The shared limiter for one cloud service (`audience`), on a table with string keys `pk` and
/// `sk` (the NLS table layout, `create_table`, or any table of that shape).
pub struct DynamoRateLimiter {
    client: Client,
    table: String,
    audience: String,
}

impl DynamoRateLimiter {
    pub fn new(client: Client, table: impl Into<String>, audience: &str) -> Self {
        Self { client, table: table.into(), audience: audience.to_owned() }
    }

    fn pk(&self, license_id: &str) -> String {
        format!("RATE#{}#{license_id}", self.audience)
    }

    async fn read(&self, pk: &str) -> Result<Option<BucketState>, LimiterError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk.to_owned()))
            .key(SK, AttributeValue::S(BUCKET_SK.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LimiterError::Unavailable(sdk_error("GetItem", e).to_string()))?
            .item;
        let Some(item) = item else { return Ok(None) };
        let number = |name: &str| -> Result<String, LimiterError> {
            match item.get(name) {
                Some(AttributeValue::N(n)) => Ok(n.clone()),
                _ => Err(LimiterError::Unavailable(format!("bucket {pk}: attribute {name} is not a number"))),
            }
        };
        let parse = |name: &str| -> Result<i128, LimiterError> {
            number(name)?.parse().map_err(|_| {
                LimiterError::Unavailable(format!("bucket {pk}: attribute {name} is not an integer"))
            })
        };
        Ok(Some(BucketState {
            millitokens: u64::try_from(parse("millitokens")?).unwrap_or(0),
            refilled_at_ms: i64::try_from(parse("refilled_at_ms")?).unwrap_or(0),
        }))
    }

    /// Writes `next` if the item is still `expected` (or still absent). False when another
    /// instance got there first.
    async fn compare_and_set(
        &self,
        pk: &str,
        expected: Option<BucketState>,
        next: BucketState,
        now_ms: i64,
    ) -> Result<bool, LimiterError> {
        let n = |v: String| AttributeValue::N(v);
        let item = HashMap::from([
            (PK.to_owned(), AttributeValue::S(pk.to_owned())),
            (SK.to_owned(), AttributeValue::S(BUCKET_SK.to_owned())),
            ("millitokens".to_owned(), n(next.millitokens.to_string())),
            ("refilled_at_ms".to_owned(), n(next.refilled_at_ms.to_string())),
            (TTL_ATTRIBUTE.to_owned(), n((now_ms / 1000 + IDLE_TTL_SECS).to_string())),
        ]);
        let request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(old) => request
                .condition_expression("millitokens = :m AND refilled_at_ms = :r")
                .expression_attribute_values(":m", n(old.millitokens.to_string()))
                .expression_attribute_values(":r", n(old.refilled_at_ms.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if matches!(service.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(e) => Err(LimiterError::Unavailable(sdk_error("PutItem", e).to_string())),
        }
    }
}

#[async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn take(
        &self,
        license_id: &str,
        limits: &CloudLimits,
        now_ms: i64,
    ) -> Result<RateVerdict, LimiterError> {
        let pk = self.pk(license_id);
        for _ in 0..MAX_ATTEMPTS {
            let before = self.read(&pk).await?;
            let (next, verdict) = take(before, limits, now_ms);
            // A refusal changes nothing worth storing: the next step recomputes the refill
            // from the same stored state.
            if !verdict.allowed || self.compare_and_set(&pk, before, next, now_ms).await? {
                return Ok(verdict);
            }
        }
        Err(LimiterError::Unavailable(format!("bucket {pk}: still contended after {MAX_ATTEMPTS} attempts")))
    }
}
