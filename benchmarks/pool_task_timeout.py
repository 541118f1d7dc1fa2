"""The Pool's small-task overhead before and after ``task_timeout`` support, side by side.

``task_timeout`` added per-task bookkeeping to the pool thread (a deadline check that runs only
while timed tasks are out, a flag in the task header); this checks that a pool with *no*
timeout pays nothing for it. "before" is nbproc as of ``--before`` (default: the commit this
branch started from, ``git merge-base HEAD main``), extracted with ``git archive`` into a
temporary folder; "after" is this checkout. Each measurement runs in a fresh interpreter
(so both versions can be imported under the same name), the versions taking turns A B A B for
``--repeat`` rounds (default 9); the table shows medians, in µs per task, with 2 workers:

* ``20k tasks``      ``pool.map(identity, range(20000))`` with the default chunking
* ``2k tasks cs=1``  ``pool.map(identity, range(2000), chunksize=1)``

A third column, "after, timed", runs the same with ``task_timeout=60`` (never reached), to
show what setting a timeout costs. Target: after/before within noise (<= 1.05x).
Run: ``python benchmarks/pool_task_timeout.py [--methods fork] [--repeat N] [--before REF]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = {"20k tasks": (20_000, None), "2k tasks cs=1": (2_000, 1)}
INNER = 5  # measurements per interpreter (their minimum is kept): more cost little next to its start-up
TARGET = 1.05


def measure_here(method: str, timed: bool) -> dict[str, float]:
    """In the measuring interpreter: seconds per task for each case (minimum of INNER runs)."""
    sys.path.insert(0, str(HERE))
    import _pool_funcs

    import nbproc

    extra = {"task_timeout": 60.0} if timed else {}
    out = {}
    with nbproc.get_context(method).Pool(2) as pool:
        pool.map(_pool_funcs.identity, range(64), 1)  # warm up
        for case, (n, chunksize) in CASES.items():
            items = list(range(n))
            best = float("inf")
            for _ in range(INNER):
                t0 = time.perf_counter()
                pool.map(_pool_funcs.identity, items, chunksize, **extra)
                best = min(best, time.perf_counter() - t0)
            out[case] = best / n
    out["nbproc"] = os.path.dirname(nbproc.__file__)
    return out


def run_variant(pythonpath: str, method: str, timed: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    cmd = [sys.executable, __file__, "--measure", method] + (["--timed"] if timed else [])
    return json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)


def extract(ref: str, into: str) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "nbproc"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--before", help="git ref of the 'before' version (default: merge-base HEAD main)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--timed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(args.measure, args.timed)))
        return
    before = (
        args.before
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="nbproc-before-") as old:
        extract(before, old)
        variants = {"before": (old, False), "after": (str(ROOT), False), "after, timed": (str(ROOT), True)}
        print(f"\n## Pool small-task overhead, before ({before[:10]}) vs after task_timeout support")
        print(f"median of {args.repeat} rounds (A B A B), us per task, 2 workers")
        print("| case | method | before | after | after, timed | after/before | target |")
        print("|---|---|---|---|---|---|---|")
        for method in args.methods.split(","):
            samples: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
            for _ in range(args.repeat):
                for variant, (path, timed) in variants.items():
                    samples[variant].append(run_variant(path, method, timed))
            assert samples["before"][0]["nbproc"].startswith(old), samples["before"][0]
            for case in CASES:
                med = {v: statistics.median(s[case] for s in samples[v]) for v in variants}
                ratio = med["after"] / med["before"]
                cells = [f"{med[v] * 1e6:.2f}" for v in variants]
                verdict = "ok" if ratio <= TARGET else "MISSED"
                print(f"| {case} | {method} | {' | '.join(cells)} | {ratio:.2f}x | {verdict} |")


if __name__ == "__main__":
    main()
