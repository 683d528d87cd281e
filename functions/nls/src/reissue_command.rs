//! `nls license reissue`: a new key for one or every live license of a data dir, signed by the
//! current signer (after `nls keys rotate`), so the old `kid` can be retired.
//!
//! The same pieces as the admin API's re-issue on `PATCH /v1/licenses/{id}`: a new key id
//! (`jti`), `issuing::issue_key`, one conditional write of the next license version with its
//! audit entry in the same commit; then the key is emailed as the `key_delivery` notice through
//! the data dir's mailer, claimed once per key id, so a repeated run never mails a key twice.
//!
//! The store is the data dir's SQLite file, or with `--store dynamodb` a DynamoDB table (as
//! `nls serve --store dynamodb`); the signer is the data dir's key, or with
//! `--signing-key-secret-id` the `AWSCURRENT` version of that secret (the Lambdas' ring).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Duration;
use clap::Args;
use nls_core::email::{NoticeKind, SendOnce, notice_context, render_email, send_once};
use nls_core::http::admin_auth::Caller;
use nls_core::http::audit_routes::audit;
use nls_core::http::wire::LicenseView;
use nls_core::issuing::{issue_key, new_id};
use nls_core::key_ring::KeyRing;
use nls_core::lifecycle::LicenseStatus;
use nls_core::model::NotificationKey;
use nls_core::model::{License, Scope};
use nls_core::ports::{Clock, LicenseFilter, Mailer, PageRequest, Store, SystemClock, Write};
use nls_sqlite_store::SqliteStore;

use crate::outbox_mailer::OutboxMailer;
use crate::serve::signing_key_file::{SIGNING_KEY_FILE, load_ring};
use crate::serve::{DATABASE_FILE, MailerKind, StoreKind};

/// The actor of the audit entries this command writes.
const ACTOR: &str = "cli:license-reissue";
/// A key email claimed by a run that died is sent again by a later run after this long.
const STALE_CLAIM_AFTER_MINUTES: i64 = 5;

#[derive(Args)]
pub struct ReissueArgs {
    /// The data dir of `nls serve` (its store, keys and `outbox/`).
    #[arg(long, value_name = "DIR", default_value = "nls-data")]
    data_dir: PathBuf,
    /// Every license that is not revoked or expired.
    #[arg(long, conflicts_with = "license", required_unless_present = "license")]
    all: bool,
    /// One license id.
    #[arg(long, value_name = "ID")]
    license: Option<String>,
    /// The store: the data dir's SQLite file, or a DynamoDB table (AWS_* environment).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// The DynamoDB table, with `--store dynamodb`.
    #[arg(long, alias = "table", value_name = "NAME", default_value = "nls")]
    dynamodb_table: String,
    /// Sign with the `AWSCURRENT` key of this Secrets Manager secret instead of the data dir's.
    #[arg(long, value_name = "ID")]
    signing_key_secret_id: Option<String>,
    /// Where the key emails go: `.eml` files in `<data-dir>/outbox/`, or SES.
    #[arg(long, value_enum, default_value_t = MailerKind::Outbox)]
    mailer: MailerKind,
    /// The verified SES sender, with `--mailer ses`.
    #[arg(long, value_name = "ADDRESS", default_value = "licensing@nectar.example")]
    mail_from: String,
}

#[derive(serde::Serialize)]
struct Reissued {
    license_id: String,
    kid: String,
    emailed: bool,
}

fn store_err(e: impl std::fmt::Display) -> String {
    format!("store: {e}")
}

/// The store, the ring and the mailer the arguments name.
async fn open(args: &ReissueArgs) -> Result<(Arc<dyn Store>, KeyRing, Arc<dyn Mailer>), String> {
    let no_data_dir =
        || format!("{}: no NLS data dir here (a store and a signing key)", args.data_dir.display());
    let needs_sdk = args.store == StoreKind::Dynamodb
        || args.signing_key_secret_id.is_some()
        || args.mailer == MailerKind::Ses;
    let sdk_config = if needs_sdk { Some(nls_aws::load_sdk_config().await) } else { None };
    let store: Arc<dyn Store> = match args.store {
        StoreKind::Sqlite => {
            let database = args.data_dir.join(DATABASE_FILE);
            if !database.exists() {
                return Err(no_data_dir());
            }
            Arc::new(SqliteStore::open(&database).map_err(store_err)?)
        }
        StoreKind::Dynamodb => Arc::new(nls_aws::from_env(args.dynamodb_table.clone()).await),
    };
    let ring = match (&args.signing_key_secret_id, &sdk_config) {
        (Some(secret_id), Some(sdk_config)) => {
            let client = aws_sdk_secretsmanager::Client::new(sdk_config);
            nls_aws::secrets::fetch_signing_ring(&client, secret_id).await.map_err(|e| e.to_string())?
        }
        _ => {
            if !args.data_dir.join(SIGNING_KEY_FILE).exists() {
                return Err(no_data_dir());
            }
            load_ring(&args.data_dir).map_err(|e| e.to_string())?
        }
    };
    let mailer: Arc<dyn Mailer> = match (args.mailer, &sdk_config) {
        (MailerKind::Ses, Some(sdk_config)) => {
            let client = nls_aws::sesv2_client(sdk_config, &nls_aws::ClientTuning::default());
            Arc::new(nls_aws::SesMailer::new(client, args.mail_from.clone()))
        }
        _ => Arc::new(OutboxMailer::new(args.data_dir.join("outbox"))),
    };
    Ok((store, ring, mailer))
}

