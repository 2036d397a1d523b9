#!/usr/bin/env bash
# Ingest load benchmark with the PostgreSQL store (docs/several-instances.md,
# BENCHMARKS.md, issue 24 part 3): in each of RUNS rounds
#   one   one instance, wrk -t1 -c32
#   two   two instances sharing one schema, wrk twice at once (16 connections each,
#         one per instance: a stand-in for a load balancer); figures summed
# DURATION (10 s) each; loopback only; bench rules, LEADSCORE_LOG=warn, no destination.
# Load: ../shared/tools/gen-contacts -n 20000 --seed 7 and ../shared/bench/post.lua with
# UNIQUE=1 (every request a new contact).
#
# Where things run: leadscore pinned to core 0, wrk to core 1 (taskset). PostgreSQL is
# NOT pinned: it runs wherever the scheduler puts it (on a 2-core machine, beside
# leadscore or wrk), and its CPU is measured separately from leadscore's, from /proc.
#
#   bash benches/http/ingest-postgres.sh      (needs wrk, psql, ss; builds a release binary)
#   RUNS=3 bash benches/http/ingest-postgres.sh   three rounds; medians at the end
#   CASES="one" ...                           a subset (one, two; in round order)
#   BIN=path/to/leadscore                     a given binary (nothing is built)
#   PG=postgres://postgres@127.0.0.1:5432/test DURATION=10s PORT=28093 LOG=warn
#
# Each case starts on a new schema (dropped after it), then CHECKPOINT (as superuser;
# skipped with a note otherwise) and 1 s of quiet, so every run starts right after a
# checkpoint and none falls inside the 10 s. Each line: requests/s, p50/p99, non-2xx, and
#   leadscore cpu/req   the servers' utime+stime over the wrk run ÷ requests, and the same
#                       per thread (/proc/PID/task/*/stat, grouped by thread name with a
#                       trailing -N dropped: tokio-rt-worker = tokio workers and blocking
#                       threads, where the PostgreSQL writer task and the pool run; scoring =
#                       the rule pool; rest = threads that exited plus the difference between
#                       the process's and the threads' own accounting)
#   postgres cpu/req    utime+stime ÷ requests of: the backends serving leadscore's
#                       connections (pg_stat_activity rows whose client port is one of
#                       leadscore's sockets, `ss -tnp`; read at the start and again at the end
#                       of the run, a backend first seen at the end counted from 0), walwriter,
#                       checkpointer, background writer, and all of PostgreSQL (postmaster +
#                       its children + the children it reaped, /proc/PID/stat fields 14–17);
#                       other = all − those (autovacuum, this script's psql look-ups,
#                       anybody else's sessions). Read at the end of the run, before the
#                       servers stop. Only when PostgreSQL runs on this machine.
#   commits/req         pg_stat_database.xact_commit delta ÷ requests, read after the servers
#                       stopped (backends flush their counts at exit) less this script's own
#                       psql sessions in between (calibrated at the start); database-wide
#   WAL/req             pg_wal_lsn_diff(pg_current_wal_lsn()) over the same span ÷ requests;
#                       cluster-wide
# Other client backends seen during a run are counted on the line ("others N"): their
# commits, WAL and CPU are in these figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
DURATION=${DURATION:-10s}
RUNS=${RUNS:-1}
LOG=${LOG:-warn}
CASES=${CASES:-one two}
PG=${PG:-${LEADSCORE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
PORT=${PORT:-28093}   # uses PORT, PORT+1, PORT+2
BIN=${BIN:-}
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
SCHEMAS=()
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  for s in "${SCHEMAS[@]}"; do psql -qX "$PG" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -z "$BIN" ]; then
  # the binary alone, as `cargo build --release` ships it: built with an example, it gets the
  # dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
  cargo build --release --quiet --bin leadscore
  BIN=$TARGET/release/leadscore
fi
"$SHARED/tools/gen-contacts" -n 20000 --seed 7 --jsonl > "$WORK/p.jsonl"
sep() { case "$PG" in *\?*) echo '&';; *) echo '?';; esac; }
TCK=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
q() { psql -qAtX -F ' ' "$PG" -c "$1"; }

