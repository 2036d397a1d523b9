#!/usr/bin/env python3
"""Posts one contact per request at a fixed rate and reports, from a
receiver's log (benches/http/receiver.py), each contact's webhook-to-receipt
time: receive time − the time its webhook was posted (BENCHMARKS.md, session 10).

    python3 benches/http/latency.py URL CONTACTS.jsonl RECEIVED.log RATE SECONDS

CONTACTS.jsonl: `leadscore demo --batch 1` output (one contact per line, ids
unique). Waits up to 15 s after the last post for the last receipt, then
prints one line: posted, received, p50, p90, p99, max (ms), and the posting
rate achieved.
"""
import http.client
import json
import sys
import time
import urllib.parse

url, contacts, received, rate, seconds = sys.argv[1:6]
rate, seconds = float(rate), float(seconds)
target = urllib.parse.urlsplit(url)
lines = [l for l in open(contacts) if l.strip()][: int(rate * seconds)]
ids = []
for line in lines:
    payload = json.loads(line)
    ids.append((payload[0] if isinstance(payload, list) else payload)["id"])

conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
posted = {}
start = time.time()
for n, (line, contact) in enumerate(zip(lines, ids)):
    due = start + n / rate
    delay = due - time.time()
    if delay > 0:
        time.sleep(delay)
    posted[contact] = time.time()
    conn.request("POST", target.path, body=line.encode(), headers={"content-type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f"the engine answered {answer.status} to contact {contact}")
took = time.time() - start

def receipts():
    got = {}
    for row in open(received):
        at, _kind, contact = row.split()
        try:
            contact = int(contact)
        except ValueError:
            continue
        if contact in posted and contact not in got:
            got[contact] = float(at)
    return got

deadline = time.time() + 15
got = receipts()
while len(got) < len(posted) and time.time() < deadline:
    time.sleep(0.2)
    got = receipts()
lat = sorted((got[c] - posted[c]) * 1000 for c in got)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"posted {len(posted)} at {len(posted) / took:.1f}/s, received {len(got)}; webhook-to-receipt "
      f"p50 {q(0.50):.1f} ms  p90 {q(0.90):.1f} ms  p99 {q(0.99):.1f} ms  max {lat[-1] if lat else float('nan'):.1f} ms")
