#!/bin/sh
# Installs (or updates) Nectar on this host with Docker Compose, from the directory this
# script is in: checks the prerequisites, reads or asks for the license key, runs
# `nectar-license diagnose` before changing anything, logs in to the registry with the key,
# pulls, starts and verifies. Safe to run again: every step converges.
#
#   ./install.sh [--non-interactive] [--dry-run] [--key-file FILE]
#
#   --non-interactive  never prompt: the key comes from NECTAR_LICENSE_KEY, --key-file or .env
#   --dry-run          print the steps and change nothing
#
# Exit codes: 0 installed; 2 usage; 10 a setting is missing; 69 a prerequisite is missing;
# 70 the app did not become healthy; any other code is `nectar-license diagnose`'s
# (docs/install.md lists them).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

interactive=1
dry_run=0
key_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --non-interactive) interactive=0 ;;
    --dry-run) dry_run=1 ;;
    --key-file)
      [ $# -ge 2 ] || { echo "install.sh: --key-file needs a file" >&2; exit 2; }
      key_file=$2
      shift
      ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

step_no=0
step() {
  step_no=$((step_no + 1))
  printf '\n== step %d: %s\n' "$step_no" "$*"
}
say() { printf '   %s\n' "$*"; }
die() {
  code=$1
  shift
  printf 'install.sh: %s\n' "$*" >&2
  exit "$code"
}
# Prints a command, then runs it unless this is a dry run. The license key never appears in a
# command line: commands get it through the environment or stdin.
run() {
  printf '   + %s\n' "$*"
  if [ "$dry_run" -eq 0 ]; then
    "$@"
  fi
}

# A value from .env (KEY=VALUE lines; the file is read, never executed).
env_value() {
  [ -f .env ] || return 0
  sed -n "s/^$1=//p" .env | tail -n 1 | sed -e 's/^"//' -e 's/"$//'
}

# `docker compose` (the v2 plugin), or the older `docker-compose` when only that is installed.
compose() {
  if ! docker compose version >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; then
    run docker-compose --env-file .env -f docker-compose.yml "$@"
  else
    run docker compose --env-file .env -f docker-compose.yml "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
step "prerequisites: docker, compose, disk, port, nectar-license"
missing=""
if command -v docker >/dev/null 2>&1; then
  say "docker: $(docker --version 2>/dev/null || echo present)"
  if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
    say "compose: present"
  else
    missing="$missing compose"
  fi
else
  missing="$missing docker"
fi
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt 5242880 ]; then
  missing="$missing disk(5GB-free-here)"
else
  say "disk: $((free_kb / 1048576)) GB free"
fi
port=${NECTAR_HTTP_PORT:-$(env_value NECTAR_HTTP_PORT)}
port=${port:-8080}
if command -v ss >/dev/null 2>&1 && ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
  if [ -n "$(docker compose ps -q app 2>/dev/null || true)" ]; then
    say "port $port: in use by this install (an update)"
  else
    missing="$missing port-$port-free"
  fi
else
  say "port $port: free"
fi
cli=${NECTAR_LICENSE_CLI:-}
if [ -z "$cli" ]; then
  if [ -x "$here/bin/nectar-license" ]; then
    cli="$here/bin/nectar-license"
  elif command -v nectar-license >/dev/null 2>&1; then
    cli=$(command -v nectar-license)
  fi
fi
[ -n "$cli" ] || missing="$missing nectar-license"
if [ -n "$missing" ]; then
  if [ "$dry_run" -eq 1 ]; then
    say "missing (a real run stops here):$missing"
  else
    die 69 "missing prerequisites:$missing (docs/install.md, 'Before you start')"
  fi
fi
cli=${cli:-nectar-license}

# ---------------------------------------------------------------------------------------------
step "settings (.env) and the license key"
if [ ! -f .env ]; then
  say "creating .env from .env.template (mode 600)"
  if [ "$dry_run" -eq 0 ]; then
    (umask 077 && cp .env.template .env)
  fi
fi
# The key: --key-file, else NECTAR_LICENSE_KEY, else .env, else asked for.
key=""
if [ -n "$key_file" ]; then
  [ -r "$key_file" ] || die 10 "--key-file $key_file is not readable"
  key=$(tr -d ' \r\n' <"$key_file")
fi
[ -n "$key" ] || key=${NECTAR_LICENSE_KEY:-}
[ -n "$key" ] || key=$(env_value NECTAR_LICENSE_KEY)
if [ -z "$key" ]; then
  [ "$interactive" -eq 1 ] || die 10 "no license key: set NECTAR_LICENSE_KEY, pass --key-file FILE, or put it in .env"
  printf 'License key (NLS-...): ' >&2
  stty -echo 2>/dev/null || true
  IFS= read -r key || true
  stty echo 2>/dev/null || true
  printf '\n' >&2
  [ -n "$key" ] || die 10 "no license key given"
fi
case "$key" in
  NLS-*) say "license key: read (ends with ${key##*-})" ;;
  *) die 10 "that is not a license key (it starts with NLS-); copy it again from the welcome email" ;;
