// Warm validation latency at the edge as a ratio against a no-op route (GET /health) of the
// same Worker, in workerd (`wrangler dev`), measured with wrk in one run; and warm validation
// with validation events on (the default) against a second Worker with them off
// (NLS_EDGE_EVENTS_MAX=0), alternating, same run (issue 12). Started by
// `tests/edge/run.sh bench`.
//
// Env: NLS_BIN, WRANGLER_BIN, WORKER_MAIN, EDGE_WORK_DIR, ORIGIN_PORT, EDGE_PORT;
//      optional BENCH_SECS (10), BENCH_CONNECTIONS (16).

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Origin, freePort, http, killGroup, required, startWrangler } from './edge_harness.mjs';

const secs = process.env.BENCH_SECS || '10';
const connections = process.env.BENCH_CONNECTIONS || '16';
const workDir = join(required('EDGE_WORK_DIR'), 'bench');
mkdirSync(workDir, { recursive: true });
const port = required('EDGE_PORT');
const base = `http://127.0.0.1:${port}`;
const origin = new Origin({ bin: required('NLS_BIN'), port: required('ORIGIN_PORT'), workDir });

function wrk(path, script) {
  const args = ['-t1', `-c${connections}`, `-d${secs}s`, '--latency'];
  if (script) args.push('-s', script);
  const out = execFileSync('wrk', [...args, base + path], { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]);
  const pct = (p) => {
    const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    const scale = { us: 0.001, ms: 1, s: 1000 }[m[2]];
    return Number(m[1]) * scale;
  };
  const errors = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  return { rps, p50: pct(50), p99: pct(99), non2xx: errors ? Number(errors[1]) : 0 };
}

let wrangler;
let quietWrangler;
const quietPort = await freePort();
try {
  await origin.start();
  wrangler = await startWrangler({
    workDir, origin, port, ttlSecs: 60, memoryFreshSecs: 5,
    wranglerBin: required('WRANGLER_BIN'), workerMain: required('WORKER_MAIN'),
  });
  quietWrangler = await startWrangler({
    workDir: join(workDir, 'events-off'), origin, port: quietPort, ttlSecs: 60, memoryFreshSecs: 5,
    wranglerBin: required('WRANGLER_BIN'), workerMain: required('WORKER_MAIN'), inspectorPort: await freePort(),
    extraVars: { NLS_EDGE_EVENTS_MAX: '0' },
  });
  const license = await origin.issueLicense({ max_deployments: 5 });
  const body = JSON.stringify({ key: license.key, deployment_id: 'bench-1' });
  for (let i = 0; i < 3; i++) {
    const r = await http(base, 'POST', '/v1/licenses/validate', { body });
    if (r.json?.code !== 'VALID') throw new Error(`warm-up failed: ${r.text}`);
  }
  const script = join(workDir, 'validate.lua');
  writeFileSync(script, `wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = ${JSON.stringify(body)}\n`);
  wrk('/health'); // warm the isolate and the connection pool
  const noop = wrk('/health');
  const validate = wrk('/v1/licenses/validate', script);
  const ratio = (a, b) => (a / b).toFixed(2);
  console.log(`wrk -t1 -c${connections} -d${secs}s against wrangler dev (workerd), same run:`);
  console.log(`  GET /health (no-op):          ${noop.rps.toFixed(0)} req/s, p50 ${noop.p50.toFixed(2)} ms, p99 ${noop.p99.toFixed(2)} ms`);
  console.log(`  POST /v1/licenses/validate:   ${validate.rps.toFixed(0)} req/s, p50 ${validate.p50.toFixed(2)} ms, p99 ${validate.p99.toFixed(2)} ms, non-2xx ${validate.non2xx}`);
  console.log(`  warm validation / no-op: latency p50 x${ratio(validate.p50, noop.p50)}, p99 x${ratio(validate.p99, noop.p99)}, throughput ${ratio(validate.rps, noop.rps)}`);
  // Events on (base) vs off (quietPort), alternating three rounds.
  const quietBase = `http://127.0.0.1:${quietPort}`;
  for (let i = 0; i < 3; i++) {
    const r = await http(quietBase, 'POST', '/v1/licenses/validate', { body });
    if (r.json?.code !== 'VALID') throw new Error(`warm-up (events off) failed: ${r.text}`);
  }
  const wrkAt = (target, path, s) => {
    const args = ['-t1', `-c${connections}`, `-d${secs}s`, '-s', s, target + path];
    const out = execFileSync('wrk', args, { encoding: 'utf8' });
    return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]);
  };
  for (let round = 1; round <= 3; round++) {
    const on = wrkAt(base, '/v1/licenses/validate', script);
    const off = wrkAt(quietBase, '/v1/licenses/validate', script);
    console.log(`  round ${round}: warm validation, events on ${on.toFixed(0)} req/s, off ${off.toFixed(0)} req/s, on/off ${ratio(on, off)}`);
  }
  console.log(`  origin ingested ${await origin.metric('nls_edge_validations_ingested_total')} edge validations`);
  if (validate.non2xx > 0) process.exitCode = 1;
} finally {
  await killGroup(quietWrangler);
  await killGroup(wrangler);
  await origin.stop();
}
