// Cloud access end to end: a real `nls serve` issues tokens to `LicenseClient.accessToken`,
// and an Express service admits them through `CloudAccess.requireAccessToken` (the Rust core's
// verifier and token bucket, through wasm).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const express = require("express");

const http = require("node:http");
const { execFileSync } = require("node:child_process");

const { LicenseClient, CloudAccess, AccessTokenError, CloudCallMeter, MeterError, JWKS_MAX_AGE_MS } = require("../dist");
const { startServer, tempDir, nlsBinary } = require("./support");

const quiet = { warn() {}, error() {} };
const cloud = (burst) => ({ workflows: { requests_per_minute: 60, burst, monthly_quota: 1000 } });

async function listen(app, t) {
  const http = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  t.after(() => new Promise((r) => http.close(r)));
  return `http://127.0.0.1:${http.address().port}`;
}

function service(access, audience = "workflows") {
  const app = express();
  app.use(access.requireAccessToken(audience));
  app.get("/v1/whoami", (req, res) => res.json({ license_id: req.nlsAccess.sub, tier: req.nlsAccess.tier, deployment_id: req.nlsAccess.deployment_id }));
  return app;
}

async function call(base, token) {
  const r = await fetch(`${base}/v1/whoami`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const body = await r.json();
  return { status: r.status, code: body.error ? body.error.code : null, body, headers: r.headers };
}

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const part = (token, i) => JSON.parse(Buffer.from(token.split(".")[i], "base64url").toString("utf8"));

test("only a current access token for this service gets in; a suspended license gets no new one", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense({ cloud: cloud(100), tier: "pro" });
  const license = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("cloud"), logger: quiet });
  t.after(() => license.shutdown());
  const token = await license.accessToken("workflows");
  assert.deepEqual(await license.accessToken("workflows"), token, "cached");

  let now = new Date();
  const access = await CloudAccess.fromJwksUrl(`${server.url}/.well-known/jwks.json`, { clock: () => now });
  const base = await listen(service(access), t);
  const other = await listen(service(access, "integrations"), t);

  const ok = await call(base, token.token);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body, { license_id: id, tier: "pro", deployment_id: license.deploymentId });
  assert.equal(ok.headers.get("ratelimit-limit"), "100");

  const refused = async (base, tok) => {
    const r = await call(base, tok);
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.match(r.headers.get("www-authenticate"), /^Bearer error="invalid_token"/);
    return r.code;
  };
  assert.equal(await refused(base, undefined), "missing_token");
  const [h, p, s] = token.token.split(".");
  assert.equal(await refused(base, `${h}.${b64({ ...part(token.token, 1), sub: "lic_someone_else" })}.${s}`), "bad_signature");
  await refused(base, `${b64({ ...part(token.token, 0), alg: "none" })}.${p}.`);
  await refused(base, key);
  const validated = await fetch(`${server.url}/v1/licenses/validate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key, deployment_id: "d9" }) });
  const { receipt } = await validated.json();
  assert.equal(await refused(base, receipt), "wrong_token_type");
  assert.equal(await refused(other, token.token), "wrong_audience");

  await server.suspend(id);
  await assert.rejects(license.fetchAccessToken("workflows"), (e) => e instanceof AccessTokenError && e.kind === "refused" && e.status === 403 && e.code === "SUSPENDED");
  assert.equal((await call(base, token.token)).status, 200, "the token already out lives to its expiry");
  now = new Date(token.expiresAt.getTime());
  assert.equal(await refused(base, token.token), "token_expired");
});

test("a burst over the tier rate gets exactly the expected 429s", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { key } = await server.issueLicense({ cloud: cloud(5) });
  const license = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("cloud-rate"), logger: quiet });
  t.after(() => license.shutdown());
  const token = await license.accessToken("workflows");
  let now = new Date();
  const base = await listen(service(CloudAccess.fromJwks(await server.jwks(), { clock: () => now })), t);
  const statuses = [];
  for (let i = 0; i < 12; i++) {
    const r = await call(base, token.token);
    if (r.status === 429) {
      assert.equal(r.headers.get("retry-after"), "1");
      assert.equal(r.headers.get("ratelimit-remaining"), "0");
    }
    statuses.push(r.status);
  }
  assert.deepEqual(statuses, [...Array(5).fill(200), ...Array(7).fill(429)]);
  now = new Date(now.getTime() + 1000);
  assert.equal((await call(base, token.token)).status, 200);
  assert.equal((await call(base, token.token)).status, 429);
});

test("the app is told (rejected promise) when NLS cannot be reached", async (t) => {
  const server = await startServer();
  const { key } = await server.issueLicense({ cloud: cloud(5) });
  const license = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("cloud-down"), logger: quiet, requestTimeoutMs: 2000 });
  t.after(() => license.shutdown());
  await assert.rejects(license.accessToken("integrations"), (e) => e.kind === "refused" && e.code === "FEATURE_NOT_ENTITLED");
  const token = await license.accessToken("workflows");
  await server.stop();
  assert.deepEqual(await license.accessToken("workflows"), token, "the cached token is still handed out");
  await assert.rejects(license.fetchAccessToken("workflows"), (e) => e instanceof AccessTokenError && e.kind === "unreachable" && e.transient);
});

// A proxy to `upstream` that forwards every request but, for the first `dropFirst` requests to
// `route`, throws NLS's answer away and cuts the connection: NLS counted the batch, the meter
// never heard. Counts the requests to `route`.
async function answerDroppingProxy(upstream, route, dropFirst, t) {
  const seen = { count: 0 };
  const proxy = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const headers = { ...req.headers };
    delete headers.host;
    delete headers["content-length"];
    const answer = await fetch(upstream + req.url, { method: req.method, headers, body: req.method === "GET" ? undefined : Buffer.concat(chunks) });
    const body = Buffer.from(await answer.arrayBuffer());
    if (req.url === route && seen.count++ < dropFirst) {
      req.socket.destroy();
      return;
    }
    res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
    res.end(body);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  t.after(() => new Promise((r) => proxy.close(r)));
  return { url: `http://127.0.0.1:${proxy.address().port}`, seen };
}

