#!/usr/bin/env bash
# Benchmarks the gateway against the direct gRPC floor, on loopback, and writes the
# report BENCHMARKS.md (repository root) and the raw rows bench/results/runs.tsv.
#
#   bench/run.sh
#
# It builds the release binary and the floor load client (bench/grpc_load.rs),
# installs wrk with apt when it is missing, then for every scenario × mode × round
# starts fresh reference services (`sms-gateway services`) and a fresh gateway
# (`sms-gateway serve` with a generated config and JWT secret, logs at warn), warms up,
# measures, and stops them. Every process it starts is stopped on exit.
#
# Knobs (environment):
#   BENCH_DURATION=3     measured seconds per run      BENCH_WARMUP=1  warm-up seconds
#   BENCH_ROUNDS=3       rounds (medians are reported) BENCH_CONNECTIONS=32
#   BENCH_RATE=2000      the fixed moderate rate (req/s); BENCH_LOGIN_RATE=500 for logins
#   BENCH_SCENARIOS="read read-current write login cached-memory cached-redis read-slow-stdout"
#                        gateway scenarios (read-current: the read with runtime.flavor =
#                        "current_thread", the README's choice for a 2-CPU machine shared
#                        with other work, like this one; read-slow-stdout: stdout read at
#                        400 KB/s)
#   BENCH_FLOOR="read write login"                                   floor RPCs
#   BENCH_MODES="max rate"
#   BENCH_LOG_LEVEL=info the gateway's log level (info: one JSON line per request)
#   BENCH_WORKERS=       runtime.worker_threads of the gateway (unset: the default,
#                        thread_per_core with one worker per CPU; "current" /
#                        "multi": runtime.flavor current_thread / multi_thread)
#   BENCH_CALLGRIND_REQUESTS=300  sequential requests per scenario under callgrind
#                        (instructions and allocations per request); 0 skips it
#   BENCH_SERVICES_BIN=  another binary for the reference services (A/B of two builds)
#   BENCH_SKIP_BUILD=1   use the binaries already in target/release (while iterating)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
RATE=${BENCH_RATE:-2000}
LOGIN_RATE=${BENCH_LOGIN_RATE:-500}
SCENARIOS=${BENCH_SCENARIOS:-read read-current write login cached-memory cached-redis read-slow-stdout}
CALLGRIND_REQUESTS=${BENCH_CALLGRIND_REQUESTS:-300}
FLOOR=${BENCH_FLOOR:-read write login}
MODES=${BENCH_MODES:-max rate}
WRK_THREADS=2

STARTED=$(date +%s.%N)
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
RUNS=$RESULTS/runs.tsv
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ensure_wrk

# --- build -------------------------------------------------------------------------
# One invocation builds the gateway and the floor client (a binary, not an example:
# examples bring the dev-dependencies' features, and tokio's `test-util` alone made
# every clock read take a mutex in the gateway built beside one; and no cargo feature,
# which would change the gateway's symbols so that the PGO profile matched none of them).
# The gateway measured is the one `cargo build --release` ships.
log "building (release)"
BUILD_TIMES="0 0 0"
BUILD_KIND="one invocation: \`cargo build --release --locked --bin sms-gateway --bin grpc_load\` (production features; profile-guided with \`pgo/sms-gateway.profdata\` through \`.cargo/config.toml\`)"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  # Wall, user and system seconds of the build (cargo's own output stays on stderr).
  TIMEFORMAT='%R %U %S'
  { time {
    cargo build --release --locked --bin sms-gateway --bin grpc_load 2>&3
  }; } 3>&2 2>"$WORK/build.time"
  BUILD_TIMES=$(tail -1 "$WORK/build.time")
else
  BUILD_KIND="skipped (BENCH_SKIP_BUILD=1)"
fi
read -r BUILD_SECONDS BUILD_USER BUILD_SYS <<<"$BUILD_TIMES"
BUILD_SECONDS=$(printf '%.0f' "$BUILD_SECONDS")
BUILD_CPU=$(awk -v u="$BUILD_USER" -v s="$BUILD_SYS" 'BEGIN { printf "%.0f", u + s }')
log "built in ${BUILD_SECONDS}s (${BUILD_CPU}s of CPU)"

