#!/usr/bin/env bash
# Validates the deployment files in deploy/ (run from anywhere; CI runs it from
# scripts/test.sh):
#   1. `docker stack config` loads deploy/stack.yml with Docker's own compose loader:
#      schema, interpolation, relative config files, secrets. It needs the docker CLI
#      only, not a daemon. Without the CLI this step is skipped, saying so.
#   2. The shell scripts of the image, of the stack test and of the local build parse.
# That the stack agrees with the binary (config keys, ports, commands, image, secrets,
# the Consul watches) is checked by `cargo test --test deploy_stack`, part of the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

sh -n deploy/docker-entrypoint.sh
sh -n deploy/test/consul-entrypoint.sh
bash -n deploy/build-local.sh
bash -n deploy/test/stack-test.sh

if ! command -v docker >/dev/null 2>&1; then
  echo "deploy/check.sh: SKIPPED 'docker stack config': the docker CLI is not installed"
  exit 0
fi

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
# The stack's own variables unset, so their documented defaults are what is checked.
unset_vars=()
for var in $(grep -oE '\$\{SMS_[A-Z_]+' deploy/stack.yml | cut -c3- | sort -u); do
  unset_vars+=(-u "$var")
done
env "${unset_vars[@]}" docker stack config -c deploy/stack.yml >"$rendered"

# Every variable the stack reads has a default, so a deploy (and this check) with none
# of them set is complete: docker replaces an unset ${VAR} by "" without a warning.
undefaulted=$(grep -oE '(^|[^$])\$\{[^}]*\}' deploy/stack.yml | grep -v ':-' || true)
if [ -n "$undefaulted" ]; then
  echo "deploy/check.sh: variables without a default in deploy/stack.yml:" >&2
  echo "$undefaulted" >&2
  exit 1
fi
for service in edge gateway reference consul redis jaeger prometheus alertmanager; do
  if ! grep -q "^  ${service}:$" "$rendered"; then
    echo "deploy/check.sh: service ${service} missing from the loaded stack" >&2
    exit 1
  fi
done

echo "deploy/check.sh: docker stack config -c deploy/stack.yml ok"