pub fn run(args: ReissueArgs) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let (store, ring, mailer) = runtime.block_on(open(&args))?;
    let (store, mailer) = (&*store, &*mailer);
    let caller = Caller { actor: ACTOR.to_owned(), scope: Scope::Write };
    let run_id = new_id("reissue");
    let (reissued, failures) = runtime.block_on(async {
        let licenses = match &args.license {
            Some(id) => {
                vec![store.get_license(id).await.map_err(store_err)?.ok_or(format!("no license {id}"))?]
            }
            None => live_licenses(store).await?,
        };
        let mut reissued = Vec::new();
        let mut failures = 0;
        for before in licenses {
            match reissue_one(store, mailer, &ring, &caller, &run_id, before).await {
                Ok(done) => reissued.push(done),
                Err(e) => {
                    failures += 1;
                    eprintln!("nls: {e}");
                }
            }
        }
        Ok::<_, String>((reissued, failures))
    })?;
    println!("{}", serde_json::to_string_pretty(&reissued).unwrap_or_default());
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn live_licenses(store: &dyn Store) -> Result<Vec<License>, String> {
    let mut licenses = Vec::new();
    let mut page = PageRequest { limit: PageRequest::MAX_LIMIT, cursor: None };
    loop {
        let found = store.list_licenses(&LicenseFilter::default(), &page).await.map_err(store_err)?;
        licenses.extend(
            found
                .items
                .into_iter()
                .filter(|l| !matches!(l.status, LicenseStatus::Revoked | LicenseStatus::Expired)),
        );
        match found.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(licenses),
        }
    }
}

async fn reissue_one(
    store: &dyn Store,
    mailer: &dyn Mailer,
    ring: &KeyRing,
    caller: &Caller,
    run_id: &str,
    before: License,
) -> Result<Reissued, String> {
    if before.status == LicenseStatus::Revoked {
        return Err(format!("{}: a revoked license cannot be re-issued", before.id));
    }
    let now = SystemClock.now();
    let mut after = before.clone();
    after.key_id = new_id("key");
    after.version += 1;
    after.updated_at = now;
    let key = issue_key(ring, &after, now).map_err(|e| format!("{}: signing: {e}", before.id))?;
    let entry = audit(
        caller,
        "license.reissue",
        format!("license:{}", before.id),
        Some(&LicenseView::from(&before)),
        Some(&LicenseView::from(&after)),
        now,
    );
    let write = Write::UpdateLicense { license: after.clone(), expected_version: before.version };
    store.commit(None, vec![write, entry]).await.map_err(|e| format!("{}: {e}", before.id))?;
    let kid = ring.signer().map(|s| s.kid.clone()).unwrap_or_default();
    let customer = store
        .get_customer(&after.customer_id)
        .await
        .map_err(store_err)?
        .ok_or(format!("{}: customer {} not found; key not emailed", after.id, after.customer_id))?;
    let context =
        nls_core::email::NoticeContext { license_key: Some(key), ..notice_context(&after, &customer) };
    let email =
        render_email(NoticeKind::KeyDelivery, &context, &customer.email).map_err(|e| e.to_string())?;
    let notice = NotificationKey {
        license_id: after.id.clone(),
        notice: NoticeKind::KeyDelivery.as_str().to_owned(),
        window: after.key_id.clone(),
    };
    let sent =
        send_once(store, mailer, notice, &email, run_id, now, Duration::minutes(STALE_CLAIM_AFTER_MINUTES))
            .await
            .map_err(|e| format!("{}: re-issued, but emailing the key failed: {e}", after.id))?;
    Ok(Reissued { license_id: after.id, kid, emailed: matches!(sent, SendOnce::Sent { .. }) })
}
