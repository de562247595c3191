#!/usr/bin/env bash
# The stack test: deploys deploy/stack.yml itself — the shipped file, with only its image
# variables pointed at locally built images and its config names and edge port made
# unique — on a single-node Docker swarm, and checks what an operator relies on:
#
#   1. every service converges and both gateway replicas report healthy;
#   2. through the edge: log in as the demo student, read own data (200), another
#      student's (403);
#   3. the client address the gateway logs is the one the edge saw (not the edge's, not
#      a forged X-Forwarded-For): edge forwarding + guard.trusted_proxies;
#   4. the request's trace reached the OTLP receiver (the Jaeger stand-in);
#   5. Prometheus discovers both gateway replicas (tasks.gateway) and loads its rules,
#      and knows the Alertmanager;
#   6. one reference-services task is killed (SIGKILL) under a bounded read load: no
#      request fails (reads lose one upstream.read_try_timeout on the dead task and are
#      answered by the other; the window figures are printed for the note);
#   7. the gateway rolls (docker service update --force, start-first) under the same
#      load: no request fails;
#   8. docker stack rm, and everything the test created is removed.
#
#   deploy/test/stack-test.sh [--binary PATH] [--no-build]
#
#   --binary PATH   the sms-gateway binary for the image (default: cargo build --release)
#   --no-build      use the images already built by deploy/build-local.sh --test-images
#
# Needs a running Docker engine (scripts/test.sh starts one), curl and jq. A swarm it
# finds inactive it initialises and leaves again at the end; in an active swarm it
# refuses to run if the stack's secrets already exist. The load goes to the edge on
# 127.0.0.1 only, at most LOAD_RATE requests per second for a bounded time.
# Prints TIMING and RESULT lines; exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/../.."

stack=${SMS_STACK_TEST_NAME:-smsstacktest}
tag=stack-test
build=true
binary_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary_args=(--binary "$2"); shift 2 ;;
    --no-build) build=false; shift ;;
    -h | --help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "stack-test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Generous bounds for a loaded 2-core machine; polling every POLL seconds.
CONVERGE_TIMEOUT=300
ROLL_TIMEOUT=600
POLL=1
# The client-IP guard allows 50 requests per second per client, and the whole load
# comes from one address: stay well below.
LOAD_RATE=25
# After a backend task dies, requests may fail for at most: its Consul TTL check
# expiring (15 s, src/reference/registration.rs) plus one upstream deadline (3 s,
# gateway.toml), plus 2 s of propagation. The breaker usually cuts it much shorter.
FAILOVER_WINDOW_MS=20000
# How long the load keeps running after the failover window, to show it stays clean.
AFTER_WINDOW=20

started_at=$(date +%s)
say() { echo "stack-test: $*" >&2; }
fail() {
  echo "stack-test: FAILED: $*" >&2
  exit 1
}
now_ms() { date +%s%3N; }

command -v curl >/dev/null || fail "curl is not installed"
command -v jq >/dev/null || fail "jq is not installed"
if ! docker info >/dev/null 2>&1; then
  fail "no Docker engine reachable (docker info failed): the stack test cannot run. Start dockerd (scripts/test.sh does) or run as a user allowed to use it."
fi

work=$(mktemp -d)
swarm_initialised=false
secrets_created=()
load_pids=()

cleanup() {
  local status=$?
  set +e
  for pid in "${load_pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$stack"; then
    say "removing stack $stack"
    docker stack rm "$stack" >/dev/null
  fi
  # stack rm returns at once; its tasks, containers and network go afterwards.
  local deadline=$(($(date +%s) + 120))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=${stack}")" ] &&
      [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=${stack}")" ]; then
      break
    fi
    sleep "$POLL"
  done
  for volume in $(docker volume ls -q --filter "label=com.docker.stack.namespace=${stack}"); do
    docker volume rm "$volume" >/dev/null
  done
  for secret in "${secrets_created[@]}"; do
    docker secret rm "$secret" >/dev/null
  done
  if $swarm_initialised; then
    say "leaving the swarm this test initialised"
    docker swarm leave --force >/dev/null
  fi
  left=$(docker ps -aq --filter "label=com.docker.stack.namespace=${stack}")
  [ -z "$left" ] || say "WARNING: containers of $stack remain: $left"
  rm -rf "$work"
  say "total $(($(date +%s) - started_at)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images ------------------------------------------------------------------------------
if $build; then
  build_started=$(date +%s)
  deploy/build-local.sh --tag "$tag" --test-images "${binary_args[@]}" | sed 's/^/stack-test: image /' >&2
  say "TIMING build-local.sh $(($(date +%s) - build_started)) s"
fi
cargo build --locked --example edge_load >&2
load_bin=target/debug/examples/edge_load

