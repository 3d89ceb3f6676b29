#!/usr/bin/env bash
# Issue 20's NACK/RTX check: Chromium pages (one publisher in simulcast, two receivers)
# reach each spike engine through load-tests/spike-relay.py, which drops 2% of the
# datagrams each way. Chromium's own counters say what the retransmissions recovered:
# packets lost, NACKs sent, retransmissions received, freezes. Chromium counts a packet
# repaired by RTX as lost all the same (libwebrtc leaves "recovered" packets out of its
# receive statistics), so what was never repaired is lost minus RTX retransmissions; a
# repair resent on the media SSRC (rtc's) counts as received.
# Reports: results/<date>-spike-nack/ ($OUT).
#   load-tests/spike-nack.sh [loss, default 0.02] [seconds, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
LOSS=${1:-0.02}; SECS=${2:-20}
cargo build --release --locked -p preau-sfu-spike
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-spike-nack}
mkdir -p "$OUT"
. load-tests/lib.sh
need_spike_browser
head -c 32 /dev/urandom >"$W/room.key"
for engine in str0m rtc; do
  python3 load-tests/spike-relay.py --listen 127.0.0.1:18492 --to 127.0.0.1:18491 --loss "$LOSS" \
    2>"$OUT/relay-$engine.txt" &
  R=$!
  $B/preau-sfu-spike --engine $engine --listen 127.0.0.1:18490 --udp 127.0.0.1:18491 --announce 127.0.0.1:18492 \
    --room-key-file "$W/room.key" >"$W/spike-$engine.log" 2>&1 &
  P=$!; wait_port 18490
  echo "== $engine, $LOSS lost each way" >&2
  node load-tests/spike-browser/interop.mjs http://127.0.0.1:18490 --no-restart --seconds "$SECS" \
    >"$OUT/nack-$engine.json" || echo "$engine: receivers stopped decoding" >&2
  curl -s 127.0.0.1:18490/stats >"$OUT/nack-$engine.stats.json" || true
  kill $P $R; wait $P $R 2>/dev/null || true
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = ["| engine | video packets received | counted lost | NACKs sent | RTX retransmissions received | never repaired (lost − RTX, ≥ 0) | freezes | audio lost / received |",
        "|---|---|---|---|---|---|---|---|"]
for e in ["str0m", "rtc"]:
    try:
        r = json.load(open(os.path.join(out, f"nack-{e}.json")))
    except (OSError, ValueError):
        rows.append(f"| {e} | failed | | | | | | |"); continue
    s = r["afterPubRestart"]
    t = lambda k: sum(x[k] for x in s)
    never = sum(max(0, x['videoLost'] - x['retransmitted']) for x in s)
    rows.append(f"| {e} | {t('videoPackets')} | {t('videoLost')} | {t('nacks')} | {t('retransmitted')} | {never} | {t('freezes')} | {t('audioLost')} / {t('audioPackets')} |")
md = "\n".join(rows) + "\n"
open(os.path.join(out, "nack.md"), "w").write(md)
print(md)
PY
