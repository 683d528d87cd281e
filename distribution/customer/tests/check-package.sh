#!/usr/bin/env bash
# Checks the customer install package (tests/run.sh runs it; not shipped to customers):
#   - install.sh and this script pass shellcheck;
#   - the YAML passes yamllint, and the Kubernetes manifests validate against the bundled
#     Kubernetes schemas (kubernetes-validate, offline; strict: unknown fields are errors);
#   - docker-compose.yml has the image, the .env settings, the named license volume, the
#     license health check and a restart policy; .env.template documents every variable;
#   - `install.sh --dry-run --non-interactive` in a temp copy prints the steps in order, never
#     the key, and changes nothing; a missing or malformed key stops it with exit 10.
# Needs: shellcheck, yamllint (Debian packages) and KUBERNETES_VALIDATE (a path to the
# kubernetes-validate command; tests/run.sh installs it in a venv).
set -euo pipefail

package=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$package"
validate=${KUBERNETES_VALIDATE:-kubernetes-validate}
python=${KUBERNETES_VALIDATE_PYTHON:-python3}

fail() { echo "check-package: $*" >&2; exit 1; }

echo "-- shellcheck"
shellcheck install.sh tests/check-package.sh

echo "-- yamllint"
yamllint -s -c .yamllint docker-compose.yml kubernetes/

echo "-- Kubernetes schemas (strict, offline)"
manifests=()
for f in kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
"$validate" --strict --quiet "${manifests[@]}"
kinds=$(cat "${manifests[@]}" | sed -n 's/^kind: //p' | sort | tr '\n' ' ')
[ "$kinds" = "ConfigMap Deployment Namespace PersistentVolumeClaim Secret Secret Service " ] \
  || fail "unexpected set of manifests: $kinds"
sed -n 's/^  - \(.*\.yaml\)$/\1/p' kubernetes/kustomization.yaml | while read -r resource; do
  [ -f "kubernetes/$resource" ] || fail "kustomization.yaml lists $resource, which does not exist"
