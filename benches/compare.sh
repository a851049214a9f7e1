#!/usr/bin/env bash
# compare.sh: build the three release binaries, run every loadgen workload against
# portcullis-baseline and, when PORTCULLIS_CMD is given, against portcullis, REPS times each,
# then print medians.
#
# The server is pinned to CPU $SERVER_CPU and the load generator to $LOADGEN_CPU, and the
# loadgen reads the server's CPU time and RSS through --server-pid, so per-operation server
# cost stays meaningful even when the loadgen is the throughput bottleneck.
#
# Environment (defaults in brackets):
#   REPS [3]                       repetitions of every workload
#   HS_N [2000] HS_C [50]          handshake: connections, concurrency
#   CHAT_C [100] CHAT_M [5]        chat: connections, messages per connection
#   IDLE_N [2000] IDLE_S [5]       idle: connections, hold seconds
#   IDLE_PING_MS [1000]            idle: application ping interval per connection (0: off)
#   FAN_K [4] FAN_M [20]           fanout: sockets, messages
#   TIMEOUT_MS [10000]             per-operation timeout
#   WORKLOADS ["handshake chat idle fanout"]
#   SERVER_CPU [0] LOADGEN_CPU [1] taskset CPU lists
#   BASELINE_PORT [9480]           baseline listens on 127.0.0.1:$BASELINE_PORT
#   BASELINE_ARGS []               extra baseline flags, e.g. "--read-buffer 4096 --flush-per-event"
#   PORTCULLIS_CMD []              command starting portcullis in the foreground; skipped if empty
#   PORTCULLIS_URL [ws://127.0.0.1:8080/ws]
#   PORTCULLIS_LOADGEN_ARGS []     extra loadgen flags for portcullis, e.g. "--issuer x --audience y"
#   OPENAI [0]                     1: also run portcullis with its agent on the openai provider
#                                  (OPENAI_CMD, default `portcullis serve --env bench-openai`),
#                                  the local fake model answering at once on FAKEMODEL_PORT
#                                  [9499] (pinned to LOADGEN_CPU), on PORTCULLIS_URL
#   PORTCULLIS_BENCH_SECRET        HS256 secret for both servers and the loadgen (a built-in
#                                  benchmark secret when unset)
#   OUT_DIR [mktemp]               where logs and SUMMARY lines are kept
#
# Scaling idle to 10 000 or 19 000 connections needs about that many fds in each process:
# this script raises the soft limit to the hard one (`ulimit -Hn`) and refuses to start
# when even that is too small.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

REPS="${REPS:-3}"
HS_N="${HS_N:-2000}"; HS_C="${HS_C:-50}"
CHAT_C="${CHAT_C:-100}"; CHAT_M="${CHAT_M:-5}"
IDLE_N="${IDLE_N:-2000}"; IDLE_S="${IDLE_S:-5}"; IDLE_PING_MS="${IDLE_PING_MS:-1000}"
FAN_K="${FAN_K:-4}"; FAN_M="${FAN_M:-20}"
TIMEOUT_MS="${TIMEOUT_MS:-10000}"
WORKLOADS="${WORKLOADS:-handshake chat idle fanout}"
SERVER_CPU="${SERVER_CPU:-0}"; LOADGEN_CPU="${LOADGEN_CPU:-1}"
BASELINE_PORT="${BASELINE_PORT:-9480}"
BASELINE_ARGS="${BASELINE_ARGS:-}"
PORTCULLIS_CMD="${PORTCULLIS_CMD:-}"
PORTCULLIS_URL="${PORTCULLIS_URL:-ws://127.0.0.1:8080/ws}"
PORTCULLIS_LOADGEN_ARGS="${PORTCULLIS_LOADGEN_ARGS:-}"
OPENAI="${OPENAI:-0}"
FAKEMODEL_PORT="${FAKEMODEL_PORT:-9499}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/portcullis-bench.XXXXXX)}"
mkdir -p "$OUT_DIR"

need_fds=$(( (IDLE_N > HS_C ? IDLE_N : HS_C) + 256 ))
# shellcheck source=benches/lib.sh
source benches/lib.sh
raise_fd_limit compare.sh "$need_fds" "IDLE_N=$IDLE_N"

echo "== building (release)"
cargo build --release --bin portcullis-loadgen --bin portcullis-baseline --bin portcullis \
    --bin portcullis-fakemodel
BIN="$CARGO_TARGET_DIR/release"
OPENAI_CMD="${OPENAI_CMD:-$BIN/portcullis serve --config-dir benches/environments --env bench-openai}"
LOADGEN="$BIN/portcullis-loadgen"

SERVER_PID=""
FAKEMODEL_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$FAKEMODEL_PID" ]]; then
        kill "$FAKEMODEL_PID" 2>/dev/null || true
        wait "$FAKEMODEL_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

workload_args() {
    case "$1" in
        handshake) echo "handshake --n $HS_N --c $HS_C" ;;
        chat) echo "chat --c $CHAT_C --m $CHAT_M" ;;
        idle) echo "idle --n $IDLE_N --secs $IDLE_S --ping-interval-ms $IDLE_PING_MS" ;;
        fanout) echo "fanout --k $FAN_K --m $FAN_M" ;;
        *) echo "compare.sh: unknown workload $1" >&2; return 1 ;;
    esac
}

