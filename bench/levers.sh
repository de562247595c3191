#!/usr/bin/env bash
# Before/after figures per change: builds the gateway as it was at each given commit
# (release, from `git archive`, one shared target dir so the dependencies compile once),
# then measures every build on the uncached read (GET /v1/outings/uuid/{id}, response
# cache off, guard on, logs at info) against the same reference services (this
# checkout's release build):
#   - user-space instructions and allocator calls per request (callgrind: exact, whatever
#     else the machine is doing);
#   - gateway CPU per request at the moderate rate (wrk paced at BENCH_RATE) and at full
#     load, median of LEVERS_ROUNDS rounds.
#
#   bench/levers.sh LABEL=COMMIT[,workers=N|current|multi][,tracing=RATIO][,pgo=off] ...
#   (workers: N worker threads of the build's default flavour, or runtime.flavor
#   current_thread / multi_thread; builds that do not know the option run without it;
#   pgo=off: built without the commit's recorded profile, RUSTC_WRAPPER= )
#   e.g. bench/levers.sh before=9327a6a now=HEAD now-1-worker=HEAD,workers=1 \
#          traced=HEAD,tracing=0.01
#
# Writes bench/results/levers.tsv and bench/results/levers.md (bench/run.sh splices the
# latter into BENCHMARKS.md). Knobs: LEVERS_ROUNDS=3, LEVERS_REQUESTS=300,
# BENCH_RATE=2000, BENCH_DURATION=3, BENCH_WARMUP=1, LEVERS_CACHE=target/levers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -gt 0 ] || { sed -n '2,18p' "$0" >&2; exit 2; }

ROUNDS=${LEVERS_ROUNDS:-3}
REQUESTS=${LEVERS_REQUESTS:-300}
RATE=${BENCH_RATE:-2000}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
CACHE=${LEVERS_CACHE:-$ROOT/target/levers}
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS" "$CACHE/bin"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ensure_wrk
command -v valgrind >/dev/null 2>&1 || apt_install valgrind

log "building this checkout (the reference services of every run)"
cargo build --release --locked --bin sms-gateway
SVC_BIN=$BIN
HEAD_BIN=$BIN

# The release binary of commit $1 (pgo=off in $2: without its recorded profile), built
# once and kept in $CACHE/bin. The sources go outside this checkout: cargo reads the
# .cargo/config.toml of every parent directory, and this one's rustc wrapper would add
# today's profile to an old commit. Builds with a profile share a target dir seeded from
# this checkout's build; builds without one get their own, never seeded, because cargo
# does not see the flag the wrapper adds and would reuse profile-optimised dependencies.
binary_of() {
  local sha out src target=$CACHE/target-plain seeded=0 wrapper=()
  sha=$(git rev-parse --short=12 "$1^{commit}")
  out=$CACHE/bin/$sha
  if [ "${2:-}" = off ]; then
    out=$out-nopgo wrapper=(RUSTC_WRAPPER=)
  elif git cat-file -e "$sha:pgo/sms-gateway.profdata" 2>/dev/null; then
    target=$CACHE/target-pgo seeded=1
  fi
  if [ ! -x "$out" ]; then
    src=$(mktemp -d /tmp/sms-levers-src.XXXXXX)
    # -m: files dated now, so cargo never takes them for the previous build's.
    git archive "$sha" | tar -x -m -C "$src"
    if [ "$seeded" = 1 ] && [ ! -d "$target/release" ] && [ -d "$TARGET_DIR/release" ]; then
      mkdir -p "$target"
      cp -a "$TARGET_DIR/release" "$target/"
    fi
    log "building $sha${2:+ (pgo=$2)}"
    (cd "$src" && env "${wrapper[@]}" CARGO_TARGET_DIR="$target" cargo build --release --locked --bin sms-gateway >&2)
    cp "$target/release/sms-gateway" "$out"
    rm -rf "$src"
  fi
  echo "$out"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }

# Gateway CPU µs per request of one wrk run at rate $1 (0: full load), into CPU. Runs in
# the calling shell, so the processes it starts are stopped on exit even after a failure.
cpu_run() {
  local rate=$1 cfg=$WORK/levers.toml g0 g1 out requests
  start_services
  GW_PORT=$(free_base 1)
  write_config "$cfg" "$GW_PORT" "$SVC_BASE" guard cache-off admin workers tracing >/dev/null
  start_gateway "$cfg"
  TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$cfg")
  KIND=get
  local url="http://127.0.0.1:$GW_PORT$READ_PATH"
  run_wrk "$WARMUP" "$rate" 0 "$url" >/dev/null
  read -r -a g0 < <(cpu_ticks "$GW_PID")
  out=$(run_wrk "$DURATION" "$rate" 0 "$url")
  read -r -a g1 < <(cpu_ticks "$GW_PID")
  stop_gateway
  stop_services
  requests=$(cut -f1 <<<"$out")
  CPU=$(awk -v t=$((g1[0] + g1[1] - g0[0] - g0[1])) -v n="$requests" -v hz="$CLK_TCK" \
    'BEGIN { if (n > 0) printf "%.1f\n", t * 1e6 / hz / n; else print "-" }')
}

