"""Helpers shared by the benchmark scripts: timing and the side-by-side table."""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any


def optional_module(name: str) -> Any | None:
    """Import a competitor (``multiprocess``, ``loky``) if installed, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls (median: robust to a noisy 2-core machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple[str, str, dict[str, float | None]]], unit: str = "ms") -> None:
    """rows: (case, start method, {library: seconds}); ratio = nbproc / stdlib."""
    scale = {"ms": 1e3, "us": 1e6, "s": 1.0}[unit]
    libs: list[str] = []
    for _, _, results in rows:
        libs.extend(lib for lib in results if lib not in libs)
    print(f"\n## {title}")
    header = ["case", "method", *[f"{lib} ({unit})" for lib in libs], "nbproc/stdlib"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case, method, results in rows:
        cells = [case, method]
        for lib in libs:
            value = results.get(lib)
            cells.append("n/a" if value is None else f"{value * scale:.2f}")
        nb, std = results.get("nbproc"), results.get("stdlib")
        cells.append(f"{nb / std:.2f}x" if nb and std else "n/a")
        print("| " + " | ".join(cells) + " |")


def compile_nbproc() -> None:
    """Write nbproc's bytecode, as ``pip install`` does for a user.

    With ``PYTHONDONTWRITEBYTECODE`` set (as on the developers' machines) nothing caches it, and
    every spawned child would compile nbproc's sources again (~30 ms) while the stdlib ships
    compiled: start-up figures would then measure the compiler, not nbproc.
    """
    import compileall
    import pathlib

    import nbproc

    compileall.compile_dir(str(pathlib.Path(nbproc.__file__).parent), quiet=1)
