#!/usr/bin/env bash
# hold.sh: hold HOLD_N authenticated connections on one portcullis process for HOLD_S
# seconds (the server pings each one; the load generator answers), and PROBE_AT seconds in,
# measure application ping -> pong round trips on PROBE_N more connections pinging every
# PROBE_MS. Repeated REPS times, each on a fresh server; prints held connections, RSS per
# connection and the probe's pong latency for every run.
#
# Environment (defaults in brackets):
#   REPS [3]  HOLD_N [19000]  HOLD_S [45]  CONNECT_C [200]
#   PROBE_N [20]  PROBE_AT [30]  PROBE_S [10]  PROBE_MS [50]
#   SERVER_CPU [0] LOADGEN_CPU [1]       taskset CPU lists
#   PORTCULLIS_CMD [target/release/portcullis serve --config-dir benches/environments --env bench]
#   PORTCULLIS_URL [ws://127.0.0.1:8080/ws]
#   OUT_DIR [mktemp]                     logs and SUMMARY lines
#
# Needs HOLD_N + PROBE_N + ~100 file descriptors in the server and HOLD_N + ~100 in the
# load generator; the soft limit is raised to the hard one (`ulimit -Hn`).
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

REPS="${REPS:-3}"
HOLD_N="${HOLD_N:-19000}"; HOLD_S="${HOLD_S:-45}"; CONNECT_C="${CONNECT_C:-200}"
PROBE_N="${PROBE_N:-20}"; PROBE_AT="${PROBE_AT:-30}"; PROBE_S="${PROBE_S:-10}"
PROBE_MS="${PROBE_MS:-50}"
SERVER_CPU="${SERVER_CPU:-0}"; LOADGEN_CPU="${LOADGEN_CPU:-1}"
BIN="$CARGO_TARGET_DIR/release"
PORTCULLIS_CMD="${PORTCULLIS_CMD:-$BIN/portcullis serve --config-dir benches/environments --env bench}"
PORTCULLIS_URL="${PORTCULLIS_URL:-ws://127.0.0.1:8080/ws}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/portcullis-hold.XXXXXX)}"
mkdir -p "$OUT_DIR"

if (( PROBE_AT + PROBE_S > HOLD_S )); then
    echo "hold.sh: the probe (PROBE_AT=$PROBE_AT + PROBE_S=$PROBE_S) must end before HOLD_S=$HOLD_S" >&2
    exit 2
fi
need_fds=$(( HOLD_N + PROBE_N + 100 ))
# shellcheck source=benches/lib.sh
source benches/lib.sh
raise_fd_limit hold.sh "$need_fds" "HOLD_N=$HOLD_N"

echo "== building (release)"
cargo build --release --bin portcullis --bin portcullis-loadgen
LOADGEN="$BIN/portcullis-loadgen"
hostport=${PORTCULLIS_URL#ws://}; hostport=${hostport%%/*}

SERVER_PID=""; HOLD_PID=""
cleanup() {
    for pid in $HOLD_PID $SERVER_PID; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    done
}
trap cleanup EXIT

# Until GET /ready answers 200, up to 10 s.
wait_ready() {
    for _ in $(seq 1 200); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$hostport/ready" || true)" == 200 ]] && return 0
        sleep 0.05
    done
    return 1
}

summary() { # file -> the SUMMARY JSON
    sed -n 's/^SUMMARY //p' "$1"
}

for rep in $(seq 1 "$REPS"); do
    taskset -c "$SERVER_CPU" bash -c "exec $PORTCULLIS_CMD" >"$OUT_DIR/server.$rep.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_ready; then
        echo "hold.sh: portcullis did not become ready; see $OUT_DIR/server.$rep.log" >&2
        exit 1
    fi
    taskset -c "$LOADGEN_CPU" "$LOADGEN" --url "$PORTCULLIS_URL" --server-pid "$SERVER_PID" \
        idle --n "$HOLD_N" --secs "$HOLD_S" --connect-c "$CONNECT_C" --ping-interval-ms 0 \
        >"$OUT_DIR/hold.$rep.log" 2>&1 &
    HOLD_PID=$!
    sleep "$PROBE_AT"
    taskset -c "$LOADGEN_CPU" "$LOADGEN" --url "$PORTCULLIS_URL" \
        idle --n "$PROBE_N" --secs "$PROBE_S" --ping-interval-ms "$PROBE_MS" \
        >"$OUT_DIR/probe.$rep.log" 2>&1 || true
    wait "$HOLD_PID" || true
    HOLD_PID=""
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    python3 - "$rep" <(summary "$OUT_DIR/hold.$rep.log") <(summary "$OUT_DIR/probe.$rep.log") <<'EOF'
import json, sys
rep, hold, probe = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
if not hold or not probe:
    sys.exit(f"hold.sh: run {rep} printed no SUMMARY; see the logs")
h, p = json.loads(hold), json.loads(probe)
pong = p["pong_us"]
print(f"run {rep}: held {h['still_open_at_end']} of {h['n']} open at the end, errors {h['errors_total']}, "
      f"{h['server_rss_kb_per_conn']:.2f} KB/conn; probe errors {p['errors_total']}, "
      f"{pong['count']} pings, pong p50 {pong['p50']} us, p99 {pong['p99']} us, max {pong['max']} us")
EOF
done
echo "logs: $OUT_DIR"
