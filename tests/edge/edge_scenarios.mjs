// The edge scenarios of issue 6, written once and run against every edge host (the Worker in
// workerd via wrangler dev, the Spin component via jco). Each is a node:test subtest; they
// run in order and share one license.
//
// ctx: { edgeBase, origin (harness Origin), ttlSecs, memoryFreshSecs, hostName, log,
//        pushEdgeBase (a second edge of the same host that the origin pushes to, TTL 600 s),
//        edgeToken (the first edge's service token) }

import assert from 'node:assert/strict';
import { http, kidOf, sleep, waitFor } from './edge_harness.mjs';

export function registerScenarios(t, ctx) {
  const edge = (method, path, body, headers) => http(ctx.edgeBase(), method, path, { body, headers });
  const validate = async (body) => {
    const r = await edge('POST', '/v1/licenses/validate', body);
    assert.ok(r.status < 500, `never a 5xx: ${r.status} ${r.text}`);
    assert.equal(r.status, 200, r.text);
    return r.json;
  };
  const state = {};

  return [
    ['health, JWKS and key rejections are answered at the edge', async () => {
      assert.equal((await edge('GET', '/health')).status, 200);
      const jwks = await edge('GET', '/.well-known/jwks.json');
      assert.equal(jwks.status, 200);
      assert.ok(jwks.json.keys.length >= 1 && !jwks.json.keys[0].d, 'public keys only');
      assert.equal((await validate({ key: 'NLS-garbage' })).code, 'MALFORMED');
      const r = await edge('POST', '/v1/licenses/validate', '{not json');
      assert.equal(r.status, 400);
      assert.equal(r.json.error.code, 'malformed_json');
      assert.equal((await edge('GET', '/v1/nowhere')).status, 404);
    }],

    ['validate cold, then warm', async () => {
      state.license = await ctx.origin.issueLicense({ max_deployments: 2, features: ['sso'] });
      const t0 = performance.now();
      const cold = await validate({ key: state.license.key, deployment_id: 'dep-1' });
      const coldMs = performance.now() - t0;
      assert.equal(cold.code, 'VALID', JSON.stringify(cold));
      assert.equal(cold.degraded, false);
      assert.equal(typeof cold.receipt, 'string', 'the cold path relays the origin-signed receipt');
      const t1 = performance.now();
      const warm = await validate({ key: state.license.key, deployment_id: 'dep-1' });
      const warmMs = performance.now() - t1;
      assert.equal(warm.code, 'VALID');
      assert.equal(warm.degraded, false);
      assert.equal(warm.license.id, state.license.id);
      ctx.log(`${ctx.hostName}: cold validation ${coldMs.toFixed(1)} ms, warm ${warmMs.toFixed(1)} ms`);
      assert.deepEqual(await ctx.origin.deployments(state.license.id), ['dep-1'], 'activation went to the origin');
      const feature = await validate({ key: state.license.key, features: ['audit-export'] });
      assert.equal(feature.code, 'FEATURE_NOT_ENTITLED');
    }],

    ['a suspension at the origin reaches the edge within the snapshot TTL', async () => {
      // Warm this exact request first (its receipt too), so the edge has no reason to ask the
      // origin: only the snapshot TTL (no push here) can bring the change.
      assert.equal((await validate({ key: state.license.key })).code, 'VALID');
      assert.equal((await validate({ key: state.license.key })).degraded, false);
      const at = Date.now();
      await ctx.origin.admin('POST', `/v1/licenses/${state.license.id}/suspend`);
      await waitFor('the edge to answer SUSPENDED', async () => (await validate({ key: state.license.key })).code === 'SUSPENDED',
        (ctx.ttlSecs + 10) * 1000, 250);
      const followedMs = Date.now() - at;
      ctx.log(`${ctx.hostName}: suspension followed after ${followedMs} ms (bound: TTL ${ctx.ttlSecs} s)`);
      assert.ok(followedMs <= (ctx.ttlSecs + 3) * 1000, `followed after ${followedMs} ms`);
      await ctx.origin.admin('POST', `/v1/licenses/${state.license.id}/reactivate`);
      await waitFor('the edge to answer VALID again', async () => (await validate({ key: state.license.key })).code === 'VALID',
        (ctx.ttlSecs + 10) * 1000, 250);
    }],

    ['a status push reaches the edge within seconds (that edge\'s snapshot TTL is 600 s)', async () => {
      // The origin pushes to the second edge only, so the scenario above shows the TTL bound
      // of a lost push and this one the push. With a 600 s TTL (refresh-ahead at 300 s) only
      // the push can bring the change; the origin's request metrics prove the edge did not ask.
      const pushed = async (body) => {
        const r = await http(ctx.pushEdgeBase(), 'POST', '/v1/licenses/validate', { body });
        assert.equal(r.status, 200, r.text);
        return r.json;
      };
      const license = await ctx.origin.issueLicense({ max_deployments: 1 });
      assert.equal((await pushed({ key: license.key })).code, 'VALID');
      const warm = await pushed({ key: license.key });
      assert.equal(warm.code, 'VALID');
      assert.equal(warm.degraded, false);
      await sleep(500); // the write-behind of the snapshot to KV
      const snapshotReads = 'nls_http_requests_total{method="GET",route="/v1/internal/snapshots/{id}",status="2xx"}';
      const pushesOk = 'nls_snapshot_pushes_total{outcome="ok"}';
      const readsBefore = await ctx.origin.metric(snapshotReads);
      const pushesBefore = await ctx.origin.metric(pushesOk);
      assert.ok(readsBefore > 0, `the series exists (the cold validation read the snapshot): ${snapshotReads}`);
      for (const [action, code] of [['suspend', 'SUSPENDED'], ['reactivate', 'VALID']]) {
        const at = Date.now();
        await ctx.origin.admin('POST', `/v1/licenses/${license.id}/${action}`);
        await waitFor(`the pushed-to edge to answer ${code}`, async () => (await pushed({ key: license.key })).code === code,
          15000, 100);
        const followedMs = Date.now() - at;
        ctx.log(`${ctx.hostName}: ${action} pushed and followed after ${followedMs} ms (TTL there: 600 s)`);
        assert.ok(followedMs <= 3000, `followed after ${followedMs} ms`);
      }
      assert.equal(await ctx.origin.metric(snapshotReads), readsBefore, 'the edge never fetched the snapshot: the push brought it');
      assert.equal(await ctx.origin.metric(pushesOk), pushesBefore + 2);
      assert.equal(await ctx.origin.metric('nls_snapshot_pushes_total{outcome="failed"}'), 0);
    }],

    ['with the origin stopped: degraded answers, never a 5xx, writes queued', async () => {
      await ctx.origin.stop();
      // Wait until the last snapshot is older than the TTL, so the edge must try the origin.
      await sleep((ctx.ttlSecs + 1) * 1000);
      const known = await validate({ key: state.license.key, deployment_id: 'dep-1' });
      assert.equal(known.code, 'VALID', JSON.stringify(known));
      assert.equal(known.valid, true);
      assert.equal(known.degraded, true);
      const fresh = await validate({ key: state.license.key, deployment_id: 'dep-2' });
      assert.equal(fresh.code, 'VALID', JSON.stringify(fresh));
      assert.equal(fresh.degraded, true);
      assert.equal(fresh.deployment.provisional, true, 'admitted provisionally within the known limit');
      const over = await validate({ key: state.license.key, deployment_id: 'dep-3' });
      assert.equal(over.code, 'TOO_MANY_DEPLOYMENTS', 'the snapshot limit still holds');
      const usage = (batch_id, value) => ({
        key: state.license.key, deployment_id: 'dep-1', batch_id,
        records: [{ metric: 'api_calls', value, at: new Date().toISOString() }],
      });
      for (const body of [usage('e2e-b1', 5), usage('e2e-b1', 5), usage('e2e-b2', 7)]) {
        const r = await edge('POST', '/v1/usage', body);
        assert.equal(r.status, 202, r.text);
        assert.equal(r.json.queued, true);
      }
      const hb = await edge('POST', '/v1/heartbeat', { key: state.license.key, deployment_id: 'dep-1' });
      assert.equal(hb.status, 200, hb.text);
      assert.equal(hb.json.degraded, true);
    }],

    ['when the origin returns, queued usage is delivered exactly once and the seat reconciled', async () => {
      await ctx.origin.start();
      await waitFor('queued usage to reach the origin', async () => {
        await ctx.tickle(); // any request lets the isolate that queued retry its outbox
        return (await ctx.origin.usage(state.license.id, 'api_calls')) >= 12;
      }, 60000, 1000);
      // Keep poking: a second delivery must not count again.
      for (let i = 0; i < 4; i++) {
        await ctx.tickle();
        await sleep(1000);
      }
      assert.equal(await ctx.origin.usage(state.license.id, 'api_calls'), 12, 'batch e2e-b1 (sent twice) and e2e-b2 counted once each');
      const live = await ctx.origin.deployments(state.license.id);
      assert.ok(live.includes('dep-2'), `the provisional seat was activated at the origin: ${live}`);
      const after = await validate({ key: state.license.key, deployment_id: 'dep-2' });
      assert.equal(after.code, 'VALID');
    }],

    ['key rotation without a redeploy: a new kid is fetched or pushed, a retired kid is BAD_SIGNATURE', async () => {
      // The first edge has no push: it learns a new kid by fetching the origin's JWKS on the
      // first key it cannot place. The second is pushed the JWKS when the origin starts.
      const at = (base) => async (key) => {
        const r = await http(base, 'POST', '/v1/licenses/validate', { body: { key } });
        assert.equal(r.status, 200, r.text);
        return r.json.code;
      };
      const edges = { plain: at(ctx.edgeBase()), pushed: at(ctx.pushEdgeBase()) };
      const oldLicense = await ctx.origin.issueLicense({});
      for (const code of Object.values(edges)) assert.equal(await code(oldLicense.key), 'VALID');

      // WHEN the origin rotates (a restart applies it)
      await ctx.origin.stop();
      const rotated = ctx.origin.keys('rotate');
      await ctx.origin.start();
      const newLicense = await ctx.origin.issueLicense({});
      assert.equal(kidOf(newLicense.key), rotated.kid, 'new keys carry the new kid');
      assert.equal(kidOf(oldLicense.key), rotated.previous_kid);
      // THEN both edges accept keys of both kids, without a restart
      for (const [name, code] of Object.entries(edges)) {
        await waitFor(`the ${name} edge to accept the new kid`, async () => (await code(newLicense.key)) === 'VALID', 15000, 250);
        assert.equal(await code(oldLicense.key), 'VALID', `${name}: the old kid still verifies`);
      }
      const pushedJwks = (await http(ctx.pushEdgeBase(), 'GET', '/.well-known/jwks.json')).json;
      assert.deepEqual(pushedJwks.keys.map((k) => k.kid).sort(), [rotated.kid, rotated.previous_kid].sort());

      // WHEN the old kid is retired (every live key re-issued first, in real life)
      await ctx.origin.stop();
      ctx.origin.keys('retire', '--kid', rotated.previous_kid);
      await ctx.origin.start();
      // THEN the pushed edge refuses old keys at once; the other is pushed by hand
      await waitFor('the pushed edge to refuse the retired kid', async () => (await edges.pushed(oldLicense.key)) === 'BAD_SIGNATURE', 15000, 250);
      const pushed = await ctx.origin.pushJwks(ctx.edgeBase(), ctx.edgeToken());
      assert.deepEqual(pushed.kids, [rotated.kid]);
      for (const [name, code] of Object.entries(edges)) {
        assert.equal(await code(oldLicense.key), 'BAD_SIGNATURE', `${name}: the retired kid is refused`);
        assert.equal(await code(newLicense.key), 'VALID', `${name}: the new kid still verifies`);
      }
    }],
  ];
}
