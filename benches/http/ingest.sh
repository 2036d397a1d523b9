#!/usr/bin/env bash
# Ingest load benchmark (BENCHMARKS.md): bare warp vs `leadscore serve`, same run.
# Server pinned to core 0, wrk to core 1; 32 connections, 10 s each; loopback only.
#   bash benches/http/ingest.sh            (needs wrk; builds release binaries)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
DURATION=${DURATION:-10s}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin leadscore --example bare_warp
"$SHARED/tools/gen-contacts" -n 20000 --seed 7 --jsonl > "$WORK/p.jsonl"

measure() { # name port -- command...
  local name=$1 port=$2; shift 3
  taskset -c 0 "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local t0; t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  local out; out=$(PAYLOADS="$WORK/p.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c32 -d"$DURATION" --latency \
        -s "$SHARED/bench/post.lua" "http://127.0.0.1:$port/webhooks/iclosed")
  local t1; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  local written; written=$(awk '/^write_bytes/ {print $2}' /proc/$pid/io)
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  local rps p50 p99 reqs non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf '%-28s %10s req/s  p50 %8s  p99 %8s  cpu/req %6.1f us  peak RSS %6.1f MB  written/req %6.1f KB  non-2xx %s\n' \
    "$name" "$rps" "$p50" "$p99" "$(echo "($t1-$t0)*1000000/$(getconf CLK_TCK)/$reqs" | bc -l)" \
    "$(echo "$hwm/1024" | bc -l)" "$(echo "$written/1000/$reqs" | bc -l)" "${non2xx:-0}"
}

measure bare-warp 8091 -- target/release/examples/bare_warp 127.0.0.1:8091
LEADSCORE_LOG=warn measure leadscore-sqlite 8092 -- target/release/leadscore serve \
  --rules "$ROOT/benches/rules" --store "sqlite://$WORK/store/ls.db" --listen 127.0.0.1:8092
