#!/usr/bin/env bash
# Property-based API testing of leadscore's HTTP interface with schemathesis,
# driven by the OpenAPI document the server itself serves (GET /openapi.json).
#
# What it does: builds the debug binary, starts `leadscore serve` on a free
# loopback port with a throw-away SQLite store and the example rules
# (rules/), runs `schemathesis run … --checks all` against it, and stops the
# server again (also on Ctrl-C or failure). Nothing leaves 127.0.0.1.
#
# Needs: python3 and schemathesis 4.x
#   python3 -m pip install 'schemathesis>=4,<5'
#
# Usage:
#   scripts/schemathesis.sh                 # defaults below, a few minutes
#   MAX_EXAMPLES=200 scripts/schemathesis.sh --seed 1
#   ADMIN_TOKEN=secret scripts/schemathesis.sh   # admin endpoints behind a token
# Extra arguments go to `schemathesis run`; scripts/schemathesis.toml holds
# its configuration. The exit code is schemathesis's (0: no failure).
# Reports (JUnit XML), the server log and the examples schemathesis found
# (replayed first next time) are kept in target/schemathesis/.
#
# Settings (environment):
#   MAX_EXAMPLES  test cases per operation and phase       (default 100)
#   MAX_TIME      time budget of the whole run, in seconds  (default 240)
#   ADMIN_TOKEN   start the server with --admin-token and send it as Bearer
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${MAX_EXAMPLES:-100}
MAX_TIME=${MAX_TIME:-240}
ADMIN_TOKEN=${ADMIN_TOKEN:-}

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "error: schemathesis is not installed: python3 -m pip install 'schemathesis>=4,<5'" >&2
  exit 2
fi

cargo build --quiet --bin leadscore

out=$PWD/target/schemathesis
mkdir -p "$out"
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

server_args=(serve --listen "127.0.0.1:$port" --rules rules --store "sqlite://$tmp/leadscore.db")
auth_args=()
if [ -n "$ADMIN_TOKEN" ]; then
  server_args+=(--admin-token "$ADMIN_TOKEN")
  auth_args+=(--header "Authorization: Bearer $ADMIN_TOKEN")
fi

LEADSCORE_LOG=${LEADSCORE_LOG:-warn} "${CARGO_TARGET_DIR:-target}/debug/leadscore" "${server_args[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop_server EXIT

# Wait (at most 30 s) until the server answers /healthz.
python3 - "$base" <<'PY'
import sys, time, urllib.request
base = sys.argv[1]
deadline = time.time() + 30
while True:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
            if r.status == 200:
                break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("leadscore did not answer /healthz within 30 s")
    time.sleep(0.2)
PY

echo "schemathesis $(schemathesis --version 2>/dev/null | awk '{print $NF}') against $base (max $MAX_EXAMPLES examples per operation, $MAX_TIME s)"
status=0
config=$PWD/scripts/schemathesis.toml
# From inside $out: schemathesis keeps a cache in its working folder.
cd "$out"
schemathesis --config-file "$config" run "$base/openapi.json" \
  --url "$base" \
  --checks all \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers 1 \
  --request-timeout 10 \
  --generation-database "$out/examples" \
  --report junit --report-dir "$out" \
  "${auth_args[@]}" \
  "$@" || status=$?

if grep -q "panicked" "$out/server.log"; then
  echo "error: the server panicked (see $out/server.log)" >&2
  status=1
fi
exit "$status"
