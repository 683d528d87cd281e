//! A logical copy of every item of a table: `nls dynamodb export` and `import`.
//!
//! The file is JSON Lines in DynamoDB's own JSON form, one `{"Item":{...}}` per line (the
//! format of DynamoDB's export to S3, so either side can read the other's). Both directions are
//! paged and resumable: after each page the position is written to `<file>.progress` (the
//! export's last evaluated key, the import's line count), and `resume` continues from there.
//! A finished run removes its progress file.
//!
//! Export is a Scan (eventually consistent by default, so use it on a restored or quiet table;
//! PITR gives the consistent point in time). Import writes with BatchWriteItem, which
//! overwrites items with the same key: repeating a page after a crash is harmless.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

/// Items per BatchWriteItem: DynamoDB's limit.
const BATCH_SIZE: usize = 25;
const UNPROCESSED_RETRIES: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    BadLine { path: PathBuf, line: u64, reason: String },
    #[error("{0}")]
    Aws(String),
    #[error("{0}: no progress to resume from (run without --resume)")]
    NothingToResume(PathBuf),
    #[error("table {0}: items stayed unprocessed after retries (throttled?); run again with --resume")]
    Unprocessed(String),
}

/// How many items a run moved, in total including earlier resumed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub items: u64,
    pub pages: u64,
    /// False when the run stopped at [`CopyLimits::max_pages`]: `--resume` continues it.
    pub complete: bool,
}

/// How much one run does: a big table can be copied over several runs (each resumed), and a
/// smaller page spreads the read or write load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyLimits {
    /// Items per Scan page (export); DynamoDB's own 1 MB page when `None`.
    pub page_size: Option<i32>,
    /// Stop after this many pages (export) or batches (import) in this run, leaving the
    /// progress file for `--resume`.
    pub max_pages: Option<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io { path: path.to_owned(), source }
}

pub fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".progress");
    file.with_file_name(name)
}

fn write_progress(file: &Path, progress: &Value) -> Result<(), CopyError> {
    let path = progress_path(file);
    let tmp = path.with_extension("progress.tmp");
    fs::write(&tmp, progress.to_string()).map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))
}

fn read_progress(file: &Path) -> Result<Value, CopyError> {
    let path = progress_path(file);
    let text = fs::read_to_string(&path).map_err(|_| CopyError::NothingToResume(path.clone()))?;
    serde_json::from_str(&text).map_err(|e| CopyError::BadLine { path, line: 1, reason: e.to_string() })
}

/// DynamoDB JSON of one attribute value.
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": B64.encode(b.as_ref())}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => json!({"BS": v.iter().map(|b| B64.encode(b.as_ref())).collect::<Vec<_>>()}),
        AttributeValue::L(v) => json!({"L": v.iter().map(attribute_to_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_to_json(m)}),
        // A type newer than this SDK knows: keep nothing rather than guess.
        _ => json!({"NULL": true}),
    }
}

pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    item.iter().map(|(k, v)| (k.clone(), attribute_to_json(v))).collect()
}

/// The attribute value of DynamoDB JSON; `Err` says what is wrong.
pub fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    let object = value.as_object().filter(|o| o.len() == 1).ok_or("expected {\"<type>\": value}")?;
    let (kind, inner) = object.iter().next().ok_or("empty attribute")?;
    let text = |v: &Value| v.as_str().map(str::to_owned).ok_or_else(|| format!("{kind}: expected a string"));
    let texts = |v: &Value| -> Result<Vec<String>, String> {
        v.as_array().ok_or_else(|| format!("{kind}: expected a list"))?.iter().map(text).collect()
    };
    let blob = |v: &Value| -> Result<Blob, String> {
        B64.decode(text(v)?).map(Blob::new).map_err(|e| format!("{kind}: {e}"))
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(text(inner)?),
        "B" => AttributeValue::B(blob(inner)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL: expected true or false")?),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(texts(inner)?),
        "NS" => AttributeValue::Ns(texts(inner)?),
        "BS" => AttributeValue::Bs(
            inner.as_array().ok_or("BS: expected a list")?.iter().map(blob).collect::<Result<_, _>>()?,
        ),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or("L: expected a list")?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        other => return Err(format!("unknown attribute type {other:?}")),
    })
}

pub fn item_from_json(value: &Value) -> Result<HashMap<String, AttributeValue>, String> {
    let object = value.as_object().ok_or("expected an object of attributes")?;
    object.iter().map(|(k, v)| Ok((k.clone(), attribute_from_json(v)?))).collect()
}

