//! AWS adapters for the NLS core ports: the DynamoDB store ([`DynamoStore`]) and the SES
//! mailer ([`SesMailer`]), plus what every Lambda sets up at init (logging, secrets). Only
//! this crate (and the Lambda crates) know the AWS SDK.

pub mod client_setup;
pub mod dynamo_store;
pub mod item_mapping;
pub mod lambda_logging;
pub mod request_counter;
pub mod secrets;
pub mod ses_mailer;
pub mod shared_rate_limiter;
mod store_errors;
pub mod table_copy;
pub mod table_keys;
pub mod table_schema;

pub use client_setup::{ClientTuning, dynamodb_client, load_sdk_config, sesv2_client};
pub use dynamo_store::{DynamoStore, from_env};
pub use lambda_logging::init_lambda_logging;
pub use request_counter::RequestCounter;
pub use ses_mailer::SesMailer;
pub use shared_rate_limiter::DynamoRateLimiter;
pub use table_schema::create_table;
