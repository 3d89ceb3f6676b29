#!/usr/bin/env bash
# The short command (README): a reduced run of every scenario and reference, on loopback,
# in a few minutes. It starts a gateway (fresh data folder), the bare broadcast reference,
# a NATS server with WebSocket, an SFU and Janus (lib.sh); runs load-tests/scenarios/quick/*.toml; writes
# each run's JSON, Markdown and SVG and a report.md with the ratios into
# load-tests/results/<date>-quick/ (or $OUT), and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-gateway -p preau-sfu -p preau-load
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-quick}
mkdir -p "$OUT"
. load-tests/lib.sh

$B/preau-gateway --listen 127.0.0.1:18380 --data-dir "$W/gw" --max-connections 19000 \
  --max-connections-per-user 400 --sends-per-second 10000 --send-burst 10000 \
  --brake-slow-after 100000 --brake-hold-after 100001 >"$W/gateway.log" 2>&1 &
GW=$!
$B/preau-ref-broadcast 127.0.0.1:18381 >"$W/ref.log" 2>&1 &
REF=$!
start_nats 18382 18383
head -c 32 /dev/urandom >"$W/room.key"
$B/preau-sfu --listen 127.0.0.1:18390 --udp 127.0.0.1:18391 --room-key-file "$W/room.key" >"$W/sfu.log" 2>&1 &
SFU=$!
start_janus 18392
for p in 18380 18381 18383 18390 ${JANUS_PID:+18392}; do wait_port $p; done

L() { echo "== $*" >&2; $B/preau-load --out "$OUT" "$@" >"$W/last.json"; }
S=load-tests/scenarios/quick
L --file $S/connections.toml --addr 127.0.0.1:18380 --pid $GW
L --file $S/morning-storm.toml --addr 127.0.0.1:18380 --pid $GW
L --file $S/forums.toml --addr 127.0.0.1:18380 --pid $GW
L --file $S/chat.toml --addr 127.0.0.1:18380 --pid $GW
L --file $S/fanout.toml --name fanout-gateway --addr 127.0.0.1:18380 --pid $GW
L --file $S/fanout.toml --name fanout-reference --reference --addr 127.0.0.1:18381 --pid $REF
L --file $S/fanout.toml --name fanout-nats --nats --addr 127.0.0.1:18383 --pid $NATS
L --file $S/live-class.toml --sfu ws://127.0.0.1:18390/ws --room-key "$W/room.key" --pid $SFU
if [ -n "$JANUS_PID" ]; then
  L --file $S/live-class.toml --name live-class-janus --janus --sfu ws://127.0.0.1:18392 --pid $JANUS_PID
fi
$B/preau-load --scenario summary --out "$OUT"
echo "report: $OUT/report.md"
