#!/usr/bin/env bash
# Rescore benchmark (BENCHMARKS.md "Session 10", issue 22). Loopback only,
# bounded durations; needs wrk, python3, curl, /usr/bin/time. Nothing from
# ../shared: contacts from `leadscore demo`, wrk script benches/http/post-unique.lua.
#   a. N stored contacts (SQLite): `leadscore demo --batch 500` posted to a
#      release `serve` with benches/rules, no forwarding (the real ingest);
#   b. `taskset -c 0 leadscore rescore` with the same rules (nothing changes),
#      ROUNDS times on a fresh copy of the store: contacts/s and CPU time;
#   c. a candidate rule set moving ~10 % of the contacts (benches/rules plus
#      one file, below), rescored by the command against a copy of the store
#      while `serve` on that store forwards to a local receiver with
#      `rate = "200/1s"`: job time, and deliveries/s at the receiver;
#   d. webhook ingest (wrk -c32, server on core 0, wrk on core 1) for 20 s
#      alone, then 20 s while `POST /rescore` runs in the server, ROUNDS times,
#      with identical rules (the job writes nothing) and with the candidate
#      put in force by SIGHUP first (the job writes ~10 % of the contacts).
#      Each phase starts a fresh server on a fresh copy of the N-contact store,
#      so that both phases start from the same store and the job covers the
#      N contacts (not those ingested by the phase before).
#   bash benches/rescore.sh                 (N=100000 ROUNDS=3 PARTS="b c d")
#   BIN=path/to/leadscore PARTS=d ROUNDS=1 bash benches/rescore.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-100000}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-b c d}
DURATION=${DURATION:-20s}
DELIVER_SECS=${DELIVER_SECS:-30}
PORT=${PORT:-8095}
RECV_PORT=${RECV_PORT:-8096}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin leadscore
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/leadscore
fi
RULES=$ROOT/benches/rules
echo "binary $BIN ($(git rev-parse --short HEAD 2>/dev/null || echo '?')), N=$N, work $WORK"

load() { echo "[$(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)]"; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return; sleep 0.1; done; echo "no server on $1" >&2; exit 1; }
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# A copy of the store: the database file with its write-ahead log, which holds what the last
# second of commits put there before a checkpoint copied it (without it, the copy of a store
# filled at full speed is malformed).
fresh() {
  rm -rf "$WORK/$1"; mkdir -p "$WORK/$1"; cp "$WORK/store/ls.db" "$WORK/$1/ls.db"
  if [ -f "$WORK/store/ls.db-wal" ]; then cp "$WORK/store/ls.db-wal" "$WORK/$1/ls.db-wal"; fi
  echo "sqlite://$WORK/$1/ls.db"
}

