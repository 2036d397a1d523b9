#!/usr/bin/env bash
# Destinations benchmark (BENCHMARKS.md "Session 10", issue 20). Loopback only,
# bounded; needs wrk, python3, curl. Nothing from ../shared (contacts from
# `leadscore demo`, wrk script benches/http/post-unique.lua).
#   1. A healthy destination's webhook-to-receipt time with and without a
#      failing destination beside it (a receiver answering 503 to everything,
#      breaker 10 failures / 5 s cooldown, retries every 1 s): contacts posted
#      one per request at RATE/s for POST_SECONDS s (benches/http/latency.py), the
#      receive time of each at the healthy receiver (benches/http/receiver.py)
#      minus the time it was posted. Server on core 0; poster and receivers on
#      core 1. Both cases alternated ROUNDS times, each on a fresh store.
#   2. Ingest requests/s with no, one and three destinations (ingest.sh's
#      measurement: wrk -t1 -c32 10 s on core 1, server on core 0), receivers
#      down (ports closed; --retry-schedule 1h): the ingest-side cost of
#      selection and delivery rows. Alternated ROUNDS times.
#   bash benches/http/destinations.sh        (ROUNDS=3 RATE=200 POST_SECONDS=20 PARTS="1 2")
#   PAYLOADS=file.jsonl: part 2 posts these payloads instead of `leadscore demo`'s
#   (one per line; the first "id" of each is made unique per request).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-200}
SECONDS_=${POST_SECONDS:-20}
PARTS=${PARTS:-1 2}
DURATION=${DURATION:-10s}
PORT=${PORT:-8092}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin leadscore
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/leadscore
fi
echo "binary $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), work $WORK"
load() { echo "[$(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)]"; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

if [[ " $PARTS " == *" 1 "* ]]; then
  cat > "$WORK/healthy.toml" <<'EOF'
[[destination]]
name = "healthy"
url = "http://127.0.0.1:8101/leads"
EOF
  cat "$WORK/healthy.toml" - > "$WORK/with-failing.toml" <<'EOF'

[[destination]]
name = "failing"
url = "http://127.0.0.1:8102/leads"
retry_schedule = "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"
breaker = { failures = 10, cooldown = "5s" }
EOF
  taskset -c 1 python3 "$ROOT/benches/http/receiver.py" 8101 200 "$WORK/healthy.log" & HEALTHY=$!
  taskset -c 1 python3 "$ROOT/benches/http/receiver.py" 8102 503 "$WORK/failing.log" & FAILING=$!
  echo "1. healthy destination's webhook-to-receipt time, $RATE contacts/s for $SECONDS_ s"
  first=1000000
  for r in $(seq "$ROUNDS"); do
    for case in healthy with-failing; do
      rm -rf "$WORK/s1"; mkdir "$WORK/s1"
      "$BIN" demo --contacts "$(echo "$RATE*$SECONDS_" | bc)" --seed $((10 + r)) --first-id $first --batch 1 \
        --out "$WORK/contacts.jsonl" > /dev/null
      first=$((first + 100000))
      : > "$WORK/failing.log"
      LEADSCORE_LOG=warn taskset -c 0 "$BIN" serve --rules "$ROOT/benches/rules" --store "sqlite://$WORK/s1/ls.db" \
        --listen 127.0.0.1:$PORT --destinations "$WORK/$case.toml" > "$WORK/serve.log" 2>&1 &
      SERVE=$!
      wait_up $PORT
      printf '  round %s %-13s %s ' "$r" "$case" "$(load)"
      taskset -c 1 python3 "$ROOT/benches/http/latency.py" "http://127.0.0.1:$PORT/webhooks/iclosed" \
        "$WORK/contacts.jsonl" "$WORK/healthy.log" "$RATE" "$SECONDS_" | tr -d '\n'
      echo "; failing receiver got $(wc -l < "$WORK/failing.log") requests"
      stop $SERVE
    done
  done
  stop $HEALTHY; stop $FAILING
fi

if [[ " $PARTS " == *" 2 "* ]]; then
  echo "2. ingest, no / one / three destinations (receivers down), wrk -t1 -c32 $DURATION"
  if [ -n "${PAYLOADS:-}" ]; then cp "$PAYLOADS" "$WORK/p.jsonl"  # e.g. ../shared/tools/gen-contacts output (session 9's)
  else "$BIN" demo --contacts 20000 --seed 7 --batch 1 --out "$WORK/p.jsonl" > /dev/null; fi
  printf '[[destination]]\nname = "a"\nurl = "http://127.0.0.1:8111/leads"\n' > "$WORK/dests1.toml"
  cp "$WORK/dests1.toml" "$WORK/dests3.toml"
  printf '\n[[destination]]\nname = "%s"\nurl = "http://127.0.0.1:%s/leads"\n' b 8112 c 8113 >> "$WORK/dests3.toml"
  measure() { # name -- command... (ingest.sh's measurement)
    local name=$1; shift 2
    taskset -c 0 "$@" > "$WORK/$name.log" 2>&1 &
    local pid=$!
    wait_up $PORT
    local t0; t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    local w0; w0=$(awk '/^write_bytes/ {print $2}' /proc/$pid/io)
    local out; out=$(PAYLOADS="$WORK/p.jsonl" taskset -c 1 wrk -t1 -c32 -d"$DURATION" --latency \
          -s "$ROOT/benches/http/post-unique.lua" "http://127.0.0.1:$PORT/webhooks/iclosed")
    local t1; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    local written; written=$(awk '/^write_bytes/ {print $2}' /proc/$pid/io)
    kill -TERM $pid; wait $pid 2>/dev/null || true
    local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    printf '  %-10s %10s req/s  p50 %8s  p99 %8s  cpu/req %6.1f us  written/req %5.1f KB  non-2xx %s  %s\n' "$name" \
      "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" "$(echo "$out" | awk '$1=="50%" {print $2}')" \
      "$(echo "$out" | awk '$1=="99%" {print $2}')" "$(echo "($t1-$t0)*1000000/$(getconf CLK_TCK)/$reqs" | bc -l)" \
      "$(echo "($written-$w0)/1000/$reqs" | bc -l)" "$(echo "$out" | awk '/Non-2xx/ {print $5}')" "$(load)"
  }
  for r in $(seq "$ROUNDS"); do
    for d in none one three; do
      rm -rf "$WORK/s2"; mkdir "$WORK/s2"
      args=(serve --rules "$ROOT/benches/rules" --store "sqlite://$WORK/s2/ls.db" --listen 127.0.0.1:$PORT --retry-schedule 1h)
      case $d in
        one) args+=(--destinations "$WORK/dests1.toml") ;;
        three) args+=(--destinations "$WORK/dests3.toml") ;;
      esac
      LEADSCORE_LOG=warn measure "$d-$r" -- "$BIN" "${args[@]}"
    done
  done
fi
