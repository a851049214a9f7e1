#!/usr/bin/env bash
# production.sh: the production path in one command. Runs each workload against the
# baseline server, portcullis on SQLite and portcullis on Postgres (one node), and, when
# OLD_BIN is given, the same two stores on an older portcullis binary; prints medians and
# the ratios docs/PERFORMANCE.md reports against.
#
# Runs are interleaved: every repetition runs each workload once per target, one target
# after the other (each repetition in an order rotated by one), so a slow phase of this
# shared machine hits every target alike. Every
# run gets a fresh server and a fresh store: a new directory for SQLite (the server runs
# in it), or a throwaway database on the local Postgres server, created before the run and
# dropped after it. On Postgres the figures also count the CPU time of the database's
# backends serving that database (`db.cpu_us_per_op`, read from /proc/PID/schedstat), so
# `server_db_cpu_us_per_op` compares with SQLite, which does its database work in-process.
#
# Environment (defaults in brackets):
#   REPS [3]                        repetitions (each runs every workload on every target)
#   WORKLOADS ["handshake chat idle"]
#   HS_N [2000] HS_C [50]           handshake: connections, concurrency
#   CHAT_C [100] CHAT_M [20]        chat: connections, messages per connection
#   IDLE_N [2000] IDLE_S [5]        idle: connections, hold seconds
#   IDLE_PING_MS [1000]             idle: application ping interval per connection
#   TIMEOUT_MS [10000]              per-operation timeout
#   TARGETS ["baseline sqlite postgres", plus "sqlite-old postgres-old" with OLD_BIN and
#           "baseline-old" with OLD_BASELINE_BIN]
#   OLD_BIN []                      an older portcullis binary to compare with, e.g.
#                                   /work/bin/portcullis-489113a
#   OLD_BASELINE_BIN []             an older baseline binary, e.g. /work/bin/baseline-489113a
#   OLD_REV [489113a]               the commit whose benches/environments/bench.toml
#                                   OLD_BIN reads (its configuration syntax)
#   PG_ADMIN_URL [postgres://postgres@127.0.0.1:5432/postgres]
#                                   where throwaway databases are created and dropped
#   SERVER_CPU [0] LOADGEN_CPU [1]  taskset CPU lists (Postgres itself is not pinned)
#   BASELINE_PORT [9480]
#   OUT_DIR [mktemp]                logs, SUMMARY lines and medians
#
# Needs curl, jq, psql and a Postgres server that lets PG_ADMIN_URL's user create databases.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

REPS="${REPS:-3}"
WORKLOADS="${WORKLOADS:-handshake chat idle}"
HS_N="${HS_N:-2000}"; HS_C="${HS_C:-50}"
CHAT_C="${CHAT_C:-100}"; CHAT_M="${CHAT_M:-20}"
IDLE_N="${IDLE_N:-2000}"; IDLE_S="${IDLE_S:-5}"; IDLE_PING_MS="${IDLE_PING_MS:-1000}"
TIMEOUT_MS="${TIMEOUT_MS:-10000}"
OLD_BIN="${OLD_BIN:-}"; OLD_REV="${OLD_REV:-489113a}"
OLD_BASELINE_BIN="${OLD_BASELINE_BIN:-}"
TARGETS="${TARGETS:-baseline sqlite postgres${OLD_BIN:+ sqlite-old postgres-old}${OLD_BASELINE_BIN:+ baseline-old}}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SERVER_CPU="${SERVER_CPU:-0}"; LOADGEN_CPU="${LOADGEN_CPU:-1}"
BASELINE_PORT="${BASELINE_PORT:-9480}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/portcullis-production.XXXXXX)}"
mkdir -p "$OUT_DIR"

# shellcheck source=benches/lib.sh
source benches/lib.sh
raise_fd_limit production.sh "$(( (IDLE_N > HS_C ? IDLE_N : HS_C) + 256 ))" "IDLE_N=$IDLE_N"
for tool in curl jq psql taskset; do
    command -v "$tool" >/dev/null || { echo "production.sh: $tool is not installed" >&2; exit 2; }
