// Cloud access tokens through an edge (docs/cloud-access.md), written once for every edge host.
// The edge holds only the public JWKS: it re-judges the license from its snapshot and hands out
// a token the origin signed. A real cloud service (clients/rust/examples/cloud_service.rs, the
// core's verifier behind the Rust client's tower layer) fetches the origin's JWKS and must admit
// tokens from the edge and from `nls serve` alike.
//
// ctx: as in edge_scenarios.mjs, plus cloudServiceBin and workDir.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { freePort, http, killGroup, sleep, spawnGroup, waitFor } from './edge_harness.mjs';

const AUDIENCE = 'workflows'; // the example service's audience
const CLOUD = { [AUDIENCE]: { requests_per_minute: 600, burst: 50, monthly_quota: 100000 } };
/** The origin's count of access tokens it issued (its request metrics). */
const ORIGIN_TOKENS = 'nls_http_requests_total{method="POST",route="/v1/access-tokens",status="2xx"}';

export function accessTokenScenarios(ctx) {
  let service;
  let serviceBase;
  const tokenAt = (base, key, deployment_id, audience = AUDIENCE) =>
    http(base, 'POST', '/v1/access-tokens', { body: { key, deployment_id, audience } });
  const whoami = (token) => http(serviceBase, 'GET', '/v1/whoami', { headers: { authorization: `Bearer ${token}` } });

  return [
    ['start the example cloud service on the origin\'s JWKS', async () => {
      if (!ctx.origin.child) await ctx.origin.start();
      const port = await freePort();
      service = spawnGroup([ctx.cloudServiceBin, `127.0.0.1:${port}`], {
        env: { NLS_JWKS_URL: `${ctx.origin.base}/.well-known/jwks.json` },
        logFile: join(ctx.workDir, 'cloud_service.log'),
      });
      serviceBase = `http://127.0.0.1:${port}`;
      await waitFor('the cloud service to listen', async () => (await http(serviceBase, 'GET', '/v1/whoami')).status === 401, 30000, 200);
    }],

    ['a token from the edge and one from nls serve pass the same verifier; the warm one costs no origin request', async () => {
      const license = await ctx.origin.issueLicense({ tier: 'pro', cloud: CLOUD });
      const before = await ctx.origin.metric(ORIGIN_TOKENS);
      const cold = await tokenAt(ctx.edgeBase(), license.key, 'dep-cloud');
      assert.equal(cold.status, 200, cold.text);
      assert.equal(await ctx.origin.metric(ORIGIN_TOKENS), before + 1, 'the cold request was forwarded once');
      const direct = await tokenAt(ctx.origin.base, license.key, 'dep-cloud');
      assert.equal(direct.status, 200, direct.text);
      for (const [from, answer] of [['edge', cold], ['origin', direct]]) {
        const r = await whoami(answer.json.token);
        assert.equal(r.status, 200, `${from}: ${r.text}`);
        assert.equal(r.json.license_id, license.id, from);
        assert.equal(r.json.deployment_id, 'dep-cloud', from);
        assert.equal(r.json.tier, 'pro', from);
      }
      await sleep(500); // the write-behind of the token (and the snapshot) to KV
      const counted = await ctx.origin.metric(ORIGIN_TOKENS);
      const warm = await tokenAt(ctx.edgeBase(), license.key, 'dep-cloud');
      assert.equal(warm.status, 200, warm.text);
      assert.equal(warm.json.token, cold.json.token, 'the cached token, signed by the origin');
      assert.equal(warm.json.expires_at, cold.json.expires_at);
      assert.equal(await ctx.origin.metric(ORIGIN_TOKENS), counted, 'the warm request never reached the origin');
      assert.equal((await whoami(warm.json.token)).status, 200);
    }],

    ['an audience outside the license\'s cloud grant is FEATURE_NOT_ENTITLED, decided at the edge', async () => {
      const license = await ctx.origin.issueLicense({ cloud: CLOUD });
      const before = await ctx.origin.metric(ORIGIN_TOKENS);
      const r = await tokenAt(ctx.edgeBase(), license.key, 'dep-1', 'integrations');
      assert.equal(r.status, 403, r.text);
      assert.equal(r.json.error.code, 'FEATURE_NOT_ENTITLED');
      const bad = await tokenAt(ctx.edgeBase(), license.key, 'dep-1', 'Not An Audience');
      assert.equal(bad.status, 400, bad.text);
      assert.equal(bad.json.error.code, 'invalid_request');
      assert.equal(await ctx.origin.metric(ORIGIN_TOKENS), before);
    }],

    ['after a suspension is pushed to the edge, its cached token is not handed out (SUSPENDED)', async () => {
      const license = await ctx.origin.issueLicense({ cloud: CLOUD });
      const pushed = (key) => tokenAt(ctx.pushEdgeBase(), key, 'dep-push');
      const first = await pushed(license.key);
      assert.equal(first.status, 200, first.text);
      await sleep(500);
      const cached = await pushed(license.key);
      assert.equal(cached.json.token, first.json.token, 'the token is cached at the edge');
      // The push edge's snapshot TTL is 600 s: only the push can bring the suspension.
      await ctx.origin.admin('POST', `/v1/licenses/${license.id}/suspend`);
      await waitFor('the pushed-to edge to refuse with SUSPENDED', async () => {
        const r = await pushed(license.key);
        return r.status === 403 && r.json.error.code === 'SUSPENDED';
      }, 15000, 100).catch(async (e) => {
        const r = await pushed(license.key);
        throw new Error(`${e.message}; last answer ${r.status} ${r.text}`);
      });
      const after = await pushed(license.key);
      assert.equal(after.status, 403, after.text);
      assert.equal(after.json.error.code, 'SUSPENDED');
      assert.equal(after.json.token, undefined);
    }],

    ['stop the cloud service', async () => {
      await killGroup(service);
    }],
  ];
}
