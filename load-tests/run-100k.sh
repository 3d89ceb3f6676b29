#!/usr/bin/env bash
# 100,000 concurrent WebSockets on one machine whose processes may hold 20,000 open files
# each: 6 gateway processes joined by a private Redis, 6 load processes on distinct
# 127.0.0.x source addresses, 17,000 connections each. Loopback only; stops by itself.
# Usage: load-tests/run-100k.sh [connections-per-process]  (from the repository root)
set -euo pipefail
PER=${1:-17000}
N=6
cargo build --release -q -p preau-gateway -p preau-load
WORK=$(mktemp -d /tmp/preau-100k.XXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null 2>&1 &
REDIS=$!
PIDS=()
cleanup() { kill "${PIDS[@]}" "$REDIS" 2>/dev/null || true; }
trap cleanup EXIT
sleep 0.5
for i in $(seq 1 $N); do
  ./target/release/preau-gateway --listen "127.0.0.1:$((19000 + i))" --data-dir "$WORK/data" \
    --redis "redis://127.0.0.1:$PORT" --node-id "gw$i" --max-connections 19500 \
    --max-connections-per-user 1000 > "$WORK/gw$i.out" 2> "$WORK/gw$i.err" &
  PIDS+=($!)
  [ "$i" = 1 ] && sleep 1   # the first creates the key and the demo school
done
sleep 1
GWPIDS=$(IFS=,; echo "${PIDS[*]}")
LOADS=()
for i in $(seq 1 $N); do
  # Each load process owns 40 source addresses: 127.0.0.(2+40(i-1)) onwards.
  ./target/release/preau-load --scenario connections --addr "127.0.0.1:$((19000 + i))" --pid "$GWPIDS" \
    --connections "$PER" --concurrency 100 --sources 40 --first-source $((2 + 40 * (i - 1))) --hold 20 \
    > "$WORK/load$i.json" 2> "$WORK/load$i.err" &
  LOADS+=($!)
done
FAIL=0
for p in "${LOADS[@]}"; do wait "$p" || FAIL=1; done
python3 - "$WORK" "$N" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{work}/load{i}.json")) for i in range(1, n + 1)]
open_ = sum(r["connections_open"] for r in rs)
alive = sum(r["alive_after_hold"] for r in rs)
rss = max(r["gateway_rss_after_bytes"] for r in rs)
before = min(r["gateway_rss_before_bytes"] for r in rs)
print(json.dumps({
    "connections_open": open_, "alive_after_hold": alive,
    "connections_failed": sum(r["connections_failed"] for r in rs),
    "gateway_processes": n,
    "gateways_rss_bytes": rss,
    "gateway_bytes_per_connection": round((rss - before) / max(open_, 1)),
    "connect_latency_p99_us_worst": max(r["connect_latency_us"]["p99"] for r in rs),
    "per_process": [{k: r[k] for k in ("connections_open", "alive_after_hold", "connect_seconds")} for r in rs],
}, indent=1))
PY
exit $FAIL
