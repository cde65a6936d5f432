#!/usr/bin/env bash
# Local infrastructure for Shop's tests and production-mode runs on a bare Debian machine
# without Docker: PostgreSQL from Debian's packages and Apache Kafka 4.1 (KRaft, a single
# combined broker/controller node) from Maven Central jars.
#
#   scripts/infra.sh up [WHAT...]      install what is missing, start what is stopped
#   scripts/infra.sh down [WHAT...]    stop Kafka (SIGTERM, SIGKILL after 30 s) and PostgreSQL
#   scripts/infra.sh status            what is installed and running; exit 0 when both are up
#   scripts/infra.sh kafka-topics ARGS Kafka's topic tool against the local broker
#                                      (e.g. `kafka-topics --list`)
#
# WHAT is any of `toolchain`, `postgres`, `kafka` (default: all of them). Everything is
# idempotent: installed things are not installed again, running things are left running.
#
#   PostgreSQL  postgres://postgres:postgres@127.0.0.1:5432/postgres, max_connections=500
#   Kafka       127.0.0.1:9092 (controller 127.0.0.1:9093)
#
# Environment:
#   SHOP_CACHE_DIR              default ~/.cache/shop: Kafka jars (kafka-<version>/lib),
#                               data (kafka-data), log (kafka.log), pid file (kafka.pid)
#   SHOP_KAFKA_PORT             default 9092
#   SHOP_KAFKA_CONTROLLER_PORT  default 9093
# A second broker on the same machine needs its own SHOP_CACHE_DIR and ports.
set -euo pipefail

KAFKA_VERSION=4.1.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHOP_CACHE_DIR:-$HOME/.cache/shop}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KAFKA_DATA=$CACHE/kafka-data
KAFKA_LOG=$CACHE/kafka.log
KAFKA_PID=$CACHE/kafka.pid
KAFKA_PORT=${SHOP_KAFKA_PORT:-9092}
CONTROLLER_PORT=${SHOP_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_READY_TIMEOUT=90
KAFKA_STOP_TIMEOUT=30
PG_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres
PG_MAX_CONNECTIONS=500

say() { printf 'infra: %s\n' "$*"; }
warn() { printf 'infra: warning: %s\n' "$*" >&2; }
die() {
  printf 'infra: error: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

as_postgres() {
  # From / so that psql does not complain about an unreadable working directory.
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && sudo -u postgres "$@")
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Serialises `up` and `down` (two clones' test runs starting at once, for example).
take_lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/infra.lock"
  if ! flock -n 9; then
    say "waiting for another scripts/infra.sh to finish ($CACHE/infra.lock)"
    flock -w 600 9 || die "timed out waiting for $CACHE/infra.lock"
  fi
}

# --- Debian packages -------------------------------------------------------------------

pg_version() {
  # The newest installed cluster version (Debian 12: 15).
  { find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null || true; } | sort -V | tail -n 1
}

pg_installed() { command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(pg_version)" ]; }

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Installs, in one apt transaction (after one `apt-get update`), every package that the
# selected steps need and that is missing.
packages() {
  local missing=() want
  for want in "$@"; do
    case $want in
      postgres)
        pg_installed || missing+=(postgresql)
        ;;
      kafka)
        command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null 2>&1 || missing+=(maven)
        # An independent Kafka client: the readiness probe here, and the tests' outside reader.
        command -v kcat >/dev/null 2>&1 || missing+=(kcat)
        ;;
      toolchain)
        # What the rdkafka crate's bundled librdkafka build needs.
        command -v make >/dev/null 2>&1 || missing+=(make)
        command -v g++ >/dev/null 2>&1 || missing+=(g++)
        deb_installed pkg-config || deb_installed pkgconf || missing+=(pkg-config)
        deb_installed zlib1g-dev || missing+=(zlib1g-dev)
        ;;
    esac
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  say "apt-get update"
  as_root apt-get update -qq >/dev/null
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- toolchain -------------------------------------------------------------------------

toolchain_up() {
  # rustfmt and clippy: scripts/test.sh runs `cargo fmt --check` and `cargo clippy`.
  local components=()
  (cd "$ROOT" && cargo fmt --version) >/dev/null 2>&1 || components+=(rustfmt)
  (cd "$ROOT" && cargo clippy --version) >/dev/null 2>&1 || components+=(clippy)
  [ "${#components[@]}" -gt 0 ] || return 0
  if command -v rustup >/dev/null 2>&1; then
    say "rustup component add ${components[*]}"
    (cd "$ROOT" && rustup component add "${components[@]}")
  else
    warn "${components[*]} missing and no rustup to add them"
  fi
}

# --- PostgreSQL ------------------------------------------------------------------------

pg_running() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 2>/dev/null; }

