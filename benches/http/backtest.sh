#!/usr/bin/env bash
# Backtest benchmark (BENCHMARKS.md "Backtest"): N stored contacts (SQLite),
# the bench rules as candidate and baseline.
#   1. `leadscore backtest` on one core (--threads 1, taskset -c 0), then on
#      two (--threads 2): contacts/s and peak RSS (/usr/bin/time -v);
#   2. the same with a candidate whose every file differs from the baseline
#      (a comment appended), so that nothing is shared and each contact is
#      scored twice: the worst case;
#   3. webhook ingest latency (wrk, 8 connections, core 1) while POST
#      /backtest runs over the same history on the server (core 0).
# Loopback only; bounded durations.
#   bash benches/http/backtest.sh            (N=100000 by default; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
N=${N:-100000}
PORT=${PORT:-8094}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
# the binary alone, as `cargo build --release` ships it: built with an example, it gets the
# dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
cargo build --release --quiet --bin leadscore
BIN=$ROOT/target/release/leadscore
STORE="sqlite://$WORK/store/ls.db"
RULES=$ROOT/benches/rules

# The history: N generated contacts through the webhook, 200 per request.
LEADSCORE_LOG=warn "$BIN" serve --rules "$RULES" --store "$STORE" --listen 127.0.0.1:$PORT \
  > "$WORK/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
"$SHARED/tools/gen-contacts" -n "$N" --seed 7 --jsonl > "$WORK/history.jsonl"
python3 - "$WORK/history.jsonl" "$PORT" <<'EOF'
import json, sys, urllib.request
contacts = []
for line in open(sys.argv[1]):  # a line is one payload: a contact or an array of them
    payload = json.loads(line)
    contacts.extend(payload if isinstance(payload, list) else [payload])
for start in range(0, len(contacts), 200):  # 200 contacts per request
    body = json.dumps(contacts[start:start + 200]).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/webhooks/iclosed", data=body,
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
print(f"stored {len(contacts)} contacts")
EOF

# A candidate sharing no file with the baseline.
mkdir "$WORK/changed"
cp "$RULES"/* "$WORK/changed/"
for f in "$WORK"/changed/*.rhai; do echo "// changed" >> "$f"; done

cli() { # label cpus threads candidate
  /usr/bin/time -v taskset -c "$2" "$BIN" backtest --rules "$RULES" --candidate "$4" --store "$STORE" \
    --since 1d --threads "$3" --format json > "$WORK/report.json" 2> "$WORK/time.txt"
  python3 - "$1" "$WORK/report.json" "$WORK/time.txt" <<'EOF'
import json, re, sys
report = json.load(open(sys.argv[2]))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[3]).read()).group(1))
rate = report["contacts"] / (report["duration_ms"] / 1000)
print(f"{sys.argv[1]:<44} {report['contacts']:>7} contacts  {report['duration_ms']:>6} ms  "
      f"{rate:>8.0f} contacts/s  peak RSS {rss / 1024:6.1f} MB")
EOF
}
cli "identical candidate, 1 thread, core 0" 0 1 "$RULES"
cli "identical candidate, 2 threads, cores 0-1" 0,1 2 "$RULES"
cli "every file changed, 1 thread, core 0" 0 1 "$WORK/changed"
cli "every file changed, 2 threads, cores 0-1" 0,1 2 "$WORK/changed"

# Ingest while the server runs a backtest over the same history.
kill -TERM $SERVE; wait $SERVE 2>/dev/null || true
LEADSCORE_LOG=warn taskset -c 0 "$BIN" serve --rules "$RULES" --store "$STORE" --listen 127.0.0.1:$PORT \
  > "$WORK/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
python3 - "$WORK/changed" > "$WORK/candidate.json" <<'EOF'
import json, os, sys
d = sys.argv[1]
rules = {f: open(os.path.join(d, f)).read() for f in sorted(os.listdir(d)) if f.endswith(".rhai")}
print(json.dumps({"rules": rules, "tiers": open(os.path.join(d, "tiers.toml")).read(), "since": "1d"}))
EOF
"$SHARED/tools/gen-contacts" -n 20000 --seed 8 --start-id 900000 --jsonl > "$WORK/live.jsonl"
ingest() { # label
  PAYLOADS="$WORK/live.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c8 -d10s --latency \
    -s "$SHARED/bench/post.lua" "http://127.0.0.1:$PORT/webhooks/iclosed" > "$WORK/wrk.txt"
  printf '%-44s %10s req/s  p50 %8s  p99 %8s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")" \
    "$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")" "$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")"
}
ingest "ingest alone (server on core 0)"
( while true; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}s\n' -H 'content-type: application/json' \
      --data-binary "@$WORK/candidate.json" "http://127.0.0.1:$PORT/backtest" >> "$WORK/backtests.txt"
  done ) &
LOOP=$!
sleep 1
ingest "ingest during POST /backtest (same core)"
kill $LOOP 2>/dev/null || true
echo "backtests during the ingest run (status, time): $(tr '\n' ' ' < "$WORK/backtests.txt")"
