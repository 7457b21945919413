#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller,
# loopback only) for weir's integration tests and benchmarks.
#
# The broker jars come from Maven Central via `mvn` (see scripts/kafka/pom.xml);
# no Docker, no tarball downloads.
#
# Usage:
#   scripts/kafka.sh fetch            fetch jars into the cache (no-op when cached);
#                                     prints the libs dir on the last stdout line
#   scripts/kafka.sh start DIR        fetch if needed, start a fresh broker with its
#                                     state in DIR, wait until it serves requests;
#                                     prints 127.0.0.1:PORT on the last stdout line
#   scripts/kafka.sh stop DIR         stop the broker started in DIR (idempotent)
#   scripts/kafka.sh run CLASS ARGS.. run a Kafka main class (e.g.
#                                     org.apache.kafka.tools.ProducerPerformance)
#                                     with the fetched jars on the classpath
#
# Files written in DIR by `start`: server.properties, log4j2.properties,
# kafka.log (broker output), pid, bootstrap (127.0.0.1:PORT), data/ (log.dirs).
# DIR/data is wiped on every start: each start is a brand-new cluster.
#
# Environment:
#   WEIR_KAFKA_HOME           cache dir (default ~/.cache/weir/kafka-$KAFKA_VERSION)
#   JAVA_HOME                 JDK to use (default: `java` on PATH); Java 17+
#   MVN                       maven command (default: mvn); MAVEN_OPTS is honoured,
#                             e.g. MAVEN_OPTS=-Dmaven.repo.local=/path
#   WEIR_KAFKA_HEAP_OPTS      default: -Xms256m -Xmx1g
#   WEIR_KAFKA_JVM_OPTS       broker JVM flags (default: serial GC, see below)
#   WEIR_KAFKA_TOOL_OPTS      JVM flags for `run` (default: -Xmx512m)
#   WEIR_KAFKA_START_TIMEOUT  seconds to wait for readiness (default: 90)
set -euo pipefail

# Newest 4.x release for which every artifact we need is on Maven Central
# (kafka_2.13 4.4.0 is published but kafka-tools 4.4.0 is not).
readonly KAFKA_VERSION=4.3.1

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
readonly SCRIPT_DIR
readonly POM="$SCRIPT_DIR/kafka/pom.xml"
readonly LOG4J_CONF="$SCRIPT_DIR/kafka/log4j2.properties"
readonly KAFKA_HOME_DIR="${WEIR_KAFKA_HOME:-${HOME:?HOME is not set}/.cache/weir/kafka-$KAFKA_VERSION}"
readonly LIBS_DIR="$KAFKA_HOME_DIR/libs"
readonly MARKER="$KAFKA_HOME_DIR/.fetched"
readonly START_TIMEOUT="${WEIR_KAFKA_START_TIMEOUT:-90}"
readonly STOP_TIMEOUT=20
readonly MAX_START_ATTEMPTS=3

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '/^# Usage:/,/^# Files written/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

java_bin() {
  if [[ -n "${JAVA_HOME:-}" ]]; then
    [[ -x "$JAVA_HOME/bin/java" ]] || die "JAVA_HOME=$JAVA_HOME has no bin/java"
    printf '%s\n' "$JAVA_HOME/bin/java"
  else
    command -v java >/dev/null 2>&1 || die "java not found (install a JDK 17+ or set JAVA_HOME)"
    printf '%s\n' java
  fi
}