done
# A schema-valid manifest can still be wrong for Nectar: the facts the install relies on.
"$python" - <<'EOF'
import sys, yaml
deployment = yaml.safe_load(open("kubernetes/deployment.yaml"))
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
env = {e["name"]: e for e in container["env"]}
checks = {
    "imagePullSecret from the license key": pod["imagePullSecrets"] == [{"name": "nectar-registry"}],
    "the key comes from the Secret": env["NECTAR_LICENSE_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "nectar-license",
    "all four NECTAR_LICENSE_* set": set(env) >= {"NECTAR_LICENSE_SERVER", "NECTAR_LICENSE_KEY", "NECTAR_LICENSE_JWKS", "NECTAR_LICENSE_DATA_DIR"},
    "the state dir is the PVC": any(v.get("persistentVolumeClaim", {}).get("claimName") == "nectar-license-state" for v in pod["volumes"])
        and {"name": "license-state", "mountPath": env["NECTAR_LICENSE_DATA_DIR"]["value"]} in container["volumeMounts"],
    "readiness includes the license check": container["readinessProbe"]["exec"]["command"] == ["nectar-license", "status"],
    "liveness and startup probes": "livenessProbe" in container and "startupProbe" in container,
    "one replica, Recreate": deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate",
}
pull = yaml.safe_load(open("kubernetes/registry-pull-secret.yaml"))
checks["pull secret is dockerconfigjson"] = pull["type"] == "kubernetes.io/dockerconfigjson"
import json
auths = json.loads(pull["stringData"][".dockerconfigjson"])["auths"]
checks["pull secret: user license, password the key"] = all(
    a["username"] == "license" and a["password"].startswith("NLS-") for a in auths.values())

compose = yaml.safe_load(open("docker-compose.yml"))
app = compose["services"]["app"]
checks.update({
    "compose image from the registry": app["image"].startswith("${NECTAR_REGISTRY")
        and app["image"].endswith("/nectar/app:${NECTAR_VERSION:?set NECTAR_VERSION in .env}"),
    "compose restart policy": app["restart"] == "unless-stopped",
    "compose license state on a named volume": "license-state:/var/lib/nectar/license" in app["volumes"]
        and "license-state" in compose["volumes"]
        and app["environment"]["NECTAR_LICENSE_DATA_DIR"] == "/var/lib/nectar/license",
    "compose key and server from .env": app["environment"]["NECTAR_LICENSE_KEY"].startswith("${NECTAR_LICENSE_KEY")
        and app["environment"]["NECTAR_LICENSE_SERVER"].startswith("${NECTAR_LICENSE_SERVER"),
    "compose health check runs the license check": "nectar-license status" in " ".join(app["healthcheck"]["test"]),
})

# Every ${VAR} the compose file reads is in .env.template, with a comment right above it.
import re
used = set(re.findall(r"\$\{([A-Z_]+)", open("docker-compose.yml").read()))
lines = open(".env.template").read().splitlines()
documented = {l.split("=")[0] for i, l in enumerate(lines) if "=" in l and not l.startswith("#") and i > 0 and lines[i - 1].startswith("#")}
checks[f".env.template documents {sorted(used)}"] = used <= documented

bad = [name for name, ok in checks.items() if not ok]
if bad:
    sys.exit("check-package: " + "; ".join(bad))
print(f"{len(checks)} package facts hold")
EOF

echo "-- install.sh --dry-run --non-interactive in a temp copy"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$package" "$work/pkg"
rm -rf "$work/pkg/tests"
before=$(cd "$work/pkg" && find . | sort)
# A well-formed key generated here (never a real one): its checksum is public, the rest is not.
secret_part=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
key="NLS-eyJhbGciOiJFZERTQSJ9.${secret_part}.c2ln-0a1b2c3d"
settings=(NECTAR_REGISTRY=registry.test NECTAR_VERSION=9.9.9 NECTAR_LICENSE_SERVER=https://licenses.test)
out=$(cd "$work/pkg" && env "${settings[@]}" NECTAR_LICENSE_KEY="$key" ./install.sh --dry-run --non-interactive 2>&1) \
  || fail "dry run failed:
$out"
echo "$out" | grep -q "$secret_part" && fail "the dry run printed the license key"
expected=(
  "== step 1: prerequisites: docker, compose, disk, port, nectar-license"
  "== step 2: settings (.env) and the license key"
  "license key: read (ends with 0a1b2c3d)"
  "== step 3: pinned public keys (nls-jwks.json)"
  "+ curl -fsS --proto =https -o nls-jwks.json https://licenses.test/.well-known/jwks.json"
  "== step 4: license check from this host: nectar-license diagnose"
  "nectar-license diagnose"
  "nectar-license release"
  "== step 5: registry login with the license key: registry.test"
  "+ docker login registry.test --username license --password-stdin"
  "== step 6: pull registry.test/nectar/app:9.9.9"
  "+ docker compose --env-file .env -f docker-compose.yml pull"
  "== step 7: start (or update) the app"
  "+ docker compose --env-file .env -f docker-compose.yml up -d --remove-orphans"
  "== step 8: verify: the app is healthy and its license usable"
  "+ docker compose --env-file .env -f docker-compose.yml exec -T app nectar-license status"
  "(dry run: nothing was changed)"
)
rest=$out
for line in "${expected[@]}"; do
  case "$rest" in
    *"$line"*) rest=${rest#*"$line"} ;;
    *) fail "expected, in this order, \"$line\"; the dry run printed:
$out" ;;
  esac
done
after=$(cd "$work/pkg" && find . | sort)
[ "$before" = "$after" ] || fail "the dry run changed files: $(diff <(echo "$before") <(echo "$after") || true)"

# Idempotent: run again on the same copy, same steps.
again=$(cd "$work/pkg" && env "${settings[@]}" NECTAR_LICENSE_KEY="$key" ./install.sh --dry-run --non-interactive 2>&1)
[ "$again" = "$out" ] || fail "a second dry run differs"

# No key, non-interactive: stops before any step that changes something, with exit 10.
code=0
msg=$(cd "$work/pkg" && env -u NECTAR_LICENSE_KEY "${settings[@]}" ./install.sh --dry-run --non-interactive 2>&1) || code=$?
if [ "$code" != 10 ] || ! echo "$msg" | grep -q "no license key"; then fail "without a key: exit $code, $msg"; fi
code=0
msg=$(cd "$work/pkg" && env "${settings[@]}" NECTAR_LICENSE_KEY=hunter2 ./install.sh --dry-run --non-interactive 2>&1) || code=$?
if [ "$code" != 10 ] || ! echo "$msg" | grep -q "not a license key"; then fail "with a bad key: exit $code, $msg"; fi
code=0
./install.sh --bogus >/dev/null 2>&1 || code=$?
[ "$code" = 2 ] || fail "an unknown flag: exit $code, expected 2"

echo "customer package checks passed"
