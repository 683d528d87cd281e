#!/bin/sh
# Builds the Worker with worker-build, using locally installed tools instead of downloads
# (worker-build fetches wasm-bindgen, wasm-opt and esbuild from GitHub otherwise, which fails
# offline). Run from the repo root (wrangler runs [build] command there).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../../target}"
: "${WASM_BINDGEN_BIN:=$(command -v wasm-bindgen)}"
: "${WASM_OPT_BIN:=$here/node_modules/.bin/wasm-opt}"
: "${ESBUILD_BIN:=$here/node_modules/.bin/esbuild}"
export WASM_BINDGEN_BIN WASM_OPT_BIN ESBUILD_BIN
cd "$here"
exec worker-build --release
