#!/bin/sh
# Entry point of the sms-gateway image.
#
# Before starting the binary, every variable FILE__<NAME>=<path> becomes <NAME>=<the
# contents of path> (trailing newlines dropped), and FILE__<NAME> is removed. This lets a
# docker secret supply a setting that has no *_file key of its own, e.g.
#   FILE__SMS_CONSUL__WEBHOOK_TOKEN=/run/secrets/sms_webhook_token
# so the value is neither in the stack file nor in `docker service inspect`.
# Settings that do have a file key (jwt.secret_file, consul.token_file) should use it.
set -eu

for name in $(env | sed -n 's/^FILE__\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
  # $name is a plain identifier (the sed pattern above), so this eval only reads it.
  eval "path=\${FILE__${name}}"
  if [ ! -r "${path}" ]; then
    echo "docker-entrypoint: FILE__${name}: cannot read ${path}" >&2
    exit 1
  fi
  value=$(cat "${path}")
  export "${name}=${value}"
  unset "FILE__${name}"
done

exec sms-gateway "$@"
