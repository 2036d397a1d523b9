#!/usr/bin/env bash
# Delivery throughput with the PostgreSQL store (BENCHMARKS.md, "Deliveries
# with PostgreSQL"): a backlog of N due deliveries drained by one instance,
# then the same backlog drained by two instances sharing the schema, both
# forwarding to a local bare warp receiver (200 at once). Loopback only.
#   bash benches/http/deliveries-postgres.sh [N]        (needs psql; default N=3000)
#   PG=postgres://postgres@127.0.0.1:5432/test CONCURRENCY=16 bash benches/http/deliveries-postgres.sh 3000
#   BIN=/path/to/other/leadscore bash benches/http/deliveries-postgres.sh   (compare builds)
# Servers pinned to core 0, the receiver to core 1, PostgreSQL wherever it
# runs. The schema is created through the store URL (?schema=) and dropped
# at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
N=${1:-3000}
PG=${PG:-${LEADSCORE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
CONCURRENCY=${CONCURRENCY:-16}
PORT=${PORT:-28193}   # uses PORT (receiver), PORT+1, PORT+2 (instances)
WORK=$(mktemp -d)
SCHEMA=bench_deliveries_$$
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  psql -q "$PG" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
BIN=${BIN:-target/release/leadscore}
cargo build --release --quiet --example bare_warp
# the binary alone, as `cargo build --release` ships it: built with an example, it gets the
# dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
[ "$BIN" = target/release/leadscore ] && cargo build --release --quiet --bin leadscore
"$SHARED/tools/gen-contacts" -n "$N" --seed 11 --batch 1 --jsonl > "$WORK/p.jsonl"
sep() { case "$PG" in *\?*) echo '&';; *) echo '?';; esac; }
STORE="$PG$(sep)schema=$SCHEMA"
sql() { psql -qAtX "$PG" -c "SET search_path TO $SCHEMA" -c "$1"; }
for p in "$PORT" $((PORT + 1)) $((PORT + 2)); do
  if curl -s -o /dev/null "http://127.0.0.1:$p/"; then echo "port $p is taken (set PORT=)" >&2; exit 1; fi
done

start() { # port -> pid (waits until ready)
  LEADSCORE_LOG=${LEADSCORE_LOG:-error} taskset -c 0 "$BIN" serve \
    --rules "$ROOT/benches/rules" --store "$STORE" --listen "127.0.0.1:$1" \
    --forward-url "http://127.0.0.1:$PORT/webhooks/iclosed" --retry-schedule 1h \
    --forward-concurrency "$CONCURRENCY" >> "$WORK/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/readyz" && break; sleep 0.05; done
  echo $pid
}

# 1. Store N contacts while the receiver is down: each first attempt fails
#    at once (connection refused) and waits an hour.
P=$(start $((PORT + 1)))
python3 - "$WORK/p.jsonl" "http://127.0.0.1:$((PORT + 1))/webhooks/iclosed" <<'PY'
import sys, urllib.request
for line in open(sys.argv[1]):
    req = urllib.request.Request(sys.argv[2], data=line.encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
PY
kill -TERM "$P"; wait "$P" 2>/dev/null || true
taskset -c 1 target/release/examples/bare_warp "127.0.0.1:$PORT" & sleep 0.5

commits() { psql -qAtX "$PG" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }

drain() { # name ports...
  local name=$1; shift
  # The same backlog every time: all N pending and due, none claimed.
  sql "UPDATE leadscore_deliveries SET status = 'pending', attempts = 0, next_attempt_at = 0, claimed_until = NULL,
         delivered_at = NULL, last_status = NULL, last_error = NULL" > /dev/null
  sql "VACUUM ANALYZE leadscore_deliveries" > /dev/null
  local c0 start pids=() pending
  c0=$(commits)
  start=$(date +%s.%N)
  for port in "$@"; do pids+=("$(start "$port")"); done
  while :; do
    pending=$(sql "SELECT count(*) FROM leadscore_deliveries WHERE status = 'pending'")
    [ "$pending" = "0" ] && break
    sleep 0.02
  done
  local end c1
  end=$(date +%s.%N)
  c1=$(commits)
  kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  # Every delivery takes one attempt unless one was sent twice.
  local attempts
  attempts=$(sql "SELECT sum(attempts) FROM leadscore_deliveries")
  printf '%-16s %5d delivered in %6.3f s: %6.0f deliveries/s  attempts %d  commits/delivery %.2f\n' \
    "$name" "$N" "$(echo "$end - $start" | bc -l)" "$(echo "$N / ($end - $start)" | bc -l)" \
    "$attempts" "$(echo "($c1 - $c0) / $N" | bc -l)"
}

drain "one instance" $((PORT + 1))
drain "two instances" $((PORT + 1)) $((PORT + 2))
