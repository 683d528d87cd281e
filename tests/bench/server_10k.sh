#!/usr/bin/env bash
# 10,000 connections against `nls serve` (docs/benchmarks.md): an open-loop generator
# (tests/bench/loadgen) holds CONNECTIONS keep-alive connections, each sending the realistic
# warm validation every INTERVALS_MS (one run per interval: 2000 is the fleet case, shorter ones
# look for the highest rate with p99 under 50 ms). Latency is measured from the intended send
# time; connect time is reported apart. Server on SERVER_CPU (0), generator on LOADGEN_CPU (1);
# TIMELINE=1 prints p99 and max per second; SCHED_RR=1 runs both under the real-time round-robin policy (see nls_bench_server.sh).
#   cargo build --release -p nls \
#     && cargo build --release --manifest-path tests/bench/loadgen/Cargo.toml \
#     && tests/bench/server_10k.sh
source "$(dirname "${BASH_SOURCE[0]}")/nls_bench_server.sh"
loadgen=${LOADGEN_BIN:-${CARGO_TARGET_DIR:-$repo/tests/bench/loadgen/target}/release/nls-loadgen}
connections=${CONNECTIONS:-10000}
duration=${DURATION_S:-20}

for interval in ${INTERVALS_MS:-2000}; do
  echo "== $connections connections, each validating every $interval ms (server on CPU $server_cpu, generator on CPU ${LOADGEN_CPU:-1})"
  "${pin[@]}" "$loadgen" --addr "127.0.0.1:$port" --connections "$connections" \
    --interval-ms "$interval" --duration-s "$duration" --warmup-s "${WARMUP_S:-4}" \
    --path /v1/licenses/validate --body-file "$work/validate.json" ${TIMELINE:+--timeline}
  sleep 2  # the previous run's sockets close before the next connect phase
done