test("the service meters N allowed calls as N units, once each, across a lost answer", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const N = 6;
  const { id, key } = await server.issueLicense({ cloud: { workflows: { requests_per_minute: 600, burst: 100, monthly_quota: N } } });
  const license = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("cloud-meter"), logger: quiet });
  t.after(() => license.shutdown());
  const token = await license.accessToken("workflows");

  const proxy = await answerDroppingProxy(server.url, "/v1/cloud-usage", 1, t);
  const meter = new CloudCallMeter(proxy.url, await server.apiKey("meter"), { logger: quiet });
  const access = CloudAccess.fromJwks(await server.jwks()).withMeter(meter);
  const base = await listen(service(access), t);
  for (let i = 0; i < N; i++) assert.equal((await call(base, token.token)).status, 200);
  assert.equal((await call(base, "not.a.token")).status, 401, "a refused call is not metered");
  assert.equal(meter.pendingCalls(), N);

  await assert.rejects(meter.flush(), (e) => e instanceof MeterError && e.kind === "unreachable");
  assert.equal(meter.pendingCalls(), N, "kept until acknowledged");
  assert.equal(await server.usage(id, "cloud.workflows.calls"), N, "NLS counted it already");
  assert.deepEqual(await meter.flush(), { batches: 1, calls: N, rejected: 0 });
  assert.equal(proxy.seen.count, 2, "the same batch, sent twice");
  assert.equal(meter.pendingCalls(), 0);
  assert.equal(await server.usage(id, "cloud.workflows.calls"), N, "once, across the retry");

  await assert.rejects(license.fetchAccessToken("workflows"), (e) => e.kind === "refused" && e.code === "USAGE_LIMIT_EXCEEDED");
});

test("a running verifier follows a signing-key rotation and retirement on nls serve", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { key } = await server.issueLicense({ cloud: cloud(100) });
  const issue = async () => {
    const r = await fetch(`${server.url}/v1/access-tokens`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key, deployment_id: "d1", audience: "workflows" }) });
    assert.equal(r.status, 200);
    return (await r.json()).token;
  };
  const kid = (token) => part(token, 0).kid;
  const keys = (...args) => JSON.parse(execFileSync(nlsBinary(), ["keys", ...args], { encoding: "utf8" }));
  const oldToken = await issue();
  let now = new Date();
  const jwksUrl = `${server.url}/.well-known/jwks.json`;
  const base = await listen(service(await CloudAccess.fromJwksUrl(jwksUrl, { clock: () => now })), t);
  assert.equal((await call(base, oldToken)).status, 200);

  let newKid;
  await server.restart((data) => {
    newKid = keys("rotate", "--data-dir", data).kid;
  });
  const newToken = await issue();
  assert.equal(kid(newToken), newKid);
  assert.notEqual(newKid, kid(oldToken));
  assert.equal((await call(base, newToken)).status, 200, "the unknown kid refetched the JWKS");
  assert.equal((await call(base, oldToken)).status, 200, "the old key is still trusted");

  await server.restart((data) => keys("retire", "--data-dir", data, "--kid", kid(oldToken)));
  const fresh = await listen(service(await CloudAccess.fromJwksUrl(jwksUrl, { clock: () => now })), t);
  assert.equal((await call(fresh, oldToken)).code, "unknown_kid");
  assert.equal((await call(base, oldToken)).status, 200, "within the JWKS's max age");
  now = new Date(now.getTime() + JWKS_MAX_AGE_MS);
  const refused = await call(base, oldToken);
  assert.deepEqual([refused.status, refused.code], [401, "unknown_kid"]);
  assert.equal((await call(base, newToken)).status, 200);
});