done
if [[ " $TARGETS " == *" postgres"* ]] && ! psql "$PG_ADMIN_URL" -Atqc 'SELECT 1' >/dev/null; then
    echo "production.sh: cannot reach Postgres at $PG_ADMIN_URL (set PG_ADMIN_URL)" >&2
    exit 2
fi

echo "== building (release)"
cargo build --release --bin portcullis-loadgen --bin portcullis-baseline --bin portcullis
BIN="$ROOT/$CARGO_TARGET_DIR/release"
LOADGEN="$BIN/portcullis-loadgen"
ENVS="$ROOT/benches/environments"

if [[ -n "$OLD_BIN" ]]; then
    # The old binary reads the bench environment of its own commit; bench-postgres.toml
    # only overrides the database, in a syntax both versions accept.
    OLD_ENVS="$OUT_DIR/old-environments"
    mkdir -p "$OLD_ENVS"
    git show "$OLD_REV:benches/environments/bench.toml" >"$OLD_ENVS/bench.toml"
    cp "$ENVS/bench-postgres.toml" "$OLD_ENVS/"
fi

# target_spec NAME: sets CMD (run in the run's own directory), URL and STORE.
target_spec() {
    case "$1" in
        baseline) CMD="$BIN/portcullis-baseline --listen 127.0.0.1:$BASELINE_PORT"
                  URL="ws://127.0.0.1:$BASELINE_PORT/ws"; STORE=none ;;
        sqlite) CMD="$BIN/portcullis serve --config-dir $ENVS --env bench"
                URL="ws://127.0.0.1:8080/ws"; STORE=sqlite ;;
        postgres) CMD="$BIN/portcullis serve --config-dir $ENVS --env bench-postgres"
                  URL="ws://127.0.0.1:8080/ws"; STORE=postgres ;;
        baseline-old) CMD="$OLD_BASELINE_BIN --listen 127.0.0.1:$BASELINE_PORT"
                      URL="ws://127.0.0.1:$BASELINE_PORT/ws"; STORE=none ;;
        sqlite-old) CMD="$OLD_BIN serve --config-dir $OLD_ENVS --env bench"
                    URL="ws://127.0.0.1:8080/ws"; STORE=sqlite ;;
        postgres-old) CMD="$OLD_BIN serve --config-dir $OLD_ENVS --env bench-postgres"
                      URL="ws://127.0.0.1:8080/ws"; STORE=postgres ;;
        *) echo "production.sh: unknown target $1" >&2; exit 2 ;;
    esac
}

workload_args() {
    case "$1" in
        handshake) echo "handshake --n $HS_N --c $HS_C" ;;
        chat) echo "chat --c $CHAT_C --m $CHAT_M" ;;
        idle) echo "idle --n $IDLE_N --secs $IDLE_S --ping-interval-ms $IDLE_PING_MS" ;;
        *) echo "production.sh: unknown workload $1" >&2; exit 2 ;;
    esac
}

SERVER_PID=""; RUN_DIR=""; DB=""
drop_db() {
    [[ -n "$DB" ]] && psql "$PG_ADMIN_URL" -Atqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=""
}
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    drop_db || true
    [[ -n "$RUN_DIR" ]] && rm -rf "$RUN_DIR"
    RUN_DIR=""
}
trap cleanup EXIT

# "PID NS" for every backend serving database $1: CPU time so far, in nanoseconds.
pg_backend_ns() {
    local pid ns
    psql "$PG_ADMIN_URL" -Atqc "SELECT pid FROM pg_stat_activity WHERE datname = '$1'" |
        while read -r pid; do
            if read -r ns _ <"/proc/$pid/schedstat" 2>/dev/null; then echo "$pid $ns"; fi
        done
}

