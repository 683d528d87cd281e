// A reporting process for the crash test: records `api_calls` one at a time, printing
// `recorded <i>` after each recordUsage returned (fsync'd), flushing every 7 records.
// With --drain it only sends what the spool holds and prints `drained <pending>`.
"use strict";

const { LicenseClient } = require("../dist");

async function main() {
  const [serverUrl, licenseKey, jwks, dataDir, mode] = process.argv.slice(2);
  const client = LicenseClient.open({ serverUrl, licenseKey, jwks, dataDir, logger: { warn() {}, error() {} } });
  if (mode === "--drain") {
    const report = await client.flushUsage();
    if (report.stopped) throw new Error(`drain stopped: ${report.stopped}`);
    process.stdout.write(`drained ${client.pendingUsage().length}\n`);
    await client.shutdown();
    return;
  }
  for (let i = 1; ; i++) {
    client.recordUsage("api_calls", 1);
    process.stdout.write(`recorded ${i}\n`);
    if (i % 7 === 0) await client.flushUsage();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
