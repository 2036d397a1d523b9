#!/usr/bin/env bash
# Delivery throughput (BENCHMARKS.md): N stored pending deliveries forwarded to a
# local receiver (bare warp answering 200). Loopback only, bounded.
#   bash benches/http/deliveries.sh [N]
#   BIN=/path/to/other/leadscore bash benches/http/deliveries.sh 3000   (compare builds)
#   CONCURRENCY=16 (--forward-concurrency)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
N=${1:-5000}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
BIN=${BIN:-target/release/leadscore}
CONCURRENCY=${CONCURRENCY:-16}
cargo build --release --quiet --example bare_warp
# the binary alone, as `cargo build --release` ships it: built with an example, it gets the
# dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
[ "$BIN" = target/release/leadscore ] && cargo build --release --quiet --bin leadscore
"$SHARED/tools/gen-contacts" -n "$N" --seed 11 --batch 1 --jsonl > "$WORK/p.jsonl"
ARGS=(--rules "$ROOT/benches/rules" --store "sqlite://$WORK/ls.db" --listen 127.0.0.1:8093
      --forward-url http://127.0.0.1:8094/webhooks/iclosed --retry-schedule 1h
      --forward-concurrency "$CONCURRENCY")
# 1. Store N contacts while the receiver is down: each first attempt fails at once
#    (connection refused) and waits an hour.
LEADSCORE_LOG=error "$BIN" serve "${ARGS[@]}" & PID=$!
sleep 1
python3 - "$WORK/p.jsonl" <<'PY'
import sys, urllib.request
for line in open(sys.argv[1]):
    req = urllib.request.Request("http://127.0.0.1:8093/webhooks/iclosed", data=line.encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
kill -TERM $PID; wait $PID || true
# 2. Make them due now, start the receiver, time until none is pending.
# (Schema 4 keeps deliveries in their own table; an older BIN's store has
# them in the events' columns.)
python3 - "$WORK/ls.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
if c.execute("SELECT count(*) FROM sqlite_master WHERE name='deliveries'").fetchone()[0]:
    c.execute("UPDATE deliveries SET next_attempt_at=0, attempts=0 WHERE status='pending'")
else:
    c.execute("UPDATE events SET next_attempt_at=0, attempts=0 WHERE delivery='pending'")
c.commit()
PY
taskset -c 1 target/release/examples/bare_warp 127.0.0.1:8094 & sleep 0.5
START=$(date +%s.%N)
LEADSCORE_LOG=error taskset -c 0 "$BIN" serve "${ARGS[@]}" & PID=$!
# Done when no delivery is pending (a cheap poll: no interpreter per poll).
while ! curl -s "http://127.0.0.1:8093/deliveries?status=pending&limit=1" | grep -q '"deliveries":\[\]'; do
  sleep 0.02
done
END=$(date +%s.%N)
kill -TERM $PID; wait $PID || true
# Every delivery takes one attempt unless one was sent twice.
A=$(python3 - "$WORK/ls.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
if c.execute("SELECT count(*) FROM sqlite_master WHERE name='deliveries'").fetchone()[0]:
    print(c.execute("SELECT count(*), sum(attempts) FROM deliveries WHERE status='delivered'").fetchone())
else:
    print(c.execute("SELECT count(*), sum(attempts) FROM events WHERE delivery='delivered'").fetchone())
PY
)
echo "delivered $N in $(echo "$END-$START" | bc) s: $(echo "$N/($END-$START)" | bc) deliveries/s ((delivered, attempts): $A)"
