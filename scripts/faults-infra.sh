#!/usr/bin/env bash
# The fault test's own PostgreSQL cluster and Kafka broker (tests/faults.rs), beside the
# main ones of scripts/infra.sh, so the test may crash them while other tests keep
# theirs. Needs what `scripts/infra.sh up` installs (PostgreSQL, Java, the Kafka jars).
#
#   scripts/faults-infra.sh up           create and start both (fresh: a new cluster and
#                                        freshly formatted broker storage)
#   scripts/faults-infra.sh down         stop and remove both (idempotent)
#   scripts/faults-infra.sh status       exit 0 when both answer
#   scripts/faults-infra.sh pg-crash     immediate restart of PostgreSQL (no clean shutdown)
#   scripts/faults-infra.sh pg-stop      immediate stop of PostgreSQL
#   scripts/faults-infra.sh pg-start     start PostgreSQL, wait until it accepts connections
#   scripts/faults-infra.sh kafka-kill   SIGKILL the broker
#   scripts/faults-infra.sh kafka-start  start the broker on its data, wait until it answers
#
# One user at a time: `up` replaces whatever cluster and broker a previous run left. The
# test serializes its runs on this machine with a lock (~/.cache/shop/faults.lock).
#
# Environment: SHOP_FAULTS_PG_PORT (5433), SHOP_FAULTS_KAFKA_PORT (9094),
# SHOP_FAULTS_KAFKA_CONTROLLER_PORT (9095), SHOP_CACHE_DIR (~/.cache/shop).
set -euo pipefail

KAFKA_VERSION=4.1.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SHOP_CACHE_DIR:-$HOME/.cache/shop}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
DIR=$CACHE/faults
KAFKA_DATA=$DIR/kafka-data
KAFKA_CONFIG=$DIR/server.properties
KAFKA_LOG=$DIR/kafka.log
KAFKA_PID=$DIR/kafka.pid
PG_PORT=${SHOP_FAULTS_PG_PORT:-5433}
KAFKA_PORT=${SHOP_FAULTS_KAFKA_PORT:-9094}
CONTROLLER_PORT=${SHOP_FAULTS_KAFKA_CONTROLLER_PORT:-9095}
CLUSTER=faults
PG_URL=postgres://postgres:postgres@127.0.0.1:$PG_PORT/postgres

say() { printf 'faults-infra: %s\n' "$*"; }
die() { printf 'faults-infra: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- PostgreSQL ------------------------------------------------------------------------

pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true; }

need_pg() {
  command -v pg_createcluster >/dev/null 2>&1 || die "PostgreSQL is not installed: run scripts/infra.sh up"
  VERSION=$(pg_version)
  [ -n "$VERSION" ] || die "no PostgreSQL version under /etc/postgresql: run scripts/infra.sh up"
}

pg_exists() { [ -d "/etc/postgresql/$VERSION/$CLUSTER" ]; }

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }

pg_wait() {
  for _ in $(seq 1 120); do pg_ready && return 0; sleep 0.25; done
  die "PostgreSQL $VERSION/$CLUSTER did not accept connections on $PG_PORT within 30 s (see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
}

pg_up() {
  need_pg
  if pg_exists; then
    say "dropping the previous cluster $VERSION/$CLUSTER"
    as_root pg_dropcluster --stop "$VERSION" "$CLUSTER"
  fi
  if port_open "$PG_PORT"; then die "port $PG_PORT is taken by something else"; fi
  say "creating PostgreSQL cluster $VERSION/$CLUSTER on port $PG_PORT"
  as_root pg_createcluster "$VERSION" "$CLUSTER" -p "$PG_PORT" >/dev/null
  as_root pg_ctlcluster "$VERSION" "$CLUSTER" start
  pg_wait
  (cd / && as_root runuser -u postgres -- psql -q -p "$PG_PORT" -c "ALTER USER postgres PASSWORD 'postgres'")
  psql "$PG_URL" -qc 'ALTER SYSTEM SET max_connections = 300'
  as_root pg_ctlcluster "$VERSION" "$CLUSTER" restart
  pg_wait
  say "PostgreSQL ready at $PG_URL"
}

pg_down() {
  need_pg
  if pg_exists; then
    say "removing PostgreSQL cluster $VERSION/$CLUSTER"
    as_root pg_dropcluster --stop "$VERSION" "$CLUSTER"
  fi
}

pg_crash() {
  need_pg
  pg_exists || die "no cluster $VERSION/$CLUSTER: run scripts/faults-infra.sh up"
  as_root pg_ctlcluster "$VERSION" "$CLUSTER" restart -m immediate
  pg_wait
}

pg_stop() {
  need_pg
  pg_exists || die "no cluster $VERSION/$CLUSTER: run scripts/faults-infra.sh up"
  as_root pg_ctlcluster "$VERSION" "$CLUSTER" stop -m immediate || true
}