# Each spec: its label, binary, options; callgrind first (exact), then the wall-clock
# rounds interleaved across builds, so a drift of the machine's load hits them alike.
labels=() bins=() workers_of=() tracing_of=() pgo_of=() commits=() counts=()
for spec in "$@"; do
  label=${spec%%=*}
  rest=${spec#*=}
  commit=${rest%%,*}
  workers="" tracing="" pgo=""
  IFS=, read -r -a options <<<"${rest#"$commit"}"
  for option in "${options[@]}"; do
    case $option in
      workers=*) workers=${option#workers=} ;;
      tracing=*) tracing=${option#tracing=} ;;
      pgo=off) pgo=off ;;
      "") ;;
      *) echo "unknown option $option in $spec" >&2; exit 2 ;;
    esac
  done
  labels+=("$label") commits+=("$commit") workers_of+=("$workers") tracing_of+=("$tracing")
  pgo_of+=("$pgo")
  bins+=("$(binary_of "$commit" "$pgo")")
done
for i in "${!labels[@]}"; do
  BIN=${bins[$i]}
  export BENCH_WORKERS=${workers_of[$i]} BENCH_TRACING=${tracing_of[$i]}
  callgrind_counts get "$READ_PATH" "$REQUESTS" guard cache-off admin workers tracing
  counts+=("$(cut -d' ' -f2- <<<"$COUNTS")")
  log "${labels[$i]}: ${counts[$i]} (instructions, allocations, reallocations per request)"
done
declare -A rate_runs=() max_runs=()
for round in $(seq "$ROUNDS"); do
  for i in "${!labels[@]}"; do
    BIN=${bins[$i]}
    export BENCH_WORKERS=${workers_of[$i]} BENCH_TRACING=${tracing_of[$i]}
    cpu_run "$RATE"
    rate_runs[$i]+="$CPU "
    cpu_run 0
    max_runs[$i]+="$CPU "
  done
  log "round $round done"
done

TSV=$RESULTS/levers.tsv
echo "label	commit	options	instructions_per_req	allocations_per_req	reallocations_per_req	rate_cpu_us_per_req	max_cpu_us_per_req	subject	rate_runs	max_runs" >"$TSV"
for i in "${!labels[@]}"; do
  read -r instr allocs reallocs <<<"${counts[$i]}"
  rate_cpu=$(tr ' ' '\n' <<<"${rate_runs[$i]}" | grep . | median)
  max_cpu=$(tr ' ' '\n' <<<"${max_runs[$i]}" | grep . | median)
  commit=${commits[$i]} workers=${workers_of[$i]} tracing=${tracing_of[$i]} pgo=${pgo_of[$i]}
  subject=$(git log -1 --format=%s "$commit" | cut -c1-90)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${labels[$i]}" "$(git rev-parse --short "$commit")" \
    "runtime ${workers:-as built}${tracing:+, traces at $tracing}${pgo:+, no PGO profile}" "$instr" "$allocs" "$reallocs" \
    "$rate_cpu" "$max_cpu" "$subject" "${rate_runs[$i]% }" "${max_runs[$i]% }" >>"$TSV"
  log "${labels[$i]}: $rate_cpu µs at $RATE req/s (${rate_runs[$i]}), $max_cpu µs at full load (${max_runs[$i]})"
done
BIN=$HEAD_BIN

{
  echo "## Before and after, change by change (\`bench/levers.sh\`)"
  echo
  echo "Generated on $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/levers.sh $*\`: each build"
  echo "measured on the uncached read, logs at info, against the same reference services."
  echo "Instructions and allocations: callgrind, user space, $REQUESTS sequential requests on one"
  echo "connection after 50 unrecorded. CPU: \`/proc\` utime + stime of the gateway over"
  echo "$DURATION s, median of $ROUNDS rounds (every build once per round, in turn), at $RATE req/s and"
  echo "at full load (wrk, 32 connections); the single runs in brackets."
  echo
  echo "| build | commit | options | instructions/req | allocations/req | µs/req at $RATE req/s | µs/req at full load |"
  echo "|---|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 { printf "| %s | %s %s | %s | %s | %s | %s [%s] | %s [%s] |\n", $1, $2, $9, $3, $4, $5, $7, $10, $8, $11 }' "$TSV"
} >"$RESULTS/levers.md"
log "wrote bench/results/levers.tsv and bench/results/levers.md"
