#!/usr/bin/env bash
# Schema fuzzing: schemathesis against the real `nls serve` (`run.sh`, `run.sh serve`) or the
# api Lambda (`run.sh api-lambda`: the release `nls-api` under cargo-lambda's Runtime API
# emulator, on DynamoDB in moto, behind a function URL's HTTP-to-event front), driven by its own
# /openapi.json, every operation, every check, the stateful phase (links walk customer →
# license → validate → deployments → suspend → revoke), a fixed seed and a bounded number of
# examples. Any failure fails the run; the report (JUnit) lands in $NLS_SCHEMATHESIS_REPORT_DIR.
#
# Needs: `schemathesis` on PATH (tests/run.sh puts it in the tools venv) and the debug `nls`
# binary ($NLS_BIN, else $CARGO_TARGET_DIR/debug/nls: `cargo build -p nls`); for the Lambda
# also the release `nls-api` (`cargo build --release -p nls-lambda-api`), cargo-lambda and moto
# (tests/run.sh puts them on PATH) and the `api-lambda-host` test binary ($NLS_API_LAMBDA_HOST,
# else $CARGO_TARGET_DIR/debug/api-lambda-host: `cargo build -p nls-tests --bin api-lambda-host`).
# Tunables: NLS_SCHEMATHESIS_SEED (default 17), NLS_SCHEMATHESIS_EXAMPLES (per operation, default 25).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
nls_bin=${NLS_BIN:-$target_dir/debug/nls}
seed=${NLS_SCHEMATHESIS_SEED:-17}
examples=${NLS_SCHEMATHESIS_EXAMPLES:-25}
target=${1:-serve}
case "$target" in serve | api-lambda) ;; *) echo "usage: $0 [serve|api-lambda]" >&2; exit 2 ;; esac
[ -x "$nls_bin" ] || { echo "$nls_bin not found: run \`cargo build -p nls\` first (or set NLS_BIN)" >&2; exit 1; }
command -v schemathesis >/dev/null || { echo "schemathesis is not on PATH (pip install schemathesis)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/nls-schemathesis.XXXXXX")
report_dir=${NLS_SCHEMATHESIS_REPORT_DIR:-$work/report}
server_pid=
stop_server() {
  [ -n "$server_pid" ] || return 0
  # The Lambda's host stops what it started when its stdin closes; `nls serve` on SIGTERM.
  if [ "$target" = api-lambda ]; then exec 3>&-; else kill "$server_pid" 2>/dev/null || true; fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  stop_server
  rm -rf "$work/data"
}
trap cleanup EXIT

if [ "$target" = api-lambda ]; then
  host_bin=${NLS_API_LAMBDA_HOST:-$target_dir/debug/api-lambda-host}
  [ -x "$host_bin" ] || { echo "$host_bin not found: run \`cargo build -p nls-tests --bin api-lambda-host\`" >&2; exit 1; }
  # The host serves until its stdin closes: fd 3 holds the FIFO's write end, and closing it
  # (cleanup, or this script dying) stops the Lambda, the emulator and moto.
  mkfifo "$work/host-stdin"
  "$host_bin" <"$work/host-stdin" >"$work/host.out" 2>"$work/server.log" &
  server_pid=$!
  exec 3>"$work/host-stdin"
  for _ in $(seq 1200); do
    grep -q '^admin_key=' "$work/host.out" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.05
  done
  base_url=$(sed -n 's/^base_url=//p' "$work/host.out")
  admin_key=$(sed -n 's/^admin_key=//p' "$work/host.out")
  [ -n "$admin_key" ] || { echo "api-lambda-host did not start within 60 s" >&2; cat "$work/server.log" >&2; exit 1; }
else
  # The admin key exists only for this run.
  admin_key=$(openssl rand -hex 24)
  port=$(node "$repo/tests/free_port.mjs")
  NLS_BOOTSTRAP_ADMIN_KEY=$admin_key RUST_LOG=warn "$nls_bin" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/data" --renewals-every-secs 0 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 200); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.05
  done
  base_url=http://127.0.0.1:$port
fi

status=0
# /v1/registry/token is left out: it answers in the Docker token protocol's shape (HTTP Basic,
# `{"errors":[...]}`), which the document does not describe yet; tests/tests/registry_tokens.rs
# drives it against the real registry, bad input included.
# From the scratch directory: schemathesis keeps a cache in the working directory.
cd "$work"
# nls_hooks.py moves a generated past `expires_at` into the future (create and renew refuse it).
SCHEMATHESIS_HOOKS=nls_hooks PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
  schemathesis --config-file "$here/schemathesis.toml" run "$base_url/openapi.json" --url "$base_url" \
  -H "Authorization: Bearer $admin_key" \
  --checks all --phases examples,coverage,fuzzing,stateful \
  --exclude-path /v1/registry/token \
  --seed "$seed" --max-examples "$examples" --generation-database none \
  --workers 1 --report junit --report-dir "$report_dir" --no-color || status=$?
stop_server # the Lambda's host writes the functions' log as it stops
if grep -q "panicked" "$work/server.log"; then
  echo "the $target host panicked during the run:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
if [ "$status" = 0 ]; then
  rm -rf "$work"
else
  echo "schemathesis: failures above; server log: $work/server.log" >&2
fi
exit "$status"
