#!/usr/bin/env bash
# roundtrips.sh BIN ENVDIR: one chat run (C=100 M=20) on a throwaway Postgres database; prints
# transactions committed per chat run (pg_stat_database) and the server's sendto/recvfrom
# per run (strace -c -f over the loadgen run). Needs the release loadgen, psql, jq, bc,
# strace; ENVDIR must be absolute (the server runs in a temporary directory). Run it
# under `flock /work/bench.lock`.
set -euo pipefail
BIN=$1; ENVS=$2; C=${C:-100}; M=${M:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd); LOADGEN=$ROOT/target/release/portcullis-loadgen
ADMIN=postgres://postgres@127.0.0.1:5432/postgres
DB=portcullis_rt_$$_$RANDOM
psql "$ADMIN" -Atqc "CREATE DATABASE $DB" >/dev/null
RUN=$(mktemp -d /tmp/portcullis-roundtrips.XXXX)
(cd "$RUN" && exec env PORTCULLIS_SERVICES__DATABASE__URL=postgres://postgres@127.0.0.1:5432/$DB taskset -c 0 "$BIN" serve --config-dir "$ENVS" --env bench-postgres) >"$RUN/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; psql "$ADMIN" -Atqc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; rm -rf "$RUN"' EXIT
for i in $(seq 1 100); do curl -sf http://127.0.0.1:8080/ready >/dev/null && break; sleep 0.2; done
x0=$(psql "$ADMIN" -Atqc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
strace -c -f -e trace=sendto,recvfrom -p $PID -o "$RUN/strace" &
SPID=$!; sleep 1
taskset -c 1 "$LOADGEN" --url ws://127.0.0.1:8080/ws --timeout-ms 20000 chat --c $C --m $M > "$RUN/loadgen.log" 2>&1 || true
kill -INT $SPID; wait $SPID 2>/dev/null || true
sleep 2
x1=$(psql "$ADMIN" -Atqc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
runs=$(grep '^SUMMARY ' "$RUN/loadgen.log" | tail -1 | sed 's/^SUMMARY //' | jq '.ops')
echo "runs=$runs xact_commit=$((x1-x0)) per_run=$(echo "scale=2; ($x1-$x0)/$runs" | bc)"
awk -v r="$runs" '/sendto|recvfrom/ {printf "%s calls=%d per_run=%.2f\n", $NF, $4, $4/r}' "$RUN/strace"
grep '^SUMMARY ' "$RUN/loadgen.log" | tail -1 | sed 's/^SUMMARY //' | jq -c '{ops, errors, violations}'
