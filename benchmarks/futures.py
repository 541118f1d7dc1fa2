"""``nbproc.futures.ProcessPoolExecutor`` vs the stdlib's ``concurrent.futures`` one, side by side.

For each start method, with 2 workers, both executors alive at once and warmed up:

* ``map cs=1``      ``list(executor.map(identity, range(20000)))``: µs per task
* ``map cs=500``    the same with ``chunksize=500`` (40 chunks; the stdlib's ``map`` chunks
  the same way): µs per task
* ``submit``        20,000 ``executor.submit(identity, i)`` then every ``result()``: µs per task
* ``map cs=1 lambda``  nbproc only (the stdlib's cannot send a lambda): a cell-style lambda

The two executors take turns, A B A B, ``--repeat`` rounds (default 5); the table shows the
median of each (the machine is shared: taking turns spreads bursts of load over both). The
ratio is nbproc / stdlib (below 1: faster); the target is <= 1.10x. Run:
``python benchmarks/futures.py [--methods fork,spawn] [--repeat N] [--tasks N]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pool_funcs  # noqa: E402 - after making this folder importable (also for spawned children)

import nbproc  # noqa: E402
from nbproc.futures import ProcessPoolExecutor  # noqa: E402

TASKS = 20_000
BIG_CHUNK = 500  # 40 chunks of 20k: amortizes the per-task round trip, still spreads over workers
TARGET = 1.10


def run_map(executor: Any, func: Any, n: int, chunksize: int) -> Callable[[], None]:
    def run() -> None:
        out = list(executor.map(func, range(n), chunksize=chunksize))
        assert len(out) == n

    return run


def run_submit(executor: Any, n: int) -> Callable[[], None]:
    def run() -> None:
        futures = [executor.submit(_pool_funcs.identity, i) for i in range(n)]
        assert [f.result() for f in futures][-1] == n - 1

    return run


def alternate(repeat: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Median time of each function over ``repeat`` rounds, taking turns A B A B."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(method: str, repeat: int, n: int) -> list[tuple[str, float, float | None]]:
    stdlib = cf.ProcessPoolExecutor(2, mp_context=__import__("multiprocessing").get_context(method))
    ours = ProcessPoolExecutor(2, mp_context=nbproc.get_context(method))
    lam = lambda x: x  # noqa: E731 - a cell-style lambda: only nbproc can send it
    try:
        for executor in (stdlib, ours):  # warm up: workers started, function cached
            list(executor.map(_pool_funcs.identity, range(64)))
        list(ours.map(lam, range(64)))
        rows = []
        for case, chunksize in (("map cs=1", 1), (f"map cs={BIG_CHUNK}", BIG_CHUNK)):
            timed = alternate(
                repeat,
                {
                    "stdlib": run_map(stdlib, _pool_funcs.identity, n, chunksize),
                    "nbproc": run_map(ours, _pool_funcs.identity, n, chunksize),
                },
            )
            rows.append((case, timed["nbproc"] / n, timed["stdlib"] / n))
        timed = alternate(repeat, {"stdlib": run_submit(stdlib, n), "nbproc": run_submit(ours, n)})
        rows.append(("submit", timed["nbproc"] / n, timed["stdlib"] / n))
        timed = alternate(repeat, {"nbproc": run_map(ours, lam, n, 1)})
        rows.append(("map cs=1 lambda", timed["nbproc"] / n, None))
        return rows
    finally:
        stdlib.shutdown()
        ours.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=TASKS)
    args = parser.parse_args()
    print(f"\n## nbproc.futures vs concurrent.futures: {args.tasks} trivial tasks, 2 workers, median of {args.repeat}")
    print("| case | method | stdlib (us/task) | nbproc (us/task) | nbproc/stdlib | target |")
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for case, ours, theirs in measure(method, args.repeat, args.tasks):
            if theirs is None:
                print(f"| {case} | {method} | n/a | {ours * 1e6:.2f} | n/a | |")
                continue
            ratio = ours / theirs
            verdict = "ok" if ratio <= TARGET else "MISSED"
            print(f"| {case} | {method} | {theirs * 1e6:.2f} | {ours * 1e6:.2f} | {ratio:.2f}x | {verdict} |")


if __name__ == "__main__":
    main()