# --- swarm, secrets ----------------------------------------------------------------------
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" = inactive ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  swarm_initialised=true
  say "initialised a single-node swarm"
elif [ "$state" != active ]; then
  fail "the swarm is $state"
fi
for secret in sms_jwt_secret sms_webhook_token; do
  if docker secret inspect "$secret" >/dev/null 2>&1; then
    fail "secret $secret exists already: this swarm runs the stack, the test would change it"
  fi
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | docker secret create "$secret" - >/dev/null
  secrets_created+=("$secret")
done

# Free ports for what the stack publishes (on every address of this host): sets $port.
taken=" "
pick_port() {
  local candidate
  for _ in $(seq 100); do
    candidate=$((20000 + RANDOM % 20000))
    case "$taken" in *" $candidate "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/${candidate}") 2>/dev/null; then
      taken="$taken$candidate "
      port=$candidate
      return
    fi
  done
  fail "no free port"
}
pick_port; export SMS_EDGE_PORT=$port
pick_port; export SMS_JAEGER_UI_PORT=$port
pick_port; export SMS_PROMETHEUS_PORT=$port
pick_port; export SMS_CONSUL_PORT=$port
pick_port; export SMS_ALERTMANAGER_PORT=$port
edge="http://127.0.0.1:${SMS_EDGE_PORT}"
jaeger_ui="http://127.0.0.1:${SMS_JAEGER_UI_PORT}"
prometheus_ui="http://127.0.0.1:${SMS_PROMETHEUS_PORT}"

# --- deploy ------------------------------------------------------------------------------
export SMS_IMAGE=sms-gateway SMS_TAG=$tag
export SMS_CONFIG_VERSION="test-$$"
export SMS_EDGE_IMAGE=sms-test/edge:local SMS_REDIS_IMAGE=sms-test/redis:local
export SMS_CONSUL_IMAGE=sms-test/consul:local SMS_JAEGER_IMAGE=sms-test/jaeger:local
export SMS_PROMETHEUS_IMAGE=sms-test/prometheus:local SMS_ALERTMANAGER_IMAGE=sms-test/alertmanager:local
deploy_started=$(date +%s)
docker stack deploy --resolve-image never -c deploy/stack.yml "$stack" >/dev/null

services=$(docker stack services "$stack" --format '{{.Name}}')
expected="alertmanager consul edge gateway jaeger prometheus redis reference"
[ "$(echo "$services" | sed "s/^${stack}_//" | sort | tr '\n' ' ' | sed 's/ $//')" = "$expected" ] ||
  fail "the stack's services are $(echo "$services" | tr '\n' ' '), expected $expected"

# Containers of a service, running, with their health.
containers() { docker ps --filter "label=com.docker.swarm.service.name=${stack}_$1" --format '{{.ID}} {{.Status}}'; }
healthy_gateways() { containers gateway | grep -c '(healthy)' || true; }

converged() {
  local line name replicas
  while read -r name replicas; do
    case "$replicas" in
      0/*) return 1 ;;
    esac
    [ "${replicas%%/*}" = "${replicas#*/}" ] || return 1
    # "2/2 (max 1 per node)" and the like: only the counts matter.
  done < <(docker stack services "$stack" --format '{{.Name}} {{.Replicas}}' | awk '{print $1, $2}')
  return 0
}

wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$(($(date +%s) + timeout))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      docker stack ps "$stack" --no-trunc >&2 || true
      fail "$what: not within ${timeout} s"
    fi
    sleep "$POLL"
  done
}

wait_for "every service converges" "$CONVERGE_TIMEOUT" converged
two_healthy() { [ "$(healthy_gateways)" -ge 2 ]; }
wait_for "both gateway replicas healthy" "$CONVERGE_TIMEOUT" two_healthy
say "TIMING deploy to healthy $(($(date +%s) - deploy_started)) s"

# --- through the edge --------------------------------------------------------------------
login() {
  curl -sS -o "$work/login.json" -w '%{http_code}' --max-time 10 -X POST "$edge/v1/login/student" \
    -H 'Content-Type: application/json' \
    -d '{"student_id":"demostudent","student_pw":"demo-student-pw"}' 2>/dev/null || true
}
# The reference services register in Consul as they start; the gateway answers 503
# until it sees them.
logged_in() { [ "$(login)" = 200 ]; }
wait_for "log in through the edge" "$CONVERGE_TIMEOUT" logged_in
token=$(jq -r .access_token "$work/login.json")
[ -n "$token" ] && [ "$token" != null ] || fail "no access_token: $(cat "$work/login.json")"
say "TIMING deploy to first login $(($(date +%s) - deploy_started)) s"

