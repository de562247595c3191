#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian/Ubuntu machine with Rust: installs what
# the tests need (redis-server, promtool) when it is missing, checks formatting and lints, then
# runs every test. The tests start their own servers on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# promtool checks and unit-tests the alert rules (deploy/prometheus).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
./deploy/check.sh
# Examples and benches are built by clippy above; only test targets run here.
cargo test --locked --lib --bins --tests
