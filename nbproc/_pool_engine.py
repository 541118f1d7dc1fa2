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
- :class:`PoolEngine`, the typed protocol an engine fulfils;
- :class:`JobSink`, all an engine holds of a job: the public methods through which it reports
  the job's tasks (:class:`ResultSink` is the one the Pool's result objects hand out), and
  :class:`JobRegistry`, an engine's outstanding jobs (``Pool._cache``), which ``terminate``
  aborts. Engines never touch a result object itself: the user-facing ``AsyncResult``,
  ``MapResult`` and ``IMapIterator`` keep exactly the stdlib's public API, and what an engine
  needs of them is handed over as a sink, built by the result from its own private methods.
"""

from __future__ import annotations

import itertools
import reprlib
import weakref
from collections.abc import Callable, Iterator, Mapping

from . import serialization

# typing is not imported at run time: every pool worker imports this module, and typing costs
# it ~2.5 ms of start-up. The two protocols below are protocols for type checkers; at run time
# they are plain classes that document the contract (nothing checks isinstance against them).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .progress import PoolStatistics
    from .remote_error import RemoteErrorCarrier
else:
    Protocol = object

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
    "JobSink",
    "ResultSink",
    "JobRegistry",
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


class JobSink(Protocol):
    """All an engine holds of a job: where it reports the outcomes of the job's tasks.

    The engine calls these from a thread of its own (a pool thread, a worker thread, a Dask
    collector); callbacks and waiters run or wake inside them. ``job`` and ``label`` are for
    bookkeeping and error messages.
    """

    job: int
    label: str

    def done(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        """Task ``index`` (``nitems`` items) finished; ``value`` is its exception if not ``ok``."""

    def partly_done(self, index: int, finished: list[tuple[bool, Any]], error: BaseException, nitems: int) -> None:
        """Chunk ``index`` (``nitems`` items) ended with ``error`` after its first items finished
        with the outcomes ``finished``; the rest of the chunk fails with ``error`` (a task timeout)."""

    def abort(self, exc: BaseException) -> None:
        """The job ends now with ``exc`` (pool terminated, job cancelled); later outcomes are dropped."""


class ResultSink:
    """A :class:`JobSink` made of callables: how a result object hands its reporting methods to
    an engine without giving the engine (or its users) a public method on the result.

    The callables are the result's own bound methods, stored as they are, so that reporting a
    task costs one call, as calling the result directly did. The sink holds the result (a
    task in flight keeps its job alive, callbacks included) but the result does not hold its
    sink: no reference cycle, so a dropped ``imap`` iterator is freed as soon as its last
    task is back.
    """

    __slots__ = ("job", "label", "done", "partly_done", "abort")

    def __init__(
        self,
        job: int,
        label: str,
        done: Callable[[int, bool, Any, int], None],
        partly_done: Callable[[int, list[tuple[bool, Any]], BaseException, int], None],
        abort: Callable[[BaseException], None],
    ) -> None:
        self.job = job
        self.label = label
        self.done = done
        self.partly_done = partly_done
        self.abort = abort

    def __repr__(self) -> str:
        return f"<ResultSink job={self.job} {self.label}>"


class JobRegistry(Mapping[int, "Any"]):  # a string: typing (Any) is not loaded at run time
    """An engine's outstanding jobs by id — ``Pool._cache`` — and who must hear of a terminate.

    Each entry is the abort method of the job's owner (its result object, opaque here), held
    through a :class:`weakref.WeakMethod`: an ``imap`` iterator its caller dropped goes away
    (and its feeder stops) although it never finished, and its entry with it. Reading the
    mapping gives the owners, as the stdlib's ``_cache`` gives its result objects.
    Thread-safety: single dict operations under the GIL; iteration works on a snapshot.
    """

    def __init__(self) -> None:
        self._aborts: dict[int, weakref.WeakMethod] = {}

    def add(self, job: int, abort: Callable[[BaseException], Any]) -> None:
        """Register ``job``; ``abort`` is a bound method of the object that owns it."""
        aborts = self._aborts
        self._aborts[job] = weakref.WeakMethod(abort, lambda _ref: aborts.pop(job, None))

    def discard(self, job: int) -> None:
        """``job`` finished (or never started): forget it."""
        self._aborts.pop(job, None)

    def abort_all(self, error: Callable[[], BaseException]) -> None:
        """End every registered job with a fresh ``error()`` each and forget them (``terminate``);
        one exception object per job, since each is raised (and given a traceback) separately."""
        aborts = list(self._aborts.values())
        self._aborts.clear()
        for ref in aborts:
            abort = ref()
            if abort is not None:
                abort(error())

    def __getitem__(self, job: int) -> Any:
        abort = self._aborts[job]()
        if abort is None:
            raise KeyError(job)
        return abort.__self__

    def __iter__(self) -> Iterator[int]:
        return iter([job for job, ref in list(self._aborts.items()) if ref() is not None])

    def __len__(self) -> int:
        return sum(1 for ref in list(self._aborts.values()) if ref() is not None)


class PoolEngine(Protocol):
    """What :class:`nbproc.pool.Pool` needs from an engine.

    Threads: ``prepare_function``/``make_task``/``submit`` run on the caller's thread or an
    ``imap`` feeder's; the engine reports outcomes through the task's :class:`JobSink` from a
    thread of its own, and ends the jobs in ``jobs`` on ``terminate``.
    ``prepare_function`` and ``make_task`` may raise :class:`SerializationError`, which the
    facade reports at the failing position.
    """

    name: str
    processes: int
    state: str
    jobs: JobRegistry
    listeners: list[Any]

    def prepare_function(self, func: Any, what: str) -> Any: ...

    def make_task(
        self, sink: JobSink, index: int, func: Any, kind: int, args: Any, nitems: int, snapshot: bool, **options: Any
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
