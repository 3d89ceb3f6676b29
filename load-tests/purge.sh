#!/usr/bin/env bash
# Live traffic while a person's data is erased (issue 13): a departed pupil with 100,000
# posts ($ROWS) in a class forum is erased (DELETE /admin/users/<id>/data) while the
# forums scenario runs; the same scenario first runs without the erasure, on the same
# gateway, as the reference. Reports both runs' send-to-ack and send-to-deliver
# percentiles and the erasure's duration and rows.
# Results: load-tests/results/<date>-purge/ (or $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p preau-gateway -p preau-load
B=target/release
OUT=${OUT:-load-tests/results/$(date +%F)-purge}
ROWS=${ROWS:-100000}
FORUMS=${FORUMS:-load-tests/scenarios/full/forums.toml}
mkdir -p "$OUT"
. load-tests/lib.sh

gateway() {
  $B/preau-gateway --listen 127.0.0.1:18580 --data-dir "$W/gw" --max-connections 19000 \
    --max-connections-per-user 400 --sends-per-second 10000 --send-burst 10000 \
    --brake-slow-after 100000 --brake-hold-after 100001 >>"$W/gateway.log" 2>&1 &
  GW=$!
  wait_port 18580
}

# The demo school, then $ROWS posts of e001 written straight into the database.
gateway
kill $GW; wait $GW 2>/dev/null || true
python3 - "$W/gw/preau.db" "$ROWS" <<'PY'
import sqlite3, sys
db, rows = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
ch = "forum:0750001A:purge"
c.executemany(
    "INSERT INTO entries (channel, seq, kind, author, at, body, client_id, edited, deleted) "
    "VALUES (?, ?, 'message', 'e001', 1796160600000, ?, ?, 0, 0)",
    ((ch, i, f"réponse {i} de e001 au forum", f"k{i}") for i in range(1, rows + 1)))
c.commit()
PY
gateway
TOKEN=$(curl -s "http://127.0.0.1:18580/dev/token?user=ad01" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

echo "== forums, reference" >&2
$B/preau-load --file "$FORUMS" --name forums-reference --out "$OUT" --addr 127.0.0.1:18580 --pid $GW >/dev/null
echo "== forums, with the erasure of $ROWS rows" >&2
$B/preau-load --file "$FORUMS" --name forums-during-purge --out "$OUT" --addr 127.0.0.1:18580 --pid $GW >/dev/null &
LOAD=$!
sleep 3
start=$(date +%s.%N)
curl -s -X DELETE -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18580/admin/users/e001/data" >"$OUT/erasure.json"
end=$(date +%s.%N)
wait $LOAD
python3 - "$OUT" "$start" "$end" <<'PY'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
er = json.load(open(f"{out}/erasure.json"))
lines = [f"erasure: {er['rows']} rows in {end - start:.2f} s", "",
         "| run | deliveries | lost | send-to-ack p50 / p99 / max | send-to-deliver p50 / p99 / max |", "|---|---|---|---|---|"]
for n in ["forums-reference", "forums-during-purge"]:
    d = json.load(open(f"{out}/{n}.json"))
    a, v = d["send_to_ack_us"], d["send_to_deliver_us"]
    lines.append(f"| {n} | {d['deliveries']:,} | {d['lost']} | {a['p50']/1000:.1f} / {a['p99']/1000:.1f} / {a['max']/1000:.1f} ms "
                 f"| {v['p50']/1000:.1f} / {v['p99']/1000:.1f} / {v['max']/1000:.1f} ms |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
