#!/usr/bin/env bash
# Schema fuzzing: schemathesis against the real `nls serve`, driven by the server's own
# /openapi.json, every operation, every check, the stateful phase (links walk customer →
# license → validate → deployments → suspend → revoke), a fixed seed and a bounded number of
# examples. Any failure fails the run; the report (JUnit) lands in $NLS_SCHEMATHESIS_REPORT_DIR.
#
# Needs: `schemathesis` on PATH (tests/run.sh puts it in the tools venv) and the debug `nls`
# binary ($NLS_BIN, else $CARGO_TARGET_DIR/debug/nls: `cargo build -p nls`).
# Tunables: NLS_SCHEMATHESIS_SEED (default 17), NLS_SCHEMATHESIS_EXAMPLES (per operation, default 25).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
nls_bin=${NLS_BIN:-$target_dir/debug/nls}
seed=${NLS_SCHEMATHESIS_SEED:-17}
examples=${NLS_SCHEMATHESIS_EXAMPLES:-25}
[ -x "$nls_bin" ] || { echo "$nls_bin not found: run \`cargo build -p nls\` first (or set NLS_BIN)" >&2; exit 1; }
command -v schemathesis >/dev/null || { echo "schemathesis is not on PATH (pip install schemathesis)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/nls-schemathesis.XXXXXX")
report_dir=${NLS_SCHEMATHESIS_REPORT_DIR:-$work/report}
server_pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work/data"
}
trap cleanup EXIT

# The admin key exists only for this run.
admin_key=$(openssl rand -hex 24)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NLS_BOOTSTRAP_ADMIN_KEY=$admin_key RUST_LOG=warn "$nls_bin" serve --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --renewals-every-secs 0 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 200); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.05
done

status=0
# /v1/registry/token is left out: it answers in the Docker token protocol's shape (HTTP Basic,
# `{"errors":[...]}`), which the document does not describe yet; tests/tests/registry_tokens.rs
# drives it against the real registry, bad input included.
# From the scratch directory: schemathesis keeps a cache in the working directory.
cd "$work"
# nls_hooks.py moves a generated past `expires_at` into the future (create and renew refuse it).
SCHEMATHESIS_HOOKS=nls_hooks PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
  schemathesis --config-file "$here/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $admin_key" \
  --checks all --phases examples,coverage,fuzzing,stateful \
  --exclude-path /v1/registry/token \
  --seed "$seed" --max-examples "$examples" --generation-database none \
  --workers 1 --report junit --report-dir "$report_dir" --no-color || status=$?
if grep -q "panicked" "$work/server.log"; then
  echo "nls serve panicked during the run:" >&2
  grep -A5 "panicked" "$work/server.log" >&2
  status=1
fi
if [ "$status" = 0 ]; then
  rm -rf "$work"
else
  echo "schemathesis: failures above; server log: $work/server.log" >&2
fi
exit "$status"
