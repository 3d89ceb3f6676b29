#!/usr/bin/env bash
# The live-class scenario against preau-sfu and against Janus (its reference) in one run,
# with the same clients: scenarios/<size>/live-class.toml (default: full, 4 classes of 30),
# reports and report.md (with the ratios) into results/<date>-live-class-vs-janus/ (or $OUT).
#   load-tests/live.sh [quick|full] [preau-load flags, e.g. --rooms 8]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-full}; shift || true
cargo build --release --locked -p preau-sfu -p preau-load
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-live-class-vs-janus}
mkdir -p "$OUT"
. load-tests/lib.sh

head -c 32 /dev/urandom >"$W/room.key"
$B/preau-sfu --listen 127.0.0.1:18390 --udp 127.0.0.1:18391 --room-key-file "$W/room.key" >"$W/sfu.log" 2>&1 &
SFU=$!
start_janus 18392
[ -n "$JANUS_PID" ] || { echo "Janus did not start: no reference" >&2; exit 1; }
wait_port 18390; wait_port 18392

F=load-tests/scenarios/$SIZE/live-class.toml
echo "== preau-sfu" >&2
$B/preau-load --out "$OUT" --file $F --sfu ws://127.0.0.1:18390/ws --room-key "$W/room.key" --pid $SFU "$@" >/dev/null
echo "== Janus" >&2
$B/preau-load --out "$OUT" --file $F --name live-class-janus --janus --sfu ws://127.0.0.1:18392 --pid $JANUS_PID "$@" >/dev/null
$B/preau-load --scenario summary --out "$OUT"
echo "report: $OUT/report.md"