start_server() { # name host port cmd
    local name=$1 host=$2 port=$3 cmd=$4
    # exec keeps one PID from taskset through to the server, so --server-pid is the server.
    taskset -c "$SERVER_CPU" bash -c "exec $cmd" >>"$OUT_DIR/$name.server.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "$host" "$port" || ! wait_ready "$host" "$port"; then
        echo "compare.sh: $name did not become ready on $host:$port; see $OUT_DIR/$name.server.log" >&2
        exit 1
    fi
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# run_target NAME URL "SERVER COMMAND" "EXTRA LOADGEN ARGS"
# Every run gets a fresh server: RSS figures would otherwise include memory the allocator
# kept from the previous workload, and one workload's leftovers could not skew the next.
run_target() {
    local name=$1 url=$2 cmd=$3 extra=$4
    local hostport=${url#ws://}; hostport=${hostport%%/*}
    local host=${hostport%:*} port=${hostport##*:}
    echo "== $name on CPU $SERVER_CPU: $cmd"
    for rep in $(seq 1 "$REPS"); do
        for wl in $WORKLOADS; do
            local log="$OUT_DIR/$name.$wl.$rep.log"
            start_server "$name" "$host" "$port" "$cmd"
            # shellcheck disable=SC2046,SC2086
            if ! taskset -c "$LOADGEN_CPU" "$LOADGEN" --url "$url" --server-pid "$SERVER_PID" \
                --timeout-ms "$TIMEOUT_MS" $extra $(workload_args "$wl") >"$log" 2>&1; then
                echo "   $wl rep $rep: loadgen failed, see $log" >&2
            fi
            stop_server
            echo "   $name $wl rep $rep: $(grep -c '^SUMMARY ' "$log" || true) summary line(s) -> $log"
        done
    done
    echo "== $name: medians over $REPS run(s)"
    cat "$OUT_DIR/$name".*.*.log | "$LOADGEN" summarize | tee "$OUT_DIR/$name.medians.txt"
}

run_target baseline "ws://127.0.0.1:$BASELINE_PORT/ws" \
    "$BIN/portcullis-baseline --listen 127.0.0.1:$BASELINE_PORT $BASELINE_ARGS" ""

if [[ -z "$PORTCULLIS_CMD" ]]; then
    echo "== portcullis: skipped (set PORTCULLIS_CMD to the command that starts it, and" \
         "PORTCULLIS_URL to its WebSocket URL, to compare it against the baseline)"
else
    run_target portcullis "$PORTCULLIS_URL" "$PORTCULLIS_CMD" "$PORTCULLIS_LOADGEN_ARGS"
    if [[ "$OPENAI" == 1 ]]; then
        taskset -c "$LOADGEN_CPU" "$BIN/portcullis-fakemodel" --listen "127.0.0.1:$FAKEMODEL_PORT" \
            >"$OUT_DIR/fakemodel.log" 2>&1 &
        FAKEMODEL_PID=$!
        wait_port 127.0.0.1 "$FAKEMODEL_PORT"
        run_target openai "$PORTCULLIS_URL" "$OPENAI_CMD" "$PORTCULLIS_LOADGEN_ARGS"
    fi
fi

# Key figures side by side (medians).
keys=(
    "handshake errors_total" "handshake violations_total" "chat errors_total" "chat violations_total"
    "idle errors_total" "fanout errors_total" "fanout violations_total"
    "handshake conns_per_s" "handshake latency_us.p50" "handshake latency_us.p99"
    "handshake server.cpu_us_per_op"
    "chat runs_per_s" "chat rtt_us.p50" "chat rtt_us.p99" "chat server.cpu_us_per_op"
    "idle server_rss_kb_per_conn" "idle server.cpu_us_per_op" "idle pong_us.p50" "idle pong_us.p99"
    "fanout missing" "fanout duplicates" "fanout completed_on_replica_us.p99"
)
lookup() { # file workload path
    awk -v w="$2" -v p="$3" '
        /^== / { cur = $2; sub(":", "", cur); next }
        cur == w && $1 == p { print $2; exit }' "$1" 2>/dev/null || true
}
echo
echo "== key figures (median of $REPS; breakdowns of errors and violations in the logs in $OUT_DIR)"
printf '%-44s %16s %16s %16s\n' "workload figure" baseline portcullis openai
for k in "${keys[@]}"; do
    w=${k%% *}; p=${k#* }
    b=$(lookup "$OUT_DIR/baseline.medians.txt" "$w" "$p"); b=${b:--}
    c=$(lookup "$OUT_DIR/portcullis.medians.txt" "$w" "$p"); c=${c:--}
    o=$(lookup "$OUT_DIR/openai.medians.txt" "$w" "$p"); o=${o:--}
    printf '%-44s %16s %16s %16s\n' "$w $p" "$b" "$c" "$o"
done
echo "logs: $OUT_DIR"
