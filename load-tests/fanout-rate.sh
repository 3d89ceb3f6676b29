#!/usr/bin/env bash
# The rate-driven fan-out (issue 19): one announcement channel of $MEMBERS connected
# members, a teacher posting at each of $RATES messages per second for $SECONDS seconds
# (pipelined, without waiting for acks), then drain; against the gateway, the bare
# broadcast reference and NATS over WebSocket, in one run. Each report says whether the
# server kept up with the offered rate (`kept_up`) and checks nothing was lost.
#
#   load-tests/fanout-rate.sh            # 5,000 members, 20, 200 and 1,000 messages/s
#   MEMBERS=1000 RATES="20 200" SECONDS_EACH=3 load-tests/fanout-rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-gateway -p preau-load
B=target/release
MEMBERS=${MEMBERS:-5000}
RATES=${RATES:-20 200 1000}
SECONDS_EACH=${SECONDS_EACH:-5}
OUT=${OUT:-load-tests/results/$(date +%F)-fanout-rate}
mkdir -p "$OUT"
ulimit -n 20000
. load-tests/lib.sh

$B/preau-gateway --listen 127.0.0.1:18480 --data-dir "$W/gw" --max-connections 19000 \
  --max-connections-per-user 2000 --sends-per-second 100000 --send-burst 100000 --frames-per-second 100000 \
  --brake-slow-after 100000 --brake-hold-after 100001 >"$W/gateway.log" 2>&1 &
GW=$!
$B/preau-ref-broadcast 127.0.0.1:18481 >"$W/ref.log" 2>&1 &
REF=$!
start_nats 18482 18483
for p in 18480 18481 18483; do wait_port $p; done

L() { echo "== $*" >&2; $B/preau-load --out "$OUT" "$@" >"$W/last.json" || echo "   (run failed: see above)" >&2; }
for r in $RATES; do
  n=$((r * SECONDS_EACH))
  common=(--scenario fanout --listeners "$MEMBERS" --messages "$n" --rate "$r" --sources 50)
  L "${common[@]}" --name "gateway-$r" --addr 127.0.0.1:18480 --pid $GW
  L "${common[@]}" --name "reference-$r" --reference --addr 127.0.0.1:18481 --pid $REF
  L "${common[@]}" --name "nats-$r" --nats --addr 127.0.0.1:18483 --pid $NATS
done
echo "reports: $OUT"
