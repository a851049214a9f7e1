#!/usr/bin/env bash
# nodes.sh: cross-node delivery in one command (issue 16 item 7). Two portcullis nodes
# (`bench-nodes`: Postgres and the Redis event bus) on one throwaway database and one
# throwaway redis-server; the loadgen's `pairs` workload gives C users a sender socket on
# node A and a watcher socket either on node B (`cross`) or on node A too (`same`), and
# each user sends M messages. Per event it records the watcher's lag behind the sender
# (the latency a second node adds: same-node ~0), the runs' round trips, and the CPU
# time of both nodes per delivered event (each event reaches its sender and its watcher).
# Runs alternate same/cross in each repetition (the order rotates), each with fresh nodes,
# database and Redis; prints the medians per mode.
#
# Environment (defaults in brackets):
#   REPS [3] C [100] M [10] TIMEOUT_MS [10000]
#   PG_ADMIN_URL [postgres://postgres@127.0.0.1:5432/postgres]
#   SERVER_CPU [0] LOADGEN_CPU [1]   taskset CPU lists (both nodes share SERVER_CPU)
#   OUT_DIR [mktemp]
# Needs curl, jq, psql, redis-server, taskset.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
REPS="${REPS:-3}"; C="${C:-100}"; M="${M:-10}"; TIMEOUT_MS="${TIMEOUT_MS:-10000}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SERVER_CPU="${SERVER_CPU:-0}"; LOADGEN_CPU="${LOADGEN_CPU:-1}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/portcullis-nodes.XXXXXX)}"
mkdir -p "$OUT_DIR"

# shellcheck source=benches/lib.sh
source benches/lib.sh
raise_fd_limit nodes.sh $((C * 4 + 256)) "C=$C"
for tool in curl jq psql redis-server taskset; do
    command -v "$tool" >/dev/null || { echo "nodes.sh: $tool is not installed" >&2; exit 2; }
done

echo "== building (release)"
cargo build --release --bin portcullis-loadgen --bin portcullis
BIN="$ROOT/$CARGO_TARGET_DIR/release"
ENVS="$ROOT/benches/environments"

PIDS=(); DB=""; RUN_DIR=""
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
    [[ -n "$DB" ]] && psql "$PG_ADMIN_URL" -Atqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=""
    [[ -n "$RUN_DIR" ]] && rm -rf "$RUN_DIR"
    RUN_DIR=""
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU time of a process (all threads) in milliseconds, from /proc/PID/stat.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }' "/proc/$1/stat"; }

# run_one MODE REP: fresh Redis, database and two nodes; one pairs run.
run_one() {
    local mode=$1 rep=$2 log="$OUT_DIR/$1.$2.log" rport pa pb a b watch before after
    RUN_DIR=$(mktemp -d "$OUT_DIR/run.XXXXXX")
    rport=$(free_port); pa=$(free_port); pb=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    PIDS+=($!)
    DB="portcullis_nodes_$$_${rep}_${RANDOM}"
    psql "$PG_ADMIN_URL" -Atqc "CREATE DATABASE $DB" >/dev/null
    wait_port 127.0.0.1 "$rport"
    for port in "$pa" "$pb"; do
        (cd "$RUN_DIR" && exec env PORTCULLIS_SERVICES__DATABASE__URL="${PG_ADMIN_URL%/*}/$DB" \
            PORTCULLIS_SERVICES__REDIS__URL="redis://127.0.0.1:$rport" \
            PORTCULLIS_SERVER__LISTEN="127.0.0.1:$port" \
            taskset -c "$SERVER_CPU" "$BIN/portcullis" serve --config-dir "$ENVS" --env bench-nodes) \
            >>"$OUT_DIR/nodes.server.log" 2>&1 &
        PIDS+=($!)
    done
    a=${PIDS[-2]}; b=${PIDS[-1]}
    for port in "$pa" "$pb"; do
        wait_port 127.0.0.1 "$port" && wait_ready 127.0.0.1 "$port" ||
            { echo "nodes.sh: a node did not become ready; see $OUT_DIR/nodes.server.log" >&2; exit 1; }
    done
    # Both subscribed before the run (ready says "degraded" until then).
    for port in "$pa" "$pb"; do
        for _ in $(seq 1 100); do
            [[ $(curl -s "http://127.0.0.1:$port/ready" | jq -r .status) == ready ]] && break
            sleep 0.05
        done
    done
    watch="ws://127.0.0.1:$pa/ws"; [[ "$mode" == cross ]] && watch="ws://127.0.0.1:$pb/ws"
    before=$(( $(cpu_ms "$a" | cut -d. -f1) + $(cpu_ms "$b" | cut -d. -f1) ))
    if ! taskset -c "$LOADGEN_CPU" "$BIN/portcullis-loadgen" --url "ws://127.0.0.1:$pa/ws" \
        --timeout-ms "$TIMEOUT_MS" pairs --c "$C" --m "$M" --watch-url "$watch" >"$log" 2>&1; then
        echo "   $mode rep $rep: loadgen failed, see $log" >&2
    fi
    after=$(( $(cpu_ms "$a" | cut -d. -f1) + $(cpu_ms "$b" | cut -d. -f1) ))
    local line
    line=$(grep '^SUMMARY ' "$log" | tail -1) || { cleanup; return; }
    line=$(jq -c --argjson ms "$((after - before))" '
        .nodes_cpu_ms = $ms
        | .nodes_cpu_us_per_delivered_event = (if .ops > 0 then $ms * 1000 / .ops else 0 end)' <<<"${line#SUMMARY }")
    sed -i 's/^SUMMARY /LOADGEN_SUMMARY /' "$log"
    echo "SUMMARY $line" >>"$log"
    cleanup
    echo "   $mode rep $rep: $(jq -c '{lag_p50: .watch_lag_us.p50, lag_p99: .watch_lag_us.p99, missing, duplicates, cpu_us_per_event: .nodes_cpu_us_per_delivered_event}' <<<"$line")"
}

echo "== pairs C=$C M=$M, $REPS repetition(s), same/cross interleaved; logs in $OUT_DIR"
order=(same cross)
for rep in $(seq 1 "$REPS"); do
    for mode in "${order[@]}"; do run_one "$mode" "$rep"; done
    order=("${order[1]}" "${order[0]}")
done
for mode in same cross; do
    echo "== $mode (medians)"
    "$BIN/portcullis-loadgen" summarize "$OUT_DIR"/"$mode".*.log
done
