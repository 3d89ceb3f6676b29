#!/usr/bin/env bash
# Issue 20's engine spike, in one run with the same clients: one class with a teacher
# publishing VP8 in three simulcast layers and Opus, 2 pupils speaking, and 25, 100 and 300
# subscribers, against
#   - preau-sfu (today's engine: webrtc-rs `webrtc` 0.17, UDPMux, a task per track),
#   - preau-sfu-spike on webrtc-rs's sans-IO core `rtc` 0.21, then on str0m 0.25 (RTP mode):
#     one engine thread, one socket, our routing index; one sendto per datagram, then
#     one sendmmsg per input,
#   - Janus (the reference).
# Each server is started fresh for each size, so that its memory per peer starts from an
# empty process. Reports and spike.md (the table) go to results/<date>-engine-spike/ ($OUT).
# After each spike run, once the clients have gone, its memory and open connections are
# read again (churn: back to the baseline?).
#   load-tests/engine-spike.sh [sizes, default "25 100 300"] [seconds, default 15]
#   SERVERS="rtc str0m" load-tests/engine-spike.sh 300   # a subset (webrtc rtc str0m janus)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-25 100 300}
SECS=${2:-15}
SERVERS=${SERVERS:-webrtc rtc str0m janus}
has() { [[ " $SERVERS " == *" $1 "* ]]; }
cargo build --release --locked -p preau-sfu -p preau-load -p preau-sfu-spike
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-engine-spike}
mkdir -p "$OUT"
. load-tests/lib.sh
head -c 32 /dev/urandom >"$W/room.key"

run() { # <name> <pid> <url> [preau-load flags]
  local name=$1 pid=$2 url=$3; shift 3
  echo "== $name" >&2
  $B/preau-load --out "$OUT" --scenario live-class --name "$name" --rooms 1 --pupils "$N" --speakers 2 \
    --seconds "$SECS" --sfu "$url" --room-key "$W/room.key" --pid "$pid" "$@" >/dev/null ||
    echo "$name FAILED" >&2
}

for N in $SIZES; do
  if has webrtc; then
  $B/preau-sfu --listen 127.0.0.1:18390 --udp 127.0.0.1:18391 --room-key-file "$W/room.key" \
    >"$W/sfu-$N.log" 2>&1 &
  P=$!; wait_port 18390
  run "webrtc-$N" $P ws://127.0.0.1:18390/ws
  kill $P; wait $P 2>/dev/null || true
  fi

  for engine in rtc str0m; do
    has $engine || continue
    for mode in sendto sendmmsg; do
      flag=""; [ $mode = sendmmsg ] && flag="--sendmmsg"
      $B/preau-sfu-spike --engine $engine --listen 127.0.0.1:18490 --udp 127.0.0.1:18491 \
        --room-key-file "$W/room.key" $flag >"$W/spike-$engine-$N-$mode.log" 2>&1 &
      P=$!; wait_port 18490
      run "$engine-$mode-$N" $P ws://127.0.0.1:18490/ws
      sleep 3 # the clients' WebSockets close; their connections go
      curl -s 127.0.0.1:18490/stats | python3 -c "import json,sys; s=json.load(sys.stdin); \
s['rss_after_leave']=int(open('/proc/$P/status').read().split('VmRSS:')[1].split()[0])*1024; print(json.dumps(s))" \
        >"$OUT/$engine-$mode-$N.stats.json" || true
      kill $P; wait $P 2>/dev/null || true
    done
  done

  has janus && start_janus 18392
  if has janus && [ -n "$JANUS_PID" ]; then
    wait_port 18392
    run "janus-$N" $JANUS_PID ws://127.0.0.1:18392 --janus
    stop_janus
  fi
done

python3 - "$OUT" "$SIZES" <<'PY'
import json, os, sys
out, sizes = sys.argv[1], sys.argv[2].split()
engines = [("webrtc", "preau-sfu (webrtc 0.17)"), ("rtc-sendto", "spike: rtc 0.21, sendto"),
           ("rtc-sendmmsg", "spike: rtc 0.21, sendmmsg"), ("str0m-sendto", "spike: str0m 0.25, sendto"),
           ("str0m-sendmmsg", "spike: str0m 0.25, sendmmsg"), ("janus", "Janus")]
def churn(key, n, r):
    try:
        s = json.load(open(os.path.join(out, f"{key}-{n}.stats.json")))
    except (OSError, ValueError):
        return ""
    return f"{r['sfu_rss_before_bytes'] / 1e6:.0f} → {s['rss_after_leave'] / 1e6:.0f} ({s['connections']} left open)"
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except OSError:
        return None
rows = ["| subscribers | engine | bytes/peer | µs CPU/packet (user + kernel) | ratio to Janus (CPU/packet) | packets/s | lost | p50 / p99 latency (ms) | pupils without video | RSS before → after all left (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
for n in sizes:
    janus = load(f"janus-{n}")
    for key, label in engines:
        r = load(f"{key}-{n}")
        if r is None:
            rows.append(f"| {n} | {label} | failed or skipped | | | | | | | |")
            continue
        lat = r.get("publish_to_receive_latency_us", {})
        ratio = "n/a"
        if janus and janus.get("sfu_cpu_us_per_packet"):
            ratio = f"{r['sfu_cpu_us_per_packet'] / janus['sfu_cpu_us_per_packet']:.2f}"
        split = ""
        if "sfu_cpu_us_per_packet_user" in r:
            split = f" ({r['sfu_cpu_us_per_packet_user']:.1f} + {r['sfu_cpu_us_per_packet_system']:.1f})"
        rows.append(f"| {n} | {label} | {r['sfu_bytes_per_peer']:.0f} | {r['sfu_cpu_us_per_packet']:.2f}{split} | {ratio} | "
                    f"{r['packets_forwarded_per_second']:.0f} | {r['packets_lost']} | "
                    f"{lat.get('p50', 0) / 1000:.2f} / {lat.get('p99', 0) / 1000:.2f} | {r['pupils_without_video']} | {churn(key, n, r)} |")
md = "\n".join(rows) + "\n"
open(os.path.join(out, "spike.md"), "w").write(md)
print(md)
PY
echo "table: $OUT/spike.md"
