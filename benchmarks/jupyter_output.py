"""Worker output forwarding in a real kernel: what it costs, and how fast a flood gets through.

Run: ``.venv/bin/python benchmarks/jupyter_output.py [repeat]``. Two figures, printed, never asserted:

1. ``Pool(2).map`` of 20,000 trivial tasks (a cell-defined function, forkserver), timed inside
   the kernel, with ``nbproc.config.forward_output`` on vs off (target: on/off <= 1.05x); also
   with ``chunksize=1`` (per-task cost in the worker) and ``imap`` (a sync per result).
   Runs alternate between a pool created with forwarding on and one created with it off.
2. A worker printing 100,000 short lines as fast as it can: lines per second reaching the
   client on iopub, from ``execute`` to the last line received, through nbproc's forwarding
   (kernel fd capture off) vs through ipykernel's own fd capture (forwarding off, capture on:
   the way spawned output reaches a notebook without nbproc). Target: forwarding >= 1x.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tests._kernel_session import KernelSession  # noqa: E402

TASKS = 20_000
LINES = 100_000

DEFINE = """
import time, nbproc
def inc(x):
    return x + 1
def flood(n):
    for i in range(n):
        print(i)
"""

MAP = """
nbproc.config.forward_output = {on}
with nbproc.Pool(2) as pool:
    pool.map(inc, range(100))  # workers up and the function cached before timing
    t0 = time.perf_counter()
    {call}
    print("elapsed", time.perf_counter() - t0)
nbproc.config.forward_output = True
"""

FLOOD = """
nbproc.config.forward_output = {on}
p = nbproc.Process(target=flood, args=({lines},)); p.start(); p.join()
nbproc.config.forward_output = True
"""


CALLS = {
    "map, default chunksize": f"pool.map(inc, range({TASKS}))",
    "map, chunksize=1": f"pool.map(inc, range({TASKS}), chunksize=1)",
    "imap, chunksize=1 (a sync per result)": f"for _ in pool.imap(inc, range({TASKS})): pass",
}


def map_times(session: KernelSession, repeat: int, call: str) -> dict[bool, list[float]]:
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for on in (True, False):
            cell = session.run(MAP.format(on=on, call=call), timeout=300)
            times[on].append(float(session.text(cell, "stdout").split()[-1]))
    return times


def flood_rate(session: KernelSession, on: bool) -> float:
    """Lines per second from execute to the last line arriving on iopub (any cell)."""
    last = f"\n{LINES - 1}\n"
    before = len(session.streams())
    t0 = time.perf_counter()
    cell = session.start(FLOOD.format(on=on, lines=LINES))

    def arrived() -> bool:
        text = "".join(m["content"]["text"] for m in session.streams()[before:] if m["content"]["name"] == "stdout")
        return last in text

    session.wait_for(arrived, 300, "the flood's last line")
    elapsed = time.perf_counter() - t0
    session.wait_idle(cell, 300)
    return LINES / elapsed


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as cwd:
        forwarding = KernelSession(cwd, capture_fd_output=False, quiet=True)
        try:
            forwarding.run(DEFINE)
            times = {case: map_times(forwarding, repeat, call) for case, call in CALLS.items()}
            rates_on = [flood_rate(forwarding, True) for _ in range(repeat)]
        finally:
            forwarding.shutdown()
        capturing = KernelSession(cwd, capture_fd_output=True, quiet=True)
        try:
            capturing.run(DEFINE)
            rates_capture = [flood_rate(capturing, False) for _ in range(repeat)]
        finally:
            capturing.shutdown()
    print(f"\n## Pool(2) running {TASKS:,} trivial tasks in a kernel ({repeat} runs each, forkserver)")
    # The minimum is the run least disturbed by other load (a shared 2-core machine); the median
    # is shown beside it so that a noisy run is visible as such.
    print("| call | on (ms, min / median) | off (ms, min / median) | on/off (min) | on/off (median) |")
    print("|---|---|---|---|---|")
    for case, result in times.items():
        on, off = result[True], result[False]
        on_min, off_min, on_med, off_med = min(on), min(off), statistics.median(on), statistics.median(off)
        print(
            f"| {case} | {on_min * 1e3:.1f} / {on_med * 1e3:.1f} | {off_min * 1e3:.1f} / {off_med * 1e3:.1f} "
            f"| {on_min / off_min:.3f}x | {on_med / off_med:.3f}x |"
        )
    fwd, cap = max(rates_on), max(rates_capture)
    print(f"\n## A worker printing {LINES:,} lines: lines/s reaching the client (best of {len(rates_on)})")
    print("| nbproc forwarding (capture off) | ipykernel fd capture (forwarding off) | ratio |\n|---|---|---|")
    print(f"| {fwd:,.0f} | {cap:,.0f} | {fwd / cap:.2f}x |")


if __name__ == "__main__":
    main()
