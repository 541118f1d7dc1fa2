"""``import nbproc``: how long it takes and proof that it stays light.

Prints the cumulative import time of nbproc (from ``-X importtime``) and of the stdlib's
multiprocessing for scale, and fails loudly if IPython, ipywidgets or dask got imported.
"""

from __future__ import annotations

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
    probe = f"import sys, nbproc; print(' '.join(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    check = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    heavy = check.stdout.split()
    best = {m: min(cumulative_us(m) for _ in range(5)) for m in ("nbproc", "multiprocessing", "cloudpickle")}
    print("| module | cumulative import (ms, best of 5) |\n|---|---|")
    for name, us in best.items():
        print(f"| {name} | {us / 1000:.1f} |")
    print(f"heavy modules imported by `import nbproc`: {heavy or 'none'}")
    if heavy:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
