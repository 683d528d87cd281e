#!/usr/bin/env bash
# Memory soak of `nls serve` (docs/benchmarks.md, "Bounded memory"; not in CI): REQUESTS
# validations over DURATION_SECS, each with a distinct client IP (X-Forwarded-For, the server
# runs with --trust-forwarded-for), a distinct deployment id and fingerprint, spread over
# LICENSES real keys, with every tenth request carrying a distinct well-formed but forged key.
# Resident memory (VmRSS) is sampled before, every SAMPLE_SECS during, and after the load.
#   cargo build --release -p nls && tests/bench/soak_memory.sh
#   REQUESTS=200000 DURATION_SECS=120 tests/bench/soak_memory.sh      # shortened
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nls=${NLS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/nls}
requests=${REQUESTS:-1000000}
duration=${DURATION_SECS:-600}
licenses=${LICENSES:-1000}
workers=${WORKERS:-4}
sample=${SAMPLE_SECS:-10}
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
work=$(mktemp -d)
server=""
admin="soak-admin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

NLS_BOOTSTRAP_ADMIN_KEY=$admin "$nls" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --trust-forwarded-for --renewals-every-secs 0 --log-format json 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

python3 - "$port" "$admin" "$licenses" >"$work/keys.txt" <<'PY'
import http.client, json, sys
port, admin, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)
def api(method, path, body):
    conn.request(method, path, json.dumps(body), {"authorization": f"Bearer {admin}", "content-type": "application/json"})
    r = conn.getresponse(); data = r.read()
    assert r.status < 300, (r.status, data)
    return json.loads(data)
customer = api("POST", "/v1/customers", {"name": "Soak", "email": "soak@example.com"})["customer"]["id"]
for _ in range(n):
    print(api("POST", "/v1/licenses", {"customer_id": customer})["key"])
PY
echo "== $licenses licenses; RSS before load: $(rss) kB"

python3 - "$port" "$work/keys.txt" "$requests" "$duration" "$workers" >"$work/load.txt" <<'PY' &
import http.client, json, multiprocessing, sys, time
port, keys_file, total, duration, workers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
keys = open(keys_file).read().split()

def run(worker):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start, statuses = time.monotonic(), {}
    share = total // workers
    for i in range(share):
        n = worker * share + i
        # Paced to spread the requests over the duration.
        ahead = start + duration * i / share - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        key = keys[n % len(keys)]
        if n % 10 == 0:  # a distinct forged key: well-formed, never verifies
            head, _, _ = key.rpartition("-")
            key = head[:-6] + f"{n:06x}"[-6:] + "-00000000"
        ip = f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        body = json.dumps({"key": key, "deployment_id": f"dep-{n}", "fingerprint": f"fp-{n}"})
        for attempt in range(3):
            try:
                conn.request("POST", "/v1/licenses/validate", body,
                             {"content-type": "application/json", "x-forwarded-for": ip})
                r = conn.getresponse(); r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                break
            except (OSError, http.client.HTTPException):
                conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    return statuses

with multiprocessing.Pool(workers) as pool:
    merged = {}
    for statuses in pool.map(run, range(workers)):
        for status, count in statuses.items():
            merged[status] = merged.get(status, 0) + count
print(json.dumps(merged))
PY
load=$!
started=$(date +%s)
peak=0
while kill -0 "$load" 2>/dev/null; do
  sleep "$sample"
  now_rss=$(rss); peak=$(( now_rss > peak ? now_rss : peak ))
  echo "t=$(( $(date +%s) - started ))s RSS $now_rss kB"
done
wait "$load"
echo "== load done in $(( $(date +%s) - started )) s; answers by status: $(cat "$work/load.txt")"
echo "== peak RSS during load: $peak kB; right after: $(rss) kB"
sleep 60
echo "== RSS 60 s after the load: $(rss) kB"
