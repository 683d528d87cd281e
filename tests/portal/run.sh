#!/usr/bin/env bash
# The admin portal's browser tests (issue 11): Debian's Chromium, driven by playwright-core,
# against the real `nls serve` (debug build), with staff users made by `nls staff create`.
# Installs what is missing (idempotent): the chromium package and the npm packages of
# package-lock.json. Screenshots land in $NLS_PORTAL_SCREENSHOTS (default: the build dir).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

chromium_bin=${NLS_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then
  sudo_if_needed=()
  [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
  "${sudo_if_needed[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y chromium
fi
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/axe-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi

cargo build --locked -p nls
export NLS_BIN="$CARGO_TARGET_DIR/debug/nls"
export NLS_CHROMIUM="$chromium_bin"
export NLS_PORTAL_SCREENSHOTS=${NLS_PORTAL_SCREENSHOTS:-$CARGO_TARGET_DIR/portal-screenshots}
cd "$here"
node --test --test-concurrency=1 portal.test.mjs license_list.test.mjs
