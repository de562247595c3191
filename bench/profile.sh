#!/usr/bin/env bash
# Profiles the gateway on the uncached read (GET /v1/outings/uuid/{id}, the demo
# student's token, response cache off), apart from bench/run.sh so that one stays short:
#
#   bench/profile.sh
#
# 1. perf, sampling on the cpu-clock software event (hardware counters are often not
#    available in VMs), call graphs by DWARF unwinding, for PROFILE_SECONDS under the
#    same load as bench/run.sh (wrk, 32 connections): where the gateway's CPU goes,
#    kernel included.
# 2. callgrind (valgrind) for PROFILE_REQUESTS requests after a warm-up, instrumentation
#    on only around them, sent one after the other on one kept-alive connection (curl):
#    user-space instructions per request, by area and by function.
#
# Writes bench/results/profile.md and splices it into BENCHMARKS.md (bench/run.sh does
# the same on its next run). Each part is skipped, and says so, when its tool is
# missing. Knobs: PROFILE_SECONDS=4, PROFILE_REQUESTS=2000, BENCH_SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PERF=${PROFILE_SECONDS:-4}
REQUESTS=${PROFILE_REQUESTS:-2000}
CONNECTIONS=32
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
OUT=$RESULTS/profile.md
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ensure_wrk
command -v valgrind >/dev/null 2>&1 || apt_install valgrind || true
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --bin sms-gateway
fi

# Fresh services and a gateway for the uncached read; sets CONFIG and TOKEN.
setup() {
  start_services
  GW_PORT=$(free_base 1)
  CONFIG=$WORK/gateway.toml
  APPLIED=$(write_config "$CONFIG" "$GW_PORT" "$SVC_BASE" guard cache-off)
  TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$CONFIG")
}