# --- scenarios ---------------------------------------------------------------------
# What each gateway scenario sends and which config fragments it wants.
scenario_kind() { case $1 in write) echo write ;; login) echo login ;; *) echo get ;; esac; }
scenario_path() { case $1 in write) echo /v1/outings ;; login) echo /v1/login/student ;; *) echo "$READ_PATH" ;; esac; }
scenario_fragments() {
  case $1 in
    read | read-slow-stdout) echo guard cache-off admin workers ;;
    read-current) echo guard cache-off admin current-thread ;;
    cached-memory) echo guard cache-on admin workers ;;
    cached-redis) echo guard cache-on redis admin workers ;;
    *) echo guard admin workers ;;
  esac
}
scenario_rate() { case $1 in login) echo "$LOGIN_RATE" ;; *) echo "$RATE" ;; esac; }
floor_port_offset() { case $1 in login) echo 0 ;; *) echo 2 ;; esac; }   # auth, outing

# One probe request: prints "<http status> <X-Cache or ->".
probe() {
  local kind=$1 path=$2 token=$3 args=()
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  case $kind in
    write) args+=(-X POST -H 'Content-Type: application/json' -d \
      '{"start_time":9000000000,"end_time":9000000005,"place":"서점","reason":"교재 구입","situation":"normal"}') ;;
    login) args+=(-X POST -H 'Content-Type: application/json' -d \
      '{"student_id":"demostudent","student_pw":"demo-student-pw"}') ;;
  esac
  curl -s -o /dev/null -D "$WORK/probe.headers" -w '%{http_code}' "${args[@]}" \
    "http://127.0.0.1:$GW_PORT$path" || true
  printf ' %s\n' "$(awk 'tolower($1) == "x-cache:" { sub(/\r$/, "", $2); print $2 }' \
    "$WORK/probe.headers" | tail -1 | grep . || echo -)"
}

HEADER="round	scenario	mode	target_rps	state	requests	seconds	rps	p50_us	p90_us	p99_us	max_us	socket_errors	non_2xx	gw_cpu_us_per_req	gw_user_us_per_req	gw_sys_us_per_req	gw_rss_kb	svc_cpu_us_per_req	gw_switches_per_req	svc_switches_per_req	note"
echo "$HEADER" >"$RUNS"
row() { local IFS=$'\t'; echo "$*" >>"$RUNS"; }
per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'; }
per_req_count() { awk -v c="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "-" }'; }

declare -A APPLIED=() UNAVAILABLE=()

gateway_run() {
  local round=$1 scenario=$2 mode=$3
  KIND=$(scenario_kind "$scenario")
  local path target rate=0 applied cfg verdict status xcache
  path=$(scenario_path "$scenario")
  target=max
  if [ "$mode" = rate ]; then
    target=$(scenario_rate "$scenario")
    rate=$target
  fi
  if [ "$scenario" = cached-redis ] && [ -z "$REDIS_PID" ]; then
    UNAVAILABLE[$scenario]="redis-server is not installed"
    row "$round" "$scenario" "$mode" "$target" unavailable - - - - - - - - - - - - - - - - "${UNAVAILABLE[$scenario]}"
    return 0
  fi
  start_services
  GW_PORT=$(free_base 1)
  cfg=$WORK/gateway-$scenario.toml
  # shellcheck disable=SC2046
  applied=$(write_config "$cfg" "$GW_PORT" "$SVC_BASE" $(scenario_fragments "$scenario"))
  APPLIED[$scenario]=$applied
  [ "$scenario" = cached-redis ] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
  GW_SLOW_STDOUT=0
  [ "$scenario" = read-slow-stdout ] && GW_SLOW_STDOUT=1
  start_gateway "$cfg"
  TOKEN=""
  [ "$KIND" != login ] && TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$cfg")
  # Probe twice: the second answer tells whether the response cache served it.
  read -r status _ < <(probe "$KIND" "$path" "$TOKEN")
  read -r _ xcache < <(probe "$KIND" "$path" "$TOKEN")
  verdict=ok
  case $scenario in
    read | read-current | read-slow-stdout)
      [ "$xcache" = HIT ] && verdict="invalid: the response cache answered (X-Cache: HIT); the cache-off fragment was not accepted" ;;
    cached-*)
      if [ "$xcache" != HIT ]; then
        verdict="not available yet: no X-Cache: HIT on a repeated request"
        case " $applied " in *" cache-on "*) ;; *) verdict="$verdict (this build has no [cache] section)" ;; esac
        [ "$scenario" = cached-redis ] && case " $applied " in *" redis "*) ;; *) verdict="$verdict (no [redis] section)" ;; esac
      fi ;;
  esac
  case $status in 2??) ;; *) verdict="invalid: probe answered HTTP $status (guard? token?)" ;; esac
  if [ "$verdict" != ok ]; then
    log "$scenario/$mode round $round: $verdict"
    UNAVAILABLE[$scenario]=$verdict
    row "$round" "$scenario" "$mode" "$target" unavailable - - - - - - - - - - - - - - - - "$verdict"
    stop_gateway
    stop_services
    return 0
  fi
  local url="http://127.0.0.1:$GW_PORT$path" g0 g1 s0 s1 out rss
  run_wrk "$WARMUP" "$rate" 2000000000 "$url" >/dev/null
  read -r -a g0 < <(cpu_ticks "$GW_PID")
  read -r -a s0 < <(cpu_ticks "$SVC_PID")
  local gsw0 ssw0 gsw1 ssw1
  gsw0=$(ctx_switches "$GW_PID") ssw0=$(ctx_switches "$SVC_PID")
  out=$(run_wrk "$DURATION" "$rate" 3000000000 "$url")
  read -r -a g1 < <(cpu_ticks "$GW_PID")
  read -r -a s1 < <(cpu_ticks "$SVC_PID")
  gsw1=$(ctx_switches "$GW_PID") ssw1=$(ctx_switches "$SVC_PID")
  rss=$(rss_kb "$GW_PID")
  stop_gateway
  stop_services
  local requests user sys
  requests=$(cut -f1 <<<"$out")
  user=$((g1[0] - g0[0]))
  sys=$((g1[1] - g0[1]))
  # shellcheck disable=SC2046
  row "$round" "$scenario" "$mode" "$target" ok $out \
    "$(per_req $((user + sys)) "$requests")" "$(per_req "$user" "$requests")" "$(per_req "$sys" "$requests")" \
    "$rss" "$(per_req $((s1[0] + s1[1] - s0[0] - s0[1])) "$requests")" \
    "$(per_req_count $((gsw1 - gsw0)) "$requests")" "$(per_req_count $((ssw1 - ssw0)) "$requests")" \
    "fragments: ${applied:-none}"
  log "$scenario/$mode round $round: $(cut -f3 <<<"$out") req/s, gateway $(per_req $((user + sys)) "$requests") µs/req"
}

