// The Spin component end to end, executed by jco (`jco serve`, Node) with JS hosts for Spin's
// key-value and variables interfaces (spin_shims/), in front of a real `nls serve` origin.
// `--isolate-requests instance` gives every request a fresh component instance, as Spin does.
// Started by tests/edge/run.sh.
//
// Env: NLS_BIN, JCO_BIN, SPIN_WASM, EDGE_WORK_DIR, ORIGIN_PORT, EDGE_PORT.

import { test, before, after } from 'node:test';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Origin, http, killGroup, required, spawnGroup, waitFor } from './edge_harness.mjs';
import { registerScenarios } from './edge_scenarios.mjs';

const TTL_SECS = 8;
const here = dirname(fileURLToPath(import.meta.url));
const workDir = join(required('EDGE_WORK_DIR'), 'spin');
mkdirSync(workDir, { recursive: true });
const edgePort = required('EDGE_PORT');
const origin = new Origin({ bin: required('NLS_BIN'), port: required('ORIGIN_PORT'), workDir });
let jco;
let serviceToken;

const ctx = {
  hostName: 'spin (jco)',
  edgeBase: () => `http://127.0.0.1:${edgePort}`,
  origin,
  ttlSecs: TTL_SECS,
  memoryFreshSecs: 1,
  log: (line) => console.log(`# ${line}`),
  // Spin has no cron trigger and a fresh instance per request, so a scheduler calls the drain
  // route (service token) instead.
  tickle: async () => {
    await http(ctx.edgeBase(), 'POST', '/v1/internal/outbox/drain', { headers: { authorization: `Bearer ${serviceToken}` } });
  },
};

before(async () => {
  await origin.start();
  serviceToken = await origin.serviceToken();
  const jwks = await origin.jwks();
  const jcoDir = join(workDir, 'jco');
  mkdirSync(jcoDir, { recursive: true });
  for (const shim of ['kv-shim.js', 'variables-shim.js', 'instance-imports.js']) copyFileSync(join(here, 'spin_shims', shim), join(jcoDir, shim));
  jco = spawnGroup(
    [required('JCO_BIN'), 'serve', required('SPIN_WASM'), '--host', '127.0.0.1', '--port', edgePort,
      '--isolate-requests', 'instance', '--jco-dir', jcoDir, '--jco-import', join(jcoDir, 'instance-imports.js'),
      '--jco-map', 'fermyon:spin/key-value@2.0.0=./kv-shim.js', 'fermyon:spin/variables@2.0.0=./variables-shim.js'],
    {
      cwd: workDir,
      env: {
        NLS_SPIN_KV_FILE: join(workDir, 'kv.json'),
        NLS_SPIN_KV_STORES: 'default',
        SPIN_VARIABLE_NLS_ORIGIN_URL: origin.base,
        SPIN_VARIABLE_NLS_SERVICE_TOKEN: serviceToken,
        SPIN_VARIABLE_NLS_JWKS: jwks,
        SPIN_VARIABLE_NLS_EDGE_MEMORY_FRESH_SECS: '1',
        SPIN_VARIABLE_NLS_EDGE_SNAPSHOT_TTL_SECS: String(TTL_SECS),
        SPIN_VARIABLE_NLS_EDGE_OUTBOX_RETRY_SECS: '2',
      },
      logFile: join(workDir, 'jco.log'),
    },
  );
  await waitFor('jco serve to answer /health', async () => (await http(ctx.edgeBase(), 'GET', '/health')).status === 200, 180000, 500);
});

after(async () => {
  await killGroup(jco);
  await origin.stop();
});

test('Spin component under jco', async (t) => {
  for (const [name, fn] of registerScenarios(t, ctx)) {
    await t.test(name, fn);
  }
});
