#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them all.
# Idempotent: tools are cached under $NLS_TOOLS_DIR, build output under $CARGO_TARGET_DIR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export NLS_TOOLS_DIR=${NLS_TOOLS_DIR:-$HOME/.cache/nls-tools}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TERM_COLOR=never
mkdir -p "$NLS_TOOLS_DIR" "$CARGO_TARGET_DIR"

step() { printf '\n=== %s\n' "$*"; }

step "toolchain targets"
rustup target add wasm32-unknown-unknown wasm32-wasip2 aarch64-unknown-linux-gnu >/dev/null

step "python tools (moto, cfn-lint, PyJWT, cargo-lambda, SAM CLI)"
venv="$NLS_TOOLS_DIR/venv"
python_tools=("moto[server]==5.*" "cfn-lint" "pyjwt[crypto]" "cargo-lambda" "aws-sam-cli")
stamp="$venv/.installed-$(printf '%s ' "${python_tools[@]}" | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "${python_tools[@]}"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
export NLS_PYTHON="$venv/bin/python"
export NLS_MOTO_SERVER="$venv/bin/moto_server"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --locked -p nls-worker --target wasm32-unknown-unknown -- -D warnings
cargo clippy --locked -p nls-spin --target wasm32-wasip2 -- -D warnings

step "the core builds for wasm (with and without the HTTP router)"
cargo build --locked -p nls-core --target wasm32-unknown-unknown
cargo build --locked -p nls-core --features http --target wasm32-unknown-unknown
cargo build --locked -p nls-core --target wasm32-wasip2

step "template.yaml lints"
cfn-lint template.yaml
SAM_CLI_TELEMETRY=0 sam validate --lint -t template.yaml

step "sam build: the three arm64 Lambdas through cargo-lambda, as a deployer builds them"
# Its own target dir: an aarch64 release build that must not hold the main build's lock.
# Cold, this is the slowest step of the run (about 20 minutes on 2 cores); cached, a minute.
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/sam" SAM_CLI_TELEMETRY=0 sam build --beta-features
for function in ApiFunction StripeWebhookFunction RenewalsFunction; do
  # ELF e_machine (offset 18) is 183 for aarch64.
  [ "$(od -An -tu2 -j18 -N2 ".aws-sam/build/$function/bootstrap" | tr -d ' ')" = 183 ] \
    || { echo "sam build: $function/bootstrap is not an arm64 executable" >&2; exit 1; }
done

step "workspace tests: core, CLI, stores (in-memory, SQLite, DynamoDB on moto), HTTP end to end, Lambdas, clients"
# The end-to-end tests run the real binaries: nls serve (debug) and the api Lambda (release).
cargo build --locked -p nls
cargo build --locked --release -p nls-lambda-api
cargo test --workspace --locked

step "edge: the Worker in workerd and the Spin component under jco, in front of nls serve"
tests/edge/run.sh all

step "Node client against nls serve"
clients/node/run-tests.sh

step "admin portal: Debian's Chromium (playwright-core, axe-core) against nls serve"
tests/portal/run.sh

printf '\nall checks and tests passed\n'
