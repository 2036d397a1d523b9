#!/usr/bin/env bash
# Ingest on a store that already holds many contacts (BENCHMARKS.md, session 16): for each
# binary given, a `leadscore serve` on a fresh SQLite store is filled by FILL seconds of load
# (unmeasured), then measured over 10 s: CPU per request (utime+stime of the process), bytes
# written per request, p99, and the events in the store. Server pinned to core 0, wrk to core
# 1, 32 connections, unique contacts, bench rules, no destination; loopback only.
# Needs wrk, and ../shared (gen-contacts, bench/post.lua); `sqlite3` for the event count.
#
#   FILL=60 bash benches/http/ingest-large-store.sh target/release/leadscore old/leadscore
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
FILL=${FILL:-60}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$SHARED/tools/gen-contacts" -n 20000 --seed 7 --jsonl > "$WORK/p.jsonl"
TCK=$(getconf CLK_TCK)
load() { # seconds [--latency]
  PAYLOADS="$WORK/p.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c32 -d"$1"s ${2:-} \
    -s "$SHARED/bench/post.lua" http://127.0.0.1:8099/webhooks/iclosed
}
echo "# $(date -u '+%F %T') UTC, uptime:$(uptime | sed 's/.*load average/ load average/')"
for BIN in "$@"; do
  rm -rf "$WORK/db"; mkdir -p "$WORK/db"; sync; sleep 1
  LEADSCORE_LOG=info taskset -c 0 "$BIN" serve --rules "$ROOT/benches/rules" \
    --store "sqlite://$WORK/db/ls.db" --listen 127.0.0.1:8099 --retry-schedule 1h > "$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8099/ && break; sleep 0.1; done
  load "$FILL" > /dev/null
  sleep 2
  t0=$(awk '{print $14+$15}' /proc/$PID/stat); w0=$(awk '/^write_bytes/ {print $2}' /proc/$PID/io)
  out=$(load 10 --latency)
  t1=$(awk '{print $14+$15}' /proc/$PID/stat); w1=$(awk '/^write_bytes/ {print $2}' /proc/$PID/io)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  events=$(sqlite3 "$WORK/db/ls.db" "SELECT COUNT(*) FROM events" 2>/dev/null || echo "?")
  kill -TERM $PID; wait $PID 2>/dev/null || true
  printf '%-28s cpu/req %6.1f us  written/req %5.1f KB  p99 %8s  events in store %s  store %s\n' \
    "$BIN" "$(echo "($t1-$t0)*1000000/$TCK/$reqs" | bc -l)" "$(echo "($w1-$w0)/1000/$reqs" | bc -l)" \
    "$p99" "$events" "$(du -sh "$WORK/db" | cut -f1)"
done
