#!/usr/bin/env bash
# A local multi-node cluster for the fault suite (tests/chaos, docs/reliability.md), beside the single-node
# stack of stack.sh (which keeps running for everybody else: nothing here uses its addresses or data):
#
#   cassandra  3 nodes, real addresses 127.0.0.2-4 (CQL 19042, storage 17000), fixed initial tokens,
#              auto_bootstrap false (they start together), every node a seed. Each node ADVERTISES
#              127.0.1.2-4 (broadcast_address, broadcast_rpc_address), where faultproxy.py listens, so every
#              byte from a driver or a peer passes through the proxy that the tests stall or slow.
#   kafka      3 KRaft nodes (broker + controller each) on 127.0.0.1:29091-29093 (controllers 29191-29193),
#              default RF 3, min ISR 2 (the services' producers use acks=all).
#   redis      primary 127.0.0.1:26379, replica 26380, 3 Sentinels 26381-26383 (quorum 2, `redis-server
#              --sentinel` of Debian's redis-server package); the services connect to 127.0.0.1:26300, a
#              faultproxy route that asks Sentinel for the current master on every new connection.
#   faultproxy control port 127.0.0.1:26399 (see faultproxy.py).
#
#   cluster.sh up | down [--purge] | status | env | kill COMPONENT | start COMPONENT
#     COMPONENT: cassandra1..3 kafka1..3 redis-primary redis-replica sentinel1..3 proxy
#
# The services' variables (LOCAL_QUORUM, RF 3) are written to $INPLAY_CLUSTER_DIR/env (default
# <repo>/.stack-cluster/env). Heaps: INPLAY_CLUSTER_CASSANDRA_HEAP (512M), INPLAY_CLUSTER_KAFKA_HEAP (256m).
# Jars come from the same cache as stack.sh (stack.sh fetches them: `stack.sh up` once on a cold machine).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="$(realpath -m "${INPLAY_CACHE:-$HOME/.cache/inplay}")"
DIR="$(realpath -m "${INPLAY_CLUSTER_DIR:-$ROOT/.stack-cluster}")"
PYTHON="${INPLAY_PYTHON:-python3}"
CASSANDRA_VERSION="${INPLAY_CASSANDRA_VERSION:-5.0.9}"
KAFKA_VERSION="${INPLAY_KAFKA_VERSION:-4.3.1}"
CASSANDRA_HEAP="${INPLAY_CLUSTER_CASSANDRA_HEAP:-512M}"
KAFKA_HEAP="${INPLAY_CLUSTER_KAFKA_HEAP:-256m}"
TIMEOUT="${INPLAY_STACK_TIMEOUT:-240}"
JAVA_HOME="${INPLAY_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
JAVA="$JAVA_HOME/bin/java"

