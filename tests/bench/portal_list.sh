#!/usr/bin/env bash
# Benchmark of the staff portal's license list (docs/benchmarks.md, issue 11): a page of 50
# rows rendered server-side from the SQLite store holding 10,000 licenses, against the no-op
# `GET /health` of the same server, measured alternately in one run. Needs wrk
# (apt-get install wrk) and a release build:
#   cargo build --release -p nls && tests/bench/portal_list.sh
# Not a test: numbers go to docs/benchmarks.md with the ratio.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nls=${NLS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/nls}
duration=${DURATION:-8s}
rounds=${ROUNDS:-3}
licenses=${LICENSES:-10000}
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
work=$(mktemp -d)
server=""
admin="bench-admin-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
password="bench-password-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

NLS_BOOTSTRAP_ADMIN_KEY=$admin "$nls" serve --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --ip-rate-limit 0 --api-key-rate-limit 0 --renewals-every-secs 0 --log-format json 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
base="http://127.0.0.1:$port"

echo "== seeding $licenses licenses over 200 customers through the API"
seed_started=$(date +%s)
BASE=$base ADMIN=$admin LICENSES=$licenses python3 - <<'PY'
import http.client, json, os, random, threading
from urllib.parse import urlparse
base = urlparse(os.environ["BASE"])
auth = {"authorization": "Bearer " + os.environ["ADMIN"], "content-type": "application/json"}
def call(conn, path, body):
    conn.request("POST", path, json.dumps(body), auth)
    answer = conn.getresponse()
    data = answer.read()
    assert answer.status in (200, 201), (answer.status, data[:300])
    return json.loads(data)
conn = http.client.HTTPConnection(base.hostname, base.port)
customers = [call(conn, "/v1/customers", {"name": f"Customer {i:03d}", "email": f"ops{i:03d}@example{i % 17}.test"})["customer"]["id"] for i in range(200)]
total = int(os.environ["LICENSES"])
def worker(offset, step):
    rng = random.Random(offset)
    c = http.client.HTTPConnection(base.hostname, base.port)
    for i in range(offset, total, step):
        body = {"customer_id": customers[i % len(customers)], "tier": rng.choice(["standard", "pro", "enterprise"]),
                "features": rng.sample(["sso", "audit_log", "scim", "priority_support"], rng.randint(0, 3))}
        if i % 10:
            body["expires_at"] = f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        call(c, "/v1/licenses", body)
threads = [threading.Thread(target=worker, args=(k, 4)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
echo "seeded in $(( $(date +%s) - seed_started )) s"

printf '%s\n%s\n' "$password" "$password" | "$nls" staff create --email bench@nectar.test --name Bench \
  --role viewer --data-dir "$work/data" >/dev/null
cookie=$(BASE=$base PASSWORD=$password python3 - <<'PY'
import os, re, urllib.request, urllib.parse, http.cookiejar
jar = http.cookiejar.CookieJar()
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
page = opener.open(os.environ["BASE"] + "/admin/login").read().decode()
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
body = urllib.parse.urlencode({"csrf": csrf, "email": "bench@nectar.test", "password": os.environ["PASSWORD"]}).encode()
try:
    opener.open(os.environ["BASE"] + "/admin/login", body)
except urllib.error.HTTPError as e:
    assert e.code == 303, e.code
print(next(f"{c.name}={c.value}" for c in jar if c.name == "nls_session"))
PY
)

# The pages measured: the default list (newest first), a header sort, and a filter + sort.
pages=(
  "/admin/licenses"
  "/admin/licenses?sort=expires_at&dir=asc"
  "/admin/licenses?status=active&tier=pro&sort=customer&dir=asc"
)
for path in "${pages[@]}"; do
  rows=$(curl -fsS -H "cookie: $cookie" "$base$path" | grep -o 'name="license"' | wc -l)
  [ "$rows" -eq 50 ] || { echo "$path rendered $rows rows, not 50" >&2; exit 1; }
done

cat >"$work/cookie.lua" <<LUA
wrk.headers["cookie"] = "$cookie"
LUA
rps() { awk '/Requests\/sec/ {print $2}'; }
p50() { awk '$1 == "50%" {print $2}'; }
echo "== throughput, wrk -t2 -c8 -d$duration, alternating (no-op /health vs a 50-row list page)"
for i in $(seq "$rounds"); do
  for path in "${pages[@]}"; do
    noop=$(wrk -t2 -c8 -d"$duration" "$base/health" | rps)
    list=$(wrk -t2 -c8 -d"$duration" -s "$work/cookie.lua" "$base$path" | rps)
    python3 -c "print(f'round $i: $path: health {float(\"$noop\"):.0f} req/s, list {float(\"$list\"):.0f} req/s, ratio {float(\"$list\")/float(\"$noop\"):.3f}')"
  done
done
# One connection at a time: the latency is the server time of one page plus loopback.
echo "== latency, one connection (wrk -t1 -c1 -d$duration --latency)"
for path in /health "${pages[@]}"; do
  out=$(wrk -t1 -c1 -d"$duration" --latency -s "$work/cookie.lua" "$base$path")
  echo "$path: p50 $(echo "$out" | p50), p99 $(echo "$out" | awk '$1 == "99%" {print $2}'), $(echo "$out" | rps) req/s"
done
