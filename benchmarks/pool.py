"""Pool overhead and throughput: nbproc vs stdlib ``multiprocessing`` (and ``multiprocess``, ``loky``).

For each start method, with 2 workers:

* ``start+shutdown``   ``Pool(2)``, one tiny ``map``, ``close()``, ``join()`` (ms), with this
  script (which imports numpy) as main module: spawn children re-import it for every library
  alike; ``startup.py`` measures start-up with a light main module
* ``20k tasks``        ``map(f, range(20000))`` with the default chunking: µs per task
* ``2k tasks cs=1``    ``map(f, range(2000), chunksize=1)``: µs per task
* ``CPU speedup``      16 CPU-bound tasks of ~25 ms: serial time / pool time (higher is better)
* ``16 MB arrays``     ``map(f, [array] * 4, chunksize=1)`` with 16 MB numpy arrays, each sent
  to a worker and back: ms per array

Columns: ``stdlib`` and ``nbproc`` run an importable function (pickled by reference);
``nbproc main`` runs the same function defined in ``__main__`` — which nbproc serializes by
value, as it must for a notebook cell — ; ``multiprocess`` (dill) and ``loky`` run the
importable one. loky has no start methods of ours: its own (``loky``, spawn-like) is shown in
the spawn rows, as a ``ProcessPoolExecutor`` with the same chunk sizes. Ratios divide by the
stdlib (below 1: faster than the stdlib), except ``CPU speedup`` where higher is better.
Timings are the minimum over repeats (the machine is shared; the minimum is the least noisy
estimate of the cost itself). Run: ``python benchmarks/pool.py [--methods fork,spawn]
[--repeat N]``; it prints whether nbproc meets its targets.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pool_funcs  # noqa: E402 - after making this folder importable (also for spawned children)

SMALL_TASKS = 20_000
CS1_TASKS = 2_000
CPU_TASKS = 16
CPU_TASK_US = 25_000
ARRAY_BYTES = 16 * 1024 * 1024
ARRAYS = 4


def main_identity(x: Any) -> Any:  # defined in __main__: nbproc sends it by value
    return x


def main_burn(n: int) -> int:
    total = 0
    for i in range(n * 20):
        total += i * i % 7
    return total


class PoolAdapter:
    """The few operations measured, for a multiprocessing-like Pool or a loky executor."""

    def __init__(self, lib: str, method: str) -> None:
        self.lib = lib
        if lib == "loky":
            import loky

            self._executor = loky.ProcessPoolExecutor(max_workers=2)
            self.pool = None
        else:
            module = importlib.import_module("multiprocessing" if lib == "stdlib" else lib)
            self.pool = module.get_context(method).Pool(2)

    def map(self, func: Callable[[Any], Any], items: Any, chunksize: int | None = None) -> list[Any]:
        if self.pool is not None:
            return self.pool.map(func, items, chunksize)
        if chunksize is None:
            chunksize = max(1, len(items) // 8)  # the Pool's default for 2 workers
        return list(self._executor.map(func, items, chunksize=chunksize))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        else:
            self._executor.shutdown(wait=True)


def interleaved(repeat: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Minimum time of each function over ``repeat`` rounds, the libraries taking turns in each
    round, so that a burst of load from elsewhere on the machine hits all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def lib_name(column: str) -> str:
    return "nbproc" if column == "nbproc main" else column


def measure(columns: list[str], method: str, repeat: int) -> dict[str, dict[str, float]]:
    """All cases for one start method; every library's pool is alive at once, measured in turns."""
    ident = {c: main_identity if c == "nbproc main" else _pool_funcs.identity for c in columns}
    burn = {c: main_burn if c == "nbproc main" else _pool_funcs.burn for c in columns}
    out: dict[str, dict[str, float]] = {c: {} for c in columns}

    def start_stop(column: str) -> Callable[[], None]:
        def run() -> None:
            pool = PoolAdapter(lib_name(column), method)
            pool.map(ident[column], [0, 1], 1)
            pool.close()

        return run

    for column, value in interleaved(max(2, repeat // 2), {c: start_stop(c) for c in columns}).items():
        out[column]["start+shutdown"] = value
    pools = {c: PoolAdapter(lib_name(c), method) for c in columns}
    try:
        for column, pool in pools.items():
            pool.map(ident[column], list(range(64)), 1)  # warm up: workers started, function cached

        def run_map(column: str, items: list[Any], chunksize: int | None, func: Any = None) -> Callable[[], None]:
            return lambda: pools[column].map(func or ident[column], items, chunksize)

        small = list(range(SMALL_TASKS))
        for column, value in interleaved(repeat, {c: run_map(c, small, None) for c in columns}).items():
            out[column]["20k tasks"] = value / SMALL_TASKS
        cs1 = list(range(CS1_TASKS))
        for column, value in interleaved(repeat, {c: run_map(c, cs1, 1) for c in columns}).items():
            out[column]["2k tasks cs=1"] = value / CS1_TASKS
        serial = min(interleaved(2, {"serial": lambda: [_pool_funcs.burn(CPU_TASK_US) for _ in range(4)]}).values())
        serial *= CPU_TASKS / 4
        cpu = [CPU_TASK_US] * CPU_TASKS
        for column, value in interleaved(2, {c: run_map(c, cpu, 1, burn[c]) for c in columns}).items():
            out[column]["CPU speedup"] = serial / value
        array = np.random.default_rng(0).random(ARRAY_BYTES // 8)
        arrays = [array] * ARRAYS
        timed = interleaved(max(2, repeat // 2), {c: run_map(c, arrays, 1) for c in columns})
        for column, value in timed.items():
            out[column]["16 MB arrays"] = value / ARRAYS
    finally:
        for pool in pools.values():
            pool.close()
    return out


UNITS = {"start+shutdown": ("ms", 1e3), "20k tasks": ("us", 1e6), "2k tasks cs=1": ("us", 1e6),
         "CPU speedup": ("x", 1.0), "16 MB arrays": ("ms", 1e3)}  # fmt: skip


def print_table(results: dict[tuple[str, str], dict[str, float]], methods: list[str], columns: list[str]) -> None:
    header = ["case", "method", *columns, "nbproc/stdlib", "nbproc main/stdlib"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case, (unit, scale) in UNITS.items():
        for method in methods:
            cells = [f"{case} ({unit})", method]
            for col in columns:
                value = results.get((col, method), {}).get(case)
                cells.append("n/a" if value is None else f"{value * scale:.2f}")
            std = results.get(("stdlib", method), {}).get(case)
            for col in ("nbproc", "nbproc main"):
                value = results.get((col, method), {}).get(case)
                cells.append(f"{value / std:.2f}x" if value and std else "n/a")
            print("| " + " | ".join(cells) + " |")


def check_targets(results: dict[tuple[str, str], dict[str, float]], methods: list[str]) -> None:
    print("\nTargets (per start method):")
    for method in methods:
        std = results[("stdlib", method)]
        nb = results[("nbproc", method)]
        main = results[("nbproc main", method)]
        mp = results.get(("multiprocess", method))
        checks = []
        for case in ("20k tasks", "2k tasks cs=1"):
            checks.append((f"importable {case} <= 1.10x stdlib", nb[case] / std[case], nb[case] <= 1.10 * std[case]))
            checks.append((f"__main__ {case} <= 1.25x stdlib", main[case] / std[case], main[case] <= 1.25 * std[case]))
            if mp:
                checks.append((f"{case} >= 3x faster than multiprocess", mp[case] / nb[case], mp[case] >= 3 * nb[case]))
        arrays = nb["16 MB arrays"] / std["16 MB arrays"]
        checks.append(("16 MB arrays <= stdlib", arrays, arrays <= 1.0))
        for label, ratio, ok in checks:
            print(f"  {method:10} {label:45} {ratio:5.2f}  {'ok' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    methods = args.methods.split(",")
    libs = ["stdlib", "nbproc", "nbproc main"]
    for optional in ("multiprocess", "loky"):
        try:
            importlib.import_module(optional)
            libs.append(optional)
        except ImportError:
            pass
    results: dict[tuple[str, str], dict[str, float]] = {}
    for method in methods:
        columns = [lib for lib in libs if lib != "loky" or method == "spawn"]
        for column, values in measure(columns, method, args.repeat).items():
            results[(column, method)] = values
        print(f"  measured {method}", file=sys.stderr, flush=True)
    print_table(results, methods, libs)
    check_targets(results, methods)


if __name__ == "__main__":
    main()