/// Scans `table` into `out`, a page at a time; with `resume`, appends after the last page
/// written by an interrupted run.
pub async fn export_table(
    client: &Client,
    table: &str,
    out: &Path,
    resume: bool,
    limits: CopyLimits,
) -> Result<CopyReport, CopyError> {
    let (mut start_key, mut report) = if resume {
        let progress = read_progress(out)?;
        let key = item_from_json(&progress["last_key"]).map_err(|reason| CopyError::BadLine {
            path: progress_path(out),
            line: 1,
            reason,
        })?;
        let report = CopyReport {
            items: progress["items"].as_u64().unwrap_or(0),
            pages: progress["pages"].as_u64().unwrap_or(0),
            complete: false,
        };
        // Cut what an interrupted page may have appended after its progress was saved.
        let bytes = progress["bytes"].as_u64().unwrap_or(0);
        let file = fs::OpenOptions::new().write(true).open(out).map_err(io(out))?;
        file.set_len(bytes).map_err(io(out))?;
        (Some(key), report)
    } else {
        fs::File::create(out).map_err(io(out))?;
        (None, CopyReport { items: 0, pages: 0, complete: false })
    };
    let mut pages_this_run = 0u64;
    let mut writer = BufWriter::new(fs::OpenOptions::new().append(true).open(out).map_err(io(out))?);
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start_key.take())
            .set_limit(limits.page_size)
            .send()
            .await
            .map_err(|e| CopyError::Aws(format!("scanning {table}: {}", DisplayErrorContext(&e))))?;
        for item in page.items() {
            let line = json!({"Item": item_to_json(item)});
            writeln!(writer, "{line}").map_err(io(out))?;
            report.items += 1;
        }
        report.pages += 1;
        writer.flush().map_err(io(out))?;
        writer.get_ref().sync_data().map_err(io(out))?;
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => {
                let bytes = writer.get_ref().metadata().map_err(io(out))?.len();
                write_progress(
                    out,
                    &json!({"last_key": item_to_json(key), "items": report.items, "pages": report.pages, "bytes": bytes}),
                )?;
                start_key = Some(key.clone());
                pages_this_run += 1;
                if limits.max_pages.is_some_and(|max| pages_this_run >= max) {
                    return Ok(report);
                }
            }
            _ => break,
        }
    }
    let _ = fs::remove_file(progress_path(out));
    report.complete = true;
    Ok(report)
}

/// Writes every item of `input` into `table`, 25 at a time; with `resume`, skips the lines an
/// interrupted run already wrote.
pub async fn import_table(
    client: &Client,
    table: &str,
    input: &Path,
    resume: bool,
    limits: CopyLimits,
) -> Result<CopyReport, CopyError> {
    let skip = if resume { read_progress(input)?["lines"].as_u64().unwrap_or(0) } else { 0 };
    let reader = BufReader::new(fs::File::open(input).map_err(io(input))?);
    let mut report = CopyReport { items: skip, pages: 0, complete: false };
    let mut batch = Vec::with_capacity(BATCH_SIZE);
    let mut line_number = 0u64;
    for line in reader.lines() {
        let line = line.map_err(io(input))?;
        line_number += 1;
        if line_number <= skip || line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| CopyError::BadLine { path: input.to_owned(), line: line_number, reason };
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let item = item_from_json(value.get("Item").unwrap_or(&Value::Null)).map_err(bad)?;
        batch.push(item);
        if batch.len() == BATCH_SIZE {
            write_batch(client, table, std::mem::take(&mut batch)).await?;
            report.items += BATCH_SIZE as u64;
            report.pages += 1;
            write_progress(input, &json!({"lines": line_number}))?;
            if limits.max_pages.is_some_and(|max| report.pages >= max) {
                return Ok(report);
            }
        }
    }
    if !batch.is_empty() {
        report.items += batch.len() as u64;
        report.pages += 1;
        write_batch(client, table, batch).await?;
    }
    let _ = fs::remove_file(progress_path(input));
    report.complete = true;
    Ok(report)
}

async fn write_batch(
    client: &Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<(), CopyError> {
    let mut requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            let put = PutRequest::builder().set_item(Some(item)).build().expect("an item is set");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for attempt in 0..UNPROCESSED_RETRIES {
        let answer = client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(|e| CopyError::Aws(format!("writing to {table}: {}", DisplayErrorContext(&e))))?;
        requests = answer.unprocessed_items().and_then(|m| m.get(table)).cloned().unwrap_or_default();
        if requests.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(StdDuration::from_millis(50 << attempt)).await;
    }
    Err(CopyError::Unprocessed(table.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_type_round_trips_through_dynamodb_json() {
        let item: HashMap<String, AttributeValue> = [
            ("s", AttributeValue::S("text".into())),
            ("n", AttributeValue::N("-1.5".into())),
            ("b", AttributeValue::B(Blob::new(vec![0, 255, 7]))),
            ("bool", AttributeValue::Bool(true)),
            ("null", AttributeValue::Null(true)),
            ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into()])),
            ("bs", AttributeValue::Bs(vec![Blob::new(vec![1])])),
            ("l", AttributeValue::L(vec![AttributeValue::S("x".into()), AttributeValue::N("2".into())])),
            ("m", AttributeValue::M([("inner".to_owned(), AttributeValue::Bool(false))].into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let json = Value::Object(item_to_json(&item));
        assert_eq!(json["b"], json!({"B": "AP8H"}));
        assert_eq!(item_from_json(&json).expect("decodes"), item);
        for bad in [json!({"x": {"S": 1}}), json!({"x": {"Q": "1"}}), json!({"x": {"S": "a", "N": "1"}})] {
            assert!(item_from_json(&bad).is_err(), "{bad}");
        }
    }
}
