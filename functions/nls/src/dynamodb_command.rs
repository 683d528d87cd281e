//! `nls dynamodb create-table`: creates the single table (GSIs and TTL, docs/dynamodb.md) for
//! local use against a DynamoDB-compatible endpoint; `sam deploy` creates it in AWS.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DynamodbCommand {
    /// Create the NLS table, honouring AWS_ENDPOINT_URL and the usual AWS_* settings.
    CreateTable {
        #[arg(long)]
        table: String,
    },
}

pub fn run(cmd: DynamodbCommand) -> Result<ExitCode, String> {
    let DynamodbCommand::CreateTable { table } = cmd;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async {
        let store = nls_aws::from_env(table.clone()).await;
        nls_aws::create_table(store.client(), &table)
            .await
            .map_err(|e| format!("creating table {table}: {e}"))
    })?;
    eprintln!("created table {table}");
    Ok(ExitCode::SUCCESS)
}
