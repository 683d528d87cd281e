//! `nls dynamodb ...`: `create-table` creates the single table (GSIs and TTL,
//! docs/dynamodb.md) for local use against a DynamoDB-compatible endpoint (`sam deploy`
//! creates it in AWS); `export` and `import` copy every item to and from a file
//! (`nls_aws::table_copy`), for restores (docs/runbooks/restore-from-backup.md);
//! `add-license-sort-keys` brings licenses written before the portal's sort indexes into them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use nls_aws::table_copy::{CopyLimits, CopyReport, export_table, import_table};

#[derive(Subcommand)]
pub enum DynamodbCommand {
    /// Create the NLS table, honouring AWS_ENDPOINT_URL and the usual AWS_* settings.
    CreateTable {
        #[arg(long)]
        table: String,
    },
    /// Write every item of the table to FILE (JSON Lines, DynamoDB JSON), a page at a time.
    Export {
        #[arg(long)]
        table: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Continue an interrupted export from FILE.progress.
        #[arg(long)]
        resume: bool,
        /// Items per Scan page (default: DynamoDB's 1 MB pages).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        page_size: Option<i32>,
        /// Stop after N pages, leaving FILE.progress for --resume (`"complete": false`).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_pages: Option<u64>,
    },
    /// Add the license sort keys the portal's list reads (docs/dynamodb.md) to licenses
    /// written before they existed. Idempotent; safe while the service runs.
    AddLicenseSortKeys {
        #[arg(long)]
        table: String,
    },
    /// Write every item of FILE (from `export`) into the table; items with the same key are
    /// replaced.
    Import {
        #[arg(long)]
        table: String,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Skip what an interrupted import already wrote (FILE.progress).
        #[arg(long)]
        resume: bool,
        /// Stop after N batches of 25 items, leaving FILE.progress for --resume.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_pages: Option<u64>,
    },
}

/// The store for one command, with patient timeouts ([`nls_aws::ClientTuning::for_commands`]).
async fn command_store(table: &str) -> nls_aws::DynamoStore {
    let sdk_config = nls_aws::load_sdk_config().await;
    let client = nls_aws::dynamodb_client(&sdk_config, &nls_aws::ClientTuning::for_commands(), None);
    nls_aws::DynamoStore::new(client, table)
}

pub fn run(cmd: DynamodbCommand) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let print = |report: CopyReport| println!("{}", serde_json::to_string(&report).unwrap_or_default());
    match cmd {
        DynamodbCommand::CreateTable { table } => {
            runtime.block_on(async {
                let store = command_store(&table).await;
                nls_aws::create_table(store.client(), &table)
                    .await
                    .map_err(|e| format!("creating table {table}: {e}"))
            })?;
            eprintln!("created table {table}");
        }
        DynamodbCommand::AddLicenseSortKeys { table } => {
            let updated = runtime.block_on(async {
                command_store(&table)
                    .await
                    .add_license_sort_keys()
                    .await
                    .map_err(|e| format!("adding license sort keys in {table}: {e}"))
            })?;
            println!("{}", serde_json::json!({ "licenses_updated": updated }));
        }
        DynamodbCommand::Export { table, out, resume, page_size, max_pages } => {
            let report = runtime.block_on(async {
                let store = command_store(&table).await;
                export_table(store.client(), &table, &out, resume, CopyLimits { page_size, max_pages }).await
            });
            print(report.map_err(|e| e.to_string())?);
        }
        DynamodbCommand::Import { table, input, resume, max_pages } => {
            let report = runtime.block_on(async {
                let store = command_store(&table).await;
                let limits = CopyLimits { page_size: None, max_pages };
                import_table(store.client(), &table, &input, resume, limits).await
            });
            print(report.map_err(|e| e.to_string())?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
