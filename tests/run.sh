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

step "python tools (moto, cfn-lint, PyJWT, cargo-lambda, SAM CLI, schemathesis)"
venv="$NLS_TOOLS_DIR/venv"
python_tools=("moto[server]==5.*" "cfn-lint" "pyjwt[crypto]" "cargo-lambda" "aws-sam-cli" "schemathesis==4.*")
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

step "Debian packages: the CNCF registry and skopeo, promtool, Chromium, shellcheck, yamllint"
# docker-registry and skopeo: the registry token tests (docs/distribution.md); prometheus:
# promtool for the alert rules and a live /metrics; chromium: the portal's browser tests;
# and the shellcheck and yamllint linters: scripts, infra, the customer package. Installed only if
# missing.
apt_packages=(docker-registry skopeo prometheus chromium shellcheck yamllint)
missing=()
for package in "${apt_packages[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_if_needed=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo_if_needed apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

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

step "operations: Prometheus alert rules and their unit tests, infra YAML, runbook links"
yamllint --strict -c infra/.yamllint.yml infra/
promtool check config infra/prometheus/prometheus.yml
promtool test rules infra/prometheus/nls-rules.test.yml infra/prometheus/nls-rules-days.test.yml
"$NLS_PYTHON" infra/check_runbooks.py
"$NLS_PYTHON" infra/check_dashboard.py

step "sam build: the four arm64 Lambdas through cargo-lambda, as a deployer builds them"
# Its own target dir: an aarch64 release build that must not hold the main build's lock.
# Cold, this is the slowest step of the run (about 20 minutes on 2 cores); cached, a minute.
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/sam" SAM_CLI_TELEMETRY=0 sam build --beta-features
for function in ApiFunction StripeWebhookFunction RenewalsFunction CanaryFunction; do
  # ELF e_machine (offset 18) is 183 for aarch64.
  [ "$(od -An -tu2 -j18 -N2 ".aws-sam/build/$function/bootstrap" | tr -d ' ')" = 183 ] \
    || { echo "sam build: $function/bootstrap is not an arm64 executable" >&2; exit 1; }
done

step "workspace tests: core, CLI, stores (in-memory, SQLite, DynamoDB on moto), HTTP end to end, Lambdas, clients"
# The end-to-end tests run the real binaries: nls serve (debug) and the api Lambda (release).
cargo build --locked -p nls
cargo build --locked --release -p nls-lambda-api
cargo test --workspace --locked

step "schema fuzzing: schemathesis against nls serve (every operation, all checks, stateful, fixed seed)"
tests/schemathesis/run.sh

step "schema fuzzing: the same run against the api Lambda (release nls-api, local Runtime API, DynamoDB on moto)"
cargo build --locked -p nls-tests --bin api-lambda-host
tests/schemathesis/run.sh api-lambda

step "edge: the Worker in workerd and the Spin component under jco, in front of nls serve"
tests/edge/run.sh all

step "Node client against nls serve"
clients/node/run-tests.sh

step "customer install package: shellcheck, yamllint, Kubernetes schemas (offline), install.sh --dry-run"
# kubernetes-validate bundles the Kubernetes JSON schemas: the check needs no network.
package_venv="$NLS_TOOLS_DIR/venv-customer-package"
package_tools=("kubernetes-validate==1.37.0")
stamp="$package_venv/.installed-$(printf '%s ' "${package_tools[@]}" | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  python3 -m venv "$package_venv"
  "$package_venv/bin/pip" install --quiet "${package_tools[@]}"
  touch "$stamp"
fi
KUBERNETES_VALIDATE="$package_venv/bin/kubernetes-validate" KUBERNETES_VALIDATE_PYTHON="$package_venv/bin/python" \
  distribution/customer/tests/check-package.sh

step "admin portal: Debian's Chromium (playwright-core, axe-core) against nls serve"
tests/portal/run.sh

printf '\nall checks and tests passed\n'
