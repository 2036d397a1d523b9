#!/usr/bin/env python3
"""Soak test of `leadscore serve` (issue 19; not run in CI).

Runs the release binary for DURATION seconds (default 600) on 127.0.0.1 with
the repository's example rules and an SQLite store in a temporary folder:

- steady webhooks (RATE per second, default 100), 10 % of them exact repeats
  of an earlier body (duplicates by content);
- a local receiver that fails 20 % of requests with 503 (retried);
- a rule change every 30 s (a comment appended to a rule file: a reload);
- RSS sampled every 5 s.

At the end it waits for the delivery queue to drain and checks the
contract: every acknowledged new contact event was delivered (accepted by
the receiver) exactly once — no crash happens here, so at-least-once means
once — and no duplicate was forwarded again; and RSS after warm-up is flat.
It prints one summary line for BENCHMARKS.md and exits 1 when a check fails.

    cargo build --release --bin leadscore
    python3 benches/soak.py                       # 10 minutes
    DURATION=60 RATE=50 python3 benches/soak.py   # a quick look

Only loopback addresses are used; every loop is bounded in time.
"""

import http.server
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LEADSCORE_BIN", os.path.join(ROOT, "target/release/leadscore"))
DURATION = float(os.environ.get("DURATION", "600"))
RATE = float(os.environ.get("RATE", "100"))
FAIL_SHARE = 0.20
DUPLICATE_SHARE = 0.10
RELOAD_EVERY = 30.0
DRAIN_LIMIT = 300.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr):
        super().__init__(addr, ReceiverHandler)
        self.lock = threading.Lock()
        self.accepted = {}  # webhook-id -> times accepted
        self.failed = 0
        self.random = random.Random(3)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        event = self.headers.get("webhook-id", "")
        with self.server.lock:
            fail = self.server.random.random() < FAIL_SHARE
            if fail:
                self.server.failed += 1
            else:
                self.server.accepted[event] = self.server.accepted.get(event, 0) + 1
        self.send_response(503 if fail else 200)
        self.send_header("content-length", "0")
        self.end_headers()


def contact(n, rng):
    roles = ["CEO / Founder", "VP Sales", "Head of Marketing", "Individual contributor", "Student"]
    budgets = ["$10,000+", "$5,000 - $10,000", "$1,000 - $5,000", "Less than $1,000"]
    sizes = ["1", "2-10", "11-50", "51-200", "201-500", "500+"]
    return {
        "id": 1_000_000 + n,
        "email": f"lead{n}@{rng.choice(['gmail.com', 'acme.io', 'globex.com', 'yahoo.com'])}",
        "status": rng.choice(["POTENTIAL", "QUALIFIED", "QUALIFIED", "DISQUALIFIED"]),
        "questionsAndAnswers": {
            "1_question": "What is your role?", "1_response": rng.choice(roles),
            "2_question": "How many people work at your company?", "2_response": rng.choice(sizes),
            "3_question": "What is your monthly marketing budget?", "3_response": rng.choice(budgets),
        },
        "tracking": {"utm_source": rng.choice(["google", "linkedin", "newsletter", None])},
    }


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: cargo build --release --bin leadscore")
    work = tempfile.mkdtemp(prefix="leadscore-soak-")
    rules = os.path.join(work, "rules")
    shutil.copytree(os.path.join(ROOT, "rules"), rules)
    receiver = Receiver(("127.0.0.1", free_port()))
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = free_port()
    server = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--rules", rules,
         "--store", f"sqlite://{work}/store/leadscore.db",
         "--forward-url", f"http://127.0.0.1:{receiver.server_address[1]}/hook",
         "--retry-schedule", "200ms,500ms,1s,2s,2s,2s,2s,2s,2s,2s"],
        stderr=open(os.path.join(work, "server.log"), "w"),
        env={**os.environ, "LEADSCORE_LOG": "warn"},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/readyz", timeout=1)
            break
        except Exception:
            time.sleep(0.1)

    lock = threading.Lock()
    acknowledged = set()  # new events acknowledged
    duplicates_acknowledged = 0
    errors = []
    sent_bodies = []
    samples = []
    rng = random.Random(7)
    stop = time.monotonic() + DURATION

    def post(body):
        request = urllib.request.Request(base + "/webhooks/iclosed", data=body,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except Exception as e:  # connection error: the sender would retry
            return 0, str(e)

    def sender(worker, workers):
        nonlocal duplicates_acknowledged
        local = random.Random(worker)
        interval = workers / RATE
        next_at = time.monotonic()
        n = worker
        while time.monotonic() < stop:
            with lock:
                repeat = sent_bodies and local.random() < DUPLICATE_SHARE
                body = local.choice(sent_bodies) if repeat else None
            if body is None:
                body = json.dumps([contact(n, local)]).encode()
                n += workers
            status, answer = post(body)
            with lock:
                if status == 200:
                    for result in answer["results"]:
                        if result["duplicate"]:
                            duplicates_acknowledged += 1
                        else:
                            acknowledged.add(result["id"])
                    if not repeat:
                        sent_bodies.append(body)
                        del sent_bodies[:-1000]
                else:
                    errors.append(status)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    workers = 8
    threads = [threading.Thread(target=sender, args=(i, workers)) for i in range(workers)]
    for t in threads:
        t.start()
    started = time.monotonic()
    next_reload = started + RELOAD_EVERY
    reloads = 0
    while time.monotonic() < stop:
        time.sleep(5)
        samples.append((time.monotonic() - started, rss_kb(server.pid)))
        if time.monotonic() >= next_reload:
            with open(os.path.join(rules, "10-role.rhai"), "a") as f:
                f.write(f"\n// soak reload {reloads}\n")
            reloads += 1
            next_reload += RELOAD_EVERY
    for t in threads:
        t.join()

    # Drain: every acknowledged event accepted by the receiver.
    deadline = time.monotonic() + DRAIN_LIMIT
    while time.monotonic() < deadline:
        with receiver.lock:
            missing = [e for e in acknowledged if e not in receiver.accepted]
        if not missing:
            break
        time.sleep(1)
    time.sleep(2)  # late repeats, if any, would arrive now
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)

    with receiver.lock:
        missing = [e for e in acknowledged if e not in receiver.accepted]
        repeated = {e: n for e, n in receiver.accepted.items() if n > 1}
        unknown = [e for e in receiver.accepted if e not in acknowledged]
        failed = receiver.failed
    warm = [kb for t, kb in samples if t >= DURATION / 3]
    first_half = warm[: len(warm) // 2] or [0]
    second_half = warm[len(warm) // 2:] or [0]
    growth = (statistics.median(second_half) - statistics.median(first_half)) / max(1, statistics.median(first_half))
    summary = {
        "duration_s": DURATION,
        "requests_ok": len(acknowledged) + duplicates_acknowledged,
        "new_events": len(acknowledged),
        "duplicates": duplicates_acknowledged,
        "non_200": len(errors),
        "receiver_503s": failed,
        "reloads": reloads,
        "missing": len(missing),
        "delivered_twice": len(repeated),
        "unknown_deliveries": len(unknown),
        "rss_mb_warm_first_half_median": round(statistics.median(first_half) / 1024, 1),
        "rss_mb_warm_second_half_median": round(statistics.median(second_half) / 1024, 1),
        "rss_growth": round(growth, 4),
        "rss_mb_peak": round(max(kb for _, kb in samples) / 1024, 1) if samples else 0,
    }
    print(json.dumps(summary))
    ok = not missing and not repeated and not unknown and growth < 0.10
    shutil.rmtree(work, ignore_errors=True)
    receiver.shutdown()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