check_java_version() {
  local java=$1 line major
  line=$("$java" -version 2>&1 | head -n 1) || die "cannot run $java"
  # e.g. openjdk version "17.0.15" 2025-04-15 / java version "1.8.0_392"
  major=$(sed -E 's/^[^"]*"([0-9]+)(\.([0-9]+))?.*/\1 \3/' <<<"$line")
  if [[ "${major%% *}" == 1 ]]; then major=${major#* }; else major=${major%% *}; fi
  [[ "$major" =~ ^[0-9]+$ ]] || die "cannot parse java version from: $line"
  ((major >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17+, $java is: $line"
}

# Identifies the cache contents: Kafka version + the exact pom used.
fetch_stamp() {
  printf '%s %s\n' "$KAFKA_VERSION" "$(sha256sum "$POM" | cut -d ' ' -f 1)"
}

cache_complete() {
  [[ -f "$MARKER" && -d "$LIBS_DIR" ]] && [[ "$(cat "$MARKER")" == "$(fetch_stamp)" ]]
}

do_fetch() {
  if cache_complete; then
    return 0
  fi
  mkdir -p "$KAFKA_HOME_DIR"
  # Serialise concurrent fetches (parallel test runs) on a lock file. The
  # subshell keeps the lock fd away from everything started later (the broker).
  (
    exec 9>"$KAFKA_HOME_DIR/.lock"
    flock 9
    if cache_complete; then
      exit 0
    fi
    local mvn=${MVN:-mvn} tmp started
    command -v "$mvn" >/dev/null 2>&1 || die "maven ($mvn) not found"
    tmp="$KAFKA_HOME_DIR/libs.tmp.$$"
    rm -rf "$tmp" "$KAFKA_HOME_DIR/build"
    started=$SECONDS
    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR"
    # stdout of mvn goes to stderr: our stdout carries only the result line.
    # (mvn 3.8 -q still prints bare ANSI resets; strip them.)
    if ! "$mvn" -B -q -ntp -Dstyle.color=never -f "$POM" \
      -Dkafka.version="$KAFKA_VERSION" \
      -Dweir.kafka.libs="$tmp" \
      -Dweir.kafka.build="$KAFKA_HOME_DIR/build" \
      dependency:copy-dependencies 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
      rm -rf "$tmp" "$KAFKA_HOME_DIR/build"
      die "mvn dependency:copy-dependencies failed (see output above)"
    fi
    rm -rf "$KAFKA_HOME_DIR/build"
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] ||
      die "fetch produced no kafka_2.13-$KAFKA_VERSION.jar in $tmp"
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    fetch_stamp >"$MARKER.tmp"
    mv "$MARKER.tmp" "$MARKER"
    log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - started))s"
  )
}

cmd_fetch() {
  do_fetch
  printf '%s\n' "$LIBS_DIR"
}

cmd_run() {
  (($# >= 1)) || die "usage: kafka.sh run MAIN_CLASS [ARGS...]"
  do_fetch
  local java opts
  java=$(java_bin)
  # shellcheck disable=SC2206 # word splitting of the option string is intended
  opts=(${WEIR_KAFKA_TOOL_OPTS:--Xmx512m})
  # Tools log at ERROR to the console unless told otherwise (log4j2 default).
  exec "$java" "${opts[@]}" -cp "$LIBS_DIR/*" "$@"
}

# --- ports -------------------------------------------------------------------

# True if some socket (any state, IPv4 or IPv6) uses local port $1.
port_in_use() {
  local hex f
  hex=$(printf '%04X' "$1")
  for f in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "$f" ]] || continue
    if awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "$f"; then
      return 0
    fi
  done
  # Fallback for systems without /proc/net: anything listening?
  if [[ ! -r /proc/net/tcp ]] && (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    return 0
  fi
  return 1
}

# Prints a random free port below the usual ephemeral range (32768-60999), so
# outgoing connections are unlikely to grab it before the broker binds it.
# A bind race is still possible; start retries with new ports if it happens.
pick_port() {
  local exclude=${1:-0} p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if ((p != exclude)) && ! port_in_use "$p"; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  die "could not find a free TCP port"
}

port_accepts() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- broker process ----------------------------------------------------------

# True if $1 is a live process that is a Kafka broker (guards against pid reuse).
is_broker_pid() {
  local pid=$1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  return 0
}

read_pid() {
  local dir=$1 pid=""
  if [[ -f "$dir/pid" ]]; then
    pid=$(tr -d '[:space:]' <"$dir/pid")
  fi
  printf '%s\n' "$pid"
}

# Base64url, unpadded, 22 chars: the format of org.apache.kafka.common.Uuid.
random_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    # Uuid.randomUuid() never returns ids starting with '-' (they look like CLI flags).
    [[ "$id" == -* ]] || break
  done
  printf '%s\n' "$id"
}

write_server_properties() {
  local dir=$1 bport=$2 cport=$3
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/kafka.sh for a single-node test cluster (KRaft, combined mode).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
# weir creates its topics itself; auto-creation would hide bugs.
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=1
log.segment.bytes=67108864
EOF
}

tail_log() {
  local log_file=$1
  if [[ -f "$log_file" ]]; then
    log "---- last lines of $log_file ----"
    tail -n 60 "$log_file" >&2
    log "---- end of $log_file ----"
  fi
}

# Sends TERM, waits up to STOP_TIMEOUT seconds, then KILL.
terminate() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "broker pid $pid did not stop within ${STOP_TIMEOUT}s; sending KILL"
  kill -KILL "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 0
}