pg_start() {
  need_pg
  pg_exists || die "no cluster $VERSION/$CLUSTER: run scripts/faults-infra.sh up"
  pg_ready || as_root pg_ctlcluster "$VERSION" "$CLUSTER" start || pg_ready || true
  pg_wait
}

# --- Kafka -----------------------------------------------------------------------------

kafka_pid() {
  [ -f "$KAFKA_PID" ] || return 1
  local pid
  pid=$(cat "$KAFKA_PID")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

kafka_answers() { kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 3 >/dev/null 2>&1; }

java_opts() { JAVA_OPTS=(-Djava.awt.headless=true -cp "$KAFKA_HOME/lib/*"); }

kafka_start() {
  [ -f "$KAFKA_CONFIG" ] && [ -f "$KAFKA_DATA/meta.properties" ] ||
    die "no broker storage under $KAFKA_DATA: run scripts/faults-infra.sh up"
  if kafka_pid >/dev/null && kafka_answers; then return; fi
  if ! kafka_pid >/dev/null && port_open "$KAFKA_PORT"; then die "port $KAFKA_PORT is taken by something else"; fi
  if ! kafka_pid >/dev/null; then
    java_opts
    setsid nohup java -Xms128m -Xmx512m -server -XX:+UseG1GC -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.xml" \
      "${JAVA_OPTS[@]}" kafka.Kafka "$KAFKA_CONFIG" >>"$KAFKA_LOG" 2>&1 </dev/null &
    echo $! >"$KAFKA_PID"
  fi
  # Recovery after a SIGKILL takes a while (14–38 s measured).
  for _ in $(seq 1 360); do
    if port_open "$KAFKA_PORT" && kafka_answers; then return; fi
    kafka_pid >/dev/null || break
    sleep 0.25
  done
  tail -n 30 "$KAFKA_LOG" >&2 || true
  die "the fault test's broker did not answer on $KAFKA_PORT within 90 s (log: $KAFKA_LOG)"
}

kafka_kill() {
  local pid
  if pid=$(kafka_pid); then
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  rm -f "$KAFKA_PID"
}

kafka_up() {
  [ -f "$KAFKA_HOME/lib/.complete" ] || die "the Kafka jars are not under $KAFKA_HOME/lib: run scripts/infra.sh up"
  command -v java >/dev/null 2>&1 || die "java is not installed: run scripts/infra.sh up"
  command -v kcat >/dev/null 2>&1 || die "kcat is not installed: run scripts/infra.sh up"
  kafka_kill
  if port_open "$KAFKA_PORT"; then die "port $KAFKA_PORT is taken by something else"; fi
  if port_open "$CONTROLLER_PORT"; then die "port $CONTROLLER_PORT is taken by something else"; fi
  mkdir -p "$DIR"
  rm -rf "$KAFKA_DATA"
  mkdir -p "$KAFKA_DATA"
  : >"$KAFKA_LOG"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
    "$ROOT/scripts/kafka/server.properties.template" >"$KAFKA_CONFIG"
  [ -f "$KAFKA_HOME/log4j2.xml" ] || cp "$ROOT/scripts/kafka/log4j2.xml" "$KAFKA_HOME/"
  [ -f "$KAFKA_HOME/tools-log4j2.xml" ] || cp "$ROOT/scripts/kafka/tools-log4j2.xml" "$KAFKA_HOME/"
  local cluster_id
  # The storage tool reads an id starting with '-' as an option: letters first.
  cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | sed 's/^[-_]/A/')
  java_opts
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.xml" "${JAVA_OPTS[@]}" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONFIG" >/dev/null
  say "starting the fault test's broker on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  kafka_start
  say "Kafka ready on 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
  if kafka_pid >/dev/null; then say "stopping the fault test's broker"; fi
  kafka_kill
  rm -rf "$KAFKA_DATA"
}

status() {
  local ok=0
  need_pg
  if pg_exists && pg_ready; then say "PostgreSQL $VERSION/$CLUSTER: running on $PG_PORT"; else say "PostgreSQL $VERSION/$CLUSTER: not running"; ok=1; fi
  if kafka_answers; then say "Kafka: running on $KAFKA_PORT"; else say "Kafka: not running on $KAFKA_PORT"; ok=1; fi
  return $ok
}

case "${1:-}" in
  up) pg_up; kafka_up ;;
  down) kafka_down; pg_down ;;
  status) status ;;
  pg-crash) pg_crash ;;
  pg-stop) pg_stop ;;
  pg-start) pg_start ;;
  kafka-kill) kafka_kill ;;
  kafka-start) kafka_start ;;
  *)
    echo "usage: $0 up|down|status|pg-crash|pg-stop|pg-start|kafka-kill|kafka-start" >&2
    exit 2
    ;;
esac