commits() { q "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
# What one psql session of this script adds to xact_commit (connection set-up included).
c0=$(commits); sleep 0.3; c1=$(commits); sleep 0.3; c2=$(commits)
PSQL_XACTS=$(( (c2 - c0) / 2 ))

# PostgreSQL's own processes, when it runs here: the postmaster is the background
# writer's parent.
read -r BGWRITER WALWRITER CHECKPOINTER <<< "$(q "SELECT
  (SELECT pid FROM pg_stat_activity WHERE backend_type = 'background writer'),
  (SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'),
  (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer')")"
POSTMASTER=""
if [ -r "/proc/$BGWRITER/stat" ] && [ "$(cat "/proc/$BGWRITER/comm")" = postgres ]; then
  s=$(cat "/proc/$BGWRITER/stat"); set -- ${s##*) }; POSTMASTER=$2
fi
[ -n "$POSTMASTER" ] || echo "# PostgreSQL does not run on this machine: its CPU is not measured" >&2

ticks() { # pid -> utime+stime (empty when gone)
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  # shellcheck disable=SC2086
  set -- ${s##*) }
  echo $(( ${12} + ${13} ))
}

pg_total() { # postmaster: own + reaped children; + each live child
  local s sum p t
  s=$(cat "/proc/$POSTMASTER/stat")
  # shellcheck disable=SC2086
  set -- ${s##*) }
  sum=$(( ${12} + ${13} + ${14} + ${15} ))
  for p in $(ps --ppid "$POSTMASTER" -o pid=); do
    t=$(ticks "$p"); sum=$(( sum + ${t:-0} ))
  done
  echo $sum
}

threads() { # pids... -> "tid name ticks" per thread
  local pid t s comm rest
  for pid in "$@"; do
    for t in /proc/"$pid"/task/*; do
      s=$(cat "$t/stat" 2>/dev/null) || continue
      comm=${s#*(}; comm=${comm%)*}; rest=${s##*) }
      # shellcheck disable=SC2086
      set -- $rest
      echo "${t##*/} ${comm// /_} $(( ${12} + ${13} ))"
    done
  done
}

backends() { # leadscore pids... -> "pid" of each backend serving them (by client port)
  local ports
  ports=$(ss -Htnp state established | awk -v pids=" $* " '
    { if (match($0, /pid=[0-9]+,/)) { p = substr($0, RSTART + 4, RLENGTH - 5); if (index(pids, " " p " ")) { n = split($3, a, ":"); print a[n] } } }' \
    | sort -un | paste -sd, -)
  [ -n "$ports" ] || return 0
  q "SELECT pid FROM pg_stat_activity WHERE client_port IN ($ports) AND client_addr IN ('127.0.0.1', '::1')"
}

others() { # client backends that are neither leadscore's nor this script's psql
  local mine; mine=$(echo "$@" | tr ' ' ',')
  q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
       AND pid <> pg_backend_pid() AND pid NOT IN (${mine:-0})"
}

start() { # port schema -> PIDS+=(pid)
  if curl -s -o /dev/null "http://127.0.0.1:$1/"; then echo "port $1 is taken (set PORT=)" >&2; exit 1; fi
  LEADSCORE_LOG=$LOG taskset -c 0 "$BIN" serve --rules "$ROOT/benches/rules" \
    --store "$PG$(sep)schema=$2" --listen "127.0.0.1:$1" > "$WORK/$1.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/readyz" && return 0; sleep 0.1; done
  echo "leadscore on port $1 did not get ready:" >&2; cat "$WORK/$1.log" >&2; exit 1
}

stop() { # pids...
  local p
  kill -TERM "$@" 2>/dev/null || true
  for p in "$@"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  PIDS=()
}

run_wrk() { # connections port out
  PAYLOADS="$WORK/p.jsonl" UNIQUE=1 taskset -c 1 wrk -t1 -c"$1" -d"$DURATION" --latency \
    -s "$SHARED/bench/post.lua" "http://127.0.0.1:$2/webhooks/iclosed" > "$3"
}

pg_ticks() { # file pids... -> "name ticks" lines for PostgreSQL's side
  local out=$1 p; shift
  : > "$out"
  [ -n "$POSTMASTER" ] || return 0
  for p in "$@"; do echo "be:$p $(ticks "$p")" >> "$out"; done
  { echo "walwriter $(ticks "$WALWRITER")"; echo "checkpointer $(ticks "$CHECKPOINTER")"
    echo "bgwriter $(ticks "$BGWRITER")"; echo "all $(pg_total)"; } >> "$out"
}

measure() { # name schema -- "conns port"...
  local name=$1 schema=$2; shift 3
  SCHEMAS+=("$schema")
  local specs=("$@") spec
  for spec in "${specs[@]}"; do set -- $spec; start "$2" "$schema"; done
  local pids=("${PIDS[@]}")
  q "CHECKPOINT" >/dev/null 2>&1 || echo "# CHECKPOINT refused (not a superuser?): runs may see one" >&2
  sleep 1
  local be0 c0 lsn0 others0 calls=0
  be0=$(backends "${pids[@]}")
  others0=$(others $be0); calls=$((calls + 1))
  read -r c0 lsn0 <<< "$(q "SELECT xact_commit, pg_current_wal_lsn() FROM pg_stat_database WHERE datname = current_database()")"
  calls=$((calls + 1))
  sleep 0.3   # that psql session's backend gone before the first reading
  local t0=0 p
  for p in "${pids[@]}"; do t0=$((t0 + $(ticks "$p"))); done
  threads "${pids[@]}" > "$WORK/threads0"
  pg_ticks "$WORK/pg0" $be0
  local i=0 waits=()
  for spec in "${specs[@]}"; do
    set -- $spec; i=$((i + 1))
    run_wrk "$1" "$2" "$WORK/$name.$i.txt" & waits+=($!)
  done
  wait "${waits[@]}"
  local t1=0
  for p in "${pids[@]}"; do t1=$((t1 + $(ticks "$p"))); done
  threads "${pids[@]}" > "$WORK/threads1"
  local be1; be1=$(backends "${pids[@]}"); calls=$((calls + 1))
  local be_all; be_all=$(printf '%s\n' $be0 $be1 | sort -un)
  pg_ticks "$WORK/pg1" $be_all
  local others1; others1=$(others $be_all); calls=$((calls + 1))
  stop "${pids[@]}"
  sleep 1   # backends flush their statistics at exit
  local dc wal
  read -r dc wal <<< "$(q "SELECT xact_commit - $c0, pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') FROM pg_stat_database WHERE datname = current_database()")"
  q "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true

  local rps=0 reqs=0 non2xx=0 p50="" p99="" f
  for f in "$WORK/$name".*.txt; do
    rps=$(echo "$rps + $(awk '/Requests\/sec/ {print $2}' "$f")" | bc -l)
    reqs=$((reqs + $(awk '/requests in/ {print $1}' "$f")))
    non2xx=$((non2xx + $(awk '/Non-2xx/ {print $5}' "$f" | grep . || echo 0)))
    p50="$p50 $(awk '$1=="50%" {print $2}' "$f")"
    p99="$p99 $(awk '$1=="99%" {print $2}' "$f")"
  done
  local cpu per_thread exited commits_req wal_req
  cpu=$(echo "($t1-$t0)*1000000/$TCK/$reqs" | bc -l)
  read -r exited per_thread <<< "$(awk -v tck="$TCK" -v reqs="$reqs" -v total="$((t1 - t0))" '
    NR == FNR { before[$1] = $3; next }
    { name = $2; sub(/-[0-9]+$/, "", name); d = $3 - before[$1]; sum[name] += d; all += d; seen[$1] = 1 }
    END {
      sum["rest"] = total - all
      for (t in before) if (!(t in seen)) exited++
      printf "%d ", exited
      n = 0; for (k in sum) keys[++n] = k
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (keys[j] < keys[i]) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
      for (i = 1; i <= n; i++) if (sum[keys[i]] != 0) printf "%s%s=%.2f", (i > 1 ? " " : ""), keys[i], sum[keys[i]] * 1000000 / tck / reqs
    }' "$WORK/threads0" "$WORK/threads1")"
  commits_req=$(echo "($dc - $calls * $PSQL_XACTS) / $reqs" | bc -l)
  wal_req=$(echo "$wal / $reqs" | bc -l)
  local pg="" pgline="not measured (PostgreSQL not on this machine)"
  if [ -n "$POSTMASTER" ]; then
    # be=backends (n, new during the run, gone by its end) walwriter checkpointer bgwriter other all
    pg=$(awk -v tck="$TCK" -v reqs="$reqs" '
      NR == FNR { before[$1] = $2; next }
      $1 ~ /^be:/ { if ($2 == "") { gone++; next } n++; if (!($1 in before)) new++; be += $2 - before[$1]; next }
      { v[$1] = $2 - before[$1] }
      END {
        u = 1000000 / tck / reqs
        other = v["all"] - be - v["walwriter"] - v["checkpointer"] - v["bgwriter"]
        printf "%.2f %.2f %.2f %.2f %.2f %.2f %d %d %d", be * u, v["walwriter"] * u, v["checkpointer"] * u,
          v["bgwriter"] * u, other * u, v["all"] * u, n, new, gone
      }' "$WORK/pg0" "$WORK/pg1")
    set -- $pg
    pgline=$(printf 'all=%s: backends=%s (%s; %s new, %s gone) walwriter=%s checkpointer=%s bgwriter=%s other=%s' \
      "$6" "$1" "$7" "$8" "$9" "$2" "$3" "$4" "$5")
  fi
  printf '%-22s %9.0f req/s  p50%s  p99%s  non-2xx %s  commits/req %.4f  WAL/req %.0f B  (%s requests, %s commits, %s WAL bytes; others %s/%s)\n' \
    "$name" "$rps" "$p50" "$p99" "$non2xx" "$commits_req" "$wal_req" "$reqs" "$((dc - calls * PSQL_XACTS))" "$wal" "$others0" "$others1"
  printf '      leadscore cpu/req %.2f us; per thread (us/req)%s: %s\n' "$cpu" \
    "$( [ "$exited" -gt 0 ] && echo " ($exited threads exited)" )" "$per_thread"
  printf '      postgres cpu/req (us) %s\n' "$pgline"
  local worst99; worst99=$(echo $p99 | tr ' ' '\n' | python3 -c '
import sys
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
ms = lambda v: next(float(v[:-len(u)]) * f for u, f in sorted(unit.items(), key=lambda x: -len(x[0])) if v.endswith(u))
print(max(ms(l.strip()) for l in sys.stdin if l.strip()))')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$name" "$rps" "$worst99" "$cpu" "$per_thread" \
    "$commits_req" "$wal_req" "${pg:-}" "$reqs" >> "$RESULTS"
}

echo "# $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty'), bin $BIN, $(nproc) cores, uptime:$(uptime | sed 's/.*load average/ load average/')"
echo "# psql session = $PSQL_XACTS commits (subtracted); PostgreSQL postmaster pid ${POSTMASTER:-none} (unpinned)"
for ROUND in $(seq "$RUNS"); do
  for c in $CASES; do
    case $c in
      one) measure "leadscore-postgres x1" "bench_one_${ROUND}_$$" -- "32 $PORT" ;;
      two) measure "leadscore-postgres x2" "bench_two_${ROUND}_$$" -- "16 $((PORT + 1))" "16 $((PORT + 2))" ;;
      *) echo "unknown case $c" >&2; exit 2 ;;
    esac
  done
  echo "# round $ROUND done $(date -u '+%T'), uptime:$(uptime | sed 's/.*load average/ load average/')"
done

python3 - "$RESULTS" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, name, rps, p99, cpu, threads, commits, wal, pg, reqs = line.rstrip("\n").split("\t")
    per = {k: float(v) for k, v in (kv.split("=") for kv in threads.split())}
    pgv = pg.split()
    rows[name].append(dict(rps=float(rps), p99=float(p99), cpu=float(cpu), threads=per, commits=float(commits),
                           wal=float(wal), pg=[float(x) for x in pgv[:6]] if pgv else None))
print(f"# medians over {max(len(v) for v in rows.values())} round(s) (p99: the worst instance's)")
for name, runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    names = sorted({k for r in runs for k in r["threads"]})
    per = " ".join(f"{k}={med(lambda r: r['threads'].get(k, 0.0)):.2f}" for k in names)
    print(f"{name:22} {med(lambda r: r['rps']):9.0f} req/s  p99 {med(lambda r: r['p99']):7.2f} ms  "
          f"commits/req {med(lambda r: r['commits']):.4f}  WAL/req {med(lambda r: r['wal']):.0f} B")
    print(f"      leadscore cpu/req {med(lambda r: r['cpu']):.2f} us; per thread: {per}")
    if all(r["pg"] for r in runs):
        labels = ["backends", "walwriter", "checkpointer", "bgwriter", "other", "all"]
        pg = {l: med(lambda r: r["pg"][i]) for i, l in enumerate(labels)}
        both = med(lambda r: r["cpu"] + r["pg"][5])
        print(f"      postgres cpu/req (us) all={pg['all']:.2f}: " +
              " ".join(f"{l}={pg[l]:.2f}" for l in labels[:-1]) + f"; leadscore + postgres {both:.2f} us")
EOF
