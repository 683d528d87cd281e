// Warm validation latency at the edge as a ratio against a no-op route (GET /health) of the
// same Worker, in workerd (`wrangler dev`), measured with wrk in one run; and warm validation
// with validation events on (the default) against a second Worker with them off
// (NLS_EDGE_EVENTS_MAX=0), alternating, same run (issue 12): throughput ratio and CPU per
// validation (user + system CPU of each Worker's whole process group, wrangler and workerd,
// divided by the requests wrk completed). Started by `tests/edge/run.sh bench`.
//
// wrk runs as an async child: a synchronous one blocks this process's event loop, so a
// keep-alive socket the Worker closed meanwhile stays in fetch's pool and the next request
// on it fails with "other side closed" (seen with the events-off Worker, idle during wrk).
//
// Env: NLS_BIN, WRANGLER_BIN, WORKER_MAIN, EDGE_WORK_DIR, ORIGIN_PORT, EDGE_PORT;
//      optional BENCH_SECS (10), BENCH_CONNECTIONS (16), BENCH_ROUNDS (3).

import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Origin, freePort, http, killGroup, required, startWrangler } from './edge_harness.mjs';

const secs = process.env.BENCH_SECS || '10';
const connections = process.env.BENCH_CONNECTIONS || '16';
const rounds = Number(process.env.BENCH_ROUNDS || 3);
const workDir = join(required('EDGE_WORK_DIR'), 'bench');
mkdirSync(workDir, { recursive: true });
const port = required('EDGE_PORT');
const base = `http://127.0.0.1:${port}`;
const origin = new Origin({ bin: required('NLS_BIN'), port: required('ORIGIN_PORT'), workDir });
const CLOCK_TICKS_PER_SEC = 100; // USER_HZ on Linux

async function wrk(target, path, script) {
  const args = ['-t1', `-c${connections}`, `-d${secs}s`, '--latency'];
  if (script) args.push('-s', script);
  const { stdout: out } = await promisify(execFile)('wrk', [...args, target + path], { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]);
  const requests = Number(/(\d+) requests in/.exec(out)[1]);
  const pct = (p) => {
    const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    const scale = { us: 0.001, ms: 1, s: 1000 }[m[2]];
    return Number(m[1]) * scale;
  };
  const errors = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps, requests, p50: pct(50), p99: pct(99),
    failed: (errors ? Number(errors[1]) : 0) + (socketErrors ? socketErrors.slice(1).map(Number).reduce((a, b) => a + b) : 0),
  };
}

/** The processes of group `pgid`: [{command, cpuSecs}] (user + system CPU used so far). */
function groupProcesses(pgid) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after the parenthesised command name: state ppid pgrp ... utime(14) stime(15).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) {
      const command = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      found.push({ command, cpuSecs: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SEC });
    }
  }
  return found;
}

const groupCpuSecs = (pgid) => groupProcesses(pgid).reduce((acc, p) => acc + p.cpuSecs, 0);

/** wrk against `target` while counting the CPU of the Worker `child`'s process group. */
async function measured(child, target, path, script) {
  const before = groupCpuSecs(child.pid);
  const result = await wrk(target, path, script);
  const cpuSecs = groupCpuSecs(child.pid) - before;
  return { ...result, cpuMsPerRequest: (cpuSecs * 1000) / result.requests };
}