# wrk on the uncached read; extra environment first (VAR=value ...), then wrk's options.
load() {
  local env=(BENCH_KIND=get "BENCH_TOKEN=$TOKEN")
  while [ $# -gt 0 ] && [[ $1 == *=* ]]; do env+=("$1"); shift; done
  env "${env[@]}" wrk "$@" --timeout 10s -s "$ROOT/bench/wrk.lua" \
    "http://127.0.0.1:$GW_PORT$READ_PATH" | awk -F'\t' '$1 == "WRK"'
}

# Percentages of a `perf report` listing ("12.34%  ..."), largest first, as table rows.
table_rows() { awk -v limit="$1" 'NR <= limit { printf "| %s | `%s` |\n", $1, $2 }'; }

perf_part() {
  if ! command -v perf >/dev/null 2>&1 || ! perf record -q -e cpu-clock -o "$WORK/probe.data" true >/dev/null 2>&1; then
    echo "perf cannot sample here (not installed, or perf_event_paranoid forbids it): skipped."
    return 0
  fi
  setup
  start_gateway "$CONFIG"
  load -t2 -c"$CONNECTIONS" -d1s >/dev/null
  local data=$WORK/perf.data row
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,8192 -p "$GW_PID" -o "$data" \
    -- sleep "$SECONDS_PERF" >/dev/null 2>&1 &
  local perf_pid=$!
  PIDS+=("$perf_pid")
  sleep 0.2
  row=$(load -t2 -c"$CONNECTIONS" -d"$((SECONDS_PERF + 1))s")
  wait "$perf_pid" || true
  forget_pid "$perf_pid"
  stop_gateway
  stop_services
  local report=(perf report -i "$data" --stdio -g none --percent-limit 0.5)
  echo "perf, cpu-clock sampling at 499 Hz for ${SECONDS_PERF} s of a ${CONNECTIONS}-connection wrk run"
  echo "($(cut -f4 <<<"$row") req/s during the run; config fragments: ${APPLIED:-none})."
  echo
  echo "Where the gateway's CPU goes, by binary (kernel = system calls, loopback TCP, scheduler):"
  echo
  echo "| share | binary |"
  echo "|---|---|"
  "${report[@]}" --no-children --sort dso 2>/dev/null | awk '/%/ && $1 ~ /%$/ { print $1 "\t" $2 }' |
    awk -F'\t' '{ print $1, $2 }' | table_rows 6
  echo
  echo "Inclusive share of chosen frames (a frame's own cost plus everything it calls):"
  echo
  echo "| share | frame | what it is |"
  echo "|---|---|---|"
  local children=$WORK/children.txt
  "${report[@]}" --children --sort symbol 2>/dev/null | sed 's/  */ /g' >"$children"
  local pattern label line
  while IFS='|' read -r pattern label; do
    line=$(grep -F -- "$pattern" "$children" | head -1 || true)
    [ -n "$line" ] && printf '| %s | `%s` | %s |\n' "$(awk '{ print $1 }' <<<"$line")" "$pattern" "$label"
  done <<'FRAMES'
hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch|the HTTP/1 connection task: parsing, the whole pipeline, writing the response
sms_gateway::app::access_log|the access-log middleware and everything inside it (routing, pipeline)
sms_gateway::pipeline::Typed<A> as sms_gateway::pipeline::Handler>::run|bind, call, map: the typed stages
sms_gateway::upstream::call::Upstreams::call_node|pick, breaker, the gRPC call as seen from the request task
sms_gateway::auth::jwt::JwtKeys::authenticate|JWT verification
<h2::client::Connection<T,B> as core::future::future::Future>::poll|the HTTP/2 client connection task (frames to and from the backend)
hyper::proto::h1::io::Buffered<T,B>::poll_flush|HTTP/1 response writes
h2::codec::framed_write::FramedWrite<T,B>::flush|HTTP/2 frame writes to the backend
__GI___writev|the writev system call (HTTP/1 and HTTP/2 writes)
__libc_recv|the recv system call
epoll_wait|waiting for sockets (tokio's I/O driver)
tokio::runtime::scheduler::multi_thread::worker::Context::park_internal|worker threads parking and unparking
FRAMES
  echo
  echo "Top functions by own (self) cost:"
  echo
  echo "| share | function |"
  echo "|---|---|"
  "${report[@]}" --no-children --sort symbol 2>/dev/null |
    awk '$1 ~ /%$/ { pct = $1; $1 = ""; $2 = ""; sub(/^ +/, ""); print pct "\t" $0 }' |
    awk -F'\t' 'NR <= 20 { sub(/ - -$/, "", $2); gsub(/\|/, "\\|", $2); printf "| %s | `%s` |\n", $1, substr($2, 1, 110) }'
}

callgrind_part() {
  if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind is not installed: skipped."
    return 0
  fi
  setup
  local out=$WORK/callgrind.out requests total
  start_gateway "$CONFIG" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out"
  sequential 200 >/dev/null
  callgrind_control -i on "$GW_PID" >/dev/null
  requests=$(sequential "$REQUESTS")
  callgrind_control -i off "$GW_PID" >/dev/null
  # valgrind writes the profile when the gateway exits; give it time to.
  kill -TERM "$GW_PID"
  for _ in $(seq 600); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
  stop_gateway
  stop_services
  if [ ! -s "$out" ] || [ "$requests" -eq 0 ]; then
    echo "callgrind produced no profile ($requests requests answered 200): skipped."
    return 0
  fi
  callgrind_annotate --auto=no --inclusive=yes "$out" >"$WORK/inclusive.txt" 2>/dev/null
  callgrind_annotate --auto=no "$out" >"$WORK/self.txt" 2>/dev/null
  total=$(awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1; exit }' "$WORK/self.txt")
  echo "callgrind, ${requests} sequential requests on one kept-alive connection (curl), after 200"
  echo "unrecorded ones, response cache off: **$(awk -v t="$total" -v n="$requests" 'BEGIN { printf "%.0f", t / n }')"
  echo "user-space instructions per request** in all (the kernel is not counted)."
  echo
  # Lines read "1,234 (12.34%)  file:function [object]".
  local parse='
    function parse(    rest) {
      if (!match($0, /\( *[0-9.]+%\)/) || $0 ~ /PROGRAM TOTALS/) return 0
      ir = $1; gsub(/,/, "", ir)
      pct = substr($0, RSTART + 1, RLENGTH - 2); gsub(/ /, "", pct)
      rest = substr($0, RSTART + RLENGTH); sub(/^ +/, "", rest); sub(/ \[[^]]*\]$/, "", rest)
      name = rest; sub(/^[^:]*:/, "", name)
      gsub(/\|/, "\\|", name)
      return 1
    }'
  echo "Instructions by area (own cost of the functions whose names match):"
  echo
  echo "| instructions / request | share | area |"
  echo "|---|---|---|"
  awk -v n="$requests" -v total="$total" "$parse"'
    parse() {
      area = "other"
      if (name ~ /(^|[^a-z_])(_int_malloc|malloc|_int_free|free|cfree|realloc|_int_realloc|malloc_consolidate|unlink_chunk[.a-z0-9]*|calloc|tcache[a-z_]*)$/) area = "allocator (malloc, free)"
      else if (name ~ /^(__)?mem(move|cpy|set|cmp)|^__memmove|^__memcpy|^__memset|^__memcmp/) area = "memory copies (memmove, memcpy)"
      else if (name ~ /sha2::|hmac::|jsonwebtoken::|base64::/) area = "JWT (HMAC-SHA512, base64, jsonwebtoken)"
      else if (name ~ /^h2::|hpack/) area = "HTTP/2 client (h2)"
      else if (name ~ /^hyper::proto::h1|httparse::/) area = "HTTP/1 server (hyper h1, httparse)"
      else if (name ~ /^tokio::/) area = "tokio runtime (scheduler, timers, I/O driver)"
      else if (name ~ /^serde_json::|^serde::|ryu::|itoa::/) area = "JSON (serde_json)"
      else if (name ~ /^tonic::|^prost::|tonic_prost::/) area = "gRPC codec (tonic, prost)"
      else if (name ~ /^http::|^hyper::|^hyper_util::/) area = "http types, other hyper"
      else if (name ~ /^tower_http::|^tower::|^axum::|^matchit::/) area = "axum, tower layers, routing"
      else if (name ~ /^tracing|tracing_subscriber/) area = "tracing"
      else if (name ~ /^sms_gateway::/) area = "sms_gateway (own code)"
      else if (name ~ /uuid::|rand::|getrandom|chacha/) area = "ids and random numbers (uuid, rand)"
      sum[area] += ir
    }
    END {
      for (a in sum) printf "%d\t%s\n", sum[a], a
    }' "$WORK/self.txt" | sort -rn | awk -F'\t' -v n="$requests" -v total="$total" \
    '{ printf "| %.0f | %.1f%% | %s |\n", $1 / n, 100 * $1 / total, $2 }'
  echo
  echo "Top functions by own instructions:"
  echo
  echo "| instructions / request | share | function |"
  echo "|---|---|---|"
  awk -v n="$requests" -v total="$total" "$parse"'
    parse() { sum[name] += ir }
    END { for (f in sum) printf "%d\t%s\n", sum[f], f }' "$WORK/self.txt" | sort -rn | awk 'NR <= 20' |
    awk -F'\t' -v n="$requests" -v total="$total" \
      '{ printf "| %.0f | %.2f%% | `%s` |\n", $1 / n, 100 * $1 / total, substr($2, 1, 110) }'
  echo
  echo "Inclusive instructions of the gateway's own stages and of the libraries they call"
  echo "(recursive cycles and future-polling plumbing left out):"
  echo
  echo "| instructions / request | share | function |"
  echo "|---|---|---|"
  awk -v n="$requests" "$parse"'
    parse() {
      if (name ~ /'"'"'[0-9]/ || name in seen) next
      if (name !~ /^(<)?(sms_gateway::|jsonwebtoken::|tonic::client::grpc::Grpc<T>::(unary|client_streaming|create_response)|tonic::codec::encode|serde_json::ser::to_vec|serde_json::de::from|uuid::|tower_http::cors|tower_http::request_id|matchit::|hyper::proto::h1::role|h2::proto::streams::streams::StreamRef<B>::send_response|h2::client::SendRequest<B>::send_request|h2::codec::framed_write|h2::hpack)/) next
      seen[name] = 1
      if (++shown > 25) exit
      printf "| %.0f | %s | `%s` |\n", ir / n, pct, substr(name, 1, 110)
    }' "$WORK/inclusive.txt"
}

{
  echo "<!-- profile:start -->"
  echo "## Profile of the uncached read"
  echo
  echo "Generated by \`bench/profile.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($(nproc) cores; other builds may have"
  echo "been running). \`perf stat -e instructions\` reports hardware counters as"
  echo "$(perf stat -e instructions true 2>&1 | grep -q 'not supported' && echo 'not supported' || echo 'available'), so the"
  echo "profile samples the cpu-clock software event; callgrind counts instructions exactly."
  echo
  echo "### perf"
  echo
  perf_part
  echo
  echo "### callgrind"
  echo
  callgrind_part
  echo "<!-- profile:end -->"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"

# Splice into BENCHMARKS.md: replace the previous profile, or append.
if [ -f BENCHMARKS.md ]; then
  if grep -q '<!-- profile:start -->' BENCHMARKS.md; then
    awk -v file="$OUT" '
      /<!-- profile:start -->/ { while ((getline line < file) > 0) print line; skip = 1; next }
      /<!-- profile:end -->/ { skip = 0; next }
      !skip' BENCHMARKS.md >"$WORK/benchmarks.md"
  else
    { cat BENCHMARKS.md; echo; cat "$OUT"; } >"$WORK/benchmarks.md"
  fi
  cp "$WORK/benchmarks.md" BENCHMARKS.md
fi
log "wrote $OUT"