# run_one TARGET WORKLOAD REP: one fresh server and store, one loadgen run, a log whose
# SUMMARY line carries the database's figures too.
run_one() {
    local t=$1 wl=$2 rep=$3 log="$OUT_DIR/$1.$2.$3.log" env=() hostport
    target_spec "$t"
    RUN_DIR=$(mktemp -d "$OUT_DIR/run.XXXXXX")
    if [[ "$STORE" == postgres ]]; then
        DB="portcullis_bench_$$_${rep}_${RANDOM}"
        psql "$PG_ADMIN_URL" -Atqc "CREATE DATABASE $DB" >/dev/null
        env=("PORTCULLIS_SERVICES__DATABASE__URL=${PG_ADMIN_URL%/*}/$DB")
    fi
    hostport=${URL#ws://}; hostport=${hostport%%/*}
    # exec keeps one PID from taskset through to the server, so --server-pid is the server.
    # shellcheck disable=SC2086
    (cd "$RUN_DIR" && exec env "${env[@]}" taskset -c "$SERVER_CPU" $CMD) \
        >>"$OUT_DIR/$t.server.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_port "${hostport%:*}" "${hostport##*:}" || ! wait_ready "${hostport%:*}" "${hostport##*:}"; then
        echo "production.sh: $t did not become ready; see $OUT_DIR/$t.server.log" >&2
        exit 1
    fi
    [[ -n "$DB" ]] && pg_backend_ns "$DB" >"$RUN_DIR/db.before"
    # shellcheck disable=SC2046
    if ! taskset -c "$LOADGEN_CPU" "$LOADGEN" --url "$URL" --server-pid "$SERVER_PID" \
        --timeout-ms "$TIMEOUT_MS" $(workload_args "$wl") >"$log" 2>&1; then
        echo "   $t $wl rep $rep: loadgen failed, see $log" >&2
    fi
    if [[ -n "$DB" ]]; then
        pg_backend_ns "$DB" >"$RUN_DIR/db.after"
        add_db_figures "$log" "$RUN_DIR/db.before" "$RUN_DIR/db.after"
    fi
    cleanup
    echo "   $t $wl rep $rep: $(grep -c '^SUMMARY ' "$log" || true) summary line(s) -> $log"
}

# add_db_figures LOG BEFORE AFTER: puts the backends' CPU over the run into LOG's SUMMARY
# line as `db` and `server_db_cpu_us_per_op`. A backend that exited during the run is not
# counted (sqlx keeps its pool's connections open, so none did in our runs).
add_db_figures() {
    local log=$1 ns backends line
    read -r ns backends < <(awk 'NR == FNR { b[$1] = $2; next } { s += $2 - ($1 in b ? b[$1] : 0); n++ }
                                 END { print s + 0, n + 0 }' "$2" "$3")
    line=$(grep '^SUMMARY ' "$log" | tail -1) || return 0
    line=$(jq -c --argjson ns "$ns" --argjson n "$backends" '
        .db = {cpu_ms: ($ns / 1e6), backends: $n,
               cpu_us_per_op: (if .ops > 0 then $ns / 1000 / .ops else 0 end)}
        | .server_db_cpu_us_per_op = (.server.cpu_us_per_op + .db.cpu_us_per_op)' <<<"${line#SUMMARY }")
    echo "SUMMARY $line" >>"$log"
    # The loadgen's own line stays above, renamed, so summarize reads only the merged one.
    sed -i '0,/^SUMMARY /s//LOADGEN_SUMMARY /' "$log"
}

echo "== targets: $TARGETS; workloads: $WORKLOADS; $REPS repetition(s), interleaved"
read -r -a order <<<"$TARGETS"
for rep in $(seq 1 "$REPS"); do
    for wl in $WORKLOADS; do
        for t in "${order[@]}"; do run_one "$t" "$wl" "$rep"; done
    done
    # Each repetition starts one target later, so no target always follows the same one
    # (a Postgres run leaves the database server busy for a moment after it).
    order=("${order[@]:1}" "${order[0]}")
done

for t in $TARGETS; do
    cat "$OUT_DIR/$t".*.*.log | "$LOADGEN" summarize >"$OUT_DIR/$t.medians.txt"
done

lookup() { # target workload path
    awk -v w="$2" -v p="$3" '
        /^== / { cur = $2; sub(":", "", cur); next }
        cur == w && $1 == p { print $2; exit }' "$OUT_DIR/$1.medians.txt" 2>/dev/null || true
}

keys=(
    "handshake errors_total" "handshake violations_total" "chat errors_total"
    "chat violations_total" "idle errors_total"
    "handshake server.cpu_us_per_op" "handshake latency_us.p99"
    "chat server.cpu_us_per_op" "chat db.cpu_us_per_op" "chat server_db_cpu_us_per_op"
    "chat rtt_us.p50" "chat rtt_us.p99" "chat runs_per_s"
    "idle server_rss_kb_per_conn" "idle pong_us.p99"
)
echo
echo "== medians of $REPS interleaved run(s) (logs: $OUT_DIR)"
printf '%-36s' "workload figure"; for t in $TARGETS; do printf ' %14s' "$t"; done; echo
for k in "${keys[@]}"; do
    w=${k%% *}; p=${k#* }
    [[ " $WORKLOADS " == *" $w "* ]] || continue
    printf '%-36s' "$k"
    for t in $TARGETS; do v=$(lookup "$t" "$w" "$p"); printf ' %14s' "${v:--}"; done
    echo
done

echo
echo "== ratios of the medians (A / B)"
# "A B WORKLOAD PATH [PATH OF B]": on Postgres the database's work is in its backends, so
# its server + backends CPU is set against SQLite's server CPU, where that work is in-process.
ratios=(
    "postgres sqlite chat server.cpu_us_per_op"
    "postgres sqlite chat server_db_cpu_us_per_op server.cpu_us_per_op"
    "postgres sqlite chat rtt_us.p99"
)
for a in sqlite postgres sqlite-old postgres-old; do
    for k in "chat server.cpu_us_per_op" "chat rtt_us.p99" "handshake server.cpu_us_per_op" \
             "handshake latency_us.p99"; do
        ratios+=("$a baseline $k")
    done
done
for pair in "sqlite sqlite-old" "postgres postgres-old" "baseline baseline-old"; do
    for k in "chat server.cpu_us_per_op" "chat rtt_us.p99" "handshake server.cpu_us_per_op" \
             "handshake latency_us.p99" "idle server_rss_kb_per_conn"; do
        ratios+=("$pair $k")
    done
done
# figure LOG PATH: one run's figure (dotted path into its SUMMARY line), or nothing.
figure() {
    grep '^SUMMARY ' "$1" 2>/dev/null | tail -1 | sed 's/^SUMMARY //' |
        jq -r --arg p "$2" 'getpath($p | split(".")) // empty'
}
printf '%-26s %-10s %-44s %10s %s\n' "A / B" workload figure medians "per repetition, sorted (median)"
for spec in "${ratios[@]}"; do
    read -r a b w pa pb <<<"$spec"
    [[ " $TARGETS " == *" $a "* && " $TARGETS " == *" $b "* && " $WORKLOADS " == *" $w "* ]] || continue
    va=$(lookup "$a" "$w" "$pa"); vb=$(lookup "$b" "$w" "${pb:-$pa}")
    r=$(awk -v a="$va" -v b="$vb" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }')
    # The same repetition's runs of A and B ran back to back: their ratio is the paired one.
    per=$(for rep in $(seq 1 "$REPS"); do
              fa=$(figure "$OUT_DIR/$a.$w.$rep.log" "$pa"); fb=$(figure "$OUT_DIR/$b.$w.$rep.log" "${pb:-$pa}")
              awk -v a="$fa" -v b="$fb" 'BEGIN { if (a != "" && b != "" && b + 0 != 0) printf "%.2f\n", a / b }'
          done | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
              m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              s = ""; for (i = 1; i <= NR; i++) s = s (i > 1 ? " " : "") v[i]
              printf "%s (%.2fx)", s, m }')
    printf '%-26s %-10s %-44s %10s %s\n' "$a / $b" "$w" "$pa${pb:+ / $pb}" "$r" "$per"
done
