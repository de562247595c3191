#!/usr/bin/env bash
# Figures of the edge limits (issue 12), on loopback, under the default limits:
#
#   bench/edge.sh                      # the release build in target/
#   EDGE_BASE_BIN=/path/to/old/sms-gateway bench/edge.sh   # also "before" for callgrind
#
# 1. memory per idle connection: RSS delta over EDGE_IDLE (2000) kept-alive connections
#    after one /ping each, and over the same number holding 40 KB of an unfinished head;
# 2. the most connections one IP and all IPs hold: 127.0.0.2 opens more than its cap;
#    the number the gateway keeps open is counted (the global cap is printed from the
#    derived default, since filling it needs more source addresses than is polite);
# 3. time to cut a slowloris client (one header line a second) at the default header
#    timeout;
# 4. the uncached read's user-space instructions per request (callgrind, 2000 sequential
#    requests on one kept-alive connection) for this build and, with EDGE_BASE_BIN, the
#    build before the change.
# Prints a Markdown report; changes no file. Knobs: EDGE_IDLE, EDGE_REQUESTS, EDGE_BIN
# (another gateway binary), EDGE_SKIP_CALLGRIND=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IDLE=${EDGE_IDLE:-2000}
REQUESTS=${EDGE_REQUESTS:-2000}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN=${EDGE_BIN:-$BIN}
[ -x "$BIN" ] || { echo "build first: cargo build --release --locked --bin sms-gateway" >&2; exit 1; }

# Client side of the figures, in Python (standard library only).
cat >"$WORK/clients.py" <<'PY'
import socket, sys, time

def hold(port, n, source, payload):
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(payload)
        held.append(s)
    return held

def alive(socks):
    """Connections the gateway has not closed (a closed one reads EOF or an answer)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(4096, socket.MSG_PEEK)
            if data and not data.startswith(b"HTTP/1.1 503"):
                n += 1  # answered (a /ping) and still open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n

mode, port = sys.argv[1], int(sys.argv[2])
if mode == "idle":
    n, kind = int(sys.argv[3]), sys.argv[4]
    payload = (b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n" if kind == "ping"
               else b"GET /ping HTTP/1.1\r\nHost: g\r\nX-Pad: " + b"x" * 40000)
    # Spread over source addresses so that the per-IP cap does not refuse them.
    held = []
    for i in range(0, n, 200):
        held += hold(port, min(200, n - i), "127.0.1.%d" % (1 + i // 200), payload)
    time.sleep(2)
    print(alive(held), flush=True)
    sys.stdin.readline()  # hold until the caller measured
elif mode == "cap":
    n = int(sys.argv[3])
    held = hold(port, n, "127.0.0.2", b"GET /ping HTTP/1.1\r\nHost: g\r\n\r\n")
    time.sleep(2)
    print(alive(held))
elif mode == "slowloris":
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /ping HTTP/1.1\r\nHost: g\r\n")
    start = time.monotonic()
    s.settimeout(1.0)
    i = 0
    while True:
        try:
            if s.recv(4096) == b"":
                break
        except socket.timeout:
            try:
                s.sendall(b"X-L%d: x\r\n" % i)
            except OSError:
                break
            i += 1
        except OSError:
            break
    print("%.1f" % (time.monotonic() - start))
PY

setup() {
  start_services
  GW_PORT=$(free_base 1)
  CONFIG=$WORK/gateway.toml
  write_config "$CONFIG" "$GW_PORT" "$SVC_BASE" guard cache-off >/dev/null
  TOKEN=$("$BIN" token --uuid "$STUDENT" --config "$CONFIG")
}

idle_memory() {
  local kind=$1 before after kept
  start_gateway "$CONFIG"
  before=$(rss_kb "$GW_PID")
  coproc CLIENTS { python3 "$WORK/clients.py" idle "$GW_PORT" "$IDLE" "$kind"; }
  read -r kept <&"${CLIENTS[0]}"
  after=$(rss_kb "$GW_PID")
  echo >&"${CLIENTS[1]}"
  wait "$CLIENTS_PID" 2>/dev/null || true
  stop_gateway
  printf '| %s | %d | %d | %d | %.1f |\n' "$([ "$kind" = ping ] && echo 'one /ping (kept alive)' || echo '40 KB of an unfinished head')" "$IDLE" "$kept" $((after - before)) \
    "$(awk -v d=$((after - before)) -v n="$kept" 'BEGIN { print (n ? d / n : 0) }')"
}

# User-space instructions per request of $1 (a gateway binary) on the uncached read.
instructions() {
  local bin=$1 out=$WORK/callgrind.$RANDOM total ok
  BIN=$bin start_gateway "$CONFIG" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out"
  sequential 200 >/dev/null
  callgrind_control -i on "$GW_PID" >/dev/null
  ok=$(sequential "$REQUESTS")
  callgrind_control -i off "$GW_PID" >/dev/null
  kill -TERM "$GW_PID"
  for _ in $(seq 600); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
  stop_gateway
  total=$(callgrind_annotate --auto=no "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1; exit }')
  awk -v t="$total" -v n="$ok" 'BEGIN { printf "%.0f (%d requests)", t / n, n }'
}

setup
NOFILE=$(ulimit -n)
echo "# Edge figures ($(date -u +%F), $(nproc) cores, open-file limit $NOFILE)"
echo
echo "## Memory per idle connection"
echo
echo "| held after | opened | kept open | RSS delta KiB | KiB / connection |"
echo "|---|---|---|---|---|"
idle_memory ping
idle_memory partial-head-40KB
echo
echo "## Connections held"
echo
start_gateway "$CONFIG"
one=$(python3 "$WORK/clients.py" cap "$GW_PORT" 400)
echo "- one IP (127.0.0.2) opened 400 connections, the gateway kept **$one** open (default"
echo "  \`http.max_connections_per_ip\` 256, at most half the global cap)."
echo "- all IPs: the global cap derived from this process's open-file limit $NOFILE is"
echo "  **$(( NOFILE - 128 < 10000 ? NOFILE - 128 : 10000 ))** (limit − \`http.fd_reserve\` 128, at most 10000)."
echo
echo "## Time to cut a slowloris client"
echo
echo "- one header line a second, never the end of the head: closed after **$(python3 "$WORK/clients.py" slowloris "$GW_PORT") s**"
echo "  (default \`http.header_timeout\` 30 s, from the first byte; trickling does not extend it)."
stop_gateway
echo
echo "## Uncached read, user-space instructions per request (callgrind)"
echo
if [ "${EDGE_SKIP_CALLGRIND:-0}" = 1 ]; then
  echo "skipped (EDGE_SKIP_CALLGRIND=1)."
elif command -v valgrind >/dev/null 2>&1; then
  echo "- this build: **$(instructions "$BIN")**"
  if [ -n "${EDGE_BASE_BIN:-}" ]; then
    echo "- before (\`$EDGE_BASE_BIN\`): **$(instructions "$EDGE_BASE_BIN")**"
  fi
else
  echo "valgrind is not installed: skipped."
fi
stop_services
