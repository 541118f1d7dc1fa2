"""The contract between the Pool facade and the engines that run its tasks.

:class:`nbproc.pool.Pool` owns the public API (argument checks, chunking, the result objects);
an *engine* owns where tasks run — worker processes (:mod:`nbproc._pool_workers`), threads
(:mod:`nbproc._pool_threads`) or a Dask cluster (:mod:`nbproc._dask_core`). This module is the
one home of what they share, so that no engine imports another:

- the task kinds (how a function is applied to a task's arguments) and the pool states;
- :func:`run_task`, the one place a task is executed, wherever that is;
- :class:`Failure`, an exception as it travels back with its traceback's carrier;
- :func:`dump_outcome`, a task's outcome as bytes, never failing (an unpicklable result
  becomes :class:`MaybeEncodingError`, as the stdlib's);
- :class:`PoolEngine`, the typed protocol an engine fulfils, and :class:`TaskResult`, what an
  engine may call on a result object (nothing else of it).
"""

from __future__ import annotations

import itertools
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import serialization

if TYPE_CHECKING:
    from .progress import PoolStatistics
    from .remote_error import RemoteErrorCarrier

__all__ = [
    "APPLY",
    "MAP",
    "STARMAP",
    "RUN",
    "CLOSE",
    "TERMINATE",
    "Failure",
    "run_task",
    "dump_outcome",
    "PoolEngine",
    "TaskResult",
]

# Task kinds: how the engine calls the function on the task's arguments.
APPLY, MAP, STARMAP = 0, 1, 2
# Pool states, with the stdlib's spelling (code reads ``pool._state``).
RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"


class Failure:
    """An exception raised in a worker, with its traceback's carrier (pickles are traceback-less)."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException, tb: RemoteErrorCarrier | None) -> None:
        self.exc = exc
        self.tb = tb

    @classmethod
    def capture(cls, exc: BaseException) -> Failure:
        from . import remote_error  # on the first failure only: a worker starts without it

        return cls(exc, remote_error.capture(exc))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failure, (self.exc, self.tb))

    def rebuild(self) -> BaseException:
        """In the receiver: the exception, with the worker's traceback as its ``__cause__``."""
        from . import remote_error

        return remote_error.attach(self.exc, self.tb)


def run_task(
    func: Callable[..., Any],
    kind: int,
    args: Any,
    capture: bool = True,
    started: Callable[[int, list[Any]], Any] | None = None,
) -> tuple[bool, Any]:
    """Run one task (an apply call or a chunk); return ``(True, value)`` or ``(False, error)``.

    ``error`` is a :class:`Failure` when ``capture`` (the outcome leaves the process, and its
    traceback must travel as a carrier), else the exception itself (a thread engine: the
    exception keeps its live traceback). ``started(k, values)``, if given, is called before item
    ``k`` of a chunk (0 for an apply call) with the values of the items before it: a process
    engine's per-item ``task_timeout`` clock, which also keeps what a chunk finished before one of
    its items ran out of time.
    """
    try:
        if kind == APPLY:
            if started is not None:
                started(0, [])
            positional, keywords = args
            return True, func(*positional, **keywords)
        if started is None:
            return True, list(map(func, args) if kind == MAP else itertools.starmap(func, args))
        values = []
        for k, item in enumerate(args):
            started(k, values)
            values.append(func(*item) if kind == STARMAP else func(item))
        return True, values
    except BaseException as exc:  # noqa: BLE001 - the task's outcome, sent to the caller
        return False, (Failure.capture(exc) if capture else exc)


def encoding_error(exc: BaseException, value: Any) -> Failure:
    """The outcome that replaces a result the serializer refused (the stdlib's MaybeEncodingError)."""
    from .exceptions import MaybeEncodingError  # made on first use (it imports multiprocessing.pool)

    original = value.exc if isinstance(value, Failure) else value
    error = MaybeEncodingError.__new__(MaybeEncodingError)
    error.exc, error.value = repr(exc), reprlib.repr(original)
    error.args = (error.exc, error.value)
    return Failure(error, value.tb if isinstance(value, Failure) else None)


def dump_outcome(ok: bool, value: Any, extra: Any = None) -> bytes:
    """``(ok, value, extra)`` as bytes; a value that cannot be serialized becomes a failure."""
    try:
        return serialization.dumps((ok, value, extra), what="pool task result")
    except Exception as exc:  # noqa: BLE001 - whatever the pickler raised, the caller must hear of it
        return serialization.dumps((False, encoding_error(exc, value), extra))


class TaskResult(Protocol):
    """What an engine may call on a job's result object (``ApplyResult``, ``MapResult``, ``IMapIterator``)."""

    _job: int
    _label: str

    def _set(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        """Task ``index`` finished (on the engine's result thread); ``value`` is the exception if not ``ok``."""

    def _set_partial(self, index: int, finished: list[tuple[bool, Any]], error: BaseException, nitems: int) -> None:
        """Chunk ``index`` (``nitems`` items) ended with ``error`` after its first items finished
        with the outcomes ``finished``; the rest of the chunk fails with ``error`` (a task timeout)."""

    def _abort(self, exc: BaseException) -> None:
        """The job ends now with ``exc`` (terminated or cancelled); late results are dropped."""


class PoolEngine(Protocol):
    """What :class:`nbproc.pool.Pool` needs from an engine.

    Threads: ``prepare_function``/``make_task``/``submit`` run on the caller's thread or an
    ``imap`` feeder's; the engine reports outcomes with ``result._set`` from a thread of its own.
    ``prepare_function`` and ``make_task`` may raise :class:`SerializationError`, which the
    facade reports at the failing position.
    """

    name: str
    processes: int
    state: str
    jobs: Any  # job id -> result object (a weak-value mapping)
    listeners: list[Any]

    def prepare_function(self, func: Any, what: str) -> Any: ...

    def make_task(
        self, result: Any, index: int, func: Any, kind: int, args: Any, nitems: int, snapshot: bool, **options: Any
    ) -> Any: ...

    def submit(self, tasks: list[Any]) -> None: ...

    def feeder_started(self) -> None: ...

    def feeder_done(self) -> None: ...

    def cancel(self, job: int) -> None: ...

    def close(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...

    def worker_processes(self) -> list[Any]:
        """The live worker processes (``Pool._pool``); empty where the workers are not ours."""

    def statistics(self) -> PoolStatistics: ...
