#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine with Rust: installs what
# the tests need (redis-server; promtool for the alert rules; docker.io, debootstrap,
# curl and jq for the stack test) when it is missing, checks formatting and lints, runs
# every test, then builds the image
# and runs the stack test on a real Docker engine (deploy/test/stack-test.sh). The tests
# start their own servers on free loopback ports.
#
# Docker: an engine already running is used as it is. Otherwise this script starts
# `dockerd $SMS_DOCKERD_ARGS` (default --iptables=false) in the background and stops it
# (by its PID) at the end. If no engine can be had, the stack test FAILS, saying why: it
# is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

engine_up() { docker info >/dev/null 2>&1; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# promtool checks and unit-tests the alert rules (deploy/prometheus).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
if ! command -v docker >/dev/null 2>&1 || { ! engine_up && ! command -v dockerd >/dev/null 2>&1; }; then
  need_apt+=(docker.io)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

dockerd_pid=""
bases_pid=""
stop_dockerd() {
  if [ -n "$bases_pid" ]; then
    kill "$bases_pid" 2>/dev/null || true
    wait "$bases_pid" 2>/dev/null || true
  fi
  if [ -n "$dockerd_pid" ]; then
    echo "stopping the dockerd this script started (pid $dockerd_pid)"
    $sudo kill -TERM "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
}
trap stop_dockerd EXIT

engine_error=""
if ! engine_up; then
  dockerd_log=$(mktemp "${TMPDIR:-/tmp}/sms-dockerd.XXXXXX.log")
  # shellcheck disable=SC2086 # the arguments are words on purpose
  $sudo dockerd ${SMS_DOCKERD_ARGS:---iptables=false} >"$dockerd_log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 120); do
    engine_up && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! engine_up; then
    engine_error="dockerd did not start (log: $dockerd_log): $(tail -5 "$dockerd_log" | tr '\n' ' ')"
    $sudo kill -TERM "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
  fi
fi

# The stack test's debootstrapped bases (cached after the first run) are made while the
# Rust checks run.
bases_log=$(mktemp "${TMPDIR:-/tmp}/sms-bases.XXXXXX.log")
if [ -z "$engine_error" ]; then
  deploy/build-local.sh --bases-only --test-images >"$bases_log" 2>&1 &
  bases_pid=$!
fi

cargo fmt --all -- --check
# --all-features: a cargo feature added later is linted too (there is none today).
cargo clippy --all-targets --all-features --locked -- -D warnings
./deploy/check.sh
# Examples and benches are built by clippy above; only test targets run here.
cargo test --locked --lib --bins --tests

if [ -n "$engine_error" ]; then
  echo "STACK TEST FAILED: no Docker engine: $engine_error" >&2
  exit 1
fi
if ! wait "$bases_pid"; then
  bases_pid=""
  cat "$bases_log" >&2
  echo "STACK TEST FAILED: the local base images could not be made" >&2
  exit 1
fi
bases_pid=""
cat "$bases_log"
stack_started=$(date +%s)
deploy/test/stack-test.sh
echo "stack test: $(($(date +%s) - stack_started)) s"