esac
for name in NECTAR_REGISTRY NECTAR_VERSION NECTAR_LICENSE_SERVER; do
  value=$(eval "printf '%s' \"\${$name:-}\"")
  [ -n "$value" ] || value=$(env_value "$name")
  [ -n "$value" ] || die 10 "$name is not set: set it in .env (see .env.template)"
  eval "$name=\$value"
  say "$name=$value"
done
if [ "$(env_value NECTAR_LICENSE_KEY)" != "$key" ]; then
  say "saving the license key in .env"
  if [ "$dry_run" -eq 0 ]; then
    tmp=$(mktemp .env.XXXXXX)
    grep -v '^NECTAR_LICENSE_KEY=' .env >"$tmp" || true
    printf 'NECTAR_LICENSE_KEY=%s\n' "$key" >>"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" .env
  fi
fi
export NECTAR_LICENSE_SERVER NECTAR_REGISTRY NECTAR_VERSION
NECTAR_LICENSE_KEY=$key
export NECTAR_LICENSE_KEY

# ---------------------------------------------------------------------------------------------
step "pinned public keys (nls-jwks.json)"
if [ -f nls-jwks.json ]; then
  say "nls-jwks.json: shipped with this package"
else
  run curl -fsS --proto '=https' -o nls-jwks.json "$NECTAR_LICENSE_SERVER/.well-known/jwks.json"
fi
NECTAR_LICENSE_JWKS="$here/nls-jwks.json"
NECTAR_LICENSE_DATA_DIR="$here/state/preflight"
export NECTAR_LICENSE_JWKS NECTAR_LICENSE_DATA_DIR

# ---------------------------------------------------------------------------------------------
step "license check from this host: nectar-license diagnose"
if [ "$dry_run" -eq 1 ]; then
  run "$cli" diagnose
else
  printf '   + %s diagnose\n' "$cli"
  code=0
  "$cli" diagnose || code=$?
  if [ "$code" -ne 0 ]; then
    die "$code" "the license check failed (exit $code): apply the fix shown above, then run install.sh again"
  fi
fi
# The check took a seat under its own deployment id; the app takes its own.
run "$cli" release

# ---------------------------------------------------------------------------------------------
step "registry login with the license key: $NECTAR_REGISTRY"
printf '   + docker login %s --username license --password-stdin  (password: the license key)\n' "$NECTAR_REGISTRY"
if [ "$dry_run" -eq 0 ]; then
  printf '%s' "$key" | docker login "$NECTAR_REGISTRY" --username license --password-stdin
fi

# ---------------------------------------------------------------------------------------------
step "pull $NECTAR_REGISTRY/nectar/app:$NECTAR_VERSION"
compose pull

# ---------------------------------------------------------------------------------------------
step "start (or update) the app"
compose up -d --remove-orphans

# ---------------------------------------------------------------------------------------------
step "verify: the app is healthy and its license usable"
if [ "$dry_run" -eq 1 ]; then
  say "+ wait until the app container is healthy (up to 180 s)"
  compose exec -T app nectar-license status
else
  healthy=0
  for _ in $(seq 1 36); do
    id=$(docker compose --env-file .env -f docker-compose.yml ps -q app 2>/dev/null || true)
    status=$(docker inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null || echo unknown)
    if [ "$status" = healthy ]; then
      healthy=1
      break
    fi
    sleep 5
  done
  compose exec -T app nectar-license status || true
  [ "$healthy" -eq 1 ] || die 70 "the app is not healthy after 180 s: run '$cli support-bundle --out nectar-support.tar.gz' and send it to support"
fi

printf '\nNectar %s is %s.\n' "$NECTAR_VERSION" "$([ "$dry_run" -eq 1 ] && echo 'ready to install (dry run: nothing was changed)' || echo 'installed and licensed')"
