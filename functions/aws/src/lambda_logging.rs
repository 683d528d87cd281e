//! Logging set-up shared by every Lambda: JSON lines filtered by `NLS_LOG` (default `info`),
//! without timestamps because CloudWatch adds its own.

pub fn init_lambda_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NLS_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time()
        .init();
}
