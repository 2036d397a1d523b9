#!/usr/bin/env python3
"""The scoring bench of two builds side by side, in one session (BENCHMARKS.md,
"Session 9"): each bench binary is run with a criterion filter, pinned to
one core, the two builds alternated, round after round; after each run the
median is read from criterion's estimates.json.

    BASE_BIN=/path/scoring-before NEW_BIN=/path/scoring-after \\
        python3 benches/scoring-side-by-side.py 1 2 3 4 5

Rounds 1-2 run the mix and the qualified contact; later rounds the mix only,
with the order reversed so that drift in the machine's load cancels out.
Build each binary with `cargo bench --bench scoring --no-run` in a worktree
of its commit and copy it away (both builds write the same file name).
"""
import json
import os
import subprocess
import sys
import tempfile

BASE = os.environ['BASE_BIN']
NEW = os.environ['NEW_BIN']
CORE = os.environ.get('CORE', '1')


def run(binary, bench, workdir):
    out = subprocess.run(['taskset', '-c', CORE, binary, '--bench', f'^{bench}$'],
                         capture_output=True, text=True, cwd=workdir, check=True)
    group, name = bench.split('/')
    with open(os.path.join(workdir, f'target/criterion/{group}/{name}/new/estimates.json')) as f:
        median = json.load(f)['median']['point_estimate'] / 1000
    line = next((l.strip() for l in out.stdout.splitlines() if 'time:' in l), '')
    return median, line


def plan(round_no):
    if round_no <= 2:
        return [(BASE, 'mix/evaluate'), (NEW, 'mix/evaluate'), (BASE, 'mix/score'), (NEW, 'mix/score'),
                (NEW, 'mix/ingest_scoring'), (NEW, 'mix/evaluate_timed'), (NEW, 'mix/evaluate_traced'),
                (BASE, 'qualified/evaluate'), (NEW, 'qualified/evaluate'), (NEW, 'qualified/evaluate_traced')]
    return [(NEW, 'mix/evaluate'), (BASE, 'mix/evaluate'), (NEW, 'mix/evaluate_traced'),
            (NEW, 'mix/ingest_scoring'), (NEW, 'mix/score'), (BASE, 'mix/score'), (NEW, 'mix/evaluate_timed')]


def main():
    rounds = [int(a) for a in sys.argv[1:]] or [1, 2]
    workdir = tempfile.mkdtemp(prefix='scoring-side-by-side-')
    for round_no in rounds:
        for binary, bench in plan(round_no):
            median, line = run(binary, bench, workdir)
            who = 'before' if binary == BASE else 'after'
            print(f'round {round_no} {who:6} {bench:28} median {median:8.3f} us   {line}', flush=True)


if __name__ == '__main__':
    main()
