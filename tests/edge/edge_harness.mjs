// Shared helpers for the edge end-to-end tests: start and stop `nls serve` (the origin),
// drive its admin API, and talk to an edge over HTTP. Every child runs in its own process
// group and is killed as a group.

import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, openSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { freePort } from '../free_port.mjs';

export { freePort };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required (run tests/edge/run.sh)`);
  return value;
}

/** Spawns `argv` in its own process group, logging to `logFile`. */
export function spawnGroup(argv, { env = {}, logFile, cwd } = {}) {
  const log = openSync(logFile, 'a');
  const child = spawn(argv[0], argv.slice(1), {
    cwd,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.exitPromise = new Promise((resolve) => child.on('exit', resolve));
  // run.sh kills these groups on exit even if a test crashed.
  if (process.env.EDGE_PGID_FILE) appendFileSync(process.env.EDGE_PGID_FILE, `${child.pid}\n`);
  return child;
}

export async function killGroup(child, signal = 'SIGTERM') {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    return;
  }
  const done = await Promise.race([child.exitPromise.then(() => true), sleep(5000).then(() => false)]);
  if (!done) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {}
    await child.exitPromise;
  }
}

/** The `kid` in a license key's header (`NLS-<JWS>-<checksum>`), unverified. */
export function kidOf(key) {
  const header = key.slice('NLS-'.length).split('.')[0];
  return JSON.parse(Buffer.from(header, 'base64url').toString('utf8')).kid;
}

export async function waitFor(what, probe, timeoutMs = 60000, everyMs = 250) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeoutMs) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
}

export async function http(base, method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const response = await fetch(base + path, init);
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {}
  return { status: response.status, json, text };
}

/** The origin: `nls serve` over a data directory that survives restarts. `serveArgs` are
 * appended to `nls serve`'s (e.g. `['--ip-rate-limit', '0']` for a load generator). */
export class Origin {
  constructor({ bin, port, workDir, serveArgs = [] }) {
    this.bin = bin;
    this.serveArgs = serveArgs;
    this.port = port;
    this.base = `http://127.0.0.1:${port}`;
    this.dataDir = join(workDir, 'origin-data');
    this.logFile = join(workDir, 'origin.log');
    this.adminKey = 'edge-e2e-admin-' + randomBytes(16).toString('hex');
    /** Set to {urls, token} before start() to push status changes to those edges. */
    this.pushTo = null;
    mkdirSync(this.dataDir, { recursive: true });
  }

  async start() {
    const push = this.pushTo ? this.pushTo.urls.flatMap((url) => ['--edge-push-url', url]) : [];
    const env = { NLS_BOOTSTRAP_ADMIN_KEY: this.adminKey, RUST_LOG: 'warn' };
    // The token only ever travels in the environment, as in production.
    if (this.pushTo) env.NLS_EDGE_PUSH_TOKEN = this.pushTo.token;
    this.child = spawnGroup(
      [this.bin, 'serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, '--snapshot-ttl-ms', '200', ...push, ...this.serveArgs],
      { env, logFile: this.logFile },
    );
    await waitFor('the origin to be healthy', async () => (await http(this.base, 'GET', '/health')).status === 200, 60000);
  }

  async stop() {
    await killGroup(this.child);
    this.child = null;
  }

  async admin(method, path, body) {
    const r = await http(this.base, method, path, { body, headers: { authorization: `Bearer ${this.adminKey}` } });
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status} ${r.text}`);
    return r.json;
  }

  /** A customer and a license; returns {id, key}. */
  async issueLicense(terms = {}) {
    const { customer } = await this.admin('POST', '/v1/customers', { name: 'Edge E2E', email: 'edge@e2e.test' });
    const created = await this.admin('POST', '/v1/licenses', { customer_id: customer.id, ...terms });
    return { id: created.license.id, key: created.key };
  }

  /** The service token the edge uses: an API key with the `edge` scope. */
  async serviceToken() {
    const created = await this.admin('POST', '/v1/api-keys', { name: 'edge service token', scopes: ['edge'] });
    return created.secret;
  }

  /** The value of one Prometheus series of the origin's /metrics (0 when absent). */
  async metric(series) {
    const { text } = await http(this.base, 'GET', '/metrics');
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }

  async jwks() {
    return (await http(this.base, 'GET', '/.well-known/jwks.json')).text;
  }

  /** `nls keys <args...> --data-dir <this origin's>` (stopped first: rotate and retire take a
   * restart); returns its JSON output. */
  keys(...args) {
    return JSON.parse(execFileSync(this.bin, ['keys', ...args, '--data-dir', this.dataDir], { encoding: 'utf8' }));
  }

  /** `nls keys push-jwks` of this origin's current JWKS to `edgeUrl`, with that edge's token. */
  async pushJwks(edgeUrl, token) {
    const file = join(this.dataDir, '..', 'pushed-jwks.json');
    writeFileSync(file, await this.jwks());
    return JSON.parse(execFileSync(this.bin, ['keys', 'push-jwks', '--jwks', file, '--edge-url', edgeUrl], {
      encoding: 'utf8', env: { ...process.env, NLS_EDGE_PUSH_TOKEN: token },
    }));
  }

  async usage(licenseId, metric) {
    const view = await this.admin('GET', `/v1/licenses/${licenseId}/usage`);
    return view.counters[metric] ?? 0;
  }

  async deployments(licenseId) {
    const list = await this.admin('GET', `/v1/licenses/${licenseId}/deployments`);
    return list.items.filter((d) => d.live).map((d) => d.deployment_id);
  }
}

