//! How DynamoDB failures become `StoreError`s. Retryable (`Unavailable`): throttling,
//! capacity, internal errors, timeouts and network failures, which the SDK has already retried
//! `max_attempts` times. Condition failures are mapped by the caller, which knows what the
//! condition protected.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use nls_core::ports::StoreError;

pub fn sdk_error<E, R>(operation: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) => StoreError::Unavailable(format!("{operation}: timed out")),
        SdkError::DispatchFailure(failure) => StoreError::Unavailable(format!(
            "{operation}: request not delivered: {:?}",
            failure.as_connector_error()
        )),
        SdkError::ServiceError(service) => {
            let inner = service.err();
            // Not retryable in fact (validation, missing table, access denied), but the port has
            // no variant for a misconfigured backend; the code in the message says which.
            StoreError::Unavailable(format!(
                "{operation}: {}: {}",
                inner.code().unwrap_or("ServiceError"),
                inner.message().unwrap_or("no message")
            ))
        }
        _ => StoreError::Unavailable(format!(
            "{operation}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&err)
        )),
    }
}

pub fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(format!("could not build DynamoDB request: {err}"))
}