floor_run() {
  local round=$1 rpc=$2 mode=$3 target=max rate_args=() s0 s1 out
  if [ "$mode" = rate ]; then
    target=$(scenario_rate "$rpc")
    rate_args=(--rate "$target")
  fi
  start_services
  local addr=127.0.0.1:$((SVC_BASE + $(floor_port_offset "$rpc")))
  "$LOAD" --addr "$addr" --rpc "$rpc" --concurrency "$CONNECTIONS" --duration "$WARMUP" \
    --write-base 2000000000 "${rate_args[@]}" >/dev/null 2>>"$WORK/load.log"
  read -r -a s0 < <(cpu_ticks "$SVC_PID")
  local ssw0 ssw1
  ssw0=$(ctx_switches "$SVC_PID")
  out=$("$LOAD" --addr "$addr" --rpc "$rpc" --concurrency "$CONNECTIONS" --duration "$DURATION" \
    --write-base 3000000000 "${rate_args[@]}" 2>>"$WORK/load.log" | tail -1)
  read -r -a s1 < <(cpu_ticks "$SVC_PID")
  ssw1=$(ctx_switches "$SVC_PID")
  stop_services
  local requests errors statuses non2xx
  requests=$(cut -f1 <<<"$out")
  errors=$(cut -f8 <<<"$out")
  statuses=$(cut -f9 <<<"$out")
  non2xx=$(tr ',' '\n' <<<"$statuses" | awk -F: '$1 !~ /^2/ { n += $2 } END { print n + 0 }')
  row "$round" "floor-$rpc" "$mode" "$target" ok "$(cut -f1-7 <<<"$out")" "$errors" "$non2xx" \
    - - - - "$(per_req $((s1[0] + s1[1] - s0[0] - s0[1])) "$requests")" \
    - "$(per_req_count $((ssw1 - ssw0)) "$requests")" "in-band: $statuses"
  log "floor-$rpc/$mode round $round: $(cut -f3 <<<"$out") calls/s"
}

