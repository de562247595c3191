#!/usr/bin/env bash
# Records the execution profile that release builds are optimised with (profile-guided
# optimisation: scripts/rustc-pgo, cargo's rustc wrapper here, passes
# -Cprofile-use=<repository>/pgo/sms-gateway.profdata to release compilations). Builds
# an instrumented binary, runs the gateway from it under a mix of traffic, and merges
# what it counted into pgo/sms-gateway.profdata:
#
#   bench/pgo.sh
#
# The mix covers the bench's scenarios at full load and at a moderate rate (uncached
# reads on both runtimes, cached reads from memory and Redis, writes, logins) and the
# refusals a hostile client gets (bad token, unknown path, bad body), so no path the
# gateway serves is left without counts. Rerun it after changing code on the request path:
# functions whose code changed since the recording are compiled without profile data
# (correct, only not profile-optimised), and the profile's age shows in `git log pgo/`.
# Needs llvm-profdata of the LLVM version rustc is built on (installs llvm-<major> from
# Debian when missing). Takes about 10 minutes on 2 cores, mostly the instrumented build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/pgo/sms-gateway.profdata
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ensure_wrk

LLVM_MAJOR=$(rustc -vV | awk '/^LLVM version:/ { split($3, v, "."); print v[1] }')
PROFDATA=llvm-profdata-$LLVM_MAJOR
command -v "$PROFDATA" >/dev/null 2>&1 || apt_install "llvm-$LLVM_MAJOR"

RAW=$WORK/profraw
log "building the instrumented binary (target/pgo-generate)"
# The wrapper leaves a compilation that profiles alone: no old profile is used here.
RUSTFLAGS="-Cprofile-generate=$RAW" CARGO_TARGET_DIR=$ROOT/target/pgo-generate \
  cargo build --release --locked --bin sms-gateway
BIN=$ROOT/target/pgo-generate/release/sms-gateway
# The reference services run from the same build, but what they count is discarded: the
# profile is the gateway's. Theirs would swamp it (an Argon2 hash per login, the outing
# service's overlap scan per write), so the gateway's request path would fall below
# LLVM's "hot" threshold; and the services stand in for backends this profile must not
# speed up.
SVC_BIN=$WORK/services
printf '#!/bin/sh\nLLVM_PROFILE_FILE=%s/discarded/%%p.profraw exec %s "$@"\n' "$WORK" "$BIN" >"$SVC_BIN"
chmod +x "$SVC_BIN"
start_redis || log "redis-server is missing: cached reads from Redis are not recorded"

# One gateway with config fragments $3...: wrk for $1 seconds at $2 req/s (0: full
# load), requests of kind $KIND to $URL_PATH with $TOKEN (MAKE_TOKEN=1: a valid one).
record() {
  local seconds=$1 rate=$2 cfg=$WORK/pgo.toml
  shift 2
  start_services
  GW_PORT=$(free_base 1)
  write_config "$cfg" "$GW_PORT" "$SVC_BASE" "$@" >/dev/null
  start_gateway "$cfg"
  [ "${MAKE_TOKEN:-1}" = 1 ] && TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$cfg")
  run_wrk "$seconds" "$rate" "$((2000000000 + RANDOM * 100000))" \
    "http://127.0.0.1:$GW_PORT$URL_PATH" >/dev/null
  # A clean exit writes the counters (stop_pid sends SIGTERM).
  stop_gateway
  stop_services
}

KIND=get URL_PATH=$READ_PATH
log "uncached reads: full load, then 2000 req/s, then on the current_thread runtime"
record 4 0 guard cache-off admin
record 2 2000 guard cache-off admin
record 2 0 guard cache-off admin current-thread
log "cached reads (memory, Redis)"
record 2 0 guard cache-on admin
[ -n "$REDIS_PID" ] && record 2 0 guard cache-on redis admin
log "writes, logins"
KIND=write URL_PATH=/v1/outings record 2 0 guard admin
KIND=login URL_PATH=/v1/login/student MAKE_TOKEN=0 TOKEN="" record 2 200 guard admin
log "refusals: a forged token, an unknown path, a malformed body"
KIND=get URL_PATH=$READ_PATH MAKE_TOKEN=0 TOKEN=forged.token.value record 1 0 guard admin
KIND=get URL_PATH=/v1/no-such-endpoint record 1 0 guard admin
# A login body posted as an outing: 400 from validation.
KIND=login URL_PATH=/v1/outings record 1 0 guard admin

mkdir -p "$(dirname "$OUT")"
# --sparse: functions that never ran are left out (compiled as without a profile).
"$PROFDATA" merge --sparse -o "$OUT" "$RAW"/*.profraw
log "wrote $OUT ($(du -h "$OUT" | cut -f1); $("$PROFDATA" show "$OUT" | awk -F': ' '/^Total functions/ { print $2 }') functions)"
