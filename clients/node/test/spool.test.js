// The file spool on its own (no server): sealing, acknowledging, one owner, torn lines.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const { UsageSpool } = require("../dist");
const { tempDir } = require("./support");

const rec = (value) => ({ metric: "runs", value, at: new Date().toISOString() });

test("records move from open to sealed to acknowledged; batch ids are fixed at sealing", () => {
  const dir = tempDir("spool");
  const spool = new UsageSpool(dir);
  spool.append(rec(1));
  spool.append(rec(2));
  assert.throws(() => new UsageSpool(dir), /already open/);
  const id = spool.seal();
  assert.equal(spool.seal(), null);
  spool.append(rec(3));
  const [batch, ...rest] = spool.sealed();
  assert.equal(rest.length, 0);
  assert.equal(batch.batchId, id);
  assert.deepEqual(batch.records.map((r) => r.value), [1, 2]);
  assert.equal(spool.sealed()[0].batchId, id, "the same id on every read (retries)");
  assert.equal(spool.pending().length, 3);
  spool.ack(batch);
  assert.deepEqual(spool.pending().map((r) => r.value), [3]);
  assert.throws(() => spool.append({ metric: "", value: 1, at: "" }));
  spool.close();
});

test("a torn last line is cut when the spool is opened again", () => {
  const dir = tempDir("spool-torn");
  let spool = new UsageSpool(dir);
  spool.append(rec(1));
  spool.close();
  fs.appendFileSync(path.join(dir, "open.jsonl"), '{"metric":"ru');
  spool = new UsageSpool(dir);
  spool.append(rec(5));
  assert.deepEqual(spool.pending().map((r) => r.value), [1, 5]);
  spool.close();
});

test("the same on-disk format as the Rust client", () => {
  // A spool written by the Rust client (clients/rust/src/usage_spool.rs) reads here, and back.
  const dir = tempDir("spool-format");
  fs.writeFileSync(
    path.join(dir, "batch-00000000000000000001-abc.jsonl"),
    '{"metric":"runs","value":4,"at":"2026-11-01T12:00:00Z"}\n',
  );
  const spool = new UsageSpool(dir);
  assert.deepEqual(spool.sealed().map((b) => [b.batchId, b.records[0].value]), [["00000000000000000001-abc", 4]]);
  spool.close();
});
