"""Queue latency and throughput: nbproc vs stdlib ``multiprocessing`` (and ``multiprocess``).

Measures, for each library, with one child process started by the same start method:

* ``small round trip``  parent put -> child get, put back -> parent get, for a small tuple
  (µs per round trip; lower is better)
* ``small throughput``  parent puts N small items, the child gets them all and reports back
  (items per second; higher is better; includes put()'s serialization and get()'s unpickling),
  and the CPU time both processes spent per item (µs; steadier than wall time on a busy host)
* ``16 MB round trip``  the same round trip with a 16 MB numpy array (ms; lower is better)
* ``SimpleQueue rt``    small round trip through two SimpleQueues (µs)

Run: ``python benchmarks/queues.py [--method forkserver] [--quick]``. Prints a table with a
ratio column (nbproc / stdlib: below 1 means nbproc is faster, except for throughput). Latencies
are medians of per-round-trip samples; on a small VM a wake-up of an idle CPU costs tens of
microseconds and comes and goes with the load, so compare ratios, or pin everything to one CPU
(``taskset -c 0``) to measure the software overhead alone.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Any

import numpy as np

SMALL = (1, "two", 3.0)
BIG_BYTES = 16 * 1024 * 1024


def echo(qin: Any, qout: Any) -> None:
    """Child: send every item back until ``None``."""
    while True:
        item = qin.get()
        if item is None:
            return
        qout.put(item)


def drain(qin: Any, qout: Any, n: int) -> None:
    """Child: announce readiness, get ``n`` items, report how many arrived and the CPU it used."""
    qout.put("ready")
    count = 0
    cpu = time.process_time()
    for _ in range(n):
        qin.get()
        count += 1
    qout.put((count, time.process_time() - cpu))


def _round_trips(qin: Any, qout: Any, item: Any, n: int) -> list[float]:
    """Seconds taken by each of ``n`` round trips (their median resists the scheduler's outliers)."""
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        qin.put(item)
        qout.get()
        samples.append(clock() - start)
    return samples


def bench_library(name: str, method: str, quick: bool) -> dict[str, float]:
    lib = importlib.import_module(name)
    ctx = lib.get_context(method)
    repeats = 3 if quick else 5
    n_rt = 300 if quick else 1000
    n_tp = 10_000 if quick else 50_000
    n_big = 5 if quick else 10
    results: dict[str, float] = {}

    qin, qout = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=echo, args=(qin, qout))
    child.start()
    _round_trips(qin, qout, SMALL, 50)  # warm up (feeder threads, caches)
    results["small round trip (µs)"] = 1e6 * statistics.median(_round_trips(qin, qout, SMALL, n_rt * repeats))
    big = np.arange(BIG_BYTES // 8, dtype=np.float64)
    _round_trips(qin, qout, big, 1)
    results["16 MB round trip (ms)"] = 1e3 * statistics.median(_round_trips(qin, qout, big, n_big * repeats))
    qin.put(big)
    back = qout.get()
    assert back.shape == big.shape and back[-1] == big[-1]
    qin.put(None)
    child.join()

    tp, cpu = [], []
    for _ in range(repeats):
        qin, qout = ctx.Queue(), ctx.Queue()
        child = ctx.Process(target=drain, args=(qin, qout, n_tp))
        child.start()
        assert qout.get() == "ready"
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(n_tp):
            qin.put(i)
        count, child_cpu = qout.get()
        assert count == n_tp
        tp.append(n_tp / (time.perf_counter() - start))
        cpu.append((time.process_time() - cpu_start + child_cpu) / n_tp)
        child.join()
    results["small throughput (items/s)"] = statistics.median(tp)
    results["  CPU per item, both (µs)"] = 1e6 * statistics.median(cpu)

    sin, sout = ctx.SimpleQueue(), ctx.SimpleQueue()
    child = ctx.Process(target=echo, args=(sin, sout))
    child.start()
    _round_trips(sin, sout, SMALL, 50)
    results["SimpleQueue rt (µs)"] = 1e6 * statistics.median(_round_trips(sin, sout, SMALL, n_rt * repeats))
    sin.put(None)
    child.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="forkserver", help="start method for every library (default forkserver)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()

    libraries = ["multiprocessing", "nbproc"]
    try:
        import multiprocess  # noqa: F401

        libraries.append("multiprocess")
    except ImportError:
        pass
    table = {name: bench_library(name, args.method, args.quick) for name in libraries}

    metrics = list(table["multiprocessing"])
    header = f"{'metric':<28}" + "".join(f"{name:>17}" for name in libraries) + f"{'nbproc/stdlib':>15}"
    print(f"queues benchmark, start method {args.method}")
    print(header)
    print("-" * len(header))
    for metric in metrics:
        row = f"{metric:<28}" + "".join(f"{table[name][metric]:>17.1f}" for name in libraries)
        row += f"{table['nbproc'][metric] / table['multiprocessing'][metric]:>15.2f}"
        print(row)
    print("(ratio: nbproc / stdlib; for throughput higher is better, for times lower is better)")


if __name__ == "__main__":
    main()
