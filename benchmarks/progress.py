"""What a progress bar costs, and what ``%%parallel`` adds on warm workers.

Side by side in one run, with 2 forkserver workers (minimum over interleaved repeats: the
machine is shared, and the minimum is the least noisy estimate of the cost itself):

* ``map 20k``      ``Pool.map(identity, range(20000))`` (default chunking), stdlib and nbproc
  with ``progress=False`` / ``progress=True`` (the text bar; stderr sent to /dev/null) /
  ``progress=listener`` (a no-op callable: the seam alone). Target: True/False <= 1.05x.
* ``map 2k cs=1``  the same with ``chunksize=1`` (one event per task: the throttle's worst case).
* ``%%parallel``   a second ``%%parallel -n 2`` run of ``worker_id`` on the warm pool (the
  magic's own code path, called without a kernel) vs a bare ``Pool.map`` of two tasks on
  that pool: what the magic adds (parsing, name capture, serialization, collection).

Run: ``python benchmarks/progress.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pool_funcs  # noqa: E402 - after making this folder importable (also for spawned children)

import nbproc  # noqa: E402

SMALL_TASKS = 20_000
CS1_TASKS = 2_000


def interleaved(repeat: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def quiet_stderr():
    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = devnull
        try:
            yield
        finally:
            sys.stderr = saved


class FakeShell:
    """What ``%%parallel`` needs of IPython's shell: the user namespace and a cell number."""

    def __init__(self) -> None:
        self.user_ns: dict[str, Any] = {"scale": 3}
        self.execution_count = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    identity = _pool_funcs.identity
    small, cs1 = list(range(SMALL_TASKS)), list(range(CS1_TASKS))

    def noop(event: Any) -> None:
        pass

    std = multiprocessing.get_context("forkserver").Pool(2)
    nb = nbproc.get_context("forkserver").Pool(2)
    try:
        rows = []
        for case, items, chunksize in (("map 20k", small, None), ("map 2k cs=1", cs1, 1)):
            with quiet_stderr():
                best = interleaved(
                    args.repeat,
                    {
                        "stdlib": lambda: std.map(identity, items, chunksize),
                        "nbproc progress=False": lambda: nb.map(identity, items, chunksize, progress=False),
                        "nbproc progress=True": lambda: nb.map(identity, items, chunksize, progress=True),
                        "nbproc listener": lambda: nb.map(identity, items, chunksize, progress=noop),
                    },
                )
            rows.append((case, best))
        print("\n## Progress bar cost (forkserver, 2 workers; ms, minimum of repeats)")
        print("| case | stdlib | progress=False | progress=True | no-op listener | True/False |")
        print("|---|---|---|---|---|---|")
        for case, best in rows:
            off, on = best["nbproc progress=False"], best["nbproc progress=True"]
            print(
                f"| {case} | {best['stdlib'] * 1e3:.2f} | {off * 1e3:.2f} | {on * 1e3:.2f} "
                f"| {best['nbproc listener'] * 1e3:.2f} | {on / off:.3f}x |"
            )
        ratio = rows[0][1]["nbproc progress=True"] / rows[0][1]["nbproc progress=False"]
        print(f"target progress=True <= 1.05x progress=False on map 20k: {'met' if ratio <= 1.05 else 'NOT met'}")
    finally:
        std.terminate()
        nb.terminate()

    from nbproc.jupyter import parallel

    shell = FakeShell()
    line = "-n 2 --start-method forkserver"
    try:
        parallel.parallel_magic(shell, line, "worker_id * scale")  # starts the pool
        warm = parallel.current_warm_pool()
        best = interleaved(
            args.repeat * 3,
            {
                "%%parallel -n 2": lambda: parallel.parallel_magic(shell, line, "worker_id * scale"),
                "Pool.map 2 tasks": lambda: warm.map(identity, [0, 1]),
            },
        )
    finally:
        parallel.shutdown_warm_pool()
    print("\n## %%parallel on warm workers (forkserver, 2 workers; ms, minimum of repeats)")
    print("| %%parallel -n 2 (second run) | bare Pool.map of 2 tasks | ratio |")
    print("|---|---|---|")
    magic, bare = best["%%parallel -n 2"], best["Pool.map 2 tasks"]
    print(f"| {magic * 1e3:.2f} | {bare * 1e3:.2f} | {magic / bare:.2f}x |")


if __name__ == "__main__":
    main()
