#!/usr/bin/env bash
# The Ed25519 verifier comparison in wasm (docs/benchmarks.md, "Ed25519 verifier per target"):
# builds this crate for wasm32-unknown-unknown twice (curve25519-dalek with its default 32-bit
# limbs on wasm32, and with 64-bit limbs), then times every verifier in node's V8 and in
# wasmtime. Build first, then measure under the shared benchmark lock if there is one:
#
#   tests/bench/ed25519_wasm/run.sh            # build + measure
#   BENCH_LOCK=/path/to/lock tests/bench/ed25519_wasm/run.sh
#
# Needs cargo (+ rustup), node and python3. wasmtime comes from PyPI into a venv under the
# target dir (WASMTIME_VENV to choose another). Honours CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/ed25519_wasm"
venv="${WASMTIME_VENV:-$target/venv}"
rounds="${ROUNDS:-15}"

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'wasmtime==50.*'
fi

build() { # $1: output name, $2: extra RUSTFLAGS
  CARGO_TARGET_DIR="$target/$1" RUSTFLAGS="${2:-}" nice -n 19 cargo build --quiet --locked --release \
    --manifest-path "$here/Cargo.toml" --target wasm32-unknown-unknown
  cp "$target/$1/wasm32-unknown-unknown/release/nls_ed25519_wasm_bench.wasm" "$target/$1.wasm"
}
build dalek32
build dalek64 '--cfg curve25519_dalek_bits="64"'

measure() {
  for variant in dalek32 dalek64; do
    echo "## curve25519-dalek limbs: ${variant#dalek} bit"
    node "$here/bench.mjs" "$target/$variant.wasm" "$rounds"
    "$venv/bin/python" "$here/bench_wasmtime.py" "$target/$variant.wasm" "$rounds"
  done
}
if [ -n "${BENCH_LOCK:-}" ]; then
  export -f measure; export here target rounds venv
  flock "$BENCH_LOCK" bash -c measure
else
  measure
fi