pg_wait() {
  local _
  for _ in $(seq 1 60); do
    pg_running && return 0
    sleep 0.5
  done
  die "PostgreSQL did not accept connections on 127.0.0.1:5432 within 30 s (see /var/log/postgresql/)"
}

postgres_up() {
  pg_installed || die "PostgreSQL is not installed"
  local version
  version=$(pg_version)
  if pg_running; then
    say "PostgreSQL $version already running"
  else
    say "starting PostgreSQL $version (pg_ctlcluster $version main start)"
    as_root pg_ctlcluster "$version" main start
    pg_wait
  fi
  # Password login over TCP (Debian's pg_hba.conf has scram-sha-256 for 127.0.0.1).
  if ! PGCONNECT_TIMEOUT=5 psql "$PG_URL" -qtAc 'select 1' >/dev/null 2>&1; then
    say "setting the password of role postgres"
    as_postgres psql -q -v ON_ERROR_STOP=1 -c "ALTER ROLE postgres PASSWORD 'postgres'"
    psql "$PG_URL" -qtAc 'select 1' >/dev/null || die "cannot log in as postgres/postgres at $PG_URL"
  fi
  # Tests run many instances at once, each with a few pools: 100 connections is too few.
  local max
  max=$(psql "$PG_URL" -qtAc 'show max_connections')
  if [ "$max" -lt "$PG_MAX_CONNECTIONS" ]; then
    say "raising max_connections from $max to $PG_MAX_CONNECTIONS (restarts PostgreSQL)"
    psql "$PG_URL" -qc "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS"
    as_root pg_ctlcluster "$version" main restart
    pg_wait
  fi
  say "PostgreSQL ready at $PG_URL"
}

postgres_down() {
  if ! pg_installed; then
    say "PostgreSQL not installed"
    return
  fi
  local version
  version=$(pg_version)
  if pg_running; then
    say "stopping PostgreSQL $version"
    as_root pg_ctlcluster "$version" main stop
  else
    say "PostgreSQL $version not running"
  fi
}

# --- Kafka -----------------------------------------------------------------------------

