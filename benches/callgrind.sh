#!/usr/bin/env bash
# callgrind.sh: user-space instructions per chat run of one or more portcullis binaries,
# counted by valgrind's callgrind. On a noisy machine, CPU time per run varies by ±20%
# between back-to-back runs; instruction counts repeat to within ~0.5-2% (batching under
# valgrind varies), so a change of a few percent can be measured here with a few runs (kernel work such as send and fsync is not counted,
# and the loop runs ~50x slower under valgrind, so batches differ from a real run).
#
# Usage: benches/callgrind.sh [BINARY[@CONFIG_DIR]...]   (default: target/release/portcullis, built)
# A portcullis binary is served the bench environment from CONFIG_DIR (default
# benches/environments); one from before the typed [components] table needs its own
# commit's file, e.g. for 489113a:
#   mkdir -p /tmp/env-489113a && git show 489113a:benches/environments/bench.toml >/tmp/env-489113a/bench.toml
#   benches/callgrind.sh target/release/portcullis /work/bin/portcullis-489113a@/tmp/env-489113a
# A binary whose name contains "baseline" is started as the baseline server.
# Environment: CHAT_C [100] CHAT_M [10]; KEEP=1 keeps the callgrind dumps in OUT_DIR.
# Needs valgrind (apt-get install -y valgrind). Uses port 8080 and data/bench.db.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
C="${CHAT_C:-100}"; M="${CHAT_M:-10}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/portcullis-callgrind.XXXXXX)}"
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install -y valgrind)" >&2; exit 2; }

if [[ $# -eq 0 ]]; then cargo build --release --bin portcullis-loadgen --bin portcullis; else cargo build --release --bin portcullis-loadgen; fi
LOADGEN="$CARGO_TARGET_DIR/release/portcullis-loadgen"
[[ $# -eq 0 ]] && set -- "$CARGO_TARGET_DIR/release/portcullis"

for spec in "$@"; do
    bin=${spec%%@*}; config=benches/environments
    [[ "$spec" == *@* ]] && config=${spec#*@}
    rm -f data/bench.db data/bench.db-wal data/bench.db-shm
    out="$OUT_DIR/$(basename "$bin").$$"
    args=(serve --config-dir "$config" --env bench)
    [[ "$(basename "$bin")" == *baseline* ]] && args=(--listen 127.0.0.1:8080)
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
        "$bin" "${args[@]}" >"$out.server.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        # The baseline has no /ready: it is ready once it accepts connections.
        if [[ "${args[0]}" == --listen ]]; then
            (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
        else
            [[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ready || true)" == 200 ]] && break
        fi
        sleep 0.1
    done
    # Warm up (first statements, caches), then count only the measured workload.
    "$LOADGEN" --url ws://127.0.0.1:8080/ws --timeout-ms 60000 chat --c "$C" --m 2 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    summary=$("$LOADGEN" --url ws://127.0.0.1:8080/ws --timeout-ms 60000 chat --c "$C" --m "$M" | grep '^SUMMARY ')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    runs=$(sed 's/.*"runs_ok":\([0-9]*\).*/\1/' <<<"$summary")
    ir=$(grep -h '^summary:' "$out".*.1 | awk '{print $2}')
    echo "$bin: $ir instructions for $runs runs = $((ir / runs)) per run (C=$C M=$M)"
    [[ "${KEEP:-0}" == 1 ]] || rm -f "$out".*
done