# --- measure -----------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_redis || log "redis-server not found: the Redis cache scenario is skipped"
MEASURE_STARTED=$(date +%s.%N)
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    for scenario in $SCENARIOS; do gateway_run "$round" "$scenario" "$mode"; done
    for rpc in $FLOOR; do floor_run "$round" "$rpc" "$mode"; done
  done
done
MEASURE_SECONDS=$(elapsed_since "$MEASURE_STARTED")

# --- instructions and allocations (callgrind) ---------------------------------------
# Exact counts, independent of the machine's load: per scenario, sequential requests on
# one kept-alive connection after a warm-up, the gateway under callgrind.
CALLGRIND=$RESULTS/callgrind.tsv
echo "scenario	requests	instructions_per_req	allocations_per_req	reallocations_per_req" >"$CALLGRIND"
CALLGRIND_STARTED=$(date +%s.%N)
if [ "$CALLGRIND_REQUESTS" -gt 0 ]; then
  command -v valgrind >/dev/null 2>&1 || apt_install valgrind || true
fi
if [ "$CALLGRIND_REQUESTS" -gt 0 ] && command -v valgrind >/dev/null 2>&1; then
  GW_SLOW_STDOUT=0
  for scenario in $SCENARIOS; do
    # Same request path as `read` (another runtime, another stdout): same counts.
    case $scenario in read-slow-stdout | read-current) continue ;; esac
    [ -n "${UNAVAILABLE[$scenario]:-}" ] && continue
    [ "$scenario" = cached-redis ] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
    # shellcheck disable=SC2046
    callgrind_counts "$(scenario_kind "$scenario")" "$(scenario_path "$scenario")" \
      "$CALLGRIND_REQUESTS" $(scenario_fragments "$scenario")
    echo "$scenario	$(tr ' ' '\t' <<<"$COUNTS")" >>"$CALLGRIND"
    log "$scenario under callgrind: $COUNTS (requests, instructions, allocations, reallocations per request)"
  done
fi
CALLGRIND_SECONDS=$(elapsed_since "$CALLGRIND_STARTED")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
TOTAL_SECONDS=$(elapsed_since "$STARTED")