[ "$(curl -sS --max-time 5 "$edge/ping")" = '"pong"' ] || fail "/ping through the edge"
own=$(curl -sS --max-time 10 -D "$work/own.headers" -H "Authorization: Bearer $token" \
  -H 'X-Forwarded-For: 203.0.113.7' "$edge/v1/students/uuid/student-000000000001")
[ "$(echo "$own" | jq -r .status)" = 200 ] || fail "own profile: $own"
other=$(curl -sS --max-time 10 -H "Authorization: Bearer $token" "$edge/v1/students/uuid/student-000000000002")
[ "$(echo "$other" | jq -r .status)" = 403 ] || fail "another student's profile: $other"
metrics_status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$edge/metrics")
[ "$metrics_status" = 404 ] || fail "/metrics through the edge answered $metrics_status"
say "RESULT login and reads through the edge: ok (own 200, other student 403, /metrics 404)"

# --- the client address the gateway logs -------------------------------------------------
request_id=$(tr -d '\r' <"$work/own.headers" | awk -F': ' 'tolower($1) == "x-request-id" {print $2}')
[ -n "$request_id" ] || fail "no x-request-id on the answer"
log_line() {
  docker service logs --raw "${stack}_gateway" 2>/dev/null | grep -F "\"request_id\":\"${request_id}\"" | head -1
}
logged() { line=$(log_line) && [ -n "$line" ]; }
wait_for "the gateway's log line of request $request_id" 60 logged
logged_client=$(echo "$line" | jq -r '.client // .fields.client // empty')
# The edge's peer: with --iptables=false the engine's userland proxy connects from the
# docker_gwbridge gateway; with iptables it is the client's own address.
bridge_gateway=$(docker network inspect docker_gwbridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
case "$logged_client" in
  "") fail "the gateway logged no client address: $line" ;;
  203.0.113.7) fail "the gateway believed the client's own X-Forwarded-For" ;;
  10.231.*) fail "the gateway logged the edge's address $logged_client, not the client's" ;;
  127.0.0.1 | "$bridge_gateway") ;;
  *) fail "the gateway logged client $logged_client, expected 127.0.0.1 or $bridge_gateway" ;;
esac
say "RESULT client address logged by the gateway: $logged_client (what the edge saw; forged X-Forwarded-For ignored)"

# A GET of a JSON API published by the stack (the UIs' ports).
get() { curl -sS --max-time 10 "$1" 2>/dev/null; }

# --- the trace ---------------------------------------------------------------------------
trace_id=$(echo "$line" | jq -r '.trace_id // .fields.trace_id // empty')
[ -n "$trace_id" ] || fail "no trace_id in the log line: $line"
trace_arrived() {
  spans=$(get "$jaeger_ui/api/traces?service=sms-gateway&limit=1000" |
    jq --arg id "$trace_id" '[.data[] | select(.traceID == $id) | .spans[]] | length' 2>/dev/null) &&
    [ "${spans:-0}" -ge 2 ]
}
wait_for "trace $trace_id at the OTLP receiver" 60 trace_arrived
say "RESULT trace $trace_id reached the OTLP receiver with $spans spans"

# --- Prometheus, Alertmanager --------------------------------------------------------------
gateway_ips=$(for id in $(containers gateway | awk '{print $1}'); do
  docker inspect "$id" --format '{{range $k, $v := .NetworkSettings.Networks}}{{if eq $k "'"${stack}_sms"'"}}{{$v.IPAddress}}{{end}}{{end}}'
done | sort | tr '\n' ' ')
targets_found() {
  targets=$(get $prometheus_ui/api/v1/targets |
    jq -r '[.data.activeTargets[] | select(.labels.job == "sms-gateway") | .discoveredLabels.__address__ | sub(":9464$"; "")] | sort | join(" ")' 2>/dev/null) &&
    [ "$targets " = "$gateway_ips" ]
}
wait_for "Prometheus discovers both gateway replicas ($gateway_ips)" 90 targets_found
rules=$(get $prometheus_ui/api/v1/rules | jq '[.data.groups[].rules[]] | length')
[ "${rules:-0}" -ge 1 ] || fail "Prometheus loaded no alerting rules"
alertmanager_known() {
  [ "$(get $prometheus_ui/api/v1/alertmanagers | jq '.data.activeAlertmanagers | length' 2>/dev/null)" -ge 1 ]
}
wait_for "Prometheus knows the Alertmanager" 60 alertmanager_known
# The admin listener (admin.listen, port 9464) serves the metrics; until the stack sets
# it, the targets are discovered but down.
if grep -q 'SMS_ADMIN__LISTEN' deploy/stack.yml; then
  targets_up() {
    [ "$(get $prometheus_ui/api/v1/targets | jq '[.data.activeTargets[] | select(.labels.job == "sms-gateway" and .health == "up")] | length' 2>/dev/null)" -ge 2 ]
  }
  wait_for "both gateway replicas scraped" 90 targets_up
  scraped="scraped"
