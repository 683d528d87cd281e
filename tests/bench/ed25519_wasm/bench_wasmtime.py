"""Times the wasm Ed25519 verifiers in wasmtime (the `wasmtime` PyPI package, Cranelift).

Usage: python bench_wasmtime.py FILE.wasm [ROUNDS]. Prints one JSON line per verifier: the
median time of one verify over ROUNDS timed batches. The calls run in wasm; Python only times
them (one call per batch of 200 verifies, so the call overhead is noise).
"""

import json
import sys
import time
from importlib.metadata import version

import wasmtime

path = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
store = wasmtime.Store(wasmtime.Engine())
instance = wasmtime.Instance(store, wasmtime.Module.from_file(store.engine, path), [])
exports = instance.exports(store)
if exports["setup"](store) != 1:
    raise SystemExit("the fixture does not verify")

BATCH = 200
for name in ["verify_compact", "verify_dalek", "verify_ed25519_dalek", "verify_ed25519_dalek_strict"]:
    run = exports[name]
    if run(store, BATCH) != BATCH:
        raise SystemExit(f"{name}: a good signature was refused")
    per_verify_us = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        ok = run(store, BATCH)
        ns = time.perf_counter_ns() - start
        if ok != BATCH:
            raise SystemExit(f"{name}: a good signature was refused")
        per_verify_us.append(ns / BATCH / 1000)
    per_verify_us.sort()
    median = per_verify_us[len(per_verify_us) // 2]
    engine = f"wasmtime {version('wasmtime')} (PyPI, Cranelift)"
    print(json.dumps({"engine": engine, "verifier": name, "median_us": round(median, 2), "rounds": rounds, "batch": BATCH}))
