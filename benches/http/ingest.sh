#!/usr/bin/env bash
# Ingest load benchmark (BENCHMARKS.md, issue 24): in one run, alternating,
#   bare-warp        examples/bare_warp.rs: 200 after serde_json parses the body (the HTTP ceiling)
#   append           examples/durable_append.rs: the same parse + one SQLite writer thread,
#                    INSERT OR IGNORE of the body under its SHA-256, group commit, WAL,
#                    synchronous=FULL, answered after the commit (the durable-storage ceiling)
#   append-ckpt      the same with a checkpointer thread (a commit, then a checkpoint)
#   append-yield     the append whose writer offers the CPU once before taking a group, as
#                    leadscore's does (a reference; the baseline is `append`)
#   leadscore-none   `leadscore serve`, bench rules, SQLite store, no destination
#   leadscore-one    the same with one destination, leadscore-three with three (loopback
#                    ports where nothing listens: deliveries are refused and wait an hour,
#                    so this is the ingest-side cost of selection and delivery rows)
# Server pinned to core 0, wrk to core 1; wrk -t1 -c32, DURATION (10 s) each; loopback only.
# Load: ../shared/tools/gen-contacts -n 20000 --seed 7 and ../shared/bench/post.lua with
# UNIQUE=1 (every request a new contact).
#
#   bash benches/http/ingest.sh                 (needs wrk; builds the release binaries)
#   RUNS=3 bash benches/http/ingest.sh          three rounds; medians at the end
#   CASES="bare append leadscore-none" ...      a subset (names above, in round order)
#   BIN=… BARE=… APPEND=…                       given binaries (nothing is built when BIN is)
#   BASE_BIN=old/leadscore                      adds base-none (before/after in one run; which
#                                               of the two goes first alternates by round)
#   BASE_LOG=warn                               base-none's log level when it differs from LOG
#   LOG=info                                    leadscore's log level (default warn; info logs
#                                               every contact id, to a file in the work folder)
#
# Each line: requests/s, p50/p99, CPU per request (the server's utime+stime over the wrk
# run ÷ requests), peak RSS, bytes written per request, and the same CPU per request per
# thread (utime+stime of each /proc/PID/task/*/stat, grouped by thread name with a trailing
# -N dropped: tokio-rt-worker = tokio workers and blocking threads, scoring = the rule pool,
# sqlite-writer, sqlite-checkpoint; rest = threads that exited during the run plus the
# difference between the process's and the threads' own accounting, a few per cent).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-1}
LOG=${LOG:-warn}
CASES=${CASES:-bare append append-ckpt append-yield leadscore-none leadscore-one leadscore-three}
WORK=$(mktemp -d)
# (|| true: under set -e a failing kill would end the trap before the rm)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
BIN=${BIN:-}
BASE_BIN=${BASE_BIN:-}
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "$BIN" ]; then
  cargo build --release --quiet --example bare_warp --example durable_append
  # the binary alone, as `cargo build --release` ships it: built with an example, it gets the
  # dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
  cargo build --release --quiet --bin leadscore
  BIN=$TARGET/release/leadscore
fi
BARE=${BARE:-$TARGET/release/examples/bare_warp}
APPEND=${APPEND:-$TARGET/release/examples/durable_append}
"$SHARED/tools/gen-contacts" -n 20000 --seed 7 --jsonl > "$WORK/p.jsonl"
for n in 1 3; do
  : > "$WORK/dests$n.toml"
  for i in $(seq "$n"); do
    printf '[[destination]]\nname = "d%s"\nurl = "http://127.0.0.1:%s/webhooks/iclosed"\n\n' \
      "$i" "$((8096 + i))" >> "$WORK/dests$n.toml"
  done
done
TCK=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv

threads() { # pid -> "tid name ticks" per thread
  local pid=$1 t s comm rest
  for t in /proc/"$pid"/task/*; do
    s=$(cat "$t/stat" 2>/dev/null) || continue
    comm=${s#*(}; comm=${comm%)*}; rest=${s##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "${t##*/} ${comm// /_} $(( ${12} + ${13} ))"
  done
}

