#!/usr/bin/env bash
# A reconnect storm (issue 19): $N clients connecting at once to the gateway (each
# authenticated, subscribed to its channels, greeted) and to NATS over WebSocket (each
# through the NATS handshake), in one run; then N clients at 200 at a time for the idle
# memory per connection. Reports time until all are ready, connect latency, server CPU and
# resident memory per connection.
#
#   load-tests/storm.sh          # 19,000
#   N=5000 load-tests/storm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-gateway -p preau-load
B=target/release
N=${N:-19000}
OUT=${OUT:-load-tests/results/$(date +%F)-storm}
mkdir -p "$OUT"
ulimit -n 20000
. load-tests/lib.sh
echo "listen backlog: net.core.somaxconn = $(cat /proc/sys/net/core/somaxconn)" >&2

gateway() {
  rm -rf "$W/gw"
  $B/preau-gateway --listen 127.0.0.1:18780 --data-dir "$W/gw" --max-connections 19500 \
    --max-connections-per-user 2000 >"$W/gateway.log" 2>&1 &
  GW=$!
  wait_port 18780
}
L() { echo "== $*" >&2; $B/preau-load --out "$OUT" "$@" >"$W/last.json" || echo "   (run failed: see above)" >&2; }

gateway
L --scenario connections --name gateway-storm --addr 127.0.0.1:18780 --pid $GW --connections "$N" --concurrency "$N" --sources 50 --hold 3
kill $GW; wait $GW 2>/dev/null || true
gateway
L --scenario connections --name gateway-idle --addr 127.0.0.1:18780 --pid $GW --connections "$N" --concurrency 200 --sources 50 --hold 3
kill $GW; wait $GW 2>/dev/null || true
start_nats 18782 18783
wait_port 18783
L --scenario connections --name nats-storm --nats --addr 127.0.0.1:18783 --pid $NATS --connections "$N" --concurrency "$N"
echo "reports: $OUT"
