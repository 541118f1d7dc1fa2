"""Large arrays to pool workers and back: nbproc vs the stdlib (and multiprocess, loky), with
the floors beside them.

* ``to workers``  ``map(nbytes, 8 arrays of 16 MiB, chunksize=1)``: each array goes to a
  worker, a small int comes back.
* ``back``        ``map(make_array, [n] * 8, chunksize=1)``: each worker sends a 16 MiB array.
* ``nbproc pipe``: nbproc with its shared-memory path switched off (every buffer through the
  pipe, as out-of-band frames), to show what shared memory changes on this machine.
* ``nbproc fresh``: nbproc with shared memory but without recycling segments (a fresh segment
  per buffer, as Queues and Connections use), to show what recycling changes.
* floors: ``raw pipe`` — 16 MiB written by one process into an OS pipe and read by another
  (the two copies every pipe-based transfer pays, nothing else); ``memcpy`` — one copy of
  16 MiB into an existing array in this process.

Throughput in MiB/s (higher is better); ratio = library / stdlib. Each figure is the median of
``--repeat`` rounds in which the libraries take turns (A B A B ...), so load from elsewhere on
a shared machine hits all of them alike. Run: ``python benchmarks/arrays.py [--methods ...]
[--repeat N]``; it prints whether nbproc meets the goals of issue 12 (at least 3x the stdlib's
throughput, and within 3x of memcpy).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pool_funcs  # noqa: E402 - after making this folder importable (also for spawned children)
from _common import compile_nbproc  # noqa: E402

ARRAY_BYTES = 16 * 1024 * 1024
ARRAYS = 8
MIB = 1024 * 1024


def _pool(lib: str, method: str) -> tuple[Callable[..., list[Any]], Callable[[], None]]:
    if lib == "loky":
        import loky

        executor = loky.ProcessPoolExecutor(max_workers=2)
        return (lambda f, xs: list(executor.map(f, xs, chunksize=1))), (lambda: executor.shutdown(wait=True))
    if lib == "nbproc pipe":  # nbproc with shared memory off on both sides: what it saves
        from nbproc import _shm_buffers

        pool = importlib.import_module("nbproc").get_context(method).Pool(2, initializer=_pool_funcs.pipe_only)

        def run(f: Any, xs: Any) -> list[Any]:
            saved, _shm_buffers.SHM_THRESHOLD = _shm_buffers.SHM_THRESHOLD, 1 << 62
            try:
                return pool.map(f, xs, 1)
            finally:
                _shm_buffers.SHM_THRESHOLD = saved

    elif lib == "nbproc fresh":  # shared memory, a fresh segment per buffer both ways
        from nbproc import _shm_buffers

        saved, _shm_buffers.RECYCLE_BYTES = _shm_buffers.RECYCLE_BYTES, 0  # the pool's own cache
        try:
            pool = importlib.import_module("nbproc").get_context(method).Pool(2, initializer=_pool_funcs.no_recycling)
        finally:
            _shm_buffers.RECYCLE_BYTES = saved

        def run(f: Any, xs: Any) -> list[Any]:
            return pool.map(f, xs, 1)

    else:
        module = importlib.import_module("multiprocessing" if lib == "stdlib" else lib)
        pool = module.get_context(method).Pool(2)

        def run(f: Any, xs: Any) -> list[Any]:
            return pool.map(f, xs, 1)

    def close() -> None:
        pool.close()
        pool.join()

    return run, close


def _raw_pipe_seconds(data: np.ndarray) -> float:
    """16 MiB through an OS pipe from a forked child to this process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(w, view) :]
        os._exit(0)
    os.close(w)
    target = bytearray(data.nbytes)
    view = memoryview(target)
    t0 = time.perf_counter()
    done = 0
    while done < len(target):
        done += os.readv(r, [view[done:]])
    seconds = time.perf_counter() - t0
    os.close(r)
    os.waitpid(pid, 0)
    return seconds


def measure(libs: list[str], method: str, repeat: int) -> dict[str, dict[str, list[float]]]:
    array = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    arrays = [array] * ARRAYS
    pools = {lib: _pool(lib, method) for lib in libs}
    times: dict[str, dict[str, list[float]]] = {lib: {"to workers": [], "back": []} for lib in libs}
    try:
        for run, _ in pools.values():  # warm up: workers started, functions cached
            run(_pool_funcs.nbytes, arrays[:2])
            run(_pool_funcs.make_array, [ARRAY_BYTES // 8] * 2)
        for _ in range(repeat):
            for lib, (run, _) in pools.items():
                t0 = time.perf_counter()
                run(_pool_funcs.nbytes, arrays)
                times[lib]["to workers"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                out = run(_pool_funcs.make_array, [ARRAY_BYTES // 8] * ARRAYS)
                times[lib]["back"].append(time.perf_counter() - t0)
                del out
    finally:
        for _, close in pools.values():
            close()
    return times


def floors(repeat: int) -> dict[str, float]:
    array = np.random.default_rng(0).random(ARRAY_BYTES // 8)
    target = np.empty_like(array)
    memcpy = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(target, array)
        memcpy.append(time.perf_counter() - t0)
    pipe = [_raw_pipe_seconds(array) for _ in range(repeat)]
    rate = ARRAY_BYTES / MIB
    return {"raw pipe": rate / statistics.median(pipe), "memcpy": rate / statistics.median(memcpy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    compile_nbproc()
    libs = ["stdlib", "nbproc", "nbproc fresh", "nbproc pipe"]
    for optional in ("multiprocess", "loky"):
        try:
            importlib.import_module(optional)
            libs.append(optional)
        except ImportError:
            pass
    floor = floors(max(5, args.repeat))
    print(f"\n## {ARRAYS} x 16 MiB float64 arrays, 2 workers: MiB/s (median of {args.repeat} alternating rounds)")
    header = ["case", "method", *libs, "nbproc/stdlib", "raw pipe", "memcpy"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    rates: dict[tuple[str, str], dict[str, float]] = {}
    for method in args.methods.split(","):
        columns = [lib for lib in libs if lib != "loky" or method == "spawn"]
        times = measure(columns, method, args.repeat)
        for case in ("to workers", "back"):
            rate = {lib: ARRAYS * ARRAY_BYTES / MIB / statistics.median(times[lib][case]) for lib in columns}
            rates[(case, method)] = rate
            cells = [case, method, *[f"{rate[lib]:.0f}" if lib in rate else "n/a" for lib in libs]]
            cells += [f"{rate['nbproc'] / rate['stdlib']:.2f}x", f"{floor['raw pipe']:.0f}", f"{floor['memcpy']:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    check_targets(rates, floor["memcpy"])


def check_targets(rates: dict[tuple[str, str], dict[str, float]], memcpy: float) -> None:
    """Issue 12's goals: at least 3x the stdlib's throughput, and at most 3x below memcpy's."""
    print("\nTargets:")
    for (case, method), rate in rates.items():
        nbproc = rate["nbproc"]
        checks = (
            ("nbproc / stdlib >= 3", nbproc / rate["stdlib"], nbproc >= 3 * rate["stdlib"]),
            ("memcpy / nbproc <= 3", memcpy / nbproc, memcpy <= 3 * nbproc),
        )
        for label, ratio, ok in checks:
            print(f"  {method:10} {case:10} {label:22} {ratio:5.2f}  {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
