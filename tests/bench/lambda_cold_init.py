"""Cold init of a Lambda bootstrap: process spawn -> its first GET /runtime/invocation/next.

  cargo build --release -p nls -p nls-lambda-api
  python3 tests/bench/lambda_cold_init.py target/release/nls-api 20 target/release/nls

One local stub serves both the Lambda Runtime API (the poll is recorded and left hanging)
and Secrets Manager's GetSecretValue (the api function fetches its signing key at init), so
init includes that one HTTP round trip, as in AWS, without moto's Python latency.
"""
import json, os, statistics, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

binary, runs, nls = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# A throwaway signing key, generated for this run (no key is ever committed).
with tempfile.TemporaryDirectory() as keys:
    subprocess.run([nls, "keys", "generate", "--out", os.path.join(keys, "signing.jwk")], check=True,
                   stderr=subprocess.DEVNULL)
    jwk = open(os.path.join(keys, "signing.jwk")).read()
ready = threading.Event()
ready_at = [0.0]

class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            ready_at[0] = time.perf_counter()
            ready.set()
            time.sleep(5)  # hold the poll; the process is killed meanwhile
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0)); self.rfile.read(length)
        body = json.dumps({"ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:nls/signing-key-AbCdEf",
                           "Name": "nls/signing-key", "VersionId": "v1", "SecretString": jwk,
                           "VersionStages": ["AWSCURRENT"], "CreatedDate": 1796040000}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)

server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
server.daemon_threads = True
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}", AWS_LAMBDA_FUNCTION_NAME="nls-api",
           AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
           AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
           AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", NLS_TABLE_NAME="nls-bench",
           NLS_SIGNING_KEY_SECRET_ID="nls/signing-key", NLS_LOG="warn")
env.pop("AWS_PROFILE", None)
samples = []
for i in range(runs + 1):
    ready.clear()
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not ready.wait(10):
        proc.kill(); print("no poll within 10 s:", proc.stderr.read().decode()[:2000]); sys.exit(1)
    if i > 0:  # the first run warms the page cache
        samples.append((ready_at[0] - t0) * 1000)
    proc.kill(); proc.wait()
samples.sort()
p95 = samples[min(len(samples) - 1, int(round(0.95 * len(samples))) - 1)]
print(f"runs={len(samples)} median={statistics.median(samples):.1f}ms p95={p95:.1f}ms "
      f"min={samples[0]:.1f}ms max={samples[-1]:.1f}ms")