# --- report ------------------------------------------------------------------------
{
  echo "# Benchmarks"
  echo
  echo "Generated by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); raw rows in"
  echo "[\`bench/results/runs.tsv\`](bench/results/runs.tsv). Do not edit by hand: the"
  echo "analysis comes from [\`bench/analysis.md\`](bench/analysis.md), the profile from"
  echo "\`bench/profile.sh\` ([\`bench/results/profile.md\`](bench/results/profile.md))."
  echo
  echo "## Set-up"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| machine | $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r) |"
  echo "| toolchain | $(rustc --version) |"
  echo "| source | $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain -- . ':!BENCHMARKS.md' ':!bench/results' 2>/dev/null)" ] && echo ' + uncommitted changes') |"
  echo "| release profile | $(awk '/^\[profile.release\]/ { on = 1; next } /^\[/ { on = 0 } on && NF { s = s (s ? "; " : "") $0 } END { print s }' Cargo.toml) |"
  echo "| load generator | $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), $WRK_THREADS threads, $CONNECTIONS connections, HTTP/1.1 keep-alive |"
  echo "| floor client | \`bench/grpc_load.rs\`: 1 HTTP/2 connection (as the gateway keeps per instance), $CONNECTIONS calls in flight |"
  echo "| per run | fresh services and gateway, ${WARMUP} s warm-up (excluded), ${DURATION} s measured; $ROUNDS rounds |"
  echo "| moderate rate | $RATE req/s ($LOGIN_RATE req/s for logins, whose backend cost is an Argon2 hash), paced on a fixed schedule by \`bench/wrk.lua\` (wrk's \`delay()\`) and by \`grpc_load --rate\` |"
  echo "| gateway config | generated; logs JSON at \`$LOG_LEVEL\` (info: one line per request) to a file (read-slow-stdout: to a pipe read at 400 KB/s); runtime: ${BENCH_WORKERS:-default (thread_per_core, one worker per CPU)}, read-current: current_thread; fragments accepted by this build: $(for s in $SCENARIOS; do printf '%s: %s; ' "$s" "${APPLIED[$s]:-none}"; done | sed 's/; $//') |"
  echo "| build | ${BUILD_SECONDS} s wall, ${BUILD_CPU} s of CPU; $BUILD_KIND |"
  echo "| callgrind pass | $CALLGRIND_REQUESTS sequential requests per scenario after 50 unrecorded ones, one kept-alive connection (curl), the gateway under \`valgrind --tool=callgrind\`: ${CALLGRIND_SECONDS} s |"
  echo "| measuring | ${MEASURE_SECONDS} s; **whole command ${TOTAL_SECONDS} s**; on an idle machine the build takes at least its CPU time / $(nproc) ≈ $((BUILD_CPU / $(nproc))) s |"
  echo "| machine load | load average $LOAD_BEFORE before, $LOAD_AFTER after: other builds may have been running on the same 2 cores |"
  echo
  echo "CPU figures come from \`/proc/<pid>/stat\` (utime + stime, clock tick $((1000000 / CLK_TCK)) µs) over"
  echo "the measured window only, divided by the requests completed in it. *services* is the"
  echo "one process serving all five reference services. Latencies are wrk's (send to"
  echo "response, per connection) and, for the floor, per call from send to reply. Context"
  echo "switches (voluntary and involuntary, every thread, \`/proc/<pid>/task/*/status\`) are"
  echo "counted over the same window."
  echo
  echo "## Results (median of $ROUNDS rounds; min–max in brackets)"
  echo
  awk -F'\t' -v budget=25 -v callgrind="$CALLGRIND" -v levers="$RESULTS/levers.tsv" -f "$ROOT/bench/report.awk" "$RUNS"
  if [ ${#UNAVAILABLE[@]} -gt 0 ]; then
    echo
    echo "Not measured:"
    for s in "${!UNAVAILABLE[@]}"; do echo "- **$s**: ${UNAVAILABLE[$s]}."; done
  fi
  echo
  echo "## Commands"
  echo
  echo '```sh'
  echo "bench/run.sh        # everything below, then this report"
  echo "bench/profile.sh    # separately: perf profile of the uncached read (bench/results/profile.md)"
  echo "bench/levers.sh before=9327a6a now=HEAD   # separately: before/after per change (bench/results/levers.md)"
  echo "bench/hot_path.sh   # cargo bench --bench hot_path: micro-benchmarks (bench/results/hot_path.md)"
  echo
  echo "# one gateway run (ports are free ones picked at run time)"
  echo "sms-gateway services --listen-base \$BASE"
  echo "sms-gateway serve --config gateway.toml        # generated, see base_config() in bench/run.sh"
  echo "BENCH_KIND=get BENCH_TOKEN=\$(sms-gateway token --uuid $STUDENT --config gateway.toml) \\"
  echo "  wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --timeout 5s -s bench/wrk.lua http://127.0.0.1:\$PORT$READ_PATH"
  echo "#   writes: BENCH_KIND=write (POST /v1/outings, one non-overlapping outing per request)"
  echo "#   logins: BENCH_KIND=login (POST /v1/login/student); rate mode: BENCH_RATE=$RATE BENCH_THREADS=$WRK_THREADS"
  echo "# the floor"
  echo "target/release/grpc_load --addr 127.0.0.1:\$((BASE + 2)) --rpc read --concurrency $CONNECTIONS --duration $DURATION [--rate $RATE]"
  echo '```'
  if [ -f "$RESULTS/hot_path.md" ]; then
    echo
    cat "$RESULTS/hot_path.md"
  fi
  if [ -f "$RESULTS/levers.md" ]; then
    echo
    cat "$RESULTS/levers.md"
  fi
  # Earlier levers runs (renamed levers-<date>.md), kept for the changes they measured;
  # newest first.
  for earlier in $(printf '%s\n' "$RESULTS"/levers-*.md | sort -r); do
    [ -f "$earlier" ] || continue
    echo
    cat "$earlier"
  done
  if [ -f "$RESULTS/profile.md" ]; then
    echo
    cat "$RESULTS/profile.md"
  fi
  if [ -f "$ROOT/bench/analysis.md" ]; then
    echo
    cat "$ROOT/bench/analysis.md"
  fi
} >"$ROOT/BENCHMARKS.md"

log "wrote BENCHMARKS.md and bench/results/runs.tsv in ${TOTAL_SECONDS}s (build ${BUILD_SECONDS}s)"
