// Times the wasm Ed25519 verifiers in this node's V8. Usage: node bench.mjs FILE.wasm [ROUNDS]
// Prints one JSON line per verifier: the median time of one verify over ROUNDS timed batches.
import { readFileSync } from 'node:fs';

const [file, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 15);
const { instance } = await WebAssembly.instantiate(readFileSync(file), {});
const exports = instance.exports;
if (exports.setup() !== 1) throw new Error('the fixture does not verify');

const batch = 200;
for (const name of ['verify_compact', 'verify_dalek', 'verify_ed25519_dalek', 'verify_ed25519_dalek_strict']) {
  const run = exports[name];
  if (run(batch) !== batch) throw new Error(`${name}: a good signature was refused`);
  const perVerifyUs = [];
  for (let i = 0; i < rounds; i++) {
    const start = process.hrtime.bigint();
    const ok = run(batch);
    const ns = Number(process.hrtime.bigint() - start);
    if (ok !== batch) throw new Error(`${name}: a good signature was refused`);
    perVerifyUs.push(ns / batch / 1000);
  }
  perVerifyUs.sort((a, b) => a - b);
  const median = perVerifyUs[Math.floor(perVerifyUs.length / 2)];
  console.log(JSON.stringify({ engine: `V8 ${process.versions.v8} (node ${process.version})`, verifier: name, median_us: +median.toFixed(2), rounds, batch }));
}
