"""Manager proxy round trips: nbproc vs the stdlib (and multiprocess where installed).

Run: ``.venv/bin/python benchmarks/managers.py [calls]``. Each case times ``calls`` proxy
method calls (one client -> server -> client round trip each) and reports the time per call.
The libraries are measured in alternation, several rounds, and the median round is kept:
on a busy 2-core machine that cancels most of the drift a one-after-the-other run would show.
Each case also gets a CPU row: CPU seconds per call spent by the client *and* the manager's
server (psutil), which a loaded machine disturbs much less than wall time.

Cases: ``d[k] = v`` on a dict proxy (the reference's typical use), ``d[k]`` reading back,
``ns.x`` on a Namespace proxy, ``q.put``/``q.get`` on a queue proxy, and the cost of creating
and dropping a proxy (``manager.list()``: one control connection each way).
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import psutil  # noqa: E402
from _common import optional_module, print_table  # noqa: E402

import nbproc  # noqa: E402

# Alternating rounds per library, median reported: more, shorter rounds resist the drift of a
# busy machine better than a few long ones; 25 x 1000 calls keeps the script near 30 s.
ROUNDS = 25


def _setitem(m: Any, calls: int) -> Callable[[], None]:
    d = m.dict()

    def run() -> None:
        for i in range(calls):
            d[i & 255] = i

    return run


def _getitem(m: Any, calls: int) -> Callable[[], None]:
    d = m.dict({i: i for i in range(256)})

    def run() -> None:
        for i in range(calls):
            d[i & 255]

    return run


def _namespace(m: Any, calls: int) -> Callable[[], None]:
    ns = m.Namespace(x=1)

    def run() -> None:
        for _ in range(calls):
            ns.x

    return run


def _queue(m: Any, calls: int) -> Callable[[], None]:
    q = m.Queue()

    def run() -> None:
        for i in range(calls // 2):
            q.put(i)
            q.get()

    return run


def _create_drop(m: Any, calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls // 20):
            m.list()

    return run


CASES: list[tuple[str, Callable[[Any, int], Callable[[], None]], int]] = [
    ("d[k] = v (dict proxy)", _setitem, 1),
    ("d[k] (dict proxy)", _getitem, 1),
    ("ns.x (Namespace proxy)", _namespace, 1),
    ("q.put + q.get (Queue proxy), per call", _queue, 1),
    ("manager.list() create+drop", _create_drop, 20),
]


def _cpu_seconds(server_pid: int) -> float:
    """CPU time used so far by this process and the manager's server (user + system)."""
    mine = psutil.Process().cpu_times()
    server = psutil.Process(server_pid).cpu_times()
    return mine.user + mine.system + server.user + server.system


def measure(libraries: dict[str, Any], method: str, calls: int) -> list[tuple[str, str, dict[str, float | None]]]:
    """Time each case for every library in alternating rounds; wall and (client+server) CPU rows."""
    managers = {name: lib.get_context(method).Manager() for name, lib in libraries.items()}
    rows = []
    try:
        for case, make, per in CASES:
            runs = {name: make(m, calls) for name, m in managers.items()}
            for run in runs.values():
                run()  # warm up: connections, imports
            wall: dict[str, list[float]] = {name: [] for name in runs}
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(ROUNDS):
                for name, run in runs.items():
                    pid = managers[name]._process.pid
                    c0, t0 = _cpu_seconds(pid), time.perf_counter()
                    run()
                    t1, c1 = time.perf_counter(), _cpu_seconds(pid)
                    wall[name].append((t1 - t0) / (calls // per))
                    cpu[name].append((c1 - c0) / (calls // per))
            rows.append((case, method, {name: statistics.median(s) for name, s in wall.items()}))
            # CPU clocks tick in 10 ms steps: per-round figures are coarse, their sum is not.
            rows.append((f"  CPU, client+server: {case}", method, {n: sum(s) / len(s) for n, s in cpu.items()}))
    finally:
        for m in managers.values():
            m.shutdown()
    return rows


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    libraries: dict[str, Any] = {"nbproc": nbproc, "stdlib": multiprocessing}
    mp_dill = optional_module("multiprocess")
    if mp_dill is not None:
        libraries["multiprocess"] = mp_dill
    rows = []
    # The server's start method does not change a round trip (the server is the same code
    # whichever way it started), so one method is measured: forkserver, nbproc's Linux default.
    rows.extend(measure(libraries, "forkserver", calls))
    print_table(f"Manager proxy calls, time per call (median of {ROUNDS} alternating rounds)", rows, unit="us")


if __name__ == "__main__":
    main()
