#!/usr/bin/env bash
# Load benchmark of `nls serve` (docs/benchmarks.md): warm validation throughput as a ratio of
# the no-op `/health` route of the same server, measured alternately in one run, and 10,000
# concurrent connections validating. Needs wrk (apt-get install wrk) and a release build:
#   cargo build --release -p nls && tests/bench/server_load.sh
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nls=${NLS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/nls}
duration=${DURATION:-8s}
rounds=${ROUNDS:-3}
port=${PORT:-18480}
work=$(mktemp -d)
server=""
admin="bench-admin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

ulimit -n "$(ulimit -Hn)"  # 10,000 sockets on each side
NLS_BOOTSTRAP_ADMIN_KEY=$admin "$nls" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --ip-rate-limit 0 --renewals-every-secs 0 --log-format json 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

api() { curl -fsS -X "$1" "http://127.0.0.1:$port$2" -H "authorization: Bearer $admin" -H 'content-type: application/json' ${3:+-d "$3"}; }
customer=$(api POST /v1/customers '{"name":"Bench","email":"bench@example.com"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["customer"]["id"])')
key=$(api POST /v1/licenses "{\"customer_id\":\"$customer\",\"features\":[\"sso\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

cat >"$work/validate.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"key":"$key","features":["sso"]}'
done = function(summary, latency, requests)
  io.write(string.format("errors: connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
LUA
curl -fsS -X POST "http://127.0.0.1:$port/v1/licenses/validate" -H 'content-type: application/json' \
  -d "{\"key\":\"$key\",\"features\":[\"sso\"]}" | python3 -c 'import json,sys; a=json.load(sys.stdin); assert a["code"]=="VALID", a'

rps() { awk '/Requests\/sec/ {print $2}'; }
echo "== throughput, wrk -t2 -c64 -d$duration, alternating (no-op /health vs warm validate)"
for i in $(seq "$rounds"); do
  noop=$(wrk -t2 -c64 -d"$duration" "http://127.0.0.1:$port/health" | rps)
  validate=$(wrk -t2 -c64 -d"$duration" -s "$work/validate.lua" "http://127.0.0.1:$port/v1/licenses/validate" | rps)
  python3 -c "print(f'round $i: noop {float(\"$noop\"):.0f} req/s, validate {float(\"$validate\"):.0f} req/s, ratio {float(\"$validate\")/float(\"$noop\"):.2f}')"
done

# Closed loop, every connection sends as fast as answers come: latency is queueing
# (Little's law: 10,000 / throughput), so this shows errors and saturation, not service time.
echo "== 10,000 concurrent connections, closed loop (wrk -t2 -c10000 -d$duration --latency)"
wrk -t2 -c10000 -d"$duration" --timeout 10s --latency -s "$work/validate.lua" "http://127.0.0.1:$port/v1/licenses/validate" \
  | grep -E "Latency|50%|90%|99%|Requests/sec|requests in|errors|Non-2xx"

# Paced: 10,000 connections held open, each validating every ${PACE_MS:-2000} ms, so the offered
# load stays under capacity and the latency is service time.
sed "1i function delay() return ${PACE_MS:-2000} end" "$work/validate.lua" >"$work/paced.lua"
echo "== 10,000 concurrent connections, paced (each every ${PACE_MS:-2000} ms; wrk -t2 -c10000 -d$duration --latency)"
wrk -t2 -c10000 -d"$duration" --timeout 10s --latency -s "$work/paced.lua" "http://127.0.0.1:$port/v1/licenses/validate" \
  | grep -E "Latency|50%|90%|99%|Requests/sec|requests in|errors|Non-2xx"