# The candidate: benches/rules plus one file that adds points for an answer
# about 13 % of the demo contacts give and 10 % once "Just researching" is out.
mkdir "$WORK/candidate"
cp "$RULES"/* "$WORK/candidate/"
cat > "$WORK/candidate/90-candidate.rhai" <<'EOF'
// Candidate (benches/rescore.sh): companies of 51-200 employees that are not
// just researching earn a few more points (about 10 % of the demo contacts).
if answer("employees") == "51-200" && !answer("get started").to_lower().contains("researching") {
    add(7, "Company 51-200, buying");
}
EOF

# a. The store: N demo contacts through the webhook, 500 per request.
load
LEADSCORE_LOG=warn "$BIN" serve --rules "$RULES" --store "sqlite://$WORK/store/ls.db" \
  --listen 127.0.0.1:$PORT > "$WORK/fill.log" 2>&1 &
SERVE=$!
wait_up $PORT
T0=$(date +%s.%N)
"$BIN" demo --contacts "$N" --seed 7 --batch 500 --url "http://127.0.0.1:$PORT"
T1=$(date +%s.%N)
stop $SERVE
printf 'a. stored %s contacts in %.1f s (%.0f contacts/s), store %s MB\n' "$N" "$(echo "$T1-$T0" | bc)" \
  "$(echo "$N/($T1-$T0)" | bc -l)" "$(($(stat -c %s "$WORK/store/ls.db") / 1000000))"

# Prints the job's figures from the command's JSON and /usr/bin/time's line.
job_line() { # label json time.txt
  python3 - "$@" <<'EOF'
import json, sys, datetime
label, job, t = sys.argv[1], json.load(open(sys.argv[2])), open(sys.argv[3]).read().split()
ms = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
job_s = ms(job["finished_at"]) - ms(job["started_at"])
wall, user, sys_ = float(t[0]), float(t[1]), float(t[2])
print(f"{label:<34} {job['state']} scored {job['scored']} changed {job['changed']} pushed {job['pushed']}  "
      f"wall {wall:.2f} s ({job['scored'] / wall:,.0f} contacts/s)  job {job_s:.2f} s ({job['scored'] / job_s:,.0f}/s)  "
      f"CPU {user:.2f}+{sys_:.2f} s ({job['scored'] / (user + sys_):,.0f} contacts/CPU-s)  peak RSS {int(t[3]) / 1024:.0f} MB")
EOF
}

rescore_cli() { # label rules store [more args]
  local label=$1 rules=$2 store=$3; shift 3
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" taskset -c 0 "$BIN" rescore --rules "$rules" \
    --store "$store" --since 1d --format json "$@" > "$WORK/job.json"
  job_line "$label" "$WORK/job.json" "$WORK/time.txt"
}

if [[ " $PARTS " == *" b "* ]]; then
  echo "b. leadscore rescore, identical rules, one core (taskset -c 0)"
  for r in $(seq "$ROUNDS"); do
    load
    rescore_cli "identical rules, round $r" "$RULES" "$(fresh b)"
  done
fi

if [[ " $PARTS " == *" c "* ]]; then
  echo "c. leadscore rescore with the candidate, serve forwarding at rate 200/1s"
  load
  cat > "$WORK/destinations.toml" <<EOF
[[destination]]
name = "crm"
url = "http://127.0.0.1:$RECV_PORT/leads"
rate = "200/1s"
EOF
  STORE=$(fresh c)
  : > "$WORK/received.log"
  taskset -c 1 python3 "$ROOT/benches/http/receiver.py" $RECV_PORT 200 "$WORK/received.log" &
  RECV=$!
  LEADSCORE_LOG=warn taskset -c 0 "$BIN" serve --rules "$RULES" --store "$STORE" --listen 127.0.0.1:$PORT \
    --destinations "$WORK/destinations.toml" > "$WORK/serve-c.log" 2>&1 &
  SERVE=$!
  wait_up $PORT
  START=$(date +%s.%N)
  rescore_cli "candidate (~10 % change)" "$WORK/candidate" "$STORE" --destinations "$WORK/destinations.toml"
  sleep "$DELIVER_SECS"
  curl -s "http://127.0.0.1:$PORT/destinations" | python3 -c 'import json, sys
d = json.load(sys.stdin)["destinations"][0]
print("   GET /destinations:", d["name"], "breaker", d["breaker"], "pending", d["pending"], "dead", d["dead"])'
  stop $SERVE; stop $RECV
  python3 - "$WORK/received.log" "$START" "$WORK/job.json" <<'EOF'
import collections, json, sys
rows = [l.split() for l in open(sys.argv[1])]
start, job = float(sys.argv[2]), json.load(open(sys.argv[3]))
times = sorted(float(r[0]) for r in rows)
kinds = collections.Counter(r[1] for r in rows)
per_second = collections.Counter(int(t - times[0]) for t in times)
full = [per_second[s] for s in range(int(times[-1] - times[0]))]  # whole seconds only
rate = (len(times) - 1) / (times[-1] - times[0])
print(f"   received {len(times)} of {job['pushed']} pushed ({dict(kinds)}); first {times[0] - start:.2f} s after the "
      f"command started; {rate:.1f} deliveries/s first to last; per whole second: min {min(full)}, "
      f"median {sorted(full)[len(full) // 2]}, max {max(full)}; busiest 1 s window: "
      f"{max(sum(1 for u in times[i:i + 400] if u < t + 1.0) for i, t in enumerate(times))}")
EOF
fi

if [[ " $PARTS " == *" d "* ]]; then
  echo "d. ingest (wrk -t1 -c32 $DURATION, server core 0, wrk core 1) alone vs during POST /rescore"
  "$BIN" demo --contacts 20000 --seed 8 --first-id 900000 --batch 1 --out "$WORK/live.jsonl" > /dev/null
  wrk_run() { # label
    PAYLOADS="$WORK/live.jsonl" taskset -c 1 wrk -t1 -c32 -d"$DURATION" --latency \
      -s "$ROOT/benches/http/post-unique.lua" "http://127.0.0.1:$PORT/webhooks/iclosed" > "$WORK/wrk.txt"
    local t1; t1=$(awk '{print $14+$15}' /proc/$SERVE/stat)
    printf '   %-10s %9s req/s  p50 %8s  p99 %8s  server CPU/req %5.1f us  non-2xx %s\n' "$1" \
      "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")" "$(awk '$1=="50%" {print $2}' "$WORK/wrk.txt")" \
      "$(awk '$1=="99%" {print $2}' "$WORK/wrk.txt")" \
      "$(echo "($t1-$T0)*1000000/$(getconf CLK_TCK)/$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")" | bc -l)" \
      "$(awk '/Non-2xx/ {print $5}' "$WORK/wrk.txt")"
  }
  job_state() { # label: GET /rescore/$JOB in one line
    curl -s "http://127.0.0.1:$PORT/rescore/$JOB" | python3 -c 'import datetime, json, sys
j = json.load(sys.stdin)
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
took = "%.1f s after its start" % (t(j["finished_at"]) - t(j["started_at"])) if j["finished_at"] else "running %.1f s" % (datetime.datetime.now().timestamp() - t(j["started_at"]))
print("   %s: %s, scored %d, changed %d, pushed %d, %s" % (sys.argv[1], j["state"], j["scored"], j["changed"], j["pushed"], took))' "$1"
  }
  serve_d() { # phase: a server with its own rules folder on a fresh store
    rm -rf "$WORK/srv-rules"; cp -r "$RULES" "$WORK/srv-rules"
    LEADSCORE_LOG=warn taskset -c 0 "$BIN" serve --rules "$WORK/srv-rules" --store "$(fresh "d-$1")" \
      --listen 127.0.0.1:$PORT > "$WORK/serve-d.log" 2>&1 &
    SERVE=$!
    wait_up $PORT
    T0=$(awk '{print $14+$15}' /proc/$SERVE/stat)
  }
  for variant in identical candidate; do
    for r in $(seq "$ROUNDS"); do
      echo " $variant rules, round $r $(load)"
      serve_d alone
      wrk_run alone
      stop $SERVE
      serve_d during
      if [ $variant = candidate ]; then
        VERSION=$(curl -s "http://127.0.0.1:$PORT/rules" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rules_version"])')
        cp "$WORK/candidate/90-candidate.rhai" "$WORK/srv-rules/"
        kill -HUP $SERVE
        for _ in $(seq 100); do
          curl -s "http://127.0.0.1:$PORT/rules" | grep -q "$VERSION" || break; sleep 0.05
        done
      fi
      T0=$(awk '{print $14+$15}' /proc/$SERVE/stat)
      JOB=$(curl -s -H 'content-type: application/json' -d '{"since":"1d"}' "http://127.0.0.1:$PORT/rescore" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
      wrk_run during
      job_state "job at the end of the window"
      for _ in $(seq 600); do  # the job's end, without load (bounded: 60 s)
        curl -s "http://127.0.0.1:$PORT/rescore/$JOB" | grep -q '"state":"running"' || break; sleep 0.1
      done
      job_state "job at its end (no load)"
      stop $SERVE
    done
  done
fi
load
