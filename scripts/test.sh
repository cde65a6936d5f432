#!/usr/bin/env bash
# The test command (CI runs exactly this, through .ci/run):
#
#   scripts/test.sh [CARGO_TEST_ARGS...] [-- TEST_BINARY_ARGS...]
#
# Installs/starts what the tests need (scripts/infra.sh up: PostgreSQL and Kafka), then
# runs, in order and stopping at the first failure:
#   cargo fmt --all -- --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   cargo test --workspace --all-targets CARGO_TEST_ARGS -- --test-threads=N TEST_BINARY_ARGS
# and prints each step's time and the total.
#
# Examples:  scripts/test.sh -- identity                 (a test name filter)
#            scripts/test.sh --test catalogue -- --nocapture
#
# Environment:
#   SHOP_TEST_THREADS        test threads per test binary (default 4)
#   CARGO_TARGET_DIR         default ~/.cache/shop/target: one build shared by every clone
#                            on the machine, so a fresh clone does not rebuild from scratch
#   SHOP_TEST_DATABASE_URL   default postgres://postgres:postgres@127.0.0.1:5432/postgres
#   SHOP_TEST_KAFKA_BROKERS  default 127.0.0.1:9092 (127.0.0.1:$SHOP_KAFKA_PORT)
#   SHOP_TEST_PRUNE=0        keep databases and topics that earlier test runs left behind
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Arguments: an optional leading `--`, then cargo test's own arguments, then after the
# next `--` the test binaries' arguments.
if [ "${1:-}" = "--" ]; then shift; fi
cargo_args=()
binary_args=()
while [ "$#" -gt 0 ]; do
  if [ "$1" = "--" ]; then
    shift
    binary_args=("$@")
    break
  fi
  cargo_args+=("$1")
  shift
done
case " ${binary_args[*]-} " in
  *" --test-threads"*) ;;
  *) binary_args=(--test-threads="${SHOP_TEST_THREADS:-4}" ${binary_args[@]+"${binary_args[@]}"}) ;;
esac

started=$SECONDS
current=""
finish() {
  local rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "test: all steps passed; total $((SECONDS - started)) s"
  else
    echo "test: FAILED in step '${current:-setup}' (exit $rc); total $((SECONDS - started)) s" >&2
  fi
}
trap finish EXIT

step() {
  current=$1
  shift
  local t0=$SECONDS
  echo "test: ==> $current: $*"
  "$@"
  echo "test: <== $current: $((SECONDS - t0)) s"
}

export SHOP_TEST_DATABASE_URL=${SHOP_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
export SHOP_TEST_KAFKA_BROKERS=${SHOP_TEST_KAFKA_BROKERS:-127.0.0.1:${SHOP_KAFKA_PORT:-9092}}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/shop/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# Test instances are named t<12 hex digits>: databases t…_<component>, topics t….<name>.
# Runs that were interrupted leave theirs behind; remove them so they do not pile up.
# A database is dropped only when nobody is connected to it, and topics are deleted only
# when no test database remains at all, so a test running concurrently (another clone,
# a `cargo test` by hand) keeps its own.
prune_leftovers() {
  local db dbs remaining topics
  dbs=$(psql "$SHOP_TEST_DATABASE_URL" -qtAc "
    SELECT d.datname FROM pg_database d
    WHERE d.datname ~ '^t[0-9a-f]{12}_'
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)")
  for db in $dbs; do
    psql "$SHOP_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" 2>/dev/null || true
  done
  remaining=$(psql "$SHOP_TEST_DATABASE_URL" -qtAc \
    "SELECT count(*) FROM pg_database WHERE datname ~ '^t[0-9a-f]{12}_'")
  topics=$(kcat -L -b "$SHOP_TEST_KAFKA_BROKERS" -m 10 2>/dev/null |
    grep -cE '^  topic "t[0-9a-f]{12}\.' || true)
  echo "test: dropped $(wc -w <<<"$dbs") leftover test databases; $remaining still in use"
  if [ "$remaining" -eq 0 ] && [ "$topics" -gt 0 ]; then
    echo "test: deleting $topics leftover test topics"
    scripts/infra.sh kafka-topics --bootstrap-server "$SHOP_TEST_KAFKA_BROKERS" \
      --delete --if-exists --topic '^t[0-9a-f]{12}\..*'
  fi
}

step "infrastructure" scripts/infra.sh up
echo "test: SHOP_TEST_DATABASE_URL=$SHOP_TEST_DATABASE_URL SHOP_TEST_KAFKA_BROKERS=$SHOP_TEST_KAFKA_BROKERS CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
if [ "${SHOP_TEST_PRUNE:-1}" != 0 ]; then
  step "prune leftovers" prune_leftovers
fi
step "fmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
step "test" cargo test --workspace --all-targets ${cargo_args[@]+"${cargo_args[@]}"} -- "${binary_args[@]}"
