// The Cloudflare Worker end to end, in workerd (`wrangler dev`, local, no login), in front of
// a real `nls serve` origin. Started by tests/edge/run.sh, which builds everything first.
//
// Env: NLS_BIN, WRANGLER_BIN, WORKER_MAIN (functions/worker/build/index.js), EDGE_WORK_DIR,
//      ORIGIN_PORT, EDGE_PORT; NECTAR_LICENSE_BIN and REPORT_USAGE_BIN for the CLI scenarios.

import { test, before, after } from 'node:test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Origin, freePort, http, killGroup, required, startWrangler } from './edge_harness.mjs';
import { registerScenarios } from './edge_scenarios.mjs';
import { accessTokenScenarios } from './access_token_scenarios.mjs';
import { cliScenarios } from './cli_through_edge.mjs';
import { registerEventScenarios } from './validation_event_scenarios.mjs';

const TTL_SECS = 8;
const MEMORY_FRESH_SECS = 1;
/** The second edge, which the origin pushes to: only a push can refresh it within the test. */
const PUSH_EDGE_TTL_SECS = 600;
const workDir = join(required('EDGE_WORK_DIR'), 'worker');
mkdirSync(workDir, { recursive: true });
const edgePort = required('EDGE_PORT');
const origin = new Origin({ bin: required('NLS_BIN'), port: required('ORIGIN_PORT'), workDir });
const pushEdgePort = await freePort();
let wrangler;
let pushWrangler;
let edgeToken;

const ctx = {
  hostName: 'worker (workerd)',
  edgeBase: () => `http://127.0.0.1:${edgePort}`,
  pushEdgeBase: () => `http://127.0.0.1:${pushEdgePort}`,
  origin,
  ttlSecs: TTL_SECS,
  memoryFreshSecs: MEMORY_FRESH_SECS,
  edgeToken: () => edgeToken,
  /** The test client's own address, distinct from the one the edge reaches the origin from. */
  clientAddress: '127.0.0.2',
  log: (line) => console.log(`# ${line}`),
  // A request lets the isolate that queued retry its outbox; the cron trigger (here fired by
  // hand through --test-scheduled) delivers what any isolate queued.
  tickle: async () => {
    await http(ctx.edgeBase(), 'GET', '/health');
    await http(ctx.edgeBase(), 'GET', '/__scheduled?cron=*+*+*+*+*');
  },
};

before(async () => {
  // The push edge's service token is an origin API key, so the origin starts once to create
  // it, then again with `--edge-push-url` and the token in NLS_EDGE_PUSH_TOKEN.
  await origin.start();
  const pushToken = await origin.serviceToken();
  edgeToken = await origin.serviceToken();
  await origin.stop();
  origin.pushTo = { urls: [ctx.pushEdgeBase()], token: pushToken };
  await origin.start();
  const common = { origin, memoryFreshSecs: MEMORY_FRESH_SECS, wranglerBin: required('WRANGLER_BIN'), workerMain: required('WORKER_MAIN') };
  [wrangler, pushWrangler] = await Promise.all([
    startWrangler({ ...common, workDir, port: edgePort, ttlSecs: TTL_SECS, serviceToken: edgeToken }),
    startWrangler({
      ...common, workDir: join(workDir, 'push-edge'), port: pushEdgePort, ttlSecs: PUSH_EDGE_TTL_SECS,
      serviceToken: pushToken, inspectorPort: await freePort(),
    }),
  ]);
});

after(async () => {
  await killGroup(wrangler);
  await killGroup(pushWrangler);
  await origin.stop();
});

test('Cloudflare Worker edge in workerd', async (t) => {
  for (const [name, fn] of registerScenarios(t, ctx)) {
    await t.test(name, fn);
  }
});

test('nectar-license and the Rust client through the Worker', async (t) => {
  if (!origin.child) await origin.start(); // a scenario above may have left it stopped
  for (const [name, fn] of cliScenarios(ctx, workDir)) {
    await t.test(name, fn);
  }
});

test('Cloudflare Worker edge in workerd: every validation counted at the origin (issue 12)', async (t) => {
  if (!origin.child) await origin.start();
  for (const [name, fn] of registerEventScenarios(t, ctx)) {
    await t.test(name, fn);
  }
});

test('Cloudflare Worker edge in workerd: cloud access tokens served at the edge', async (t) => {
  for (const [name, fn] of accessTokenScenarios({ ...ctx, workDir, cloudServiceBin: required('CLOUD_SERVICE_BIN') })) {
    await t.test(name, fn);
  }
});
