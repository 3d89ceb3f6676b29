#!/usr/bin/env bash
# Issue 20's interop check with Debian's Chromium (installed when missing, as scripts/test
# does): on each spike engine, a publishing page and two receiving pages, then ICE
# restarts on a receiver's and on the publisher's connection (str0m; the rtc engine
# is tried without restarts). Reports: results/<date>-spike-interop/ ($OUT).
#   load-tests/spike-interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-sfu-spike
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-spike-interop}
mkdir -p "$OUT"
. load-tests/lib.sh
need_spike_browser
head -c 32 /dev/urandom >"$W/room.key"
status=0
for engine in str0m rtc; do
  flag=""; [ $engine = rtc ] && flag="--no-restart"
  $B/preau-sfu-spike --engine $engine --listen 127.0.0.1:18490 --udp 127.0.0.1:18491 \
    --room-key-file "$W/room.key" >"$W/spike-$engine.log" 2>&1 &
  P=$!; wait_port 18490
  echo "== $engine" >&2
  if node load-tests/spike-browser/interop.mjs http://127.0.0.1:18490 $flag >"$OUT/interop-$engine.json"; then
    echo "$engine: decoding throughout" >&2
  else
    echo "$engine: FAILED (see $OUT/interop-$engine.json)" >&2; status=1
  fi
  curl -s 127.0.0.1:18490/stats >"$OUT/interop-$engine.stats.json" || true
  kill $P; wait $P 2>/dev/null || true
done
exit $status
