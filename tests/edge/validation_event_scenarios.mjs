// Issue 12 end to end: validations answered at the edge reach the origin's stats, history and
// daily aggregates exactly once, also across an origin outage (delivered from the KV outbox),
// and the client address the origin sees is the test client's, never a forged header's.
//
// The test client talks to the edge from 127.0.0.2 (Linux routes all of 127/8 to loopback), so
// its address differs from the one the edge uses to reach the origin (127.0.0.1): an origin
// that logged the edge's own address would fail these tests.
//
// Dedup rule under test (docs/api.md): the history keeps identical validations (license,
// deployment, fingerprint, client IP, code) once a minute; stats and aggregates count every
// validation once, whoever answered it.
//
// ctx: as edge_scenarios.mjs, plus `tickle` (lets the edge ship and drain: a request and, on
// the Worker, the cron) and `clientAddress` (the address the test client uses).

import assert from 'node:assert/strict';
import { request } from 'node:http';
import { http, waitFor } from './edge_harness.mjs';

/** One HTTP request from `localAddress`. */
export function httpFrom(localAddress, base, method, path, { body, headers = {} } = {}) {
  const url = new URL(base + path);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname, port: url.port, path: url.pathname + url.search, method, localAddress,
        headers: { ...headers, ...(payload ? { 'content-type': 'application/json' } : {}) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          let json = null;
          try { json = text ? JSON.parse(text) : null; } catch {}
          resolve({ status: res.statusCode, json, text });
        });
      },
    );
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