/**
 * `wrangler dev` (workerd, local, no login) on the prebuilt Worker, with a config of its own:
 * test-sized bounds, the origin's URL, and the secrets in a generated .dev.vars (never
 * committed). Returns the process (kill it with killGroup).
 */
export async function startWrangler({
  workDir, origin, port, ttlSecs, memoryFreshSecs, wranglerBin, workerMain, serviceToken, inspectorPort,
  extraVars = {},
}) {
  serviceToken ??= await origin.serviceToken();
  mkdirSync(workDir, { recursive: true });
  const jwks = await origin.jwks();
  writeFileSync(join(workDir, 'wrangler.toml'), `
name = "nls-edge-e2e"
main = "${workerMain}"
compatibility_date = "2026-04-01"

[[kv_namespaces]]
binding = "NLS_EDGE_KV"
id = "nls-edge-e2e"

[triggers]
crons = ["* * * * *"]

[vars]
NLS_ORIGIN_URL = "${origin.base}"
NLS_EDGE_MEMORY_FRESH_SECS = "${memoryFreshSecs}"
NLS_EDGE_SNAPSHOT_TTL_SECS = "${ttlSecs}"
NLS_EDGE_OUTBOX_RETRY_SECS = "2"
NLS_EDGE_ORIGIN_TIMEOUT_MS = "1500"
${Object.entries(extraVars).map(([k, v]) => `${k} = "${v}"`).join('\n')}
`);
  writeFileSync(join(workDir, '.dev.vars'), `NLS_SERVICE_TOKEN="${serviceToken}"\nNLS_JWKS='${jwks}'\n`, { mode: 0o600 });
  const child = spawnGroup(
    [wranglerBin, 'dev', '--config', join(workDir, 'wrangler.toml'), '--ip', '127.0.0.1', '--port', String(port),
      '--persist-to', join(workDir, 'state'), '--test-scheduled', '--show-interactive-dev-session=false',
      ...(inspectorPort ? ['--inspector-port', String(inspectorPort)] : [])],
    {
      cwd: workDir,
      env: { CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false', CI: '1' },
      logFile: join(workDir, 'wrangler.log'),
    },
  );
  const base = `http://127.0.0.1:${port}`;
  await waitFor('wrangler dev to serve /health', async () => (await http(base, 'GET', '/health')).status === 200, 120000, 500);
  return child;
}
