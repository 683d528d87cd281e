// The Spin component end to end, executed by jco (`jco serve`, Node) with JS hosts for Spin's
// key-value and variables interfaces (spin_shims/), in front of a real `nls serve` origin.
// `--isolate-requests instance` gives every request a fresh component instance, as Spin does.
// jco's server does not tell the component who called; Spin's HTTP trigger does, in the
// `spin-client-addr` header. A small proxy in front of jco plays that part
// (spin_shims/spin-trigger.mjs).
// Started by tests/edge/run.sh.
//
// Env: NLS_BIN, JCO_BIN, SPIN_WASM, EDGE_WORK_DIR, ORIGIN_PORT, EDGE_PORT.

import { test, before, after } from 'node:test';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Origin, freePort, http, killGroup, required, spawnGroup, waitFor } from './edge_harness.mjs';
import { registerScenarios } from './edge_scenarios.mjs';
import { accessTokenScenarios } from './access_token_scenarios.mjs';
import { registerEventScenarios } from './validation_event_scenarios.mjs';

const TTL_SECS = 8;
/** The second edge, which the origin pushes to: only a push can refresh it within the test. */
const PUSH_EDGE_TTL_SECS = 600;
const here = dirname(fileURLToPath(import.meta.url));
const workDir = join(required('EDGE_WORK_DIR'), 'spin');
mkdirSync(workDir, { recursive: true });
const edgePort = required('EDGE_PORT');
const origin = new Origin({ bin: required('NLS_BIN'), port: required('ORIGIN_PORT'), workDir });
const pushEdgePort = await freePort();
let jco;
let pushJco;
let trigger;
let serviceToken;

const ctx = {
  hostName: 'spin (jco)',
  edgeBase: () => `http://127.0.0.1:${edgePort}`,
  pushEdgeBase: () => `http://127.0.0.1:${pushEdgePort}`,
  origin,
  ttlSecs: TTL_SECS,
  memoryFreshSecs: 1,
  edgeToken: () => serviceToken,
  /** The test client's own address, distinct from the one the edge reaches the origin from. */
  clientAddress: '127.0.0.2',
  log: (line) => console.log(`# ${line}`),
  // Spin has no cron trigger and a fresh instance per request, so a scheduler calls the drain
  // route (service token) instead. With NLS_EDGE_EVENTS_FLUSH_SECS=0 each instance ships its
  // own events after its answer; the drain delivers what went to the KV outbox.
  tickle: async () => {
    await http(ctx.edgeBase(), 'POST', '/v1/internal/outbox/drain', { headers: { authorization: `Bearer ${serviceToken}` } });
  },
};

/** `jco serve` of the component in `dir` (its own KV file), in front of the origin. */
async function startJco({ dir, port, token, jwks, ttlSecs }) {
  const jcoDir = join(dir, 'jco');
  mkdirSync(jcoDir, { recursive: true });
  for (const shim of ['kv-shim.js', 'variables-shim.js', 'instance-imports.js']) copyFileSync(join(here, 'spin_shims', shim), join(jcoDir, shim));
  const child = spawnGroup(
    [required('JCO_BIN'), 'serve', required('SPIN_WASM'), '--host', '127.0.0.1', '--port', String(port),
      '--isolate-requests', 'instance', '--jco-dir', jcoDir, '--jco-import', join(jcoDir, 'instance-imports.js'),
      '--jco-map', 'fermyon:spin/key-value@2.0.0=./kv-shim.js', 'fermyon:spin/variables@2.0.0=./variables-shim.js'],
    {
      cwd: dir,
      env: {
        NLS_SPIN_KV_FILE: join(dir, 'kv.json'),
        NLS_SPIN_KV_STORES: 'default',
        SPIN_VARIABLE_NLS_ORIGIN_URL: origin.base,
        SPIN_VARIABLE_NLS_SERVICE_TOKEN: token,
        SPIN_VARIABLE_NLS_JWKS: jwks,
        SPIN_VARIABLE_NLS_EDGE_MEMORY_FRESH_SECS: '1',
        SPIN_VARIABLE_NLS_EDGE_SNAPSHOT_TTL_SECS: String(ttlSecs),
        SPIN_VARIABLE_NLS_EDGE_OUTBOX_RETRY_SECS: '2',
        // An instance lives for one request: it ships its events once it has answered.
        SPIN_VARIABLE_NLS_EDGE_EVENTS_FLUSH_SECS: '0',
      },
      logFile: join(dir, 'jco.log'),
    },
  );
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`jco serve on ${port} to answer /health`, async () => (await http(base, 'GET', '/health')).status === 200, 180000, 500);
  return child;
}

before(async () => {
  // The push edge's service token is an origin API key, so the origin starts once to create
  // the tokens, then again with `--edge-push-url` and the push token in NLS_EDGE_PUSH_TOKEN.
  await origin.start();
  serviceToken = await origin.serviceToken();
  const pushToken = await origin.serviceToken();
  const jwks = await origin.jwks();
  await origin.stop();
  origin.pushTo = { urls: [ctx.pushEdgeBase()], token: pushToken };
  await origin.start();
  const jcoPort = await freePort();
  trigger = spawnGroup([process.execPath, join(here, 'spin_shims', 'spin-trigger.mjs'), String(edgePort), String(jcoPort)], {
    logFile: join(workDir, 'spin-trigger.log'),
  });
  [jco, pushJco] = await Promise.all([
    startJco({ dir: workDir, port: jcoPort, token: serviceToken, jwks, ttlSecs: TTL_SECS }),
    startJco({ dir: join(workDir, 'push-edge'), port: pushEdgePort, token: pushToken, jwks, ttlSecs: PUSH_EDGE_TTL_SECS }),
  ]);
  await waitFor('the Spin trigger to answer /health', async () => (await http(ctx.edgeBase(), 'GET', '/health')).status === 200, 10000, 100);
});

after(async () => {
  await killGroup(jco);
  await killGroup(pushJco);
  await killGroup(trigger);
  await origin.stop();
});

test('Spin component under jco', async (t) => {
  for (const [name, fn] of registerScenarios(t, ctx)) {
    await t.test(name, fn);
  }
});

test('Spin component under jco: cloud access tokens served at the edge', async (t) => {
  if (!origin.child) await origin.start(); // a scenario above may have left it stopped
  for (const [name, fn] of accessTokenScenarios({ ...ctx, workDir, cloudServiceBin: required('CLOUD_SERVICE_BIN') })) {
    await t.test(name, fn);
  }
});

test('Spin component under jco: every validation counted at the origin (issue 12)', async (t) => {
  if (!origin.child) await origin.start(); // a scenario above may have left it stopped
  for (const [name, fn] of registerEventScenarios(t, ctx)) {
    await t.test(name, fn);
  }
});