/** Runs `count` calls of `fn(i)`, `concurrency` at a time. */
async function pool(count, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

export function registerEventScenarios(t, ctx) {
  const client = ctx.clientAddress;
  const validate = async (body) => {
    const r = await httpFrom(client, ctx.edgeBase(), 'POST', '/v1/licenses/validate', { body });
    assert.equal(r.status, 200, r.text);
    return r.json;
  };
  const stats = () => ctx.origin.admin('GET', '/v1/stats');
  const valid = (s) => s.validations_by_code.VALID ?? 0;
  const edgeValid = (s) => s.edge_validations_by_code.VALID ?? 0;
  // The stats are global: validations of earlier scenarios may still wait in an isolate (up to
  // NLS_EDGE_EVENTS_FLUSH_SECS, 10 s) or in the KV outbox. Settled = unchanged across a flush
  // interval, with the edge prodded to ship before each read.
  const settledStats = async () => {
    let last = null;
    for (let round = 0; round < 10; round += 1) {
      await ctx.tickle();
      const s = await stats();
      if (last && valid(s) === valid(last) && edgeValid(s) === edgeValid(last)) return s;
      last = s;
      await new Promise((resolve) => setTimeout(resolve, 11000));
    }
    throw new Error('the origin stats kept changing with no traffic');
  };
  const history = async (id) => (await ctx.origin.admin('GET', `/v1/licenses/${id}/validations?limit=1000`)).items;
  const today = async (id) => (await ctx.origin.admin('GET', `/v1/licenses/${id}/compliance`)).items[0];
  const state = {};

  return [
    ['1,000 warm validations at the edge are counted at the origin exactly once', async () => {
      state.license = await ctx.origin.issueLicense({ max_deployments: 5 });
      const { id, key } = state.license;
      const before = await settledStats();
      // Cold: activation and receipt from the origin, which counts this one itself.
      assert.equal((await validate({ key, deployment_id: 'ev-1', fingerprint: 'fp-0' })).code, 'VALID');
      const started = Date.now();
      // 1,000 warm validations: 250 fingerprints × 4.
      await pool(1000, 16, async (i) => {
        const answer = await validate({ key, deployment_id: 'ev-1', fingerprint: `fp-${i % 250}` });
        assert.equal(answer.code, 'VALID');
      });
      const answeredMs = Date.now() - started;
      // Every validation once, wherever it was answered: 1 + 1,000.
      const counted = await waitFor('1,001 validations in the origin stats', async () => {
        await ctx.tickle();
        const s = await stats();
        return valid(s) - valid(before) >= 1001 ? s : null;
      }, 60000, 500);
      const delayMs = Date.now() - started - answeredMs;
      assert.equal(valid(counted) - valid(before), 1001, 'not one more: each once');
      const edgeCounted = (counted.edge_validations_by_code.VALID ?? 0) - (before.edge_validations_by_code.VALID ?? 0);
      assert.ok(edgeCounted >= 990 && edgeCounted <= 1000, `answered at the edge: ${edgeCounted}`);
      ctx.log(`${ctx.hostName}: 1,000 warm validations in ${answeredMs} ms, all at the origin ${delayMs} ms later (${edgeCounted} answered at the edge)`);
      // The history: each (deployment, fingerprint, address, code) once a minute → 250 when the
      // events arrived within a minute; a slower machine may log a fingerprint once more per
      // further minute the run spanned, never less than once.
      const entries = await history(id);
      const spanMinutes = Math.ceil((Date.now() - started) / 60000);
      const perFingerprint = new Map();
      for (const e of entries) perFingerprint.set(e.fingerprint, (perFingerprint.get(e.fingerprint) ?? 0) + 1);
      assert.equal(perFingerprint.size, 250, `fingerprints in the history: ${perFingerprint.size}`);
      if (spanMinutes <= 1) assert.equal(entries.length, 250, `history after the repeat filter: ${entries.length}`);
      else assert.ok([...perFingerprint.values()].every((n) => n <= spanMinutes + 1), `at most once a minute over ${spanMinutes} min`);
      assert.ok(entries.every((e) => e.client_ip === client), `the test client's address: ${JSON.stringify(entries[0])}`);
      // The day's aggregate, and the key-sharing flag: 250 fingerprints > 5 seats × 3.
      const day = await today(id);
      assert.equal(day.evidence.validations_by_code.VALID, 1001);
      assert.equal(day.evidence.distinct.fingerprint.distinct, 250);
      assert.equal(day.evidence.distinct.client_ip.top[0].value, client);
      assert.ok(day.flags.some((f) => f.kind === 'too_many_fingerprints'), JSON.stringify(day.flags));
      // Later tickles deliver nothing more.
      await ctx.tickle();
      assert.equal(valid(await stats()) - valid(before), 1001);
    }],

    ['a forged forwarded address without the edge token is ignored by the origin', async () => {
      const { id, key } = state.license;
      const readKey = (await ctx.origin.admin('POST', '/v1/api-keys', { name: 'r', scopes: ['read'] })).secret;
      for (const [fingerprint, headers] of [
        ['forged-none', { 'x-nls-client-ip': '203.0.113.99' }],
        ['forged-read', { 'x-nls-client-ip': '203.0.113.98', 'x-nls-edge-token': readKey }],
      ]) {
        const r = await httpFrom(client, ctx.origin.base, 'POST', '/v1/licenses/validate', {
          body: { key, deployment_id: 'ev-1', fingerprint }, headers,
        });
        assert.equal(r.status, 200, r.text);
      }
      const entries = await history(id);
      for (const fingerprint of ['forged-none', 'forged-read']) {
        const entry = entries.find((e) => e.fingerprint === fingerprint);
        assert.equal(entry?.client_ip, client, `${fingerprint}: the peer's address, not the header's`);
      }
    }],

    ['events answered while the origin is down are delivered from the outbox once it returns, once', async () => {
      const { id, key } = state.license;
      const before = (await today(id)).evidence.validations_by_code.VALID;
      await ctx.origin.stop();
      await pool(200, 16, async (i) => {
        const answer = await validate({ key, deployment_id: 'ev-1', fingerprint: `fp-${i % 250}` });
        assert.equal(answer.code, 'VALID');
      });
      await ctx.tickle(); // ships (or queues) what waits in the isolate
      await ctx.origin.start();
      await waitFor('the 200 validations in the day aggregate', async () => {
        await ctx.tickle();
        return (await today(id)).evidence.validations_by_code.VALID - before >= 200;
      }, 90000, 1000);
      await ctx.tickle();
      await ctx.tickle();
      assert.equal((await today(id)).evidence.validations_by_code.VALID - before, 200, 'counted once');
    }],
  ];
}
