#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/shop: `helm lint` and `helm template` for the default
# values (with the required secrets) and for every example values file, each rendering
# decoded strictly into the Kubernetes API types by deploy/check (an unknown kind, or an
# unknown or misspelled field, fails), and that rendering without the required secrets
# fails. helm and the checker are built once from the Go module proxy and cached under
# ~/.cache/shop/go-tools (like the Kafka jars of scripts/infra.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM_VERSION=v4.3.2
tools=${SHOP_CACHE_DIR:-$HOME/.cache/shop}/go-tools
chart=deploy/helm/shop
mkdir -p "$tools/bin"

if ! command -v go >/dev/null 2>&1; then
  echo "k8s-check: needs Go (https://go.dev/dl/, 1.26 or later) to build helm and deploy/check" >&2
  exit 1
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "k8s-check: needs python3 with PyYAML for the example and compose checks:" \
    "apt-get install python3-yaml (or pip install pyyaml)" >&2
  exit 1
fi

helm=$tools/bin/helm-$HELM_VERSION
if [ ! -x "$helm" ]; then
  echo "==> building helm $HELM_VERSION (once; cached as $helm, ~4 min on 2 cores)"
  if ! GOBIN="$tools/bin" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"; then
    echo "k8s-check: could not build helm from the Go module proxy ($(go env GOPROXY));" \
      "set GOPROXY to a reachable proxy, or put a helm $HELM_VERSION binary at $helm" >&2
    exit 1
  fi
  mv "$tools/bin/helm" "$helm"
fi

# The checker: rebuilt when its sources change (a stamp of their hash names the binary).
stamp=$(cat deploy/check/go.mod deploy/check/go.sum deploy/check/*.go | sha256sum | cut -c1-16)
checker=$tools/bin/shop-k8s-check-$stamp
if [ ! -x "$checker" ]; then
  echo "==> building deploy/check"
  (cd deploy/check && go build -mod=readonly -o "$checker" .) || {
    echo "k8s-check: could not build deploy/check (its modules come from $(go env GOPROXY))" >&2
    exit 1
  }
fi

secrets=(--set secrets.jwtSecret=ci-jwt-secret --set secrets.adminPassword=ci-admin-password
  --set postgresql.password='ci db/pass@word')

render() { # name, helm template arguments…
  local name=$1; shift
  echo "==> $name"
  "$helm" lint --strict "$chart" "$@"
  local out; out=$(mktemp)
  "$helm" template shop "$chart" --namespace shop "$@" >"$out"
  "$checker" <"$out"
  rm -f "$out"
}

render "default values" "${secrets[@]}"
for values in "$chart"/values-*.yaml; do
  render "$(basename "$values")" -f "$values" "${secrets[@]}"
done

# Without the secrets, rendering must fail and say which value is missing.
expect_failure() { # what, expected message, helm template arguments…
  local what=$1 message=$2; shift 2
  local err; err=$(mktemp)
  if "$helm" template shop "$chart" "$@" >/dev/null 2>"$err"; then
    echo "k8s-check: rendering $what succeeded; it must fail" >&2
    exit 1
  fi
  if ! grep -q "$message" "$err"; then
    echo "k8s-check: rendering $what failed without naming $message:" >&2
    cat "$err" >&2
    exit 1
  fi
  rm -f "$err"
  echo "ok: without $what rendering fails ($message)"
}
expect_failure "any secret" "secrets.jwtSecret is required"
expect_failure "the JWT secret" "secrets.jwtSecret is required" \
  --set secrets.adminPassword=a --set postgresql.password=p
expect_failure "the admin password" "secrets.adminPassword is required" \
  --set secrets.jwtSecret=j --set postgresql.password=p
expect_failure "the database password" "postgresql.password is required" \
  --set secrets.jwtSecret=j --set secrets.adminPassword=a
expect_failure "an enabled active color" "that color is not enabled" \
  "${secrets[@]}" --set defaults.blueGreen.active=green
expect_failure "a termination grace that covers the drain" "must cover preStopSeconds + drainGraceMs" \
  "${secrets[@]}" --set components.orders.drainGraceMs=20000

# The checker itself rejects a misspelled field and an unknown kind.
broken=$("$helm" template shop "$chart" "${secrets[@]}" | sed '0,/readinessProbe:/s//readinesProbe:/')
if "$checker" <<<"$broken" >/dev/null 2>&1; then
  echo "k8s-check: the checker accepted a misspelled field (readinesProbe)" >&2
  exit 1
fi
if printf 'apiVersion: apps/v1\nkind: Deployments\nmetadata: {name: x}\n' | "$checker" >/dev/null 2>&1; then
  echo "k8s-check: the checker accepted an unknown kind" >&2
  exit 1
fi
echo "ok: the checker rejects a misspelled field and an unknown kind"

# The in-cluster examples are YAML with the kinds the docs name.
for f in deploy/examples/*.yaml; do
  python3 - "$f" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
assert docs, f"{sys.argv[1]}: no documents"
for d in docs:
    assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), f"{sys.argv[1]}: {d}"
print(f"ok: {sys.argv[1]}: " + ", ".join(f"{d['kind']} {d['metadata']['name']}" for d in docs))
PY
done
# docker-compose.yml: parsed, secrets required, /ready health checks, depends_on consistent.
python3 scripts/compose-check.py docker-compose.yml
echo "==> kubernetes manifests: all checks passed"
