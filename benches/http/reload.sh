#!/usr/bin/env bash
# Reload latency (BENCHMARKS.md): time from saving a rule file to GET /rules
# showing the new rules_version, 20 times; prints median and max.
#   bash benches/http/reload.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SHARED=${SHARED:-$ROOT/../shared}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
# the binary alone, as `cargo build --release` ships it: built with an example, it gets the
# dev-dependencies' features (a different, 0.9 MB larger binary; BENCHMARKS.md, session 11)
cargo build --release --quiet --bin leadscore
cp -r "$ROOT/benches/rules" "$WORK/rules"
LEADSCORE_LOG=error target/release/leadscore serve --rules "$WORK/rules" --store "sqlite://$WORK/ls.db" --listen 127.0.0.1:8095 & 
sleep 1
python3 - "$WORK/rules" <<'PY'
import json, os, statistics, sys, time, urllib.request
rules = sys.argv[1]
def version():
    return json.load(urllib.request.urlopen("http://127.0.0.1:8095/rules"))["rules_version"]
samples = []
for i in range(20):
    before = version()
    start = time.monotonic()
    with open(os.path.join(rules, "90-bench.rhai"), "w") as f:
        f.write(f"add({i}, \"reload {i}\");\n")
    while version() == before:
        time.sleep(0.002)
    samples.append((time.monotonic() - start) * 1000)
    time.sleep(0.3)
print(f"reload latency over {len(samples)} saves: median {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms")
PY
