# shellcheck shell=bash
# Sourced by the `nls serve` load benchmarks (server_load.sh, server_10k.sh): starts the release
# binary pinned to SERVER_CPU, creates a customer and a license, and writes the realistic
# validation body (what clients/rust sends on each check-in: key, deployment_id, fingerprint)
# to $work/validate.json. Sets: repo, nls, port, work, server, key, pin (the prefix that runs
# a load generator on LOADGEN_CPU). With SCHED_RR=1, server and generator run under the
# real-time round-robin policy (root only), so builds of other users on the same cores cannot
# take turns with them: with autogroup scheduling, `nice 19` in another session does not yield.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nls=${NLS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/nls}
port=${PORT:-$((20000 + RANDOM % 20000))}
server_cpu=${SERVER_CPU:-0}
rt=()
if [[ ${SCHED_RR:-0} == 1 ]]; then rt=(chrt --rr 1); fi
# shellcheck disable=SC2034  # used by the scripts that source this one
pin=("${rt[@]}" taskset -c "${LOADGEN_CPU:-1}")
work=$(mktemp -d)
server=""
admin="bench-admin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

ulimit -n "$(ulimit -Hn)"  # 10,000 sockets on each side
# Rate limits off: a load test from one IP would otherwise meet the per-IP limit.
NLS_BOOTSTRAP_ADMIN_KEY=$admin "${rt[@]}" taskset -c "$server_cpu" "$nls" serve --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --ip-rate-limit 0 --renewals-every-secs 0 --log-format json \
  2>"$work/server.log" &
server=$!
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { echo "nls serve did not start:" >&2; cat "$work/server.log" >&2; exit 1; }

api() { curl -fsS -X "$1" "http://127.0.0.1:$port$2" -H "authorization: Bearer $admin" -H 'content-type: application/json' ${3:+-d "$3"}; }
customer=$(api POST /v1/customers '{"name":"Bench","email":"bench@example.com"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["customer"]["id"])')
key=$(api POST /v1/licenses "{\"customer_id\":\"$customer\",\"features\":[\"sso\"],\"max_deployments\":5}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
printf '{"key":"%s","deployment_id":"bench-host-01","fingerprint":"sha256:4f2a9c0d51e7b3a86d0c2f19e5b7a3d1"}' "$key" >"$work/validate.json"
# The first validation activates the deployment; later ones are the warm check-in measured.
for _ in 1 2; do
  curl -fsS -X POST "http://127.0.0.1:$port/v1/licenses/validate" -H 'content-type: application/json' \
    --data-binary @"$work/validate.json" | python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["code"]=="VALID" and a["deployment"]["id"]=="bench-host-01", a'
done