# The jars, resolved from Maven Central once per version (and again when pom.xml changes:
# the marker file holds the pom's checksum).
kafka_jars() {
  local stamp
  stamp=$(sha256sum <"$ROOT/scripts/kafka/pom.xml" | cut -d' ' -f1)
  if [ -f "$KAFKA_HOME/lib/.complete" ] && [ "$(cat "$KAFKA_HOME/lib/.complete")" = "$stamp" ]; then
    return 0
  fi
  say "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME/lib"
  local t0=$SECONDS
  mkdir -p "$KAFKA_HOME"
  rm -rf "$KAFKA_HOME/lib.tmp"
  cp "$ROOT/scripts/kafka/pom.xml" "$KAFKA_HOME/pom.xml"
  if ! (cd "$KAFKA_HOME" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory=lib.tmp) >"$KAFKA_HOME/mvn.log" 2>&1; then
    tail -n 50 "$KAFKA_HOME/mvn.log" >&2
    die "Maven could not resolve the Kafka jars (log: $KAFKA_HOME/mvn.log)"
  fi
  [ -f "$KAFKA_HOME/lib.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] ||
    die "kafka_2.13-$KAFKA_VERSION.jar missing after resolution"
  echo "$stamp" >"$KAFKA_HOME/lib.tmp/.complete"
  # Swap in whole (a broker still running from the old directory keeps its open jars).
  rm -rf "$KAFKA_HOME/lib.old"
  if [ -d "$KAFKA_HOME/lib" ]; then mv "$KAFKA_HOME/lib" "$KAFKA_HOME/lib.old"; fi
  mv "$KAFKA_HOME/lib.tmp" "$KAFKA_HOME/lib"
  rm -rf "$KAFKA_HOME/lib.old"
  say "resolved $(find "$KAFKA_HOME/lib" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

kafka_config() {
  cp "$ROOT/scripts/kafka/log4j2.xml" "$ROOT/scripts/kafka/tools-log4j2.xml" "$KAFKA_HOME/"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
    -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
    "$ROOT/scripts/kafka/server.properties.template" >"$KAFKA_HOME/server.properties"
}

# The broker's pid, if the pid file names a live Kafka process.
kafka_pid() {
  local pid
  [ -f "$KAFKA_PID" ] || return 1
  pid=$(cat "$KAFKA_PID")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

# Serving requests: the port accepts connections and an independent client gets metadata.
kafka_answers() {
  port_open "$KAFKA_PORT" && kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 5 >/dev/null 2>&1
}

kafka_wait() {
  local pid=$1 deadline=$((SECONDS + KAFKA_READY_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if kafka_answers; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      printf 'infra: Kafka exited; last 50 lines of %s:\n' "$KAFKA_LOG" >&2
      tail -n 50 "$KAFKA_LOG" >&2 || true
      die "Kafka exited during start-up"
    fi
    sleep 0.5
  done
  printf 'infra: last 50 lines of %s:\n' "$KAFKA_LOG" >&2
  tail -n 50 "$KAFKA_LOG" >&2 || true
  die "Kafka did not become ready on 127.0.0.1:$KAFKA_PORT within $KAFKA_READY_TIMEOUT s"
}

kafka_up() {
  command -v kcat >/dev/null 2>&1 || die "kcat is not installed"
  if kafka_answers; then
    say "Kafka already running on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  local pid
  if pid=$(kafka_pid); then
    # Started earlier (by another run) and still starting up.
    say "Kafka (pid $pid) is starting; waiting up to $KAFKA_READY_TIMEOUT s"
    kafka_wait "$pid"
    say "Kafka ready on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    die "127.0.0.1:$KAFKA_PORT is taken by a process that does not answer as a Kafka broker"
  fi

  kafka_jars
  kafka_config
  local cp="$KAFKA_HOME/lib/*"
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    # 16 random bytes in URL-safe base64 without padding: a 22-character cluster id.
    local cluster_id
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    say "formatting $KAFKA_DATA (cluster id $cluster_id)"
    rm -rf "$KAFKA_DATA"
    mkdir -p "$KAFKA_DATA"
    java -Xmx256m -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.xml" \
      -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_HOME/server.properties" \
      >/dev/null || die "formatting $KAFKA_DATA failed"
  fi

  if [ -f "$KAFKA_LOG" ]; then mv -f "$KAFKA_LOG" "$KAFKA_LOG.1"; fi
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (data $KAFKA_DATA, log $KAFKA_LOG)"
  # Its own session, so that it outlives this script and the terminal or CI step; fd 9
  # (the lock) is closed so the broker does not hold it.
  setsid nohup java -Xms256m -Xmx1g -server -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.xml" -cp "$cp" \
    kafka.Kafka "$KAFKA_HOME/server.properties" >"$KAFKA_LOG" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PID"
  local t0=$SECONDS
  kafka_wait "$pid"
  say "Kafka ready on 127.0.0.1:$KAFKA_PORT (pid $pid, $((SECONDS - t0)) s)"
}

kafka_down() {
  local pid
  if ! pid=$(kafka_pid); then
    rm -f "$KAFKA_PID"
    if port_open "$KAFKA_PORT"; then
      warn "something listens on 127.0.0.1:$KAFKA_PORT but $KAFKA_PID names no running broker; left alone"
    else
      say "Kafka not running"
    fi
    return 0
  fi
  say "stopping Kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "Kafka still running after $KAFKA_STOP_TIMEOUT s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$KAFKA_PID"
  say "Kafka stopped"
}

# Kafka's topic tool (kafka-topics.sh) with the cached jars; --bootstrap-server defaults
# to the local broker.
kafka_topics() {
  kafka_jars
  kafka_config
  local args=("$@")
  case " $* " in
    *" --bootstrap-server "*) ;;
    *) args+=(--bootstrap-server "127.0.0.1:$KAFKA_PORT") ;;
  esac
  java -Xmx256m -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.xml" \
    -cp "$KAFKA_HOME/lib/*" org.apache.kafka.tools.TopicCommand "${args[@]}"
}

# --- commands --------------------------------------------------------------------------

status() {
  local rc=0
  if pg_installed; then
    if pg_running; then
      say "PostgreSQL $(pg_version): installed, running (127.0.0.1:5432)"
    else
      say "PostgreSQL $(pg_version): installed, stopped"
      rc=1
    fi
  else
    say "PostgreSQL: not installed"
    rc=1
  fi
  if [ -f "$KAFKA_HOME/lib/.complete" ]; then
    say "Kafka $KAFKA_VERSION: installed ($KAFKA_HOME/lib)"
  else
    say "Kafka $KAFKA_VERSION: not installed (jars not resolved)"
  fi
  if ! command -v kcat >/dev/null 2>&1; then
    say "Kafka: kcat not installed, cannot probe 127.0.0.1:$KAFKA_PORT"
    rc=1
  elif kafka_answers; then
    local pid
    pid=$(kafka_pid) || pid="not started by this script"
    say "Kafka: running on 127.0.0.1:$KAFKA_PORT (pid $pid, log $KAFKA_LOG)"
  elif pid=$(kafka_pid); then
    say "Kafka: starting (pid $pid), not answering yet on 127.0.0.1:$KAFKA_PORT"
    rc=1
  else
    say "Kafka: stopped"
    rc=1
  fi
  return "$rc"
}

# The steps to act on (into WHAT): the arguments, or all of them.
WHAT=()
targets() {
  local t
  [ "$#" -gt 0 ] || set -- toolchain postgres kafka
  for t in "$@"; do
    case $t in
      toolchain | postgres | kafka) WHAT+=("$t") ;;
      *) die "unknown component '$t' (expected toolchain, postgres or kafka)" ;;
    esac
  done
}

usage() {
  echo "usage: scripts/infra.sh up|down [toolchain|postgres|kafka]... | status | kafka-topics ARGS..." >&2
  exit 2
}

cmd=${1:-}
if [ "$#" -gt 0 ]; then shift; fi
case $cmd in
  up)
    started=$SECONDS
    targets "$@"
    take_lock
    packages "${WHAT[@]}"
    for t in "${WHAT[@]}"; do "${t}_up"; done
    say "up in $((SECONDS - started)) s"
    ;;
  down)
    targets "$@"
    take_lock
    # Reverse order: Kafka first.
    for ((i = ${#WHAT[@]} - 1; i >= 0; i--)); do
      case ${WHAT[i]} in
        kafka) kafka_down ;;
        postgres) postgres_down ;;
        toolchain) ;;
      esac
    done
    ;;
  status)
    status
    ;;
  kafka-topics)
    kafka_topics "$@"
    ;;
  *)
    usage
    ;;
esac
