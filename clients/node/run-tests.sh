#!/usr/bin/env bash
# Installs, builds and tests the Node package against a real `nls serve`. Idempotent: every
# step is skipped or cheap when already done. Run from anywhere.
#
#   clients/node/run-tests.sh
#
# Needs: cargo (+ rustup), node >= 20 and npm. Honours CARGO_TARGET_DIR and NLS_BIN.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cd "$here"

step() { printf '\n== %s\n' "$*"; }

step "wasm toolchain"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
want="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3; exit}' "$root/Cargo.lock")"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none}); about 2.5 minutes"
  # Without --locked: with it, resolution fails (docs: TOOLING.md).
  cargo install wasm-bindgen-cli --version "$want"
fi

step "core → wasm (nls-client-wasm, release)"
cargo build --release -p nls-client-wasm --target wasm32-unknown-unknown --manifest-path "$root/Cargo.toml"
wasm-bindgen --target nodejs --out-dir wasm-pkg "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/nls_client_wasm.wasm"

step "npm dependencies and TypeScript build"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npx tsc -p tsconfig.json

step "nls serve binary"
if [ -z "${NLS_BIN:-}" ]; then
  cargo build -p nls --manifest-path "$root/Cargo.toml"
fi

step "node --test"
node --test --test-concurrency=1 test/*.test.js
