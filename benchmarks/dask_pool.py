"""nbproc's Pool on Dask vs Dask directly vs nbproc's local Pool, side by side in one run.

One ``LocalCluster(processes=True)`` of 2 one-thread workers (as many as the local Pool's
processes) serves both Dask columns. Cases:

* ``10k trivial, map``       ``map(f, range(10000))`` with each API's default batching: nbproc
  chunks (4 chunks per slot), ``client.map`` makes one future per item.
* ``10k trivial, per task``  one task per item on both Dask columns: ``imap(f, xs, chunksize=1)``
  vs ``client.map`` — the like-for-like cost of a task through nbproc's engine.
* ``200 x 20 ms``            ``map(sleep_20ms, range(200))``: mostly waiting, 2 slots.

``f`` is defined in ``__main__`` (sent by value, as a notebook cell's function). Timings are
the minimum over ``--repeat`` runs (the machine is shared; the minimum is the least noisy
estimate). The ratio column is nbproc-on-Dask / direct Dask (target: at most 1.2).
Run: ``python benchmarks/dask_pool.py [--repeat N] [--small N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

TARGET = 1.2  # nbproc-on-Dask may cost at most this much more than Dask itself
WORKERS = 2


def identity(x: Any) -> Any:
    return x


def sleep_20ms(x: Any) -> Any:
    time.sleep(0.02)
    return x


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", type=int, default=10_000, help="number of trivial tasks")
    parser.add_argument("--slow", type=int, default=200, help="number of 20 ms tasks")
    args = parser.parse_args()
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
    rows: list[tuple[str, float, float, float | None]] = []
    try:
        with nbproc.dask.Pool(client=client) as dpool, nbproc.Pool(WORKERS) as local:

            def direct(func: Any, xs: list) -> list:
                return client.gather(client.map(func, xs, pure=False))

            for pool in (dpool, local):  # warm up: functions cached, workers started
                pool.map(identity, range(100))
            direct(identity, list(range(100)))
            rows.append(
                (
                    f"{args.small // 1000}k trivial, map",
                    best(lambda: dpool.map(identity, small), args.repeat),
                    best(lambda: direct(identity, small), args.repeat),
                    best(lambda: local.map(identity, small), args.repeat),
                )
            )
            rows.append(
                (
                    f"{args.small // 1000}k trivial, per task",
                    best(lambda: list(dpool.imap(identity, small, chunksize=1)), args.repeat),
                    best(lambda: direct(identity, small), args.repeat),
                    best(lambda: list(local.imap(identity, small, chunksize=1)), args.repeat),
                )
            )
            rows.append(
                (
                    f"{args.slow} x 20 ms, map",
                    best(lambda: dpool.map(sleep_20ms, slow), args.repeat),
                    best(lambda: direct(sleep_20ms, slow), args.repeat),
                    best(lambda: local.map(sleep_20ms, slow), args.repeat),
                )
            )
    finally:
        client.close()
        cluster.close()
    print(f"\n## nbproc.dask.Pool vs Dask vs local nbproc.Pool ({WORKERS} workers, min of {args.repeat}, ms)")
    print("| case | nbproc on Dask | Dask client.map | nbproc local Pool | nbproc-Dask / Dask |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for case, nb_dask, dask, local_time in rows:
        ratio = nb_dask / dask
        worst = max(worst, ratio)
        local_cell = "n/a" if local_time is None else f"{local_time * 1e3:.1f}"
        print(f"| {case} | {nb_dask * 1e3:.1f} | {dask * 1e3:.1f} | {local_cell} | {ratio:.2f}x |")
    verdict = "meets" if worst <= TARGET else "misses"
    print(f"\nnbproc on Dask {verdict} its target (at most {TARGET}x direct Dask): worst {worst:.2f}x")


if __name__ == "__main__":
    main()