# One start attempt. Returns 0 when ready, 3 when a port was taken (caller
# retries with new ports), exits non-zero on any other failure.
start_attempt() {
  local dir=$1 java=$2 bport cport cluster_id pid deadline log_file="$1/kafka.log"
  bport=$(pick_port)
  cport=$(pick_port "$bport")
  rm -rf "$dir/data" "$dir/pid" "$dir/bootstrap"
  mkdir -p "$dir/data"
  write_server_properties "$dir" "$bport" "$cport"
  cp "$LOG4J_CONF" "$dir/log4j2.properties"

  cluster_id=$(random_cluster_id)
  if ! "$java" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$LIBS_DIR/*" kafka.tools.StorageTool \
    format --standalone -t "$cluster_id" -c "$dir/server.properties" \
    >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting storage in $dir/data failed"
  fi

  local heap_opts jvm_opts
  # shellcheck disable=SC2206 # word splitting of the option strings is intended
  heap_opts=(${WEIR_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g})
  # Serial GC: fewest threads and fastest start on a small shared machine; the
  # test broker's heap stays small, so pauses are short.
  # shellcheck disable=SC2206
  jvm_opts=(${WEIR_KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:MaxMetaspaceSize=256m -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData})

  local launcher=()
  if command -v setsid >/dev/null 2>&1; then
    # Own session: Ctrl-C on the test run does not take the broker down
    # half-way; `stop` does. setsid execs in place, so $! is the JVM's pid.
    launcher=(setsid)
  fi
  "${launcher[@]}" "$java" "${heap_opts[@]}" "${jvm_opts[@]}" \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -Dlog4j2.shutdownHookEnabled=false \
    -Dkafka.logs.dir="$dir" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$dir/server.properties" \
    </dev/null >"$log_file" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$dir/pid"

  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
      if grep -q 'Address already in use' "$log_file" 2>/dev/null; then
        log "port $bport or $cport was taken while starting; retrying with other ports"
        return 3
      fi
      tail_log "$log_file"
      die "broker exited during startup (log: $log_file)"
    fi
    if grep -q 'Kafka Server started' "$log_file" 2>/dev/null && port_accepts "$bport"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$log_file"
      log "broker not ready after ${START_TIMEOUT}s; killing pid $pid"
      terminate "$pid"
      rm -f "$dir/pid"
      die "broker start timed out (log: $log_file)"
    fi
    sleep 0.2
  done
  printf '127.0.0.1:%s\n' "$bport" >"$dir/bootstrap"
  return 0
}

cmd_start() {
  (($# == 1)) || die "usage: kafka.sh start DIR"
  local dir=$1 java pid started attempt rc
  mkdir -p "$dir"
  dir=$(cd -- "$dir" && pwd -P)

  pid=$(read_pid "$dir")
  if [[ -n "$pid" ]] && is_broker_pid "$pid" && [[ -f "$dir/bootstrap" ]]; then
    local bootstrap
    bootstrap=$(<"$dir/bootstrap")
    if port_accepts "${bootstrap##*:}"; then
      log "broker already running in $dir (pid $pid)"
      printf '%s\n' "$bootstrap"
      return 0
    fi
  fi
  if [[ -n "$pid" ]] && is_broker_pid "$pid"; then
    log "stopping stale broker pid $pid in $dir"
    terminate "$pid"
  fi

  do_fetch
  java=$(java_bin)
  check_java_version "$java"

  started=$SECONDS
  for ((attempt = 1; ; attempt++)); do
    rc=0
    start_attempt "$dir" "$java" || rc=$?
    ((rc == 0)) && break
    ((rc == 3 && attempt < MAX_START_ATTEMPTS)) || die "could not start broker in $dir"
  done
  log "broker pid $(read_pid "$dir") ready on $(<"$dir/bootstrap") after $((SECONDS - started))s (log: $dir/kafka.log)"
  cat "$dir/bootstrap"
}

cmd_stop() {
  (($# == 1)) || die "usage: kafka.sh stop DIR"
  local dir=$1 pid
  if [[ ! -d "$dir" ]]; then
    return 0
  fi
  pid=$(read_pid "$dir")
  if [[ -n "$pid" ]] && is_broker_pid "$pid"; then
    terminate "$pid"
    log "stopped broker pid $pid"
  fi
  rm -f "$dir/pid"
}

main() {
  (($# >= 1)) || usage
  local cmd=$1
  shift
  case "$cmd" in
    fetch) (($# == 0)) || usage; cmd_fetch ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    run) cmd_run "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
