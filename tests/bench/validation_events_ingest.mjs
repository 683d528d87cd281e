// Origin ingest of validation events (issue 12, docs/benchmarks.md): batches of 100 events
// posted to `POST /v1/internal/validation-events` of a real `nls serve` (SQLite), a few at a
// time, for a fixed duration; reports events per second, events per CPU-second of the server
// (its user + system CPU over the run, from /proc: "per core"), and the same run's rate of
// `GET /health` (the no-op baseline) as a ratio of requests. Two batch shapes: every event of
// a batch for one license, and a batch spread over BENCH_LICENSES licenses (each (license,
// day) a batch touches is one compliance evaluation). The per-IP and per-key rate limits are
// off for the run (`--ip-rate-limit 0 --api-key-rate-limit 0`): they would cap the load
// generator, not measure the ingest.
//
//   cargo build --release -p nls && NLS_BIN=$CARGO_TARGET_DIR/release/nls node tests/bench/validation_events_ingest.mjs
//
// Env: NLS_BIN (required), BENCH_SECS (10), BENCH_CONCURRENCY (4), BENCH_LICENSES (50).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Origin, freePort, http, required } from '../edge/edge_harness.mjs';

const secs = Number(process.env.BENCH_SECS || 10);
const concurrency = Number(process.env.BENCH_CONCURRENCY || 4);
const licenses = Number(process.env.BENCH_LICENSES || 50);
const CLOCK_TICKS_PER_SEC = 100; // USER_HZ on Linux
const workDir = mkdtempSync(join(tmpdir(), 'nls-ingest-bench-'));
const origin = new Origin({
  bin: required('NLS_BIN'), port: await freePort(), workDir, serveArgs: ['--ip-rate-limit', '0', '--api-key-rate-limit', '0'],
});

/** User + system CPU seconds `pid` (all its threads) has used so far. */
function cpuSecs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SEC;
}

/** Runs `fn` from `concurrency` callers for `secs`; calls per second and server CPU seconds. */
async function closedLoop(fn) {
  const cpuBefore = cpuSecs(origin.child.pid);
  const start = Date.now();
  const until = start + secs * 1000;
  let done = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) {
      await fn(done++);
    }
  }));
  const elapsed = (Date.now() - start) / 1000;
  return { perSec: done / elapsed, calls: done, serverCpuSecs: cpuSecs(origin.child.pid) - cpuBefore };
}

try {
  await origin.start();
  const token = await origin.serviceToken();
  const ids = [];
  for (let i = 0; i < licenses; i++) ids.push((await origin.issueLicense({ max_deployments: 5 })).id);
  let seq = 0;
  const batch = (spread) => {
    const at = new Date().toISOString();
    const n = seq++;
    return {
      batch_id: `bench-${n}`,
      events: Array.from({ length: 100 }, (_, i) => ({
        license_id: ids[(n + i) % spread], deployment_id: `dep-${i % 5}`, fingerprint: `fp-${i % 20}`,
        client_ip: `198.51.100.${i % 50}`, country: 'DE', code: 'VALID', at, edge: 'bench',
      })),
    };
  };
  const headers = { authorization: `Bearer ${token}` };
  const health = await closedLoop(async () => {
    const r = await http(origin.base, 'GET', '/health');
    if (r.status !== 200) throw new Error(`health: ${r.status} ${r.text}`);
  });
  const ingest = (spread) => closedLoop(async () => {
    const r = await http(origin.base, 'POST', '/v1/internal/validation-events', { body: batch(spread), headers });
    if (r.status !== 200 || r.json?.duplicate) throw new Error(`ingest: ${r.status} ${r.text}`);
  });
  const ingestedBefore = await origin.metric('nls_edge_validations_ingested_total');
  const shapes = [];
  for (const spread of [1, licenses]) shapes.push({ spread, ...(await ingest(spread)) });
  const ingested = (await origin.metric('nls_edge_validations_ingested_total')) - ingestedBefore;
  const posted = shapes.reduce((acc, s) => acc + s.calls * 100, 0);
  console.log(`nls serve (SQLite), ${concurrency} concurrent callers, ${secs} s per phase, batches of 100 events:`);
  console.log(`  GET /health: ${health.perSec.toFixed(0)} req/s (server CPU ${(health.serverCpuSecs / secs).toFixed(2)} cores)`);
  for (const s of shapes) {
    const events = s.calls * 100;
    console.log(`  ingest, each batch over ${s.spread} license(s): ${s.perSec.toFixed(1)} batches/s = ${(s.perSec * 100).toFixed(0)} events/s, `
      + `${(events / s.serverCpuSecs).toFixed(0)} events per server CPU-second (server CPU ${(s.serverCpuSecs / secs).toFixed(2)} cores), `
      + `batch/health request ratio ${(s.perSec / health.perSec).toFixed(3)}`);
  }
  console.log(`  the origin counted ${ingested} of the ${posted} events posted`);
  if (ingested !== posted) process.exitCode = 1;
} finally {
  await origin.stop();
  rmSync(workDir, { recursive: true, force: true });
}
