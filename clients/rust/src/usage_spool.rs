//! The usage spool: records are kept on disk until the server acknowledged them, so a crash
//! or an outage loses nothing and a retry never counts twice.
//!
//! Layout of the spool directory:
//! - `open.jsonl`: the segment being appended to, one JSON record per line; every append is
//!   fsync'd before `append` returns.
//! - `batch-<nanos>-<random>.jsonl`: a sealed segment. Sealing is one atomic rename, so a
//!   record is in exactly one file at any time. The part after `batch-` is the batch's
//!   `batch_id`: it is fixed at sealing, so every retry of that batch sends the same id and the
//!   server counts it once.
//! - A sealed file is deleted only after the server answered 202. A batch the server refuses
//!   as malformed (4xx) is renamed `rejected-*.jsonl` and kept for inspection.
//! - `spool.lock`: an exclusive lock; one process owns a spool at a time.
//!
//! A crash in the middle of an append leaves a torn last line; it is cut off when the spool is
//! opened again (its `append` never returned, so nobody thinks it was recorded).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable_file::{random_id, sync_dir};

/// The server takes at most 1000 records per batch.
pub const MAX_BATCH_RECORDS: usize = 500;
const MAX_METRIC_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub metric: String,
    pub value: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SealedBatch {
    pub batch_id: String,
    pub path: PathBuf,
    pub records: Vec<UsageRecord>,
}

struct OpenSegment {
    file: File,
    records: usize,
}

pub struct UsageSpool {
    dir: PathBuf,
    open: Mutex<OpenSegment>,
    _lock: File,
}

impl UsageSpool {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("spool.lock"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("the usage spool {} is in use by another process", dir.display()),
            )
        })?;
        let (file, records) = open_segment(&dir.join("open.jsonl"))?;
        Ok(Self { dir: dir.to_owned(), open: Mutex::new(OpenSegment { file, records }), _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and fsyncs it. When this returns `Ok`, the record survives a crash.
    pub fn append(&self, record: &UsageRecord) -> io::Result<()> {
        if record.metric.is_empty() || record.metric.len() > MAX_METRIC_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("metric names are 1 to {MAX_METRIC_LEN} bytes"),
            ));
        }
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut open = self.lock();
        open.file.write_all(&line)?;
        open.file.sync_data()?;
        open.records += 1;
        if open.records >= MAX_BATCH_RECORDS {
            self.seal_locked(&mut open)?;
        }
        Ok(())
    }

    /// Seals the open segment into a batch (if it holds anything). Returns the batch id.
    pub fn seal(&self) -> io::Result<Option<String>> {
        let mut open = self.lock();
        self.seal_locked(&mut open)
    }

    fn seal_locked(&self, open: &mut OpenSegment) -> io::Result<Option<String>> {
        if open.records == 0 {
            return Ok(None);
        }
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let batch_id = format!("{nanos:020}-{}", random_id());
        let open_path = self.dir.join("open.jsonl");
        fs::rename(&open_path, self.dir.join(format!("batch-{batch_id}.jsonl")))?;
        sync_dir(&self.dir)?;
        let (file, records) = open_segment(&open_path)?;
        *open = OpenSegment { file, records };
        Ok(Some(batch_id))
    }

    /// Sealed batches, oldest first.
    pub fn sealed(&self) -> io::Result<Vec<SealedBatch>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("batch-") && n.ends_with(".jsonl"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let path = self.dir.join(&name);
                let batch_id = name["batch-".len()..name.len() - ".jsonl".len()].to_owned();
                let records = parse_records(&fs::read_to_string(&path)?);
                Ok(SealedBatch { batch_id, path, records })
            })
            .collect()
    }

    /// Records not yet acknowledged: the sealed batches and the open segment.
    pub fn pending(&self) -> io::Result<Vec<UsageRecord>> {
        let _open = self.lock();
        let mut all: Vec<UsageRecord> = self.sealed()?.into_iter().flat_map(|b| b.records).collect();
        all.extend(parse_records(&fs::read_to_string(self.dir.join("open.jsonl"))?));
        Ok(all)
    }

    /// The server acknowledged the batch: forget it.
    pub fn ack(&self, batch: &SealedBatch) -> io::Result<()> {
        fs::remove_file(&batch.path)?;
        sync_dir(&self.dir)
    }

    /// The server refused the batch for good: keep it aside, out of the retry loop.
    pub fn reject(&self, batch: &SealedBatch) -> io::Result<()> {
        fs::rename(&batch.path, self.dir.join(format!("rejected-{}.jsonl", batch.batch_id)))?;
        sync_dir(&self.dir)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenSegment> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens (or creates) a segment for appending, cutting a torn last line.
fn open_segment(path: &Path) -> io::Result<(File, usize)> {
    let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep != text.len() {
        file.set_len(keep as u64)?;
        file.sync_data()?;
    }
    file.seek(SeekFrom::End(0))?;
    let records = text[..keep].iter().filter(|b| **b == b'\n').count();
    Ok((file, records))
}

fn parse_records(text: &str) -> Vec<UsageRecord> {
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: u64) -> UsageRecord {
        UsageRecord { metric: "runs".into(), value, at: Utc::now() }
    }

    #[test]
    fn records_move_from_open_to_sealed_to_gone() {
        let dir = std::env::temp_dir().join(format!("nls-spool-{}", random_id()));
        let spool = UsageSpool::open(&dir).unwrap();
        spool.append(&record(1)).unwrap();
        spool.append(&record(2)).unwrap();
        assert!(UsageSpool::open(&dir).is_err(), "a second owner is refused");
        let id = spool.seal().unwrap().unwrap();
        assert_eq!(spool.seal().unwrap(), None);
        spool.append(&record(3)).unwrap();
        let sealed = spool.sealed().unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].batch_id, id);
        assert_eq!(sealed[0].records.iter().map(|r| r.value).sum::<u64>(), 3);
        assert_eq!(spool.pending().unwrap().len(), 3);
        spool.ack(&sealed[0]).unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
        assert!(spool.append(&UsageRecord { metric: String::new(), value: 1, at: Utc::now() }).is_err());
        drop(spool);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_cut_on_open() {
        let dir = std::env::temp_dir().join(format!("nls-spool-{}", random_id()));
        let spool = UsageSpool::open(&dir).unwrap();
        spool.append(&record(1)).unwrap();
        drop(spool);
        let mut f = OpenOptions::new().append(true).open(dir.join("open.jsonl")).unwrap();
        f.write_all(b"{\"metric\":\"ru").unwrap();
        drop(f);
        let spool = UsageSpool::open(&dir).unwrap();
        spool.append(&record(5)).unwrap();
        let values: Vec<u64> = spool.pending().unwrap().iter().map(|r| r.value).collect();
        assert_eq!(values, vec![1, 5]);
        drop(spool);
        fs::remove_dir_all(dir).unwrap();
    }
}
