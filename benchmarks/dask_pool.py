"""nbproc's Pool on Dask vs Dask directly vs nbproc's local Pool, side by side in one run.

One ``LocalCluster(processes=True)`` of 2 one-thread workers (as many as the local Pool's
processes) serves both Dask columns. Cases:

* ``10k trivial, map``          ``map(f, range(10000))`` with each API's default batching:
  nbproc chunks (4 chunks per slot), ``client.map`` makes one future per item.
* ``10k trivial, map cs=1``     one task per item: ``map(f, xs, chunksize=1)`` vs ``client.map``
  — the like-for-like cost of a task through nbproc's engine.
* ``10k trivial, apply_async``  one ``apply_async`` per item, then every ``get()``, vs
  ``client.map``.
* ``200 x 20 ms, map``          ``map(sleep_20ms, range(200))``: mostly waiting, 2 slots.

``f`` is defined in ``__main__`` (sent by value, as a notebook cell's function). Each round
runs every case once in each column, in turn (nbproc-on-Dask, Dask, local), so that a change
in the machine's load hits all three alike; the table shows the median over ``--repeat``
rounds (at least 3), and the load average seen. The ratio column is nbproc-on-Dask / direct
Dask; the Targets section checks it against :data:`TARGET` (issue 13's acceptance).
Run: ``python benchmarks/dask_pool.py [--repeat N] [--small N] [--slow N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

TARGET = 1.2  # nbproc-on-Dask may cost at most this much more than Dask itself
WORKERS = 2
MIN_REPEAT = 3  # medians of fewer runs say little on a shared machine


def identity(x: Any) -> Any:
    return x


def sleep_20ms(x: Any) -> Any:
    time.sleep(0.02)
    return x


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", type=int, default=10_000, help="number of trivial tasks")
    parser.add_argument("--slow", type=int, default=200, help="number of 20 ms tasks")
    args = parser.parse_args()
    repeat = max(args.repeat, MIN_REPEAT)
    try:
        import distributed
    except ImportError:
        print("distributed is not installed (pip install nbproc[dask]): skipped")
        return
    import nbproc
    import nbproc.dask

    small, slow = list(range(args.small)), list(range(args.slow))
    cluster = distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    client = distributed.Client(cluster, set_as_default=False)
    loads = [os.getloadavg()[0]]
    try:
        with nbproc.dask.Pool(client=client) as dpool, nbproc.Pool(WORKERS) as local:

            def direct(func: Any, xs: list) -> list:
                return client.gather(client.map(func, xs, pure=False))

            def each_apply(pool: Any, func: Any, xs: list) -> list:
                return [r.get() for r in [pool.apply_async(func, (x,)) for x in xs]]

            k = args.small // 1000
            cases: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = [
                (
                    f"{k}k trivial, map",
                    lambda: dpool.map(identity, small),
                    lambda: direct(identity, small),
                    lambda: local.map(identity, small),
                ),
                (
                    f"{k}k trivial, map cs=1",
                    lambda: dpool.map(identity, small, chunksize=1),
                    lambda: direct(identity, small),
                    lambda: local.map(identity, small, chunksize=1),
                ),
                (
                    f"{k}k trivial, apply_async",
                    lambda: each_apply(dpool, identity, small),
                    lambda: direct(identity, small),
                    lambda: each_apply(local, identity, small),
                ),
                (
                    f"{args.slow} x 20 ms, map",
                    lambda: dpool.map(sleep_20ms, slow),
                    lambda: direct(sleep_20ms, slow),
                    lambda: local.map(sleep_20ms, slow),
                ),
            ]
            for pool in (dpool, local):  # warm up: functions cached, workers started
                pool.map(identity, range(100))
            direct(identity, list(range(100)))
            times: dict[str, list[list[float]]] = {case[0]: [[], [], []] for case in cases}
            for _ in range(repeat):
                for name, *columns in cases:
                    for column, fn in enumerate(columns):
                        times[name][column].append(timed(fn))
                loads.append(os.getloadavg()[0])
    finally:
        client.close()
        cluster.close()
    print(f"\n## nbproc.dask.Pool vs Dask vs local nbproc.Pool ({WORKERS} workers, median of {repeat}, ms)")
    print(f"(1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs)")
    print("| case | nbproc on Dask | Dask client.map | nbproc local Pool | nbproc-Dask / Dask |")
    print("|---|---|---|---|---|")
    ratios = {}
    for name, (nb_dask, dask, local_times) in times.items():
        nb, d, lo = (statistics.median(t) for t in (nb_dask, dask, local_times))
        ratios[name] = nb / d
        print(f"| {name} | {nb * 1e3:.1f} | {d * 1e3:.1f} | {lo * 1e3:.1f} | {nb / d:.2f}x |")
    print(f"\n## Targets (nbproc on Dask at most {TARGET}x direct Dask)")
    for name, ratio in ratios.items():
        print(f"- {name}: {ratio:.2f}x {'ok' if ratio <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
