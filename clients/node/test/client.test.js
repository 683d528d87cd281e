// The Node client against a real `nls serve`: validation, the offline → grace → fail-closed
// timeline with an injected clock (each boundary to the second), tampering, heartbeats.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const { LicenseClient } = require("../dist");
const { startServer, tempDir, sleep, receiptIssuedAt } = require("./support");

const DAY = 86_400;

function fakeClock() {
  let now = new Date();
  const clock = () => now;
  clock.set = (unixSeconds) => (now = new Date(unixSeconds * 1000));
  return clock;
}

const quiet = { warn() {}, error() {} };

test("offline, grace and fail-closed boundaries to the second", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { key } = await server.issueLicense({ features: ["reports"], limits: { runs: 5 } });
  const jwks = await server.jwks();
  const dataDir = tempDir("timeline");
  const clock = fakeClock();
  const client = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks, dataDir, clock, logger: quiet, requestTimeoutMs: 2000 });
  t.after(() => client.shutdown());
  assert.equal((await client.validateNow()).outcome, "good");
  assert.equal(client.state().state, "valid");
  assert.ok(client.hasFeature("reports"));
  assert.ok(!client.hasFeature("audit"));
  assert.deepEqual(client.checkLimit("runs", 5), { allowed: true, limit: 5, used: 0, remaining: 5 });
  assert.equal(client.checkLimit("runs", 6).allowed, false);

  // The client anchors the receipt's server-signed iat to its own clock at validation, so
  // deadlines are exact in the client's frame; the fake clock was frozen during validateNow.
  assert.ok(Math.abs(receiptIssuedAt(dataDir) - Math.floor(clock().getTime() / 1000)) <= 1);
  const iat = Math.floor(clock().getTime() / 1000);
  await server.stop();
  clock.set(iat + 1);
  assert.equal((await client.validateNow()).outcome, "offline");
  const expect = (offset, state, extra = {}) => {
    clock.set(iat + offset);
    const s = client.state();
    assert.equal(s.state, state, `at iat+${offset}s: ${JSON.stringify(s)}`);
    for (const [k, v] of Object.entries(extra)) assert.deepEqual(s[k], v, `at iat+${offset}s: ${k}`);
  };
  expect(2, "offline", { offlineUntil: new Date((iat + 30 * DAY) * 1000), graceUntil: new Date((iat + 37 * DAY) * 1000) });
  expect(30 * DAY - 1, "offline");
  expect(30 * DAY, "grace", { reason: "offline_too_long", endsAt: new Date((iat + 37 * DAY) * 1000) });
  expect(37 * DAY - 1, "grace");
  expect(37 * DAY, "invalid", { code: "OFFLINE_TOO_LONG" });
});

test("an edited cache, another license's cache and a rolled-back clock are caught", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const a = await server.issueLicense();
  const b = await server.issueLicense();
  const jwks = await server.jwks();
  const dirA = tempDir("tamper-a");
  const dirB = tempDir("tamper-b");
  for (const [lic, dir] of [[a, dirA], [b, dirB]]) {
    const c = LicenseClient.open({ serverUrl: server.url, licenseKey: lic.key, jwks, dataDir: dir, logger: quiet });
    assert.equal((await c.validateNow()).outcome, "good");
    await c.shutdown();
  }
  await server.stop();
  const reopen = (dir, clock) =>
    LicenseClient.open({ serverUrl: server.url, licenseKey: a.key, jwks, dataDir: dir, clock, logger: quiet, requestTimeoutMs: 1000 });

  // Untouched: offline from the cached receipt.
  let c = reopen(dirA);
  await c.validateNow();
  assert.equal(c.state().state, "offline");
  await c.shutdown();

  // Rolled back by a day while stopped: grace (not a fresh offline window), ending grace_days
  // of forward time after the detection.
  const clock = fakeClock();
  const back = Math.floor(Date.now() / 1000) - DAY;
  clock.set(back);
  c = reopen(dirA, clock);
  const s = c.state();
  assert.equal(s.state, "grace", JSON.stringify(s));
  assert.equal(s.reason, "clock_rollback");
  assert.equal(s.endsAt.getTime(), (back + 7 * DAY) * 1000);
  await c.shutdown();

  // Edited: ignored as a whole, so offline with no proof fails closed.
  const dirEdited = tempDir("tamper-edit");
  const cache = fs.readFileSync(path.join(dirB, "license-cache.json"), "utf8");
  fs.writeFileSync(path.join(dirEdited, "license-cache.json"), fs.readFileSync(path.join(dirA, "license-cache.json"), "utf8").replace('"effective": ', '"effective": 9'));
  c = reopen(dirEdited);
  await c.validateNow();
  assert.deepEqual([c.state().state, c.state().code], ["invalid", "NOT_VALIDATED"]);
  await c.shutdown();

  // Another license's (genuine) cache: ignored too.
  const dirOther = tempDir("tamper-other");
  fs.writeFileSync(path.join(dirOther, "license-cache.json"), cache);
  c = reopen(dirOther);
  await c.validateNow();
  assert.deepEqual([c.state().state, c.state().code], ["invalid", "NOT_VALIDATED"]);
  await c.shutdown();
});

