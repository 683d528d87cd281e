#!/bin/sh
# Fails when the Worker bundle (every file worker-build produced, gzip -9 each) exceeds the
# budget. Usage: check_worker_size.sh <build dir> [max gzip bytes, default 1 MiB]
set -eu
dir=${1:?build dir}
max=${2:-1048576}
raw=0
gz=0
for f in "$dir"/index.js "$dir"/index_bg.wasm; do
  [ -f "$f" ] || { echo "missing $f: build the Worker first" >&2; exit 2; }
  raw=$((raw + $(wc -c <"$f")))
  gz=$((gz + $(gzip -9c "$f" | wc -c)))
done
echo "worker bundle: ${raw} bytes raw, ${gz} bytes gzip (budget ${max})"
if [ "$gz" -gt "$max" ]; then
  echo "worker bundle over budget" >&2
  exit 1
fi
