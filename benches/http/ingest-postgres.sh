#!/usr/bin/env bash
# Ingest load benchmark with the PostgreSQL store (docs/several-instances.md):
# one instance, then two instances sharing one schema, same run.
# Servers pinned to core 0, wrk to core 1, PostgreSQL wherever it runs;
# 32 connections in all, 10 s each; loopback only. With two instances wrk
# runs twice at once (16 connections each, one per instance: a stand-in for
# a load balancer) and the figures are summed.
#   bash benches/http/ingest-postgres.sh     (needs wrk, psql; builds a release binary)
#   PG=postgres://postgres@127.0.0.1:5432/test DURATION=10s bash benches/http/ingest-postgres.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
DURATION=${DURATION:-10s}
PG=${PG:-${LEADSCORE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
PORT=${PORT:-28093}   # uses PORT, PORT+1, PORT+2
WORK=$(mktemp -d)
SCHEMAS=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  for s in "${SCHEMAS[@]}"; do psql -q "$PG" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release --quiet --bin leadscore --example bare_warp  # one feature set for every script: no rebuilds between them
"$SHARED/tools/gen-contacts" -n 20000 --seed 7 --jsonl > "$WORK/p.jsonl"
sep() { case "$PG" in *\?*) echo '&';; *) echo '?';; esac; }

start() { # port schema -> pid
  if curl -s -o /dev/null "http://127.0.0.1:$1/"; then echo "port $1 is taken (set PORT=)" >&2; exit 1; fi
  LEADSCORE_LOG=warn taskset -c 0 target/release/leadscore serve --rules "$ROOT/benches/rules" \
    --store "$PG$(sep)schema=$2" --listen "127.0.0.1:$1" > "$WORK/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/readyz" && break; sleep 0.1; done
  echo $pid
}

commits() { psql -qAt "$PG" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }

run_wrk() { # connections port out
  PAYLOADS="$WORK/p.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c"$1" -d"$DURATION" --latency \
    -s "$SHARED/bench/post.lua" "http://127.0.0.1:$2/webhooks/iclosed" > "$3"
}

report() { # name files...
  local name=$1; shift
  local rps=0 reqs=0 non2xx=0 p50="" p99=""
  for f in "$@"; do
    rps=$(echo "$rps + $(awk '/Requests\/sec/ {print $2}' "$f")" | bc -l)
    reqs=$((reqs + $(awk '/requests in/ {print $1}' "$f")))
    non2xx=$((non2xx + $(awk '/Non-2xx/ {print $5}' "$f" | grep . || echo 0)))
    p50="$p50 $(awk '$1=="50%" {print $2}' "$f")"
    p99="$p99 $(awk '$1=="99%" {print $2}' "$f")"
  done
  printf '%-30s %9.0f req/s  p50%s  p99%s  non-2xx %s  commits/req %.3f\n' \
    "$name" "$rps" "$p50" "$p99" "$non2xx" "$(echo "($C1-$C0)/$reqs" | bc -l)"
}

# One instance.
S1=bench_one_$$; SCHEMAS+=("$S1")
P1=$(start "$PORT" "$S1")
C0=$(commits); run_wrk 32 "$PORT" "$WORK/one.txt"; C1=$(commits)
kill -TERM "$P1"; wait "$P1" 2>/dev/null || true
report "leadscore-postgres x1" "$WORK/one.txt"

# Two instances, one schema.
S2=bench_two_$$; SCHEMAS+=("$S2")
PA=$(start $((PORT + 1)) "$S2"); PB=$(start $((PORT + 2)) "$S2")
C0=$(commits)
run_wrk 16 $((PORT + 1)) "$WORK/a.txt" & WA=$!
run_wrk 16 $((PORT + 2)) "$WORK/b.txt" & WB=$!
wait $WA $WB
C1=$(commits)
kill -TERM "$PA" "$PB"; wait "$PA" "$PB" 2>/dev/null || true
report "leadscore-postgres x2" "$WORK/a.txt" "$WORK/b.txt"
