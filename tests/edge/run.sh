#!/usr/bin/env bash
# The edge's end-to-end tests (issue 6). Installs what is missing (idempotent; tools cached in
# ~/.cargo/bin and node_modules), builds the origin, the Worker and the Spin component, checks
# the Worker bundle size and `wrangler deploy --dry-run`, then runs the scenarios over HTTP:
#   - the Worker in workerd (`wrangler dev`, local, no login) in front of `nls serve`;
#   - the Spin component under jco (Node) with a key-value shim, in front of `nls serve`.
# Exits non-zero on any failure. Usage: tests/edge/run.sh [worker|spin|all|bench] (default: all;
# `bench` measures warm validation against a no-op route of the Worker, and CPU per validation
# in wasm, see docs/edge.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EDGE_TESTS="$ROOT/tests/edge"
WHAT=${1:-all}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false
WORKER_DIR="$ROOT/functions/worker"
MAX_GZIP_BYTES=$((1024 * 1024))

step() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
step "tools"
installed_targets=$(rustup target list --installed)
for target in wasm32-unknown-unknown wasm32-wasip2; do
  grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done
if ! worker-build --version 2>/dev/null | grep -q '0\.8\.7'; then
  cargo install worker-build --version 0.8.7
fi
# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly (and install without --locked).
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")
if ! wasm-bindgen --version 2>/dev/null | grep -q "$bindgen_version"; then
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
if [ ! -x "$WORKER_DIR/node_modules/.bin/wrangler" ]; then
  (cd "$WORKER_DIR" && npm ci --no-audit --no-fund)
fi
if { [ "$WHAT" = all ] || [ "$WHAT" = spin ]; } && [ ! -x "$EDGE_TESTS/node_modules/.bin/jco" ]; then
  (cd "$EDGE_TESTS" && npm ci --no-audit --no-fund)
fi
echo "worker-build $(worker-build --version), wasm-bindgen $bindgen_version, wrangler $("$WORKER_DIR/node_modules/.bin/wrangler" --version), node $(node --version)"

# ---------------------------------------------------------------------------------------------
step "build the origin (nls serve), nectar-license with the example app for the CLI scenarios, and the example cloud service"
cargo build -p nls
cargo build -p nls-client --bin nectar-license --example report_usage --example cloud_service
NLS_BIN="$CARGO_TARGET_DIR/debug/nls"
export NECTAR_LICENSE_BIN="$CARGO_TARGET_DIR/debug/nectar-license" REPORT_USAGE_BIN="$CARGO_TARGET_DIR/debug/examples/report_usage"
export CLOUD_SERVICE_BIN="$CARGO_TARGET_DIR/debug/examples/cloud_service"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nls-edge-e2e.XXXXXX")
export EDGE_WORK_DIR="$WORK" EDGE_PGID_FILE="$WORK/pgids"
: >"$EDGE_PGID_FILE"
cleanup() {
  # Only the process groups this run started, one by one.
  while read -r pgid; do
    [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
  done <"$EDGE_PGID_FILE"
}
trap cleanup EXIT
# Two distinct ports below the ephemeral range: origin, then edge (see tests/free_port.mjs).
two_ports() { node "$ROOT/tests/free_port.mjs" 2 | tr '\n' ' '; }

status=0

if [ "$WHAT" = all ] || [ "$WHAT" = worker ]; then
  # -------------------------------------------------------------------------------------------
  step "build the Worker (worker-build --release)"
  (cd "$ROOT" && sh functions/worker/build.sh)
  "$EDGE_TESTS/check_worker_size.sh" "$WORKER_DIR/build" "$MAX_GZIP_BYTES"

  step "wrangler deploy --dry-run"
  (cd "$ROOT" && "$WORKER_DIR/node_modules/.bin/wrangler" deploy --dry-run --outdir "$WORK/dist" 2>&1 | tail -n 12)

  step "Worker scenarios in workerd"
  read -r origin_port edge_port <<<"$(two_ports)"
  NLS_BIN="$NLS_BIN" WRANGLER_BIN="$WORKER_DIR/node_modules/.bin/wrangler" WORKER_MAIN="$WORKER_DIR/build/index.js" \
    ORIGIN_PORT=$origin_port EDGE_PORT=$edge_port \
    node --test --test-reporter=spec "$EDGE_TESTS/worker_e2e.test.mjs" || status=1
fi

if [ "$WHAT" = all ] || [ "$WHAT" = spin ]; then
  # -------------------------------------------------------------------------------------------
  step "build the Spin component (wasm32-wasip2)"
  cargo build -p nls-spin --target wasm32-wasip2 --release
  SPIN_WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release/nls_spin.wasm"
  echo "nls_spin.wasm: $(wc -c <"$SPIN_WASM") bytes, $(gzip -9c "$SPIN_WASM" | wc -c) gzip"

  step "Spin scenarios under jco (key-value shim)"
  read -r origin_port edge_port <<<"$(two_ports)"
  NLS_BIN="$NLS_BIN" JCO_BIN="$EDGE_TESTS/node_modules/.bin/jco" SPIN_WASM="$SPIN_WASM" \
    ORIGIN_PORT=$origin_port EDGE_PORT=$edge_port \
    node --test --test-reporter=spec "$EDGE_TESTS/spin_e2e.test.mjs" || status=1
fi

if [ "$WHAT" = bench ]; then
  # -------------------------------------------------------------------------------------------
  step "benchmark: warm validation vs no-op route, in workerd"
  command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || true; }
  [ -f "$WORKER_DIR/build/index.js" ] || (cd "$ROOT" && sh functions/worker/build.sh)
  read -r origin_port edge_port <<<"$(two_ports)"
  NLS_BIN="$NLS_BIN" WRANGLER_BIN="$WORKER_DIR/node_modules/.bin/wrangler" WORKER_MAIN="$WORKER_DIR/build/index.js" \
    ORIGIN_PORT=$origin_port EDGE_PORT=$edge_port node "$EDGE_TESTS/bench_worker.mjs" || status=1

  step "benchmark: CPU per validation in wasm (V8) and natively"
  installed_targets=$(rustup target list --installed)
  grep -qx wasm32-wasip1 <<<"$installed_targets" || rustup target add wasm32-wasip1
  cargo build --release -p nls-edge --example validation_cpu --target wasm32-wasip1
  echo "wasm (node WASI, V8): $(node --no-warnings "$EDGE_TESTS/run_wasi.mjs" "$CARGO_TARGET_DIR/wasm32-wasip1/release/examples/validation_cpu.wasm")"
  echo "native:               $(cargo run -q --release -p nls-edge --example validation_cpu)"
fi

if [ "$status" -ne 0 ]; then
  echo "edge e2e: FAILED (logs in $WORK)"
else
  echo "edge e2e: passed"
fi
exit "$status"
