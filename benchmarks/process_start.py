"""Process start + join time per start method: nbproc vs the stdlib (and multiprocess).

Run: ``.venv/bin/python benchmarks/process_start.py [repeat]``. Each library's fork server is
started before timing, so the forkserver rows measure steady state, not the first launch.
"""

from __future__ import annotations

import multiprocessing
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import median_time, optional_module, print_table  # noqa: E402

import nbproc  # noqa: E402


def noop() -> None:
    pass


def start_join(ctx, target) -> None:
    p = ctx.Process(target=target)
    p.start()
    p.join()


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    libraries = {"nbproc": nbproc, "stdlib": multiprocessing}
    mp_dill = optional_module("multiprocess")
    if mp_dill is not None:
        libraries["multiprocess"] = mp_dill
    rows = []
    for method in ("fork", "spawn", "forkserver"):
        results: dict[str, float | None] = {}
        for name, lib in libraries.items():
            ctx = lib.get_context(method)
            start_join(ctx, noop)  # warm up (starts the fork server, imports)
            results[name] = median_time(lambda: start_join(ctx, noop), repeat)
        rows.append(("start+join, importable target", method, results))
    # a target defined in __main__ (a notebook cell): only nbproc can run it under spawn/forkserver
    for method in ("spawn", "forkserver"):
        ctx = nbproc.get_context(method)
        local = lambda: None  # noqa: E731
        start_join(ctx, local)
        seconds = median_time(lambda: start_join(ctx, local), repeat)
        rows.append(("start+join, lambda target", method, {"nbproc": seconds}))
    print_table(f"Process start+join (median of {repeat})", rows)


if __name__ == "__main__":
    main()
