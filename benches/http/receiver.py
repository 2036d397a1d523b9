#!/usr/bin/env python3
"""A loopback receiver for the delivery benchmarks (BENCHMARKS.md, session 10).

    python3 benches/http/receiver.py PORT [STATUS] [LOG]

Answers every POST with STATUS (default 200; 503 makes a failing destination)
and appends one line per request to LOG (default: none):
`<receive time, unix seconds> <type> <contact_id>` (from the scored contact's
JSON body; `-` when absent). Stops on SIGTERM or SIGINT. Binds 127.0.0.1 only.
"""
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
LOG = open(sys.argv[3], "a", buffering=1) if len(sys.argv) > 3 else None
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

    def do_POST(self):  # noqa: N802 (http.server's naming)
        at = time.time()
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if LOG is not None:
            kind, contact = "-", "-"
            try:
                event = json.loads(body)
                kind = event.get("type", "-")
                contact = event.get("contact_id", "-")
            except (ValueError, AttributeError):
                pass
            with LOCK:
                LOG.write(f"{at:.6f} {kind} {contact}\n")
        answer = b'{"ok":true}' if STATUS < 300 else b'{"error":"unavailable"}'
        self.send_response(STATUS)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
