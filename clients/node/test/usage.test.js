// The usage spool survives `kill -9` of the reporting process: nothing lost, nothing doubled.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { spawn, execFileSync } = require("node:child_process");

const { startServer, tempDir } = require("./support");

test("usage spool survives SIGKILL of the reporter; the server counts each record once", async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const { id, key } = await server.issueLicense();
  const jwks = await server.jwks();
  const dataDir = tempDir("kill9");
  const child = path.join(__dirname, "report-usage-child.js");

  let recorded = 0;
  for (const killAfter of [120, 43, 250]) {
    const proc = spawn(process.execPath, [child, server.url, key, jwks, dataDir], { stdio: ["ignore", "pipe", "inherit"] });
    const last = await new Promise((resolve, reject) => {
      let buffer = "";
      let last = 0;
      proc.stdout.on("data", (chunk) => {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines) {
          const m = /^recorded (\d+)$/.exec(line);
          if (m) last = Number(m[1]);
        }
        if (last >= killAfter && proc.exitCode === null && !proc.killed) proc.kill("SIGKILL");
      });
      proc.on("exit", () => resolve(last));
      proc.on("error", reject);
    });
    assert.ok(last >= killAfter, `the reporter died early at ${last}`);
    recorded += last;
  }
  const out = execFileSync(process.execPath, [child, server.url, key, jwks, dataDir, "--drain"], { encoding: "utf8" });
  assert.equal(out.trim(), "drained 0");
  const counted = await server.usage(id, "api_calls");
  // Each killed process may have fsync'd records it never got to print (output is buffered in
  // the pipe), but a batch is never counted twice: a double count would add whole batches.
  assert.ok(counted >= recorded && counted <= recorded + 3, `server counted ${counted}, reporters printed ${recorded}`);
});
