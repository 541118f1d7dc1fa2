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


def nbytes(x: Any) -> int:
    """Receive an array, send back a small answer (measures the way to the worker)."""
    return x.nbytes


def make_array(n: int) -> Any:
    """Send back an array of ``n`` float64 (measures the way back)."""
    import numpy as np

    return np.full(n, 1.5)


def pipe_only() -> None:
    """Pool initializer: this worker sends every buffer through its pipe (no shared memory)."""
    from nbproc import _shm_buffers

    _shm_buffers.SHM_THRESHOLD = 1 << 62


def no_recycling() -> None:
    """Pool initializer: this worker writes every result into a fresh segment (no recycling)."""
    from nbproc import _shm_buffers

    _shm_buffers.RECYCLE_BYTES = 0
