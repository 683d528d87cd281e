// Free TCP ports for test servers that are started later by another process.
//
// `listen(0)` hands out a port from the kernel's ephemeral range, the same range outgoing
// connections take their source ports from, and may hand the same port out twice in a row
// once it is closed. A port picked that way was seen taken by the time its server started
// (CI: the Spin edge and the origin were both given 39861). So ports are picked at random
// below the ephemeral range, never twice in one process, and checked by binding them.
//
// As a command: `node tests/free_port.mjs [N]` prints N distinct free ports, one per line.

import { createServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const LOWEST = 10000;
const handedOut = new Set();

function ephemeralLow() {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > LOWEST + 1000) return low;
  } catch {
    // Not Linux: the IANA ephemeral range starts at 49152.
  }
  return 49152;
}

function bindable(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A TCP port on 127.0.0.1 that is free now, outside the ephemeral range, and not handed out before by this process. */
export async function freePort() {
  const high = ephemeralLow();
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = LOWEST + Math.floor(Math.random() * (high - LOWEST));
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${LOWEST}..${high} after 200 attempts`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = Number(process.argv[2] ?? 1);
  for (let i = 0; i < count; i += 1) console.log(await freePort());
}
