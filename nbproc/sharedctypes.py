"""ctypes objects in shared memory — the stdlib's ``multiprocessing.sharedctypes``, nbproc's context.

The allocation (``multiprocessing.heap`` arenas backed by a file descriptor), the synchronized
wrappers and the pickling rules are the stdlib's, used through its public functions. nbproc
changes one thing: where a function accepts ``ctx``, leaving it out means *nbproc's* default
context (the stdlib would take, and pin, its own default start method), so the lock a
``Value``/``Array`` creates belongs to the start method nbproc launches children with.

These objects cross to children only as ``Process`` arguments (or by fork inheritance), as in the
stdlib; nbproc's launcher makes that work under spawn and forkserver too. A ``ctypes.Structure``
subclass defined in a notebook cell or in ``__main__`` travels by value with them.
"""

from __future__ import annotations

from multiprocessing import sharedctypes as _std
from multiprocessing.sharedctypes import (
    RawArray,
    RawValue,
    Synchronized,
    SynchronizedArray,
    SynchronizedBase,
    SynchronizedString,
    copy,
)
from typing import Any

__all__ = [
    "RawValue",
    "RawArray",
    "Value",
    "Array",
    "copy",
    "synchronized",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedString",
    "SynchronizedBase",
]


def _default_ctx(ctx: Any) -> Any:
    if ctx is not None:
        return ctx
    from .context import _default_context

    return _default_context.get_context()


def Value(typecode_or_type: Any, *args: Any, lock: Any = True, ctx: Any = None) -> Any:  # noqa: N802 - stdlib name
    """A ctypes object in shared memory, wrapped with a lock unless ``lock=False``.

    ``lock=True`` (or ``None``) makes a new ``RLock`` of ``ctx``; a lock object is used as is;
    ``False`` returns the raw ctypes object (``RawValue``).
    """
    return _std.Value(typecode_or_type, *args, lock=lock, ctx=_default_ctx(ctx))


def Array(typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True, ctx: Any = None) -> Any:  # noqa: N802
    """A ctypes array in shared memory, wrapped with a lock unless ``lock=False`` (see :func:`Value`)."""
    return _std.Array(typecode_or_type, size_or_initializer, lock=lock, ctx=_default_ctx(ctx))


def synchronized(obj: Any, lock: Any = None, ctx: Any = None) -> Any:
    """Wrap a ctypes object with ``lock`` (a new ``RLock`` of ``ctx`` if ``None``)."""
    return _std.synchronized(obj, lock, ctx=_default_ctx(ctx))
