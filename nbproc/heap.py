"""``multiprocessing.heap`` for nbproc — the stdlib's shared-memory heap, re-exported.

Why a mirror and not a reimplementation: ``RawValue``/``RawArray`` memory is carved out of one
per-process heap of mmap'ed arenas, and the stdlib's ``sharedctypes`` (which nbproc reuses) and
its arena reducers all allocate from ``multiprocessing.heap.BufferWrapper._heap``. Two heaps
would mean two sets of arenas and two after-fork resets; so there is exactly one, the
stdlib's, and ``nbproc.heap.BufferWrapper is multiprocessing.heap.BufferWrapper``.
"""

from __future__ import annotations

from multiprocessing.heap import Arena, BufferWrapper, Heap

__all__ = ["BufferWrapper", "Arena", "Heap"]