test("an air-gapped install runs on its offline file until the TTL, on its machine only", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id } = await server.issueLicense({ features: ["reports"] });
  const { file, expiresAt } = await server.offlineFile(id, { ttl_days: 2, fingerprint: "machine-1" });
  const jwks = await server.jwks();
  await server.stop(); // air-gapped from here on
  const clock = fakeClock();
  const open = (fingerprint) => LicenseClient.open({ offlineFile: file, fingerprint, jwks, dataDir: tempDir("airgap"), clock, logger: quiet });
  assert.throws(() => open("machine-2"), /another machine/);
  const client = open("machine-1");
  t.after(() => client.shutdown());
  assert.deepEqual([client.state().state, client.state().source], ["valid", "offline_file"]);
  assert.ok(client.hasFeature("reports"));
  clock.set(expiresAt - 1);
  assert.equal(client.state().state, "valid");
  clock.set(expiresAt);
  assert.deepEqual([client.state().state, client.state().code], ["invalid", "OFFLINE_FILE_INVALID"]);
});

test("a revoked license fails closed", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense();
  const client = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("revoke"), logger: quiet });
  t.after(() => client.shutdown());
  assert.equal((await client.validateNow()).outcome, "good");
  await server.revoke(id);
  const outcome = await client.validateNow();
  assert.deepEqual([outcome.outcome, outcome.code], ["refused", "REVOKED"]);
  assert.deepEqual([client.state().state, client.state().code], ["invalid", "REVOKED"]);
});

test("heartbeats keep the seat; a stopped client frees it after the lease", async (t) => {
  const lease = 5;
  const server = await startServer({ leaseSecs: lease });
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense({ max_deployments: 1 });
  const jwks = await server.jwks();
  const a = await LicenseClient.start({
    serverUrl: server.url, licenseKey: key, jwks, dataDir: tempDir("seat-a"), deploymentId: "dep-a", heartbeatIntervalMs: 1000, logger: quiet,
  });
  const b = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks, dataDir: tempDir("seat-b"), deploymentId: "dep-b", logger: quiet });
  t.after(() => b.shutdown());
  assert.equal(a.state().state, "valid");
  await sleep(2 * lease * 1000);
  assert.deepEqual(await server.liveDeployments(id), ["dep-a"]);
  const refused = await b.validateNow();
  assert.deepEqual([refused.outcome, refused.code], ["refused", "TOO_MANY_DEPLOYMENTS"]);
  await a.shutdown(); // heartbeats stop; no explicit release
  const deadline = Date.now() + 3 * lease * 1000;
  while ((await server.liveDeployments(id)).length > 0) {
    assert.ok(Date.now() < deadline, "A's seat was not freed");
    await sleep(200);
  }
  assert.equal((await b.validateNow()).outcome, "good");
  assert.deepEqual(await server.liveDeployments(id), ["dep-b"]);
});
