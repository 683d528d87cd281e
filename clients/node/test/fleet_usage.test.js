// Fleet-wide usage against a real `nls serve`: two deployments of one license share its monthly
// limit. Each client's check counts the fleet's total from the last answer, plus what it
// delivered since and what it has spooled, so the call that would overshoot is refused
// locally, before anything is asked of the server.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");

const { LicenseClient, checkUsageLimit } = require("../dist");
const { startServer, tempDir, sleep } = require("./support");

const quiet = { warn() {}, error() {} };

test("two deployments reporting 60 of 100 each are refused locally on the third call", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense({ limits: { runs: 100 } });
  const jwks = await server.jwks();
  const open = (tag) =>
    LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks, dataDir: tempDir(tag), logger: quiet, requestTimeoutMs: 5000 });
  const a = open("fleet-a");
  const b = open("fleet-b");
  t.after(() => Promise.all([a.shutdown(), b.shutdown()]));
  assert.notEqual(a.deploymentId, b.deploymentId);
  for (const c of [a, b]) assert.equal((await c.validateNow()).outcome, "good");
  const view = a.fleetUsage();
  assert.deepEqual(view.metrics.runs, { used: 0, limit: 100, period: view.metrics.runs.period });
  assert.match(view.metrics.runs.period, /^\d{4}-\d{2}$/);

  // Each reports 60: it fits what each knew (the fleet had used nothing).
  for (const c of [a, b]) {
    assert.equal(c.checkLimit("runs", 60).allowed, true);
    c.recordUsage("runs", 60);
  }
  // Spooled, not yet delivered, counts: 50 more would pass 100.
  assert.deepEqual(a.checkLimit("runs", 50), { allowed: false, limit: 100, used: 60, remaining: 40 });

  for (const c of [a, b]) {
    const report = await c.flushUsage();
    assert.deepEqual([report.batchesSent, report.stopped], [1, null]);
  }
  assert.equal(await server.usage(id, "runs"), 120);
  // Delivered, but no answer has shown it yet: still counted.
  assert.deepEqual(a.usageStanding("runs"), { fleetUsed: 0, deliveredUnconfirmed: 60, spooled: 0, used: 60 });
  assert.equal(a.checkLimit("runs", 40).allowed, true);
  assert.equal(a.checkLimit("runs", 41).allowed, false);

  // The next check-in (a second later, so the snapshot is certainly newer than both
  // deliveries): each sees the fleet's 120 and its own 60 only once.
  await sleep(1100);
  for (const c of [a, b]) assert.equal((await c.validateNow()).outcome, "good");
  for (const c of [a, b]) {
    assert.deepEqual(c.usageStanding("runs"), { fleetUsed: 120, deliveredUnconfirmed: 0, spooled: 0, used: 120 });
  }

  // The third call of either is refused locally, before asking: the server is gone.
  await server.stop();
  for (const c of [a, b]) {
    assert.deepEqual(c.checkLimit("runs", 1), { allowed: false, limit: 100, used: 120, remaining: 0 });
  }
  let refused = null;
  const res = {
    statusCode: 200,
    status(code) {
      this.statusCode = code;
      return this;
    },
    json(body) {
      refused = body;
    },
    setHeader() {},
    on() {},
  };
  let passed = false;
  checkUsageLimit(b, "runs")({}, res, () => (passed = true));
  assert.equal(passed, false);
  assert.equal(res.statusCode, 402);
  assert.equal(refused.error.code, "USAGE_LIMIT_EXCEEDED");
  assert.match(refused.error.message, /120 used of 100/);
});