CQL_PORT=19042
STORAGE_PORT=17000
TOKENS=(-9223372036854775808 -3074457345618258603 3074457345618258602)
KAFKA_PORTS=(29091 29092 29093)
KAFKA_CONTROLLER_PORTS=(29191 29192 29193)
REDIS_PRIMARY_PORT=26379
REDIS_REPLICA_PORT=26380
SENTINEL_PORTS=(26381 26382 26383)
REDIS_PROXY_PORT=26300
CONTROL_PORT=26399
MASTER=inplay

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
rss_mb() { awk '/^VmRSS/ {printf "%d", $2 / 1024; f = 1} END {if (!f) printf "0"}' "/proc/${1:-0}/status" 2>/dev/null || echo 0; }
cass_ip() { echo "127.0.0.$(($1 + 1))"; }   # the node's own address
cass_vip() { echo "127.0.1.$(($1 + 1))"; }  # the address it advertises (its proxy)
probe() { PROBE_HOST="$1" "$PYTHON" "$HERE/probe.py" "$2" "$3" 2>/dev/null; }
pidfile() { echo "$DIR/pids/$1.pid"; }
pid_of() { # the pid of a component started from $DIR, if it still runs
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  # Started from $DIR: every component is launched with its working directory there (redis moves into its --dir).
  if kill -0 "$pid" 2>/dev/null && [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$DIR"* ]]; then echo "$pid"; fi
}
launch() { # launch NAME CMD...: detached, own session, output to logs/NAME.log, pid in pids/NAME.pid
  local name="$1"
  shift
  mkdir -p "$DIR/logs" "$DIR/pids"
  [ -z "$(pid_of "$name")" ] || return 0
  rm -f "$(pidfile "$name")" # a stale one (a killed process) would pass for the new one's
  # shellcheck disable=SC2016
  # exec: no subshell stays behind holding the caller's stdout/stderr (a `cluster.sh up | tail` would hang).
  (cd "$DIR" && exec nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pidfile "$name")" "$@") \
    </dev/null >>"$DIR/logs/$name.log" 2>&1 9>&- &
  for _ in $(seq 1 100); do [ -s "$(pidfile "$name")" ] && return; sleep 0.05; done
  die "$name could not be launched"
}

# ------------------------------------------------------------------------------------------------- proxy
proxy_start() {
  local -a args=(--control "127.0.0.1:$CONTROL_PORT")
  local n
  for n in 1 2 3; do
    args+=(--route "cql$n=cassandra$n@$(cass_vip "$n"):$CQL_PORT->$(cass_ip "$n"):$CQL_PORT")
    args+=(--route "storage$n=cassandra$n@$(cass_vip "$n"):$STORAGE_PORT->$(cass_ip "$n"):$STORAGE_PORT")
    args+=(--source-pidfile "cassandra$n=$(pidfile "cassandra$n")")
  done
  args+=(--route "redis=redis@127.0.0.1:$REDIS_PROXY_PORT->sentinel:127.0.0.1:${SENTINEL_PORTS[0]}:$MASTER")
  launch proxy "$PYTHON" "$HERE/faultproxy.py" "${args[@]}"
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$CONTROL_PORT") 2>/dev/null && return; sleep 0.1; done
  die "faultproxy did not open its control port (log: $DIR/logs/proxy.log)"
}

# --------------------------------------------------------------------------------------------- cassandra
cassandra_start() {
  local n="$1"
  local d="$DIR/cassandra$n" lib="$CACHE/cassandra-$CASSANDRA_VERSION/lib" jamm ip vip
  [ -f "$lib/.complete" ] || die "no Cassandra jars in $lib: run scripts/stack/stack.sh up cassandra once"
  ip=$(cass_ip "$n")
  vip=$(cass_vip "$n")
  mkdir -p "$d"/{data,commitlog,saved_caches,hints,cdc_raw,logs,triggers}
  # No -Dcassandra.unsafesystem here (stack.sh uses it): a node killed with -9 must find its schema again.
  # The single-node template, made a cluster member: own addresses, advertised proxy addresses, 3 seeds.
  sed -e "s#@DIR@#$d#g" -e "s#@PORT@#$CQL_PORT#g" -e "s#@STORAGE_PORT@#$STORAGE_PORT#g" \
    -e "s#^cluster_name: .*#cluster_name: inplay-cluster#" \
    -e "s#^listen_address: .*#listen_address: $ip\nbroadcast_address: $vip\nauto_bootstrap: false#" \
    -e "s#^rpc_address: .*#rpc_address: $ip\nbroadcast_rpc_address: $vip#" \
    -e "s#- seeds: .*#- seeds: \"$(cass_vip 1):$STORAGE_PORT,$(cass_vip 2):$STORAGE_PORT,$(cass_vip 3):$STORAGE_PORT\"#" \
    -e "s#^default_keyspace_rf: .*#default_keyspace_rf: 3#" \
    "$HERE/cassandra/cassandra.yaml.in" >"$d/cassandra.yaml"
  jamm=$(find "$lib" -name 'jamm-*.jar' | head -1)
  local -a jvm
  mapfile -t jvm < <(grep -E '^-' "$HERE/cassandra/jvm17-server.options")
  launch "cassandra$n" "$JAVA" "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" "-XX:HeapDumpPath=$d" "${jvm[@]}" \
    "-javaagent:$jamm" "-Dcassandra.config=file://$d/cassandra.yaml" "-Dcassandra.storagedir=$d" \
    "-Dcassandra.logdir=$d/logs" "-Dcassandra.triggers_dir=$d/triggers" \
    "-Dlogback.configurationFile=$HERE/cassandra/logback.xml" -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 "-Dcassandra.initial_token=${TOKENS[$((n - 1))]}" \
    -Dcassandra.superuser_setup_delay_ms=0 -Dcassandra.ring_delay_ms=1000 \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
}
cassandra_ready() { probe "$(cass_vip "$1")" cql "$CQL_PORT" >/dev/null; }

# ------------------------------------------------------------------------------------------------- kafka
kafka_jvm() {
  KAFKA_JVM=("-Xms$1" "-Xmx$1" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent
    -XX:+PerfDisableSharedMem -Djava.awt.headless=true "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml"
    "-Dkafka.logs.dir=$DIR/kafka$2/logs" -cp "$CACHE/kafka-$KAFKA_VERSION/lib/*")
}
kafka_config() {
  local n="$1" voters="" i
  local d="$DIR/kafka$n"
  for i in 1 2 3; do voters+="${voters:+,}$i@127.0.0.1:${KAFKA_CONTROLLER_PORTS[$((i - 1))]}"; done
  mkdir -p "$d/data" "$d/logs"
  # The single-node template, with node id, ports, a static 3-voter quorum and RF 3 / min ISR 2 everywhere.
  sed -e "s#@DIR@#$d#g" -e "s#@PORT@#${KAFKA_PORTS[$((n - 1))]}#g" \
    -e "s#@CONTROLLER_PORT@#${KAFKA_CONTROLLER_PORTS[$((n - 1))]}#g" \
    -e "s#^node.id=.*#node.id=$n#" -e "s#^controller.quorum.bootstrap.servers=.*#controller.quorum.voters=$voters#" \
    -e "s#replication.factor=1#replication.factor=3#" -e "s#min.isr=1#min.isr=2#" \
    -e "s#^min.insync.replicas=.*#min.insync.replicas=2#" \
    "$HERE/kafka/server.properties.in" >"$d/server.properties"
  printf 'unclean.leader.election.enable=false\n' >>"$d/server.properties"
}
kafka_format() {
  [ -f "$CACHE/kafka-$KAFKA_VERSION/lib/.complete" ] || die "no Kafka jars: run scripts/stack/stack.sh up kafka once"
  local n cluster_id
  [ -f "$DIR/kafka1/data/meta.properties" ] && return 0
  cluster_id=$("$PYTHON" -c 'import base64, uuid
while (s := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"): pass
print(s)')
  for n in 1 2 3; do
    kafka_config "$n"
    kafka_jvm 128m "$n"
    "$JAVA" "${KAFKA_JVM[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$DIR/kafka$n/server.properties" </dev/null >>"$DIR/logs/kafka$n.log" 2>&1 || die "kafka$n format (log: $DIR/logs/kafka$n.log)"
  done
  log "kafka storage formatted (cluster $cluster_id)"
}
kafka_start() {
  kafka_config "$1"
  kafka_jvm "$KAFKA_HEAP" "$1"
  launch "kafka$1" "$JAVA" "${KAFKA_JVM[@]}" kafka.Kafka "$DIR/kafka$1/server.properties"
}
kafka_ready() { probe 127.0.0.1 kafka "${KAFKA_PORTS[$(($1 - 1))]}" | grep -q 'brokers=3'; }

# ------------------------------------------------------------------------------------------------- redis
redis_start() { # redis_start NAME PORT [replicaof-port]
  local name="$1" port="$2"
  local d="$DIR/$name"
  mkdir -p "$d"
  local -a extra=()
  [ -z "${3:-}" ] || extra=(--replicaof 127.0.0.1 "$3")
  # No persistence (as the single-node stack): a killed primary restarts empty and Sentinel makes it a
  # replica of the promoted one, which then resyncs it.
  launch "$name" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" \
    --maxclients 10000 --replica-announce-ip 127.0.0.1 "${extra[@]}"
}
sentinel_start() {
  local n="$1"
  local d="$DIR/sentinel$n"
  mkdir -p "$d"
  if [ ! -f "$d/sentinel.conf" ]; then
    cat >"$d/sentinel.conf" <<EOF
port ${SENTINEL_PORTS[$((n - 1))]}
bind 127.0.0.1
dir $d
sentinel announce-ip 127.0.0.1
sentinel monitor $MASTER 127.0.0.1 $REDIS_PRIMARY_PORT 2
sentinel down-after-milliseconds $MASTER 2000
sentinel failover-timeout $MASTER 10000
sentinel parallel-syncs $MASTER 1
EOF
  fi
  launch "sentinel$n" redis-server "$d/sentinel.conf" --sentinel
}
redis_ready() { probe 127.0.0.1 redis "$1" >/dev/null; }

# ---------------------------------------------------------------------------------------------- commands
env_lines() {
  cat <<EOF
export INPLAY_CLUSTER=1
export INPLAY_REDIS_URL=redis://127.0.0.1:$REDIS_PROXY_PORT/0
# Every money write waits for the replica (Redis WAIT): a Sentinel failover loses no acknowledged debit.
export INPLAY_REDIS_WAIT_REPLICAS=1
export INPLAY_CASSANDRA_HOSTS=$(cass_vip 1),$(cass_vip 2),$(cass_vip 3)
export INPLAY_CASSANDRA_PORT=$CQL_PORT
export INPLAY_CASSANDRA_CONSISTENCY=LOCAL_QUORUM
export INPLAY_CASSANDRA_REPLICATION="{'class': 'SimpleStrategy', 'replication_factor': 3}"
export INPLAY_KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORTS[0]},127.0.0.1:${KAFKA_PORTS[1]},127.0.0.1:${KAFKA_PORTS[2]}
export INPLAY_CLUSTER_DIR=$DIR
export INPLAY_CLUSTER_CONTROL=127.0.0.1:$CONTROL_PORT
export INPLAY_CLUSTER_SENTINELS=127.0.0.1:${SENTINEL_PORTS[0]},127.0.0.1:${SENTINEL_PORTS[1]},127.0.0.1:${SENTINEL_PORTS[2]}
export INPLAY_CLUSTER_REDIS_MASTER=$MASTER
EOF
}

start_component() {
  case "$1" in
    proxy) proxy_start ;;
    cassandra[1-3]) cassandra_start "${1#cassandra}" ;;
    kafka[1-3]) kafka_format; kafka_start "${1#kafka}" ;;
    redis-primary) redis_start redis-primary "$REDIS_PRIMARY_PORT" ;;
    redis-replica) redis_start redis-replica "$REDIS_REPLICA_PORT" "$REDIS_PRIMARY_PORT" ;;
    sentinel[1-3]) sentinel_start "${1#sentinel}" ;;
    *) die "unknown component $1" ;;
  esac
}
ready() {
  case "$1" in
    cassandra[1-3]) cassandra_ready "${1#cassandra}" ;;
    kafka[1-3]) kafka_ready "${1#kafka}" ;;
    redis-primary) redis_ready "$REDIS_PRIMARY_PORT" ;;
    redis-replica) redis_ready "$REDIS_REPLICA_PORT" ;;
    sentinel[1-3]) redis_ready "${SENTINEL_PORTS[$((${1#sentinel} - 1))]}" ;;
    proxy) true ;;
  esac
}
ALL=(proxy redis-primary redis-replica sentinel1 sentinel2 sentinel3 kafka1 kafka2 kafka3 cassandra1 cassandra2 cassandra3)