else
  scraped="discovered (no admin listener in this stack yet: not scraped)"
fi
say "RESULT Prometheus: gateway targets $targets $scraped, $rules rules, Alertmanager active"

# --- load ----------------------------------------------------------------------------------
# Starts the load in the background, its output in $work/$1.out.
load_offset=1000
start_load() {
  local name=$1
  "$load_bin" --url "$edge" --rate "$LOAD_RATE" --max-seconds 900 --first-start "$load_offset" \
    >"$work/$name.out" 2>"$work/$name.err" &
  load_pids+=($!)
  load_pid=$!
  load_offset=$((load_offset + 100000))
  warmed() {
    local ok
    ok=$(grep '^PROGRESS' "$work/$name.out" | tail -1 | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
    [ "${ok:-0}" -ge 50 ]
  }
  wait_for "load $name sends successfully" 60 warmed
}
stop_load() {
  local name=$1
  kill -TERM "$load_pid"
  local deadline=$(($(date +%s) + 60))
  while ! grep -q '^SUMMARY' "$work/$name.out"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "load $name did not stop"
    kill -0 "$load_pid" 2>/dev/null || break
    sleep "$POLL"
  done
  wait "$load_pid" || fail "load $name: $(cat "$work/$name.err")"
  summary=$(grep '^SUMMARY' "$work/$name.out") || fail "load $name: no summary: $(cat "$work/$name.err")"
}
count() { sed -n "s/.* $2=\([0-9]*\).*/\1/p" "$work/$1.out" | tail -1; }

# --- 6. kill one reference-services task -------------------------------------------------
start_load kill
victim=$(containers reference | awk 'NR == 1 {print $1}')
[ -n "$victim" ] || fail "no reference-services container"
killed_at=$(now_ms)
docker kill "$victim" >/dev/null
say "killed reference-services container $victim"
reference_back() {
  [ "$(containers reference | wc -l)" -ge 2 ] && ! containers reference | grep -q "^${victim:0:12} "
}
wait_for "the reference service replaces the killed task" "$CONVERGE_TIMEOUT" reference_back
window_over() { [ "$(now_ms)" -ge $((killed_at + FAILOVER_WINDOW_MS + AFTER_WINDOW * 1000)) ]; }
wait_for "the failover window and $AFTER_WINDOW s after it" 120 window_over
stop_load kill
in_window=$(awk -v k="$killed_at" -v w="$FAILOVER_WINDOW_MS" '$1 == "FAIL" && $2 >= k - 60000 && $2 <= k + w' "$work/kill.out" | wc -l)
after_window=$(awk -v k="$killed_at" -v w="$FAILOVER_WINDOW_MS" '$1 == "FAIL" && $2 > k + w' "$work/kill.out" | wc -l)
grep '^FAIL' "$work/kill.out" | head -5 | sed 's/^/stack-test:   /' >&2 || true
spread=$(awk -v k="$killed_at" '$1 == "FAIL" {d = $2 - k; if (n++ == 0 || d < lo) lo = d; if (d > hi) hi = d}
  END {if (n) printf "sent %d ms to %d ms after the kill", lo, hi; else printf "none"}' "$work/kill.out")
say "RESULT kill: failed requests $spread"
say "RESULT kill: $summary; failed within the ${FAILOVER_WINDOW_MS} ms window: $in_window, after it: $after_window"
[ "$after_window" -eq 0 ] || fail "$after_window requests failed after the failover window"
[ "$in_window" -eq 0 ] || fail "$in_window requests failed while the killed task was still listed"

# --- 7. rolling update of the gateway ------------------------------------------------------
start_load roll
roll_started=$(date +%s)
docker service update --force --detach --quiet "${stack}_gateway" >/dev/null
# The update is over when swarm says so: every replica replaced, and the monitor period
# after the last one passed without a failure (else it rolls back: a failed test).
update_done() {
  update_state=$(docker service inspect "${stack}_gateway" --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}')
  case "$update_state" in
    completed) return 0 ;;
    updating | "") return 1 ;;
    *) fail "the rolling update ended $update_state" ;;
  esac
}
wait_for "the rolling update of the gateway completes" "$ROLL_TIMEOUT" update_done
wait_for "both new gateway replicas healthy" "$CONVERGE_TIMEOUT" two_healthy
roll_seconds=$(($(date +%s) - roll_started))
stop_load roll
grep '^FAIL' "$work/roll.out" | head -10 | sed 's/^/stack-test:   /' >&2 || true
failed=$(count roll failed)
say "TIMING rolling update $roll_seconds s"
say "RESULT roll: $summary"
[ "${failed:-1}" -eq 0 ] || fail "$failed requests failed during the rolling update"

say "PASSED"
