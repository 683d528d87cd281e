// A real `nls serve` for the Node tests: started from the built binary (`cargo build -p nls`),
// on a free port with a fresh data directory; killed when the test ends. A missing binary or
// a server that does not become healthy fails the test; nothing is skipped.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const crypto = require("node:crypto");

const ADMIN_KEY = "nls-node-tests-admin-key-0123456789";

function targetDir() {
  return process.env.CARGO_TARGET_DIR || path.resolve(__dirname, "../../../target");
}

function nlsBinary() {
  const bin = process.env.NLS_BIN || path.join(targetDir(), "debug/nls");
  if (!fs.existsSync(bin)) throw new Error(`the nls binary is missing at ${bin}: run \`cargo build -p nls\` first (or set NLS_BIN)`);
  return bin;
}

function tempDir(tag) {
  const dir = path.join(os.tmpdir(), `nls-node-${tag}-${crypto.randomBytes(6).toString("hex")}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// The repo's picker: below the ephemeral range, never the same port twice (tests/free_port.mjs).
const freePort = async () => (await import("../../../tests/free_port.mjs")).freePort();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer({ leaseSecs = 3600 } = {}) {
  const dir = tempDir("serve");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const readLog = () => fs.readFileSync(path.join(dir, "serve.log"), "utf8");
  let child;
  let exited = null;
  const launch = async () => {
    const log = fs.openSync(path.join(dir, "serve.log"), "w");
    exited = null;
    child = spawn(
      nlsBinary(),
      ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", path.join(dir, "data"), "--lease-secs", String(leaseSecs),
        "--check-in-secs", "60", "--snapshot-ttl-ms", "0"],
      { env: { ...process.env, NLS_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY }, stdio: ["ignore", log, log] },
    );
    child.on("exit", (code, signal) => (exited = `${code ?? signal}`));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited !== null) throw new Error(`nls serve exited (${exited}) before it was healthy; log:\n${readLog()}`);
      try {
        const r = await fetch(`${url}/health`);
        if (r.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`nls serve was not healthy within 30 s; log:\n${readLog()}`);
      await sleep(100);
    }
  };
  const kill = async () => {
    if (exited === null) {
      const done = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await done;
    }
  };
  await launch();
  const admin = async (method, route, body) => {
    const r = await fetch(url + route, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: r.status, body: json };
  };
  return {
    url,
    dir,
    log: readLog,
    async jwks() {
      return (await fetch(`${url}/.well-known/jwks.json`)).text();
    },
    async issueLicense(terms = {}) {
      const c = await admin("POST", "/v1/customers", { name: "Acme", email: "ops@acme.test" });
      if (c.status !== 201) throw new Error(`create customer: ${JSON.stringify(c.body)}`);
      const l = await admin("POST", "/v1/licenses", { ...terms, customer_id: c.body.customer.id });
      if (l.status !== 201) throw new Error(`create license: ${JSON.stringify(l.body)}`);
      return { id: l.body.license.id, key: l.body.key };
    },
    async offlineFile(id, terms) {
      const r = await admin("POST", `/v1/licenses/${id}/offline-file`, terms);
      if (r.status !== 201) throw new Error(`offline file: ${JSON.stringify(r.body)}`);
      return { file: JSON.stringify(r.body.file), expiresAt: Date.parse(r.body.expires_at) / 1000 };
    },
    async revoke(id) {
      const r = await admin("DELETE", `/v1/licenses/${id}`);
      if (r.status !== 200) throw new Error(`revoke: ${JSON.stringify(r.body)}`);
    },
    async suspend(id) {
      const r = await admin("POST", `/v1/licenses/${id}/suspend`);
      if (r.status !== 200) throw new Error(`suspend: ${JSON.stringify(r.body)}`);
    },
    async usage(id, metric) {
      const r = await admin("GET", `/v1/licenses/${id}/usage`);
      if (r.status !== 200) throw new Error(`usage: ${JSON.stringify(r.body)}`);
      return r.body.counters[metric] ?? 0;
    },
    async liveDeployments(id) {
      const r = await admin("GET", `/v1/licenses/${id}/deployments`);
      if (r.status !== 200) throw new Error(`deployments: ${JSON.stringify(r.body)}`);
      return r.body.items.filter((d) => d.live).map((d) => d.deployment_id);
    },
    async stop() {
      await kill();
    },
    /** Stops the server, runs `between(dataDir)` (e.g. `nls keys rotate`), starts it again on
     * the same port and data directory. */
    async restart(between) {
      await kill();
      between(path.join(dir, "data"));
      await launch();
    },
    /** A new API key with exactly `scope`; its secret. */
    async apiKey(scope) {
      const r = await admin("POST", "/v1/api-keys", { name: `${scope} key`, scopes: [scope] });
      if (r.status !== 201) throw new Error(`create API key: ${JSON.stringify(r.body)}`);
      return r.body.secret;
    },
  };
}

/** The `iat` (unix seconds) of the receipt in a client's cache file. */
function receiptIssuedAt(dataDir) {
  const cache = JSON.parse(fs.readFileSync(path.join(dataDir, "license-cache.json"), "utf8"));
  const payload = cache.body.receipt.split(".")[1];
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")).iat;
}

module.exports = { startServer, tempDir, sleep, receiptIssuedAt, nlsBinary, ADMIN_KEY };
