#!/usr/bin/env bash
# The test command: installs/starts what the tests need (scripts/infra.sh up), then runs
# formatting and lint checks and every test of the workspace against real PostgreSQL and
# Kafka. Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test catalogue`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$(date +%s)
step() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "==> $name"
  "$@"
  echo "==> $name: $(( $(date +%s) - t0 )) s"
}

step "infrastructure" scripts/infra.sh up

export SHOP_TEST_DATABASE_URL=${SHOP_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
export SHOP_TEST_KAFKA_BROKERS=${SHOP_TEST_KAFKA_BROKERS:-127.0.0.1:${SHOP_KAFKA_PORT:-9092}}
# One build directory per machine, outside the clone: a fresh clone reuses the build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/shop/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# The shared build directory grows with every variant built in it, most of it incremental
# compilation sessions (one set per crate and checkout); past a limit they go (the next
# build of the workspace's own crates is then a full one, dependencies stay built).
limit_gib=${SHOP_TARGET_LIMIT_GIB:-40}
if [ -d "$CARGO_TARGET_DIR" ]; then
  used_gib=$(( $(du -sk "$CARGO_TARGET_DIR" | cut -f1) / 1024 / 1024 ))
  if [ "$used_gib" -ge "$limit_gib" ]; then
    echo "==> $CARGO_TARGET_DIR holds ${used_gib} GiB (limit ${limit_gib}): removing incremental sessions"
    rm -rf "$CARGO_TARGET_DIR"/*/incremental
  fi
fi

# Databases and topics left behind by earlier runs that were interrupted (test instances
# are t<hex>).
psql "$SHOP_TEST_DATABASE_URL" -tAc "SELECT datname FROM pg_database WHERE datname ~ '^(t[0-9a-f]{12}|bench(e2e)?[0-9a-f]{8})_'" |
  while read -r db; do [ -n "$db" ] && psql "$SHOP_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
scripts/infra.sh clean

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo clippy (otlp)" cargo clippy -p shop-eventing --features otlp --locked -- -D warnings
# The book in docs/ (mdBook from scripts/infra.sh's virtualenv), written to docs/book/.
step "mdbook build docs" "${SHOP_CACHE_DIR:-$HOME/.cache/shop}/venv/bin/mdbook" build docs
# The Helm chart (helm lint/template, every object decoded strictly against the Kubernetes
# API types) and docker-compose.yml; helm and the checker are built once and cached.
step "kubernetes manifests" scripts/k8s-check.sh
step "cargo test" cargo test --workspace --all-targets --locked --no-fail-fast "$@" -- --test-threads="${SHOP_TEST_THREADS:-4}"
# Trace export is an optional feature: its test builds the binary with it.
if [ "$#" -eq 0 ]; then
  step "cargo test (otlp)" cargo test --locked --features otlp --test tracing
fi

echo "==> all green in $(( $(date +%s) - started )) s"
