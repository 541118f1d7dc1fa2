"""``import nbproc``: how long it takes and proof that it stays light.

Prints the cumulative import time of nbproc (from ``-X importtime``) and of the stdlib's
multiprocessing for scale, and fails loudly if IPython, ipywidgets or dask got imported.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

HEAVY = ("IPython", "ipywidgets", "dask", "distributed", "ipykernel")


def cumulative_us(module: str) -> int:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True)
    total = 0
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            total = int(parts[1])
    return total


def main() -> None:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from _common import compile_nbproc

    compile_nbproc()
    probe = f"import sys, nbproc; print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    check = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    heavy = check.stdout.split()
    names = ("nbproc", "multiprocessing", "cloudpickle")
    runs: dict[str, list[int]] = {m: [] for m in names}
    for _ in range(9):  # alternating: a burst of load elsewhere hits every module alike
        for m in names:
            runs[m].append(cumulative_us(m))
    print("| module | cumulative import (ms): best of 9 | median of 9 | / multiprocessing (median) |")
    print("|---|---|---|---|")
    base = statistics.median(runs["multiprocessing"])
    for name, us in runs.items():
        median = statistics.median(us)
        print(f"| {name} | {min(us) / 1000:.1f} | {median / 1000:.1f} | {median / base:.2f}x |")
    print(f"heavy modules imported by `import nbproc`: {heavy or 'none'}")
    if heavy:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
