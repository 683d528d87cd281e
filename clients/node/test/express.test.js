// The Express middlewares answer 402/403 with JSON codes, against a real `nls serve`.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const express = require("express");

const { LicenseClient, requireValidLicense, requireFeature, checkUsageLimit } = require("../dist");
const { startServer, tempDir } = require("./support");

const quiet = { warn() {}, error() {} };

test("requireValidLicense, requireFeature and checkUsageLimit answer 402/403 with codes", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense({ features: ["reports"], limits: { runs: 2 } });
  const license = LicenseClient.open({ serverUrl: server.url, licenseKey: key, jwks: await server.jwks(), dataDir: tempDir("express"), logger: quiet });
  t.after(() => license.shutdown());
  assert.equal((await license.validateNow()).outcome, "good");

  const app = express();
  app.use(requireValidLicense(license));
  app.get("/home", (_req, res) => res.json({ ok: true }));
  app.get("/reports", requireFeature(license, "reports"), (_req, res) => res.json({ ok: true }));
  app.get("/audit", requireFeature(license, "audit"), (_req, res) => res.json({ ok: true }));
  app.post("/runs", checkUsageLimit(license, "runs"), (_req, res) => res.json({ ok: true }));
  const http = await new Promise((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  t.after(() => new Promise((r) => http.close(r)));
  const base = `http://127.0.0.1:${http.address().port}`;
  const call = async (method, route) => {
    const r = await fetch(base + route, { method });
    const body = await r.json();
    return [r.status, body.error ? body.error.code : "ok"];
  };

  assert.deepEqual(await call("GET", "/home"), [200, "ok"]);
  assert.deepEqual(await call("GET", "/reports"), [200, "ok"]);
  assert.deepEqual(await call("GET", "/audit"), [403, "FEATURE_NOT_ENTITLED"]);
  assert.deepEqual(await call("POST", "/runs"), [200, "ok"]);
  assert.deepEqual(await call("POST", "/runs"), [200, "ok"]);
  assert.deepEqual(await call("POST", "/runs"), [402, "USAGE_LIMIT_EXCEEDED"]);

  // The two runs were spooled and reach the server's counter exactly once.
  assert.equal(license.pendingUsage().length, 2);
  const report = await license.flushUsage();
  assert.deepEqual([report.recordsSent, report.stopped], [2, null]);
  assert.equal(await server.usage(id, "runs"), 2);

  await server.revoke(id);
  await license.validateNow();
  assert.deepEqual(await call("GET", "/home"), [402, "REVOKED"]);
  assert.deepEqual(await call("GET", "/reports"), [402, "REVOKED"]);
});
