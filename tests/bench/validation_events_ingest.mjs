// Origin ingest of validation events (issue 12, docs/benchmarks.md): batches of 100 events
// posted to `POST /v1/internal/validation-events` of a real `nls serve` (SQLite), a few at a
// time, for a fixed duration; reports events per second, and the same run's rate of
// `GET /health` (the no-op baseline) as a ratio of requests.
//
//   cargo build --release -p nls && NLS_BIN=$CARGO_TARGET_DIR/release/nls node tests/bench/validation_events_ingest.mjs
//
// Env: NLS_BIN (required), BENCH_SECS (10), BENCH_CONCURRENCY (4), BENCH_LICENSES (50).

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Origin, freePort, http, required } from '../edge/edge_harness.mjs';

const secs = Number(process.env.BENCH_SECS || 10);
const concurrency = Number(process.env.BENCH_CONCURRENCY || 4);
const licenses = Number(process.env.BENCH_LICENSES || 50);
const workDir = mkdtempSync(join(tmpdir(), 'nls-ingest-bench-'));
const origin = new Origin({ bin: required('NLS_BIN'), port: await freePort(), workDir });

async function closedLoop(fn) {
  const until = Date.now() + secs * 1000;
  let done = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < until) {
      await fn(done++);
    }
  }));
  return done / secs;
}

try {
  await origin.start();
  const token = await origin.serviceToken();
  const ids = [];
  for (let i = 0; i < licenses; i++) ids.push((await origin.issueLicense({ max_deployments: 5 })).id);
  let seq = 0;
  const batch = () => {
    const at = new Date().toISOString();
    const n = seq++;
    return {
      batch_id: `bench-${n}`,
      events: Array.from({ length: 100 }, (_, i) => ({
        license_id: ids[(n + i) % ids.length], deployment_id: `dep-${i % 5}`, fingerprint: `fp-${i % 20}`,
        client_ip: `198.51.100.${i % 50}`, country: 'DE', code: 'VALID', at, edge: 'bench',
      })),
    };
  };
  const headers = { authorization: `Bearer ${token}` };
  const health = await closedLoop(async () => {
    if ((await http(origin.base, 'GET', '/health')).status !== 200) throw new Error('health');
  });
  const batches = await closedLoop(async () => {
    const r = await http(origin.base, 'POST', '/v1/internal/validation-events', { body: batch(), headers });
    if (r.status !== 200) throw new Error(`ingest: ${r.status} ${r.text}`);
  });
  console.log(`nls serve (SQLite), ${concurrency} concurrent posters, ${secs} s each, batches of 100 over ${licenses} licenses:`);
  console.log(`  GET /health: ${health.toFixed(0)} req/s`);
  console.log(`  ingest: ${batches.toFixed(1)} batches/s = ${(batches * 100).toFixed(0)} events/s (batch/health ratio ${(batches / health).toFixed(3)})`);
} finally {
  await origin.stop();
}
