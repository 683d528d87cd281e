#!/usr/bin/env bash
# Warm validation throughput of `nls serve` as a ratio of the no-op `GET /health` of the same
# server, measured alternately in one run (docs/benchmarks.md). The validation is the realistic
# check-in (key, deployment_id, fingerprint; nls_bench_server.sh). Server on SERVER_CPU (0),
# wrk on LOADGEN_CPU (1). Needs wrk (apt-get install wrk) and a release build:
#   cargo build --release -p nls && tests/bench/server_load.sh
# The 10,000-connection benchmark is server_10k.sh.
source "$(dirname "${BASH_SOURCE[0]}")/nls_bench_server.sh"
duration=${DURATION:-8s}
rounds=${ROUNDS:-3}

cat >"$work/validate.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '$(cat "$work/validate.json")'
done = function(summary, latency, requests)
  io.write(string.format("errors: connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))
end
LUA

rps() { awk '/Requests\/sec/ {print $2}'; }
echo "== throughput, wrk -t1 -c64 -d$duration, alternating (no-op /health vs warm validate with deployment_id)"
for i in $(seq "$rounds"); do
  noop=$("${pin[@]}" wrk -t1 -c64 -d"$duration" "http://127.0.0.1:$port/health" | rps)
  validate=$("${pin[@]}" wrk -t1 -c64 -d"$duration" -s "$work/validate.lua" "http://127.0.0.1:$port/v1/licenses/validate" | tee "$work/wrk.txt" | rps)
  python3 -c "print(f'round $i: noop {float(\"$noop\"):.0f} req/s, validate {float(\"$validate\"):.0f} req/s, ratio {float(\"$validate\")/float(\"$noop\"):.2f}')"
  grep "^errors:" "$work/wrk.txt"
done
# A server that falls behind on its background writes and drops them looks faster than it is:
# report what it dropped (docs/benchmarks.md, SCHED_RR=1).
echo "== dropped by the server during the run"
curl -fsS "http://127.0.0.1:$port/metrics" -H "authorization: Bearer $admin" \
  | grep -E '^nls_validation_(events|log)_dropped_total' || echo "(no dropped counters in /metrics)"
