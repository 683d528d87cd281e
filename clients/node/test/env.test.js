// configFromEnv: the NECTAR_LICENSE_* names shared with the Rust client and the CLI, errors
// that name the variable, and a client started from the environment alone against a real
// `nls serve` (online, then air-gapped from an imported offline file).
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const { LicenseClient, configFromEnv, LicenseConfigError, OFFLINE_FILE_NAME } = require("../dist");
const { startServer, tempDir } = require("./support");

const quiet = { warn() {}, error() {} };

test("errors name the missing or unreadable variable", () => {
  const dir = tempDir("env-errors");
  const expectError = (env, variable, pattern) =>
    assert.throws(() => configFromEnv(env), (e) => e instanceof LicenseConfigError && e.variable === variable && pattern.test(e.message));
  expectError({}, "NECTAR_LICENSE_DATA_DIR", /NECTAR_LICENSE_DATA_DIR is not set/);
  expectError({ NECTAR_LICENSE_DATA_DIR: dir, NECTAR_LICENSE_JWKS: "  " }, "NECTAR_LICENSE_JWKS", /is not set/);
  expectError({ NECTAR_LICENSE_DATA_DIR: dir, NECTAR_LICENSE_JWKS: path.join(dir, "nope.json") }, "NECTAR_LICENSE_JWKS", /nope\.json/);
  fs.writeFileSync(path.join(dir, "jwks.json"), "{}");
  expectError({ NECTAR_LICENSE_DATA_DIR: dir, NECTAR_LICENSE_JWKS: path.join(dir, "jwks.json") }, "NECTAR_LICENSE_KEY", /is not set/);
});

test("a client configured from the environment validates, and an air-gapped one runs on the imported file", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense({ features: ["reports"] });
  const dir = tempDir("env");
  fs.writeFileSync(path.join(dir, "jwks.json"), await server.jwks());
  const env = {
    NECTAR_LICENSE_SERVER: server.url,
    NECTAR_LICENSE_KEY: ` ${key}\n`,
    NECTAR_LICENSE_JWKS: path.join(dir, "jwks.json"),
    NECTAR_LICENSE_DATA_DIR: path.join(dir, "state"),
  };
  const online = LicenseClient.open({ ...configFromEnv(env), logger: quiet });
  t.after(() => online.shutdown());
  assert.equal((await online.validateNow()).outcome, "good");
  assert.equal(online.state().state, "valid");

  // Air-gapped: no server, no key; the offline file the CLI imports into the data dir.
  const { file } = await server.offlineFile(id, { ttl_days: 10 });
  const airDir = path.join(dir, "air");
  fs.mkdirSync(airDir);
  fs.writeFileSync(path.join(airDir, OFFLINE_FILE_NAME), file);
  const options = configFromEnv({ NECTAR_LICENSE_JWKS: env.NECTAR_LICENSE_JWKS, NECTAR_LICENSE_DATA_DIR: airDir });
  assert.equal(options.serverUrl, undefined);
  const air = LicenseClient.open({ ...options, logger: quiet });
  t.after(() => air.shutdown());
  const state = air.state();
  assert.equal(state.state, "valid");
  assert.equal(state.source, "offline_file");
  assert.ok(air.hasFeature("reports"));
});
