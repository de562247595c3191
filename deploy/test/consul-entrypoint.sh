#!/bin/sh
# `docker-entrypoint.sh` of the Consul stand-in image (deploy/test/Dockerfile): the stack's
# consul service runs its start-up script unchanged (it renders the watches into
# /consul/config, then `exec docker-entrypoint.sh agent`, as with hashicorp/consul), and
# `agent` starts the project's Consul API double on Consul's HTTP port as user consul.
# The double runs no watches: the gateway's blocking queries keep its lists fresh.
set -eu
if [ "${1:-}" = agent ]; then
  shift
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid consul --regid consul --init-groups consul_double --listen 0.0.0.0:8500
  fi
  exec consul_double --listen 0.0.0.0:8500
fi
exec "$@"