wait_ready() {
  local t0="$1" c pid
  shift
  local -a pending=("$@")
  while [ ${#pending[@]} -gt 0 ]; do
    local -a still=()
    for c in "${pending[@]}"; do
      pid=$(pid_of "$c")
      [ -n "$pid" ] || die "$c exited during startup (log: $DIR/logs/$c.log: $(tail -3 "$DIR/logs/$c.log" 2>/dev/null))"
      if ready "$c"; then log "$c ready after $(since "$t0") s (pid $pid, RSS $(rss_mb "$pid") MB)"; else still+=("$c"); fi
    done
    pending=("${still[@]+"${still[@]}"}")
    if [ ${#pending[@]} -gt 0 ]; then
      awk -v a="$t0" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN {exit !(b - a > t)}' && die "not ready after $TIMEOUT s: ${pending[*]}"
      sleep 0.5
    fi
  done
}

total_rss() { local c t=0; for c in "${ALL[@]}"; do t=$((t + $(rss_mb "$(pid_of "$c")"))); done; echo "$t"; }

cmd_up() {
  local t0 c
  t0=$(now)
  mkdir -p "$DIR/logs" "$DIR/pids"
  for c in "${ALL[@]}"; do start_component "$c"; done
  wait_ready "$t0" "${ALL[@]}"
  env_lines >"$DIR/env"
  log "cluster ready in $(since "$t0") s; RSS $(total_rss) MB; variables in $DIR/env"
}

cmd_kill() { # kill -9 one component (the fault suite's kills go through here)
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] || { log "$1 is not running"; return 0; }
  kill -KILL "$pid"
  log "$1 killed (pid $pid)"
}

cmd_down() {
  local c pid
  for c in "${ALL[@]}"; do
    pid=$(pid_of "$c")
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
  done
  for c in "${ALL[@]}"; do
    pid=$(pid_of "$c")
    [ -n "$pid" ] || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$DIR"/pids/*.pid "$DIR/env" # the fault suite refuses to run without the env file
  if [ "${1:-}" = --purge ]; then rm -rf "${DIR:?}"; log "stopped and purged $DIR"; else log "stopped"; fi
}

cmd_status() {
  local c pid rc=0
  for c in "${ALL[@]}"; do
    pid=$(pid_of "$c")
    if [ -z "$pid" ]; then printf '%-14s down\n' "$c"; rc=3
    elif ready "$c"; then printf '%-14s up    pid %-8s RSS %5s MB\n' "$c" "$pid" "$(rss_mb "$pid")"
    else printf '%-14s runs, not ready, pid %s\n' "$c" "$pid"; rc=3; fi
  done
  printf 'total RSS %s MB\n' "$(total_rss)"
  return $rc
}

cmd="${1:-status}"
shift || true
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down "$@" ;;
  status) cmd_status ;;
  env) env_lines ;;
  kill) cmd_kill "$1" ;;
  start) t0=$(now); start_component "$1"; wait_ready "$t0" "$1" ;;
  pid) pid_of "$1" ;;
  *) die "unknown command $cmd (up|down [--purge]|status|env|kill C|start C|pid C)" ;;
esac
