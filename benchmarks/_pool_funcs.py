"""Importable task functions for ``benchmarks/pool.py`` (pickled by reference by every library)."""

from __future__ import annotations

from typing import Any


def identity(x: Any) -> Any:
    return x


def burn(n: int) -> int:
    """Pure-Python CPU work: about n microseconds' worth of loop iterations."""
    total = 0
    for i in range(n * 20):
        total += i * i % 7
    return total
