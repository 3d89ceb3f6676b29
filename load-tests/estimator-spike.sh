#!/usr/bin/env bash
# Issue 20's estimator comparison: how each candidate engine's send-side bandwidth
# estimate follows a rate limit on the way to one subscriber. A teacher publishes VP8 in
# three simulcast layers and Opus; one pupil receives the middle layer and the audio
# (about 220 kbit/s). Everything the SFU's UDP port sends goes through an htb class on
# `lo` (the kernel here has htb and tbf, no netem), with a 50-packet queue, whose rate
# changes by phase:
#   1 Mbit/s (headroom), then 150 kbit/s (congested), then 1 Mbit/s again (recovery).
# Each engine runs with --bwe; its estimate is read from /stats every second. Needs root
# (tc); the qdisc is removed at exit. Output: results/<date>-estimator-spike/ ($OUT).
#   load-tests/estimator-spike.sh [seconds per phase, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-15}
command -v tc >/dev/null || { echo "tc (iproute2) is needed" >&2; exit 1; }
cargo build --release --locked -p preau-load -p preau-sfu-spike
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-estimator-spike}
mkdir -p "$OUT"
. load-tests/lib.sh
head -c 32 /dev/urandom >"$W/room.key"
UDP=18491
RATES=(1000 150 1000)

shape() { tc class change dev lo parent 1: classid 1:20 htb rate "$1kbit" ceil "$1kbit" burst 6k; }
unshape() { tc qdisc del dev lo root 2>/dev/null || true; }
trap 'unshape; cleanup' EXIT INT TERM
unshape
tc qdisc add dev lo root handle 1: htb default 10
tc class add dev lo parent 1: classid 1:10 htb rate 100gbit
tc class add dev lo parent 1: classid 1:20 htb rate "${RATES[0]}kbit" ceil "${RATES[0]}kbit" burst 6k
# A short queue: a congested link delays by a few hundred milliseconds, then drops.
tc qdisc add dev lo parent 1:20 handle 20: pfifo limit 50
tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff match ip sport $UDP 0xffff flowid 1:20

for engine in str0m rtc; do
  echo "== $engine" >&2
  shape "${RATES[0]}"
  $B/preau-sfu-spike --engine $engine --bwe --listen 127.0.0.1:18490 --udp 127.0.0.1:$UDP \
    --room-key-file "$W/room.key" >"$W/spike-$engine.log" 2>&1 &
  P=$!; wait_port 18490
  total=$((PHASE * ${#RATES[@]}))
  $B/preau-load --out "$OUT" --scenario live-class --name "estimator-$engine" --rooms 1 --pupils 1 --speakers 0 \
    --seconds "$total" --sfu ws://127.0.0.1:18490/ws --room-key "$W/room.key" --pid $P >/dev/null 2>&1 &
  L=$!
  sleep 4 # joins and the warm-up
  : >"$OUT/estimator-$engine.csv"
  t=0
  for rate in "${RATES[@]}"; do
    shape "$rate"
    for _ in $(seq 1 "$PHASE"); do
      est=$(curl -s 127.0.0.1:18490/stats | python3 -c 'import json,sys; e=json.load(sys.stdin)["estimates"]; print(max(e.values()) if e else 0)')
      echo "$t,$rate,$est" >>"$OUT/estimator-$engine.csv"
      t=$((t + 1)); sleep 1
    done
  done
  wait $L || true
  kill $P; wait $P 2>/dev/null || true
done

python3 - "$OUT" "$PHASE" "${RATES[*]}" <<'PY'
import csv, os, sys
out, phase, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
rows = ["| engine | phase | limit (kbit/s) | estimate at the phase's end (kbit/s) | median of its last 5 s | seconds until under the limit |",
        "|---|---|---|---|---|---|"]
for engine in ["str0m", "rtc"]:
    path = os.path.join(out, f"estimator-{engine}.csv")
    if not os.path.exists(path):
        continue
    data = [(int(t), int(r), int(e)) for t, r, e in csv.reader(open(path))]
    for i, rate in enumerate(rates):
        ph = [d for d in data if i * phase <= d[0] < (i + 1) * phase]
        if not ph:
            continue
        tail = sorted(e for _, _, e in ph[-5:])
        under = next((d[0] - i * phase for d in ph if 0 < d[2] <= int(rate) * 1000), None)
        rows.append(f"| {engine} | {i + 1} | {rate} | {ph[-1][2] / 1000:.0f} | {tail[len(tail) // 2] / 1000:.0f} | "
                    f"{under if under is not None else 'never'} |")
md = "\n".join(rows) + "\n"
open(os.path.join(out, "estimator.md"), "w").write(md)
print(md)
PY
