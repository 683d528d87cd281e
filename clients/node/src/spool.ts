// The usage spool, in the same on-disk format as the Rust client (clients/rust/src/usage_spool.rs):
// - `open.jsonl`: appended records, one JSON line each, fsync'd before `append` returns;
// - `batch-<nanos>-<random>.jsonl`: a sealed batch (one atomic rename); the part after
//   `batch-` is its `batch_id`, fixed at sealing, so retries never count twice;
// - deleted only after the server's 202; refused batches become `rejected-*.jsonl`;
// - `spool.lock`: holds the owner's pid; one process owns a spool at a time.
// A torn last line (crash during an append) is cut when the spool is opened.

import * as fs from "node:fs";
import * as path from "node:path";

import { randomId, syncDir } from "./durable";
import type { UsageRecord } from "./types";

export const MAX_BATCH_RECORDS = 500;

export interface SealedBatch {
  batchId: string;
  file: string;
  records: UsageRecord[];
}

function parseRecords(text: string): UsageRecord[] {
  const out: UsageRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a torn line; never acknowledged to anyone
    }
  }
  return out;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Spool directories open in this process. */
const heldHere = new Set<string>();

export class UsageSpool {
  private fd: number;
  private records: number;
  private readonly lockFile: string;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.lockFile = path.join(dir, "spool.lock");
    this.takeLock();
    [this.fd, this.records] = this.openSegment();
  }

  private takeLock(): void {
    const dir = path.resolve(this.dir);
    if (heldHere.has(dir)) throw new Error(`the usage spool ${this.dir} is already open in this process`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(this.lockFile, String(process.pid), { flag: "wx" });
        heldHere.add(dir);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        const owner = Number(fs.readFileSync(this.lockFile, "utf8"));
        // Our own pid but not held here: left by an earlier process that had this pid.
        if (owner && owner !== process.pid && pidAlive(owner)) {
          throw new Error(`the usage spool ${this.dir} is in use by process ${owner}`);
        }
        fs.rmSync(this.lockFile, { force: true }); // stale: its owner is gone
      }
    }
    throw new Error(`could not lock the usage spool ${this.dir}`);
  }

  private openSegment(): [number, number] {
    const file = path.join(this.dir, "open.jsonl");
    const fd = fs.openSync(file, "a+");
    const text = fs.readFileSync(file);
    const keep = text.lastIndexOf(0x0a) + 1;
    if (keep !== text.length) {
      fs.ftruncateSync(fd, keep);
      fs.fsyncSync(fd);
    }
    let lines = 0;
    for (let i = 0; i < keep; i++) if (text[i] === 0x0a) lines++;
    return [fd, lines];
  }

  /** Appends one record and fsyncs it: when this returns, the record survives a crash. */
  append(record: UsageRecord): void {
    if (!record.metric || Buffer.byteLength(record.metric) > 256) {
      throw new Error("metric names are 1 to 256 bytes");
    }
    if (!Number.isSafeInteger(record.value) || record.value < 0) {
      throw new Error("usage values are non-negative integers");
    }
    fs.writeSync(this.fd, JSON.stringify(record) + "\n");
    fs.fsyncSync(this.fd);
    this.records++;
    if (this.records >= MAX_BATCH_RECORDS) this.seal();
  }

  /** Seals the open segment into a batch; returns its id, or null when it was empty. */
  seal(): string | null {
    if (this.records === 0) return null;
    const nanos = (BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n).toString().padStart(20, "0");
    const batchId = `${nanos}-${randomId()}`;
    fs.closeSync(this.fd);
    fs.renameSync(path.join(this.dir, "open.jsonl"), path.join(this.dir, `batch-${batchId}.jsonl`));
    syncDir(this.dir);
    [this.fd, this.records] = this.openSegment();
    return batchId;
  }

  /** Sealed batches, oldest first. */
  sealed(): SealedBatch[] {
    return fs
      .readdirSync(this.dir)
      .filter((n) => n.startsWith("batch-") && n.endsWith(".jsonl"))
      .sort()
      .map((name) => {
        const file = path.join(this.dir, name);
        return { batchId: name.slice("batch-".length, -".jsonl".length), file, records: parseRecords(fs.readFileSync(file, "utf8")) };
      });
  }

  /** Records not yet acknowledged: sealed batches and the open segment. */
  pending(): UsageRecord[] {
    const all = this.sealed().flatMap((b) => b.records);
    return all.concat(parseRecords(fs.readFileSync(path.join(this.dir, "open.jsonl"), "utf8")));
  }

  ack(batch: SealedBatch): void {
    fs.rmSync(batch.file);
    syncDir(this.dir);
  }

  reject(batch: SealedBatch): void {
    fs.renameSync(batch.file, path.join(this.dir, `rejected-${batch.batchId}.jsonl`));
    syncDir(this.dir);
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    if (heldHere.delete(path.resolve(this.dir))) fs.rmSync(this.lockFile, { force: true });
  }
}
