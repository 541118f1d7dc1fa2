"""Every exception nbproc raises, in one leaf module that imports nothing of nbproc.

Why one module: errors used to be defined next to whichever layer first raised them (five
modules), so a layer that wanted to raise or catch another's error had to import that layer,
and import cycles decided where a class could live. Here every layer — and user code —
imports the same classes, and a class has one name that pickles by reference.

The stdlib's classes are re-exported, not subclassed, where nbproc raises exactly what the
stdlib raises (``ProcessError``, ``BufferTooShort``, ``TimeoutError``, ``AuthenticationError``):
``except multiprocessing.TimeoutError`` must catch nbproc's. nbproc's own classes subclass the
stdlib's where they refine one, so code written against ``multiprocessing`` still catches them.
The old homes (``nbproc.pool``, ``nbproc.serialization``, ``nbproc.connection``...) re-export
these names.
"""

from __future__ import annotations

import builtins
import pickle
from multiprocessing.context import AuthenticationError, BufferTooShort, ProcessError, TimeoutError

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ProcessError",
    "BufferTooShort",
    "TimeoutError",
    "AuthenticationError",
    "SerializationError",
    "WorkerLostError",
    "InitializerError",
    "TaskCancelledError",
    "TaskTimeoutError",
    "MaybeEncodingError",  # noqa: F822 - made on first use (module __getattr__)
    "HandshakeTimeoutError",
    "HandshakeEOFError",
    "HandshakeMessageError",
    "TruncatedFrameError",
]


# -- serialization ---------------------------------------------------------------------------


class SerializationError(pickle.PicklingError, TypeError):
    """An object could not be serialized; the message says which one and where it sat.

    Subclasses both :class:`pickle.PicklingError` and :class:`TypeError` because the stdlib
    raises either, depending on the object (``TypeError: cannot pickle '_thread.lock'
    object``), and code written against ``multiprocessing`` catches either.
    (:mod:`nbproc.serialization` derives per-cause subclasses of it at run time.)
    """


# -- pools -----------------------------------------------------------------------------------


class WorkerLostError(ProcessError):
    """A pool worker process ended without delivering the result of the task it was running.

    Raised (from ``get()``, ``map()``, ``next()``...) for exactly the task the worker held —
    one ``apply`` call or one chunk of a map. ``pid`` and ``exitcode`` name the worker; a
    negative exit code is the signal that killed it (``-9``: SIGKILL, ``-11``: a segfault).
    The pool has already started a replacement and stays usable.
    """

    def __init__(self, message: str, pid: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.pid, self.exitcode))


class InitializerError(WorkerLostError):
    """The pool's ``initializer`` raised in a worker; the pool cannot run tasks.

    The stdlib keeps restarting such workers and every call waits forever. nbproc stops:
    every outstanding and future task of the pool fails with this error, whose ``__cause__``
    is the initializer's exception (with the worker's traceback attached).
    """


class TaskCancelledError(ProcessError):
    """The task was abandoned before it completed: its pool was terminated, or its job was
    cancelled (``result.cancel()``, closing an ``imap`` iterator, or a KeyboardInterrupt while
    the caller waited for it)."""


class TaskTimeoutError(TimeoutError):
    """A task ran longer than its ``task_timeout``: its worker was killed and replaced.

    Raised for that task only — the ``apply_async`` call, or the chunk of a map holding the
    late item (a chunk fails as a whole, as it does for any error raised in it). ``index`` is
    the late item's position in the call's input (0 for ``apply``), ``timeout`` the limit in
    seconds. A subclass of :class:`nbproc.TimeoutError`, which ``get(timeout)`` raises when it
    only stops *waiting*: catch ``TaskTimeoutError`` to tell a task that was stopped.
    """

    def __init__(self, message: str, index: int = 0, timeout: float | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.timeout = timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.index, self.timeout))


def _make_maybe_encoding_error() -> type:
    from multiprocessing.pool import MaybeEncodingError as _StdMaybeEncodingError

    class MaybeEncodingError(_StdMaybeEncodingError, SerializationError):
        """A worker's result (or exception) could not be serialized to be sent back.

        Same class contract as the stdlib's ``multiprocessing.pool.MaybeEncodingError`` (and a
        subclass of it); also an nbproc :class:`SerializationError` whose reason names the culprit,
        e.g. ``result of map(f): item 0: cannot pickle '_thread.lock' object``.
        """

        def __reduce__(self) -> tuple[Any, ...]:
            return (_rebuild_encoding_error, (self.exc, self.value))

    MaybeEncodingError.__module__ = __name__
    MaybeEncodingError.__qualname__ = "MaybeEncodingError"
    return MaybeEncodingError


def __getattr__(name: str) -> Any:
    """``MaybeEncodingError`` is made on first use: it subclasses the stdlib's, whose module
    (``multiprocessing.pool``, with ``multiprocessing.connection``, ``tempfile``, ``queue``...)
    would otherwise cost ``import nbproc`` ~6 ms in every process. Made once, then a plain
    module attribute (so it pickles by reference like any class)."""
    if name == "MaybeEncodingError":
        cls = globals()["MaybeEncodingError"] = _make_maybe_encoding_error()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rebuild_encoding_error(exc_repr: str, value_repr: str) -> Any:
    # The stdlib's __init__ formats the reprs again; rebuild the fields as they were sent.
    cls = globals().get("MaybeEncodingError") or __getattr__("MaybeEncodingError")
    err = cls.__new__(cls)
    err.exc, err.value = exc_repr, value_repr
    err.args = (exc_repr, value_repr)
    return err


# -- connection handshake --------------------------------------------------------------------


class HandshakeTimeoutError(AuthenticationError, builtins.TimeoutError):
    """The peer did not complete the challenge/response exchange before the deadline.

    An :class:`AuthenticationError` (what an accept loop catches for a failed client) that is
    also the built-in :class:`TimeoutError` (not ``multiprocessing.TimeoutError``, which is
    about results).
    """


class HandshakeEOFError(AuthenticationError, EOFError):
    """The peer closed the connection before the handshake finished.

    Also an :class:`EOFError`, which is what the stdlib raises in this case.
    """


class HandshakeMessageError(AuthenticationError, OSError):
    """The peer sent a malformed handshake frame: longer than allowed, a negative length, or cut off.

    Also an :class:`OSError`, which is what the stdlib raises in this case ("bad message length").
    """


# -- connection framing ----------------------------------------------------------------------


class TruncatedFrameError(EOFError, OSError):
    """The stream ended in the middle of a frame (the writer died or closed mid-message).

    An :class:`EOFError` (the peer is gone) and an :class:`OSError`, which is what the stdlib
    raises here ("got end of file during message").
    """