measure() { # name port -- command...
  local name=$1 port=$2; shift 3
  taskset -c 0 "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local t0; t0=$(awk '{print $14+$15}' /proc/$pid/stat)
  threads $pid > "$WORK/threads0"
  local out; out=$(PAYLOADS="$WORK/p.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c32 -d"$DURATION" --latency \
        -s "$SHARED/bench/post.lua" "http://127.0.0.1:$port/webhooks/iclosed")
  local t1; t1=$(awk '{print $14+$15}' /proc/$pid/stat)
  threads $pid > "$WORK/threads1"
  local written; written=$(awk '/^write_bytes/ {print $2}' /proc/$pid/io)
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  local rps p50 p99 reqs non2xx cpu per_thread
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  cpu=$(echo "($t1-$t0)*1000000/$TCK/$reqs" | bc -l)
  per_thread=$(awk -v tck="$TCK" -v reqs="$reqs" -v total="$((t1 - t0))" '
    NR == FNR { before[$1] = $3; next }
    { name = $2; sub(/-[0-9]+$/, "", name); d = $3 - before[$1]; sum[name] += d; all += d; seen[$1] = 1 }
    END {
      sum["rest"] = total - all
      for (t in before) if (!(t in seen)) exited++
      if (exited) printf "(%d threads exited) ", exited
      n = 0; for (k in sum) keys[++n] = k
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (keys[j] < keys[i]) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
      for (i = 1; i <= n; i++) if (sum[keys[i]] != 0) printf "%s%s=%.1f", (i > 1 ? " " : ""), keys[i], sum[keys[i]] * 1000000 / tck / reqs
    }' "$WORK/threads0" "$WORK/threads1")
  printf '%-17s %9s req/s  p50 %8s  p99 %8s  cpu/req %6.1f us  peak RSS %5.1f MB  written/req %5.1f KB  non-2xx %s\n      per thread (us/req): %s\n' \
    "$name" "$rps" "$p50" "$p99" "$cpu" "$(echo "$hwm/1024" | bc -l)" "$(echo "$written/1000/$reqs" | bc -l)" \
    "${non2xx:-0}" "$per_thread"
  printf '%s\t%s\t%s\t%s\t%.2f\t%.1f\t%s\t%s\n' "$ROUND" "$name" "$rps" "$p99" "$cpu" "$(echo "$hwm/1024" | bc -l)" \
    "$(echo "$written/1000/$reqs" | bc -l)" "$per_thread" >> "$RESULTS"
}

fresh_store() {
  rm -rf "$WORK/db"; sync; sleep 1; mkdir -p "$WORK/db"
}

leadscore() { # name port binary [serve options...]
  local name=$1 port=$2 bin=$3 log=$LOG; shift 3
  if [ "$name" = base-none ]; then log=${BASE_LOG:-$LOG}; fi
  LEADSCORE_LOG=$log measure "$name" "$port" -- "$bin" serve --rules "$ROOT/benches/rules" \
    --store "sqlite://$WORK/db/$name/ls.db" --listen "127.0.0.1:$port" --retry-schedule 1h "$@"
}

echo "# $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples || echo '+dirty'), uptime:$(uptime | sed 's/.*load average/ load average/')"
for ROUND in $(seq "$RUNS"); do
  for c in $CASES; do
    # Each server starts on an empty store, removed after it (a baseline's log grows to 200 MB),
    # and once the kernel has written back the last one's pages (else the writeback runs
    # during the next case: the first leadscore run after `append` cost up to 30 % more).
    fresh_store
    case $c in
      bare) measure bare-warp 8091 -- "$BARE" 127.0.0.1:8091 ;;
      append) measure append 8094 -- "$APPEND" 127.0.0.1:8094 "$WORK/db/append.db" ;;
      append-ckpt) measure append-ckpt 8095 -- "$APPEND" 127.0.0.1:8095 "$WORK/db/append.db" --checkpointer ;;
      append-yield) measure append-yield 8090 -- "$APPEND" 127.0.0.1:8090 "$WORK/db/append.db" --yield ;;
      leadscore-none)
        # With BASE_BIN, the two alternate which goes first (a run after another is
        # often slower: the kernel is still writing back the last one's store).
        if [ -n "$BASE_BIN" ] && [ $((ROUND % 2)) = 0 ]; then
          leadscore base-none 8093 "$BASE_BIN"; fresh_store
        fi
        leadscore leadscore-none 8092 "$BIN" ;;
      leadscore-one) leadscore leadscore-one 8092 "$BIN" --destinations "$WORK/dests1.toml" ;;
      leadscore-three) leadscore leadscore-three 8092 "$BIN" --destinations "$WORK/dests3.toml" ;;
      *) echo "unknown case $c" >&2; exit 2 ;;
    esac
    if [ -n "$BASE_BIN" ] && [ "$c" = leadscore-none ] && [ $((ROUND % 2)) = 1 ]; then
      fresh_store
      leadscore base-none 8093 "$BASE_BIN"
    fi
  done
  echo "# round $ROUND done, uptime:$(uptime | sed 's/.*load average/ load average/')"
done

# Medians over the rounds, and CPU per request against the baseline (append) in the same round.
python3 - "$RESULTS" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, name, rps, p99, cpu, rss, written, threads = line.rstrip("\n").split("\t")
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p99ms = next(float(p99[:-len(u)]) * f for u, f in sorted(unit.items(), key=lambda x: -len(x[0])) if p99.endswith(u))
    per = dict(kv.split("=") for kv in threads.split()) if threads else {}
    rows[name].append(dict(round=rnd, rps=float(rps), p99=p99ms, cpu=float(cpu), rss=float(rss),
                           written=float(written), threads={k: float(v) for k, v in per.items()}))
base = {r["round"]: r["cpu"] for r in rows.get("append", [])}
print(f"# medians over {max(len(v) for v in rows.values())} round(s); ratio = CPU/request ÷ append's in the same round")
for name, runs in rows.items():
    med = lambda k: statistics.median(r[k] for r in runs)
    ratios = [r["cpu"] / base[r["round"]] for r in runs if r["round"] in base]
    names = sorted({k for r in runs for k in r["threads"]})
    per = " ".join(f"{k}={statistics.median(r['threads'].get(k, 0.0) for r in runs):.1f}" for k in names)
    ratio = f"  ÷append {statistics.median(ratios):.2f}" if ratios else ""
    print(f"{name:17} {med('rps'):9.0f} req/s  p99 {med('p99'):7.2f} ms  cpu/req {med('cpu'):6.1f} us{ratio}"
          f"  RSS {max(r['rss'] for r in runs):5.1f} MB  written/req {med('written'):5.1f} KB\n      per thread: {per}")
EOF
