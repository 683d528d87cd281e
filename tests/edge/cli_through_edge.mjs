// `nectar-license` (the customer operator's CLI) and the Rust client pointed at an edge instead
// of the origin: status and diagnose for a valid license, fleet usage reported through the edge
// showing up in the edge's answers within the snapshot bound, and one failure class
// (a suspended license, exit 50) decided by the edge.
//
// Env: NECTAR_LICENSE_BIN (the CLI), REPORT_USAGE_BIN (clients/rust/examples/report_usage.rs,
// the app: it validates, sends a heartbeat, records and flushes usage through the edge).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { required, sleep } from './edge_harness.mjs';

const CLEARED = ['NECTAR_LICENSE_SERVER', 'NECTAR_LICENSE_KEY', 'NECTAR_LICENSE_JWKS', 'NECTAR_LICENSE_DATA_DIR',
  'HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy'];

function install(ctx, workDir, key, jwks) {
  const dir = join(workDir, `cli-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'key'), key, { mode: 0o600 });
  writeFileSync(join(dir, 'jwks.json'), jwks);
  const env = { ...process.env };
  for (const name of CLEARED) delete env[name];
  const dataDir = join(dir, 'state');
  const run = (bin, args) => {
    const r = spawnSync(bin, args, { encoding: 'utf8', env, timeout: 60_000 });
    return { code: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
  };
  return {
    cli: (...args) => run(required('NECTAR_LICENSE_BIN'), [
      '--server', ctx.edgeBase(), '--key-file', join(dir, 'key'), '--jwks', join(dir, 'jwks.json'),
      '--data-dir', dataDir, '--timeout', '10', ...args,
    ]),
    app: (...args) => run(required('REPORT_USAGE_BIN'), [
      '--server', ctx.edgeBase(), '--key', key, '--jwks-file', join(dir, 'jwks.json'), '--data-dir', dataDir, ...args,
    ]),
  };
}

/** [name, fn] pairs, run as subtests by the host's test file. */
export function cliScenarios(ctx, workDir) {
  return [
    ['nectar-license status and diagnose through the edge; fleet usage reported there shows within the bound', async () => {
      const { id, key } = await ctx.origin.issueLicense({ tier: 'pro', limits: { api_calls: 100 } });
      const jwks = await ctx.origin.jwks();
      const at = install(ctx, workDir, key, jwks);

      const diagnose = at.cli('diagnose');
      assert.equal(diagnose.code, 0, diagnose.out);
      assert.match(diagnose.out, /result: the license is usable \(exit 0\)/);
      assert.match(diagnose.out, /\[ok {2}\] validation +VALID .*fleet usage api_calls 0\/100/);

      // The app validates and renews its lease through the edge, then reports 5 there.
      const app = at.app('--validate', '--records', '5', '--flush-every', '5');
      assert.equal(app.code, 0, app.out);
      assert.match(app.out, /validated Good/);
      assert.match(app.out, /flushed 5 None/);
      assert.equal(await ctx.origin.usage(id, 'api_calls'), 5, 'the edge forwarded the batch once');

      const status = at.cli('status', '--json');
      assert.equal(status.code, 0, status.out);
      const json = JSON.parse(status.stdout);
      assert.equal(json.state, 'valid');
      assert.equal(json.license.tier, 'pro');
      assert.equal(json.fleet_usage.metrics.api_calls.limit, 100);
      assert.equal(json.lease.source, 'heartbeat', JSON.stringify(json.lease));
      assert.ok(json.lease.lease_left_seconds > 0, JSON.stringify(json.lease));
      const human = at.cli('status');
      assert.equal(human.code, 0, human.out);
      assert.match(human.out, /deployment lease +until .* left\); last heartbeat/);

      // The usage reported through the edge is in the edge's answers within its snapshot TTL
      // (usage does not push; the edge's snapshot refreshes on its own).
      const started = Date.now();
      let used;
      for (;;) {
        const again = at.app('--validate');
        assert.equal(again.code, 0, again.out);
        used = JSON.parse(at.cli('status', '--json').stdout).fleet_usage.metrics.api_calls.used;
        if (used === 5 || Date.now() - started > (ctx.ttlSecs + 10) * 1000) break;
        await sleep(500);
      }
      const took = (Date.now() - started) / 1000;
      ctx.log(`fleet usage reported through the edge showed in its answers after ${took.toFixed(1)} s (TTL ${ctx.ttlSecs} s)`);
      assert.equal(used, 5, `fleet usage after ${took} s`);
      assert.ok(took <= ctx.ttlSecs + 5, `within the snapshot TTL (+ a receipt refresh): ${took} s`);
      const shown = at.cli('status');
      assert.match(shown.out, /fleet usage +api_calls: 5 used of 100 in \d{4}-\d{2} by all deployments \(\+0 spooled here\), 95 left/);
    }],

    ['nectar-license diagnose through the edge: a suspended license exits 50', async () => {
      const { id, key } = await ctx.origin.issueLicense({});
      await ctx.origin.admin('POST', `/v1/licenses/${id}/suspend`);
      const at = install(ctx, workDir, key, await ctx.origin.jwks());
      const diagnose = at.cli('diagnose');
      assert.equal(diagnose.code, 50, diagnose.out);
      assert.match(diagnose.out, /SUSPENDED/);
      assert.match(diagnose.out, /result: server\.validation failed/);
      const json = JSON.parse(at.cli('diagnose', '--json').stdout);
      assert.equal(json.exit_code, 50);
      assert.equal(json.failure.check, 'server.validation');
    }],
  ];
}