let wrangler;
let quietWrangler;
try {
  await origin.start();
  const common = {
    origin, ttlSecs: 60, memoryFreshSecs: 5, wranglerBin: required('WRANGLER_BIN'), workerMain: required('WORKER_MAIN'),
  };
  wrangler = await startWrangler({ ...common, workDir, port });
  // Picked now, while the origin and the first Worker hold theirs (they came from another process).
  const quietPort = await freePort();
  quietWrangler = await startWrangler({
    ...common, workDir: join(workDir, 'events-off'), port: quietPort, inspectorPort: await freePort(),
    extraVars: { NLS_EDGE_EVENTS_MAX: '0' },
  });
  const quietBase = `http://127.0.0.1:${quietPort}`;
  const license = await origin.issueLicense({ max_deployments: 5 });
  const body = JSON.stringify({ key: license.key, deployment_id: 'bench-1' });
  for (const target of [base, quietBase]) {
    for (let i = 0; i < 3; i++) {
      const r = await http(target, 'POST', '/v1/licenses/validate', { body });
      if (r.json?.code !== 'VALID') throw new Error(`warm-up at ${target} failed: ${r.text}`);
    }
  }
  const script = join(workDir, 'validate.lua');
  writeFileSync(script, `wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = ${JSON.stringify(body)}\n`);
  await wrk(base, '/health'); // warm the isolate and the connection pool
  const noop = await wrk(base, '/health');
  const validate = await wrk(base, '/v1/licenses/validate', script);
  const ratio = (a, b) => (a / b).toFixed(2);
  console.log(`wrk -t1 -c${connections} -d${secs}s against wrangler dev (workerd), same run:`);
  console.log(`  GET /health (no-op):          ${noop.rps.toFixed(0)} req/s, p50 ${noop.p50.toFixed(2)} ms, p99 ${noop.p99.toFixed(2)} ms`);
  console.log(`  POST /v1/licenses/validate:   ${validate.rps.toFixed(0)} req/s, p50 ${validate.p50.toFixed(2)} ms, p99 ${validate.p99.toFixed(2)} ms, failed ${validate.failed}`);
  console.log(`  warm validation / no-op: latency p50 x${ratio(validate.p50, noop.p50)}, p99 x${ratio(validate.p99, noop.p99)}, throughput ${ratio(validate.rps, noop.rps)}`);

  // Events on (the first Worker) vs off (the second), alternating; which goes first alternates too.
  await wrk(quietBase, '/v1/licenses/validate', script); // the same warm-up the first one had
  console.log(`  CPU counted per Worker over its process group: ${groupProcesses(wrangler.pid).map((p) => p.command).join(', ')}`);
  const on = [];
  const off = [];
  let failed = validate.failed;
  for (let round = 1; round <= rounds; round++) {
    const runOn = async () => on.push(await measured(wrangler, base, '/v1/licenses/validate', script));
    const runOff = async () => off.push(await measured(quietWrangler, quietBase, '/v1/licenses/validate', script));
    if (round % 2) {
      await runOn();
      await runOff();
    } else {
      await runOff();
      await runOn();
    }
    const [a, b] = [on.at(-1), off.at(-1)];
    failed += a.failed + b.failed;
    console.log(`  round ${round}: events on ${a.rps.toFixed(0)} req/s (${a.cpuMsPerRequest.toFixed(3)} ms CPU/validation), `
      + `off ${b.rps.toFixed(0)} req/s (${b.cpuMsPerRequest.toFixed(3)} ms CPU/validation), on/off throughput ${ratio(a.rps, b.rps)}`);
  }
  const sum = (xs, f) => xs.reduce((acc, x) => acc + f(x), 0);
  const onRps = sum(on, (r) => r.rps) / on.length;
  const offRps = sum(off, (r) => r.rps) / off.length;
  const cpu = (xs) => sum(xs, (r) => r.cpuMsPerRequest * r.requests) / sum(xs, (r) => r.requests);
  console.log(`  events on / off over ${rounds} rounds: throughput ${ratio(onRps, offRps)} (${onRps.toFixed(0)} vs ${offRps.toFixed(0)} req/s), `
    + `CPU per validation ${cpu(on).toFixed(3)} ms vs ${cpu(off).toFixed(3)} ms (x${ratio(cpu(on), cpu(off))}), failed requests ${failed}`);
  // Let the last batches ship (flush after 10 s by default), then show the origin got them.
  await new Promise((r) => setTimeout(r, 12000));
  await http(base, 'GET', '/health');
  await new Promise((r) => setTimeout(r, 2000));
  // wrk counts the requests it completed; ones in flight when it stopped were answered too.
  const answered = 3 + validate.requests + sum(on, (r) => r.requests);
  const ingested = await origin.metric('nls_edge_validations_ingested_total');
  console.log(`  origin ingested ${ingested} edge validations; the events-on Worker completed at least ${answered} for wrk and the warm-up`);
  if (failed > 0) process.exitCode = 1;
} finally {
  await killGroup(quietWrangler);
  await killGroup(wrangler);
  await origin.stop();
}
