# Helpers shared by bench/run.sh and bench/profile.sh (sourced, not run): tools, free
# loopback ports, the reference services, the gateway with a generated configuration,
# Redis, and clean-up of every process started here (by PID, on exit).
# shellcheck shell=bash

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
elapsed_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }'; }

# Installs Debian packages that are missing (the bench runs as root or with sudo).
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing $* (Debian packages)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_wrk() { command -v wrk >/dev/null 2>&1 || apt_install wrk; }

# Binaries of the release build (cargo's target dir, or CARGO_TARGET_DIR).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/sms-gateway
# The reference services' binary (BENCH_SERVICES_BIN: A/B runs of two gateway builds
# against the same services).
SVC_BIN=${BENCH_SERVICES_BIN:-$BIN}
LOAD=$TARGET_DIR/release/grpc_load
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/sms-bench.XXXXXX)
PIDS=()

stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

forget_pid() {
  local keep=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local status=$? pid log
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$status" -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -s "$log" ] && { echo "--- last lines of $(basename "$log"):" >&2; tail -5 "$log" >&2; }
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A base port with `count` free ports after it, below the ephemeral range.
free_base() {
  local count=$1 base port used
  used=$(ss -Htan | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
  for _ in $(seq 200); do
    base=$((20000 + RANDOM % 12000))
    for ((port = base; port < base + count; port++)); do
      grep -qx "$port" <<<"$used" && continue 2
    done
    echo "$base"
    return 0
  done
  echo "no free ports" >&2
  return 1
}

# Waits until 127.0.0.1:$1 accepts connections; gives up early when process $2 exits.
wait_tcp() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null && break
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# utime and stime (clock ticks) of a process, all threads.
cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo "${12} ${13}"
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# Context switches (voluntary and involuntary) of a process so far, all its threads.
ctx_switches() {
  cat "/proc/$1"/task/*/status 2>/dev/null |
    awk '/^(nonv|v)oluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

SVC_PID="" SVC_BASE="" GW_PID="" GW_PORT="" REDIS_PID="" REDIS_PORT=""

# Another process may take a free port between the check and the bind: try again
# elsewhere.
start_services() {
  for _ in 1 2 3; do
    SVC_BASE=$(free_base 5)
    "$SVC_BIN" services --listen-base "$SVC_BASE" >>"$WORK/services.log" 2>&1 &
    SVC_PID=$!
    PIDS+=("$SVC_PID")
    wait_tcp $((SVC_BASE + 2)) "$SVC_PID" && return 0
    stop_services
    log "the reference services did not start on ports $SVC_BASE.. (trying others)"
  done
  return 1
}

stop_services() {
  if [ -n "$SVC_PID" ]; then
    stop_pid "$SVC_PID"
    forget_pid "$SVC_PID"
  fi
  SVC_PID=""
}

# The gateway's configuration: the base, plus each optional fragment that this build's
# `check-config` accepts (sections still being built are left out; callers report
# which were applied).
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
base_config() {
  local port=$1 svc=$2 service i=0
  printf 'listen = "127.0.0.1:%s"\n[jwt]\nsecret = "%s"\n[log]\nformat = "json"\nlevel = "%s"\n' \
    "$port" "$SECRET" "$LOG_LEVEL"
  for service in auth club outing schedule announcement; do
    printf '[upstream.services.%s]\naddresses = ["127.0.0.1:%s"]\n' "$service" $((svc + i))
    i=$((i + 1))
  done
}

# Fragments. The guard counts every request but never blocks the load generator.
FRAG_GUARD_OPEN=$'[guard.ip]\nlimit = 4000000000\n[guard.services]\nper_second = 1000000\nburst = 1000000\n'
FRAG_CACHE_OFF=$'[cache]\nenabled = false\n'
FRAG_CACHE_ON=$'[cache]\nenabled = true\n'
# The admin listener (where a build has one, /metrics lives there): on a free port of
# its own, never the default shared by every gateway on the machine.
frag_admin() { printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$(free_base 1)"; }
frag_redis() { printf '[redis]\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"; }

# Writes the config to $1 and prints the names of the fragments it holds.
write_config() {
  local file=$1 port=$2 svc=$3
  shift 3
  base_config "$port" "$svc" >"$file"
  local name text applied=()
  for name in "$@"; do
    case $name in
      guard) text=$FRAG_GUARD_OPEN ;;
      cache-off) text=$FRAG_CACHE_OFF ;;
      cache-on) text=$FRAG_CACHE_ON ;;
      redis) text=$(frag_redis) ;;
      admin) text=$(frag_admin) ;;
      # Traces on at ratio BENCH_TRACING, exported to a port where nothing listens:
      # the cost of the request path (spans, the outcome decision), not of the export.
      tracing) [ -n "${BENCH_TRACING:-}" ] || continue
        text=$(printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s"\nsampling_ratio = %s\n' \
          "$(free_base 1)" "$BENCH_TRACING") ;;
      current-thread) text=$'[runtime]\nflavor = "current_thread"\n' ;;
      workers) [ -n "${BENCH_WORKERS:-}" ] || continue
        if [ "$BENCH_WORKERS" = current ]; then
          text=$'[runtime]\nflavor = "current_thread"\n'
        elif [ "$BENCH_WORKERS" = multi ]; then
          text=$'[runtime]\nflavor = "multi_thread"\n'
        else
          text=$(printf '[runtime]\nworker_threads = %s\n' "$BENCH_WORKERS")
        fi ;;
      *) continue ;;
    esac
    cp "$file" "$file.try"
    printf '%s\n' "$text" >>"$file.try"
    if "$BIN" check-config --config "$file.try" >/dev/null 2>&1; then
      mv "$file.try" "$file"
      applied+=("$name")
    else
      rm -f "$file.try"
    fi
  done
  echo "${applied[*]:-}"
}

# Starts the gateway on $GW_PORT with config $1; the rest of the arguments, if any, is
# a command to run it under (e.g. valgrind), which may need more time to start.
# With GW_SLOW_STDOUT=1 the gateway's stdout (its log lines) goes to a reader that takes
# at most 400 KB/s, like a slow container log driver.
slow_reader() {
  python3 -c 'import sys, time
while sys.stdin.buffer.read1(4096):
    time.sleep(0.01)'
}
start_gateway() {
  local config=$1 tries=200
  shift
  [ $# -gt 0 ] && tries=1200
  for _ in 1 2 3; do
    if [ "${GW_SLOW_STDOUT:-0}" = 1 ]; then
      "$@" "$BIN" serve --config "$config" 2>>"$WORK/gateway.log" > >(slow_reader) &
    else
      # Log lines go to a file that is emptied after each run.
      "$@" "$BIN" serve --config "$config" >>"$WORK/gateway.log" 2>&1 &
    fi
    GW_PID=$!
    PIDS+=("$GW_PID")
    for _ in $(seq "$tries"); do
      curl -sf "http://127.0.0.1:$GW_PORT/ping" >/dev/null 2>&1 && return 0
      kill -0 "$GW_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -0 "$GW_PID" 2>/dev/null && break # alive but not answering: give up
    # It exited, most likely because its port was taken meanwhile: move it.
    forget_pid "$GW_PID"
    GW_PORT=$(free_base 1)
    sed -i "s/^listen = .*/listen = \"127.0.0.1:$GW_PORT\"/" "$config"
    log "the gateway did not start (trying port $GW_PORT)"
  done
  echo "the gateway did not start; its log:" >&2
  tail -20 "$WORK/gateway.log" >&2
  return 1
}

stop_gateway() {
  if [ -n "$GW_PID" ]; then
    stop_pid "$GW_PID"
    forget_pid "$GW_PID"
  fi
  GW_PID=""
  # Keep the end of the log (for errors), not the millions of request lines.
  if [ -f "$WORK/gateway.log" ]; then
    tail -c 65536 "$WORK/gateway.log" >"$WORK/gateway.log.tail"
    mv "$WORK/gateway.log.tail" "$WORK/gateway.log"
  fi
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || return 1
  REDIS_PORT=$(free_base 1)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_tcp "$REDIS_PORT" "$REDIS_PID"
}

READ_PATH=/v1/outings/uuid/outing-000000000002 # reference::outing::APPROVED_OUTING
STUDENT=student-000000000001                   # reference::seed::STUDENT_UUID

# Runs wrk for $1 seconds at $2 req/s (0: as fast as it can) against URL $4, requests of
# kind $KIND with $TOKEN, writes starting at Unix time $3; prints its WRK row without the
# tag.
WRK_THREADS=${WRK_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
run_wrk() {
  local seconds=$1 rate=$2 base=$3 url=$4
  BENCH_KIND=$KIND BENCH_TOKEN=$TOKEN BENCH_RATE=$rate BENCH_THREADS=$WRK_THREADS BENCH_WRITE_BASE=$base \
    wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${seconds}s" --timeout 5s \
    -s "$ROOT/bench/wrk.lua" "$url" | awk -F'\t' '$1 == "WRK" { $1 = ""; sub(/^\t/, ""); print }' OFS='\t'
}

# Sends $1 sequential requests of the uncached read over one kept-alive connection (curl
# with a config file); prints how many answered 200.
sequential() {
  local config=$WORK/curl.cfg
  {
    echo "header = \"Authorization: Bearer $TOKEN\""
    for _ in $(seq "$1"); do
      echo "url = \"http://127.0.0.1:$GW_PORT$READ_PATH\""
      echo 'output = "/dev/null"'
    done
  } >"$config"
  curl -s --max-time 600 -K "$config" -w '%{http_code}\n' | grep -c '^200$' || true
}

# A curl config for $2 sequential requests of kind $1 (get | write | login) to path $3
# with token $4, over one kept-alive connection (curl reuses it across `next`); writes
# start at Unix time $5, 10 s apart, so none overlap.
curl_config() {
  local kind=$1 count=$2 path=$3 token=$4 base=${5:-2500000000} i
  for ((i = 0; i < count; i++)); do
    [ "$i" -gt 0 ] && echo 'next'
    echo 'silent'
    echo 'max-time = 60'
    echo 'write-out = "%{http_code}\n"'
    [ -n "$token" ] && echo "header = \"Authorization: Bearer $token\""
    case $kind in
      write) echo 'header = "Content-Type: application/json"'
        printf 'data = "{\\"start_time\\":%d,\\"end_time\\":%d,\\"place\\":\\"서점\\",\\"reason\\":\\"교재 구입\\",\\"situation\\":\\"normal\\"}"\n' \
          $((base + i * 10)) $((base + i * 10 + 5)) ;;
      login) echo 'header = "Content-Type: application/json"'
        echo 'data = "{\"student_id\":\"demostudent\",\"student_pw\":\"demo-student-pw\"}"' ;;
    esac
    echo "url = \"http://127.0.0.1:$GW_PORT$path\""
    echo 'output = "/dev/null"'
  done
}

# Sends the requests of a curl config; prints how many answered 2xx.
send_sequential() {
  curl -K "$1" | grep -c '^2' || true
}

# Instructions and allocator calls of the gateway (user space, exact: callgrind) for
# $3 sequential requests of kind $1 to path $2 with token $4 after $5 unrecorded ones;
# the gateway must have been started under callgrind by start_gateway with
# `callgrind_command $WORK/cg.out`. Prints "<requests> <instructions/request>
# <allocations/request> <reallocations/request>" after stopping the gateway.
callgrind_command() {
  echo valgrind --tool=callgrind --instr-atstart=no --compress-strings=no --compress-pos=no \
    "--callgrind-out-file=$1"
}

# Fresh services and a gateway under callgrind (config fragments $4...) for $3 sequential
# requests of kind $1 to path $2; sets COUNTS to "<requests> <instructions/request>
# <allocations/request> <reallocations/request>". Runs in the calling shell, so every
# process it starts is in PIDS (and stopped on exit) even if it fails half-way.
callgrind_counts() {
  local kind=$1 path=$2 requests=$3 cfg=$WORK/callgrind.toml
  shift 3
  start_services
  GW_PORT=$(free_base 1)
  write_config "$cfg" "$GW_PORT" "$SVC_BASE" "$@" >/dev/null
  rm -f "$WORK/cg.out"
  # shellcheck disable=SC2046
  start_gateway "$cfg" $(callgrind_command "$WORK/cg.out")
  TOKEN=""
  [ "$kind" != login ] && TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$cfg")
  COUNTS=$(callgrind_measure "$kind" "$path" "$requests" "$TOKEN" 50 "$WORK/cg.out")
  stop_services
}
callgrind_measure() {
  local kind=$1 path=$2 count=$3 token=$4 warm=$5 out=$6 answered
  curl_config "$kind" "$warm" "$path" "$token" 2400000000 >"$WORK/warm.cfg"
  curl_config "$kind" "$count" "$path" "$token" 2500000000 >"$WORK/measure.cfg"
  send_sequential "$WORK/warm.cfg" >/dev/null
  callgrind_control -i on "$GW_PID" >/dev/null
  answered=$(send_sequential "$WORK/measure.cfg")
  callgrind_control -i off "$GW_PID" >/dev/null
  # valgrind writes the profile when the gateway exits; give it time to.
  kill -TERM "$GW_PID" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
  stop_gateway
  [ -s "$out" ] || { echo "0 - - -"; return 0; }
  # Allocator entry points of mimalloc (the global allocator), counted where they are
  # called from outside mimalloc.
  awk -v n="$answered" '
    /^fn=/ { caller = substr($0, 4) }
    /^cfn=/ { callee = substr($0, 5) }
    /^calls=/ {
      if (caller !~ /^_?mi_/) {
        split(substr($0, 7), c, " ")
        if (callee ~ /^mi_(malloc|zalloc)_aligned/) allocs += c[1]
        else if (callee ~ /^mi_realloc_aligned/) reallocs += c[1]
      }
    }
    /^(summary|totals):/ { total = $2 }
    END {
      if (n > 0) printf "%d %.0f %.1f %.1f\n", n, total / n, allocs / n, reallocs / n
      else print "0 - - -"
    }' "$out"
}
