#!/usr/bin/env bash
# PostgreSQL against SQLite, in one run on one machine (issue 17's figures):
#  1. preau-store-bench: appends per second, one writer and 64 concurrent writers (many
#     channels, one channel), ack percentiles, CPU per append, gapless checked.
#  2. the forums scenario (load-tests/scenarios/full/forums.toml, or $FORUMS) against a
#     gateway on SQLite, then a gateway on PostgreSQL: send-to-ack and send-to-deliver
#     percentiles, nothing lost; the PostgreSQL server's CPU over the run beside the
#     gateway's.
# The PostgreSQL server is $PREAU_TEST_POSTGRES (default: the machine's on 127.0.0.1:5432,
# user postgres); a database of the run's own is created and dropped.
# Results: load-tests/results/<date>-postgres/ (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-gateway -p preau-load
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-postgres}
FORUMS=${FORUMS:-load-tests/scenarios/full/forums.toml}
PG=${PREAU_TEST_POSTGRES:-host=127.0.0.1 port=5432 user=postgres dbname=postgres}
mkdir -p "$OUT"
. load-tests/lib.sh

DB=preau_load_$$
psql "$PG" -qc "CREATE DATABASE $DB"
drop_db() { psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; }
trap 'cleanup; drop_db' EXIT INT TERM
PGURL="$(echo "$PG" | sed 's/dbname=[^ ]*//') dbname=$DB"

# CPU seconds of every PostgreSQL process.
pg_cpu() {
  local t=0
  for s in /proc/[0-9]*/stat; do
    read -r line <"$s" 2>/dev/null || continue
    case "$line" in *"(postgres)"*) ;; *) continue ;; esac
    set -- ${line##*) }
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

echo "== store appends" >&2
$B/preau-store-bench --postgres "$PG" --seconds 5 --out "$OUT/store-appends.json" | tee "$OUT/store-appends.md"

forums() { # <name> [gateway flags...]
  local name=$1; shift
  $B/preau-gateway --listen 127.0.0.1:18480 --data-dir "$W/$name" --max-connections 19000 \
    --max-connections-per-user 400 --sends-per-second 10000 --send-burst 10000 \
    --brake-slow-after 100000 --brake-hold-after 100001 "$@" >"$W/$name.log" 2>&1 &
  local gw=$!
  wait_port 18480
  local c0; c0=$(pg_cpu)
  echo "== forums on $name" >&2
  $B/preau-load --file "$FORUMS" --name "forums-$name" --out "$OUT" --addr 127.0.0.1:18480 --pid $gw >"$W/last.json"
  local c1; c1=$(pg_cpu)
  echo "forums-$name: PostgreSQL server CPU over the run: $(( (c1 - c0) * 10 )) ms" | tee -a "$OUT/postgres-server-cpu.txt"
  kill $gw; wait $gw 2>/dev/null || true
}

forums sqlite
$B/preau-gateway migrate --postgres-url "$PGURL"
forums postgres --postgres-url "$PGURL"
echo "results: $OUT"
