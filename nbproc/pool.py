"""``nbproc.pool``: ``Pool`` and ``ThreadPool`` with the stdlib's API, for notebook-defined code.

``Pool(processes, initializer, initargs, maxtasksperchild, context)`` behaves as CPython's
``multiprocessing.pool.Pool`` (ordering, chunking, callbacks on the result thread, exceptions
re-raised with the worker's traceback as ``__cause__``, ``TimeoutError`` leaving the job
running). What differs is what makes it work from a notebook, and never hang:

- Functions, lambdas, closures and classes defined in a cell (or in a script's ``__main__``)
  work as the task function, initializer, arguments and results under fork, spawn and
  forkserver: everything crosses through :mod:`nbproc.serialization`. The task function is
  serialized once per call and reaches each worker once, not once per task.
- Arguments are serialized in the caller's thread: an argument that cannot be serialized
  raises the serializer's precise error from ``map()`` / ``get()``; a result that cannot be
  sent back raises :class:`MaybeEncodingError` (also a ``SerializationError``) in the parent.
- A worker that dies mid-task fails exactly the task it was running with
  :class:`WorkerLostError` (pid and exit code in the message) at once; the pool replaces it.
- KeyboardInterrupt while waiting in ``map``/``get``/``next`` cancels that job's outstanding
  work (its workers are terminated and replaced) and propagates; workers exit when their
  parent dies; the initializer failing makes calls fail with :class:`InitializerError`.
- ``imap``/``imap_unordered`` take ``buffersize=n`` (keyword-only): at most ``n`` tasks in
  flight, so huge or infinite iterables are read lazily.
- Progress events (:mod:`nbproc.progress`): ``pool.add_listener(fn)``; free when unused.
  Every ``map``/``imap``/``starmap``/``apply_async`` variant takes ``progress=`` (keyword-only:
  ``True``, ``False``, a label or a listener; default from :mod:`nbproc.config`, off in a
  script) and draws a bar — a widget in a notebook, text on stderr elsewhere.
- ``pool.statistics()`` is a frozen snapshot of workers and task counts; in a notebook a pool
  displays itself as a table of them (``_repr_html_``).
- ``task_timeout=seconds`` (keyword-only, on ``Pool(...)`` as the default of its calls and on
  each submitting method): a task running longer has its worker killed and replaced, and fails
  with :class:`TaskTimeoutError` (a :class:`TimeoutError`); the call's other tasks complete.
  ``get(timeout)`` keeps the stdlib meaning: it stops *waiting*, never the task.
- ``result.cancel()`` / ``result.cancelled()`` and ``imap_iterator.close()``: drop a job's
  queued tasks and stop its running ones (their workers are replaced).

Fresh code after a cell re-runs: the task function is serialized at each call, so a pool made
before ``f`` (or a class ``f`` uses) was re-defined runs the new definition under every start
method — the stdlib's fork pool runs the definition its workers inherited when they forked,
and its spawn/forkserver pools cannot run cell code at all. Each new version reaches each
worker once.

Threads of a process Pool: the caller's (serializes tasks), one ``imap`` feeder thread per
``imap`` call over an unsized iterable (or with ``buffersize``), and the pool thread that
sends tasks, receives results, runs callbacks and watches workers — see
:mod:`nbproc._pool_workers` for the data flow. ``ThreadPool`` runs the same API on threads
(:mod:`nbproc._pool_threads`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import context as _std_context
from multiprocessing import util
from typing import Any

from . import serialization
from ._pool_engine import APPLY, CLOSE, MAP, RUN, STARMAP, TERMINATE, PoolEngine
from ._pool_results import (
    ApplyResult,
    AsyncResult,
    IMapIterator,
    IMapUnorderedIterator,
    InitializerError,
    MapResult,
    MaybeEncodingError,
    RemoteTraceback,
    Room,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerLostError,
)
from ._pool_workers import ProcessCore
from ._progress_display import listener_for
from .context import TimeoutError
from .progress import Listener, PoolStatistics
from .serialization import SerializationError

__all__ = [
    "Pool",
    "ThreadPool",
    "ApplyResult",
    "AsyncResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "WorkerLostError",
    "InitializerError",
    "TaskCancelledError",
    "TaskTimeoutError",
    "MaybeEncodingError",
    "RemoteTraceback",
    "TimeoutError",
    "RUN",
    "CLOSE",
    "TERMINATE",
]

# Tasks are handed to the pool thread in batches while the caller serializes the rest, so
# workers start on a long map at once; larger batches cost fewer wake-ups, smaller ones start
# sooner. 64 tiny tasks serialize in well under a millisecond. Batches start at one task and
# double up to this, so the first task starts at once (6 extra wake-ups per long map).
SUBMIT_BATCH = 64
# An input whose next item took this long is slow (a generator reading files, a queue): what is
# gathered is handed over at once, as the stdlib's task feeder does for every item, instead of
# waiting for more items that may take as long each.
SLOW_INPUT = 0.001  # seconds

_pool_counter = itertools.count(1)


class _PoolDefault:
    """The default of a call's ``task_timeout``: the pool's own (``None`` means no limit)."""

    def __repr__(self) -> str:
        return "<pool default>"


POOL_DEFAULT: Any = _PoolDefault()


def _check_task_timeout(task_timeout: Any) -> float | None:
    if task_timeout is None:
        return None
    if isinstance(task_timeout, bool) or not isinstance(task_timeout, (int, float)):
        raise TypeError(f"task_timeout must be a number of seconds or None, not {type(task_timeout).__name__}")
    if not task_timeout > 0:
        raise ValueError(f"task_timeout must be > 0, not {task_timeout!r}")
    return float(task_timeout)


def _cpu_count() -> int:
    counter = getattr(os, "process_cpu_count", None) or os.cpu_count  # 3.13 respects CPU affinity
    return counter() or 1


def _check_pool_arguments(processes: int, initializer: Any, maxtasksperchild: Any) -> None:
    """Reject what the reference rejects, with the stdlib's exception types and messages."""
    if processes < 1:
        raise ValueError("Number of processes must be at least 1")
    valid_maxtasks = maxtasksperchild is None or (isinstance(maxtasksperchild, int) and maxtasksperchild > 0)
    if not valid_maxtasks:
        raise ValueError("maxtasksperchild must be a positive int or None")
    if not (initializer is None or callable(initializer)):
        raise TypeError("initializer must be a callable")


def _func_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


def _chunked(iterable: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    it = iter(iterable)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _nbproc_context(context: Any) -> Any:
    """The context a Pool starts its workers with.

    ``None``: nbproc's default; an nbproc context: itself; a stdlib context: nbproc's of the same
    start method (so the workers deserialize with nbproc). Anything else is used as given, as the
    stdlib's Pool does: a duck-typed context (CPython's suite passes a mock) needs ``Process``,
    whose objects behave as ``multiprocessing.Process`` ones, and ``get_start_method()``.
    """
    from . import context as _context

    if context is None:
        return _context._default_context.get_context()
    if isinstance(context, _context.BaseContext):
        return context.get_context()
    if isinstance(context, _std_context.BaseContext):
        return _context._default_context.get_context(context.get_start_method())
    return context


def _precise_error(exc: SerializationError, kind: int, args: Any, first_item: int, method: str) -> BaseException:
    """Re-explain an argument that failed to serialize, naming its position in the call."""
    if kind == APPLY:
        positional, keywords = args
        candidates = [(f"argument {i + 1} of Pool.{method}()", a) for i, a in enumerate(positional)]
        candidates += [(f"keyword argument `{k}` of Pool.{method}()", v) for k, v in keywords.items()]
    else:
        candidates = [
            (f"item {first_item + k} of the iterable passed to Pool.{method}()", a) for k, a in enumerate(args)
        ]
    for what, obj in candidates:
        try:
            serialization.dumps(obj, what=what)
        except SerializationError as precise:
            return precise
    return exc


def _submit_chunks(
    core: Any,
    result_ref: Callable[[], Any],
    func: Any,
    kind: int,
    chunks: Iterable[Any],
    snapshot: bool,
    method: str,
    chunksize: int,
    room: Room | None = None,
    timeout: float | None = None,
) -> tuple[int, int]:
    """Serialize ``func`` once and each chunk, hand them to ``core``; return (tasks, items) read.

    Runs in the caller's thread (or an ``imap`` feeder's, which holds its iterator only
    through the weak ``result_ref`` so that an abandoned iterator stops it). Serialization
    errors become the failed outcome of their task; an exception raised by the input
    iterable itself becomes the outcome of the next position, and ends the input (as in the
    stdlib). With ``room`` (``buffersize``), each task first waits for a free place.
    """
    result = result_ref()
    try:
        entry = core.prepare_function(func, what=f"function passed to Pool.{method}()")
    except SerializationError as exc:
        result._fail_job(exc)
        return 0, 0
    sink = result._sink()  # what the engine holds of the job (tasks hold it, and so the result)
    batch: list[Any] = []
    limit = 1  # doubles up to SUBMIT_BATCH (stays 1 with ``room``: each task waits for a place)
    clock = time.perf_counter
    index = items = batch_items = 0
    iterator = iter(chunks)
    while True:
        if room is not None:
            del result, sink
            if not room.wait():
                break
            result = result_ref()
            sink = None if result is None else result._sink()
        elif index % SUBMIT_BATCH == 0:
            result = result_ref()
        if result is None or getattr(result, "_aborted", None) is not None:
            break  # the iterator was dropped, or its job cancelled or the pool terminated
        asked = clock()
        try:
            chunk = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - the caller's iterable failed: reported at its position
            sink.done(index, False, exc, 0)
            index += 1
            break
        slow = clock() - asked > SLOW_INPUT  # the input's own time, not the serialization below
        args, nitems = chunk
        try:
            if timeout is None:
                batch.append(core.make_task(sink, index, entry, kind, args, nitems, snapshot))
            else:  # (no local name for the task: it holds the result, which must stay collectable)
                timed = {"timeout": timeout, "first_item": index * chunksize}
                batch.append(core.make_task(sink, index, entry, kind, args, nitems, snapshot, **timed))
        except SerializationError as exc:
            sink.done(index, False, _precise_error(exc, kind, args, index * chunksize, method), nitems)
        else:
            batch_items += nitems
        index += 1
        items += nitems
        if batch and (len(batch) >= limit or slow):
            result._note_submitted(batch_items)  # before the tasks can complete, so events stay in order
            core.submit(batch)
            batch, batch_items = [], 0
            if room is None:
                limit = 1 if slow else min(limit * 2, SUBMIT_BATCH)
    if batch and result is not None:
        result._note_submitted(batch_items)
        core.submit(batch)
    return index, items


@contextlib.contextmanager
def _cancelled_on_interrupt(result: Any) -> Iterator[None]:
    """A KeyboardInterrupt while a call is still submitting cancels what it already submitted.

    Workers start tasks as soon as they are handed over, so an interrupt that lands between the
    hand-over and the caller's wait (more likely on a loaded machine) would otherwise leave
    them running with nobody waiting (``get()`` cancels only from inside its own wait).
    """
    try:
        yield
    except KeyboardInterrupt:
        result._interrupted()
        raise


def _feed_imap(
    core: Any,
    result_ref: Callable[[], Any],
    room: Room | None,
    func: Any,
    iterable: Any,
    chunksize: int,
    method: str,
    timeout: float | None = None,
) -> None:
    """Body of an ``imap`` feeder: read the input, submit tasks, then record the length."""
    try:
        chunks = ((c, len(c)) for c in _chunked(iterable, chunksize))
        length, items = _submit_chunks(core, result_ref, func, MAP, chunks, True, method, chunksize, room, timeout)
        result = result_ref()
        if result is not None:
            result._set_length(length, items)
    finally:
        core.feeder_done()


def _watch(result: Any, progress: Any, label: str) -> None:
    """Attach the listener ``progress=`` asks for to this call's result (before any event)."""
    listener = listener_for(progress, label)
    if listener is not None:
        result._own.append(listener)


class Pool:
    """A pool of worker processes (see the module docstring for what nbproc adds).

    ``processes`` defaults to the number of CPUs; ``initializer(*initargs)`` runs in each
    worker as it starts; with ``maxtasksperchild`` a worker is replaced after that many
    tasks; ``context`` chooses the start method (a stdlib context is mapped to nbproc's).
    ``task_timeout`` (keyword-only, seconds) is the default limit of every task of the pool;
    each call can set its own.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        task_timeout: float | None = None,
    ) -> None:
        self._core: Any = None
        self._task_timeout = _check_task_timeout(task_timeout)
        self._processes = processes = _cpu_count() if processes is None else processes
        _check_pool_arguments(processes, initializer, maxtasksperchild)
        self._name = f"{type(self).__name__}-{next(_pool_counter)}"
        self._core = self._make_core(processes, initializer, tuple(initargs), maxtasksperchild, context)
        self._finalizer = util.Finalize(self, self._core.terminate, exitpriority=15)

    def _make_core(
        self, processes: int, initializer: Any, initargs: tuple, maxtasks: int | None, context: Any
    ) -> PoolEngine:
        self._ctx = _nbproc_context(context)
        return ProcessCore(processes, initializer, initargs, maxtasks, self._ctx, self._name)

    # -- stdlib-compatible introspection -------------------------------------------------------
    @property
    def _state(self) -> str:
        return self._core.state if self._core is not None else TERMINATE

    @_state.setter
    def _state(self, value: str) -> None:  # CPython's tests force it (e.g. to check the ResourceWarning)
        self._core.state = value

    def _repopulate_pool(self) -> None:
        """The stdlib's hook to start missing workers; nbproc's pool thread replaces each worker
        as soon as it exits, so there is nothing to do (kept for code that calls it)."""

    @property
    def _pool(self) -> list[Any]:
        """The live worker processes (the stdlib's attribute of the same name)."""
        return self._core.worker_processes()

    @property
    def _cache(self) -> dict[int, Any]:
        """Outstanding jobs by id (the stdlib's attribute of the same name)."""
        return self._core.jobs

    def __repr__(self) -> str:
        cls = type(self)
        return f"<{cls.__module__}.{cls.__qualname__} state={self._state} pool_size={self._processes}>"

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_core", None) is not None and self._core.state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _timeout_for(self, task_timeout: Any) -> float | None:
        """A call's task_timeout: its own, else the pool's."""
        return self._task_timeout if task_timeout is POOL_DEFAULT else _check_task_timeout(task_timeout)

    # -- progress ------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for this pool's progress events (see :mod:`nbproc.progress`)."""
        self._core.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        try:
            self._core.listeners.remove(listener)
        except ValueError:
            pass

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the workers (pid, state, tasks done) and of the task counts.

        Cheap (no message to any worker), so a view may poll it; counts are in tasks (calls or
        chunks), not items.
        """
        return self._core.statistics()

    def _repr_html_(self) -> str:
        from ._pool_view import stats_html

        return stats_html(self.statistics())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from ._pool_view import stats_text

        printer.text(repr(self) if cycle else stats_text(self.statistics()))

    # -- submitting work -----------------------------------------------------------------------
    def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        *,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> Any:
        """Call ``func(*args, **kwds)`` in a worker and return its result.

        Blocks until it is done, or until ``task_timeout`` stops it (:class:`TaskTimeoutError`);
        a KeyboardInterrupt while waiting cancels the call (its worker is replaced) and propagates.
        """
        return self._apply_async(func, args, kwds, None, None, "apply", False, task_timeout=task_timeout).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> ApplyResult:
        """Call ``func(*args, **kwds)`` in a worker; returns an :class:`AsyncResult` at once.

        ``progress``: as for :meth:`map`; pass one
        :class:`nbproc.progress.Batch` to many calls for one bar over all of them.
        ``task_timeout``: see the module docstring; ``result.cancel()`` stops the call.
        """
        return self._apply_async(
            func,
            args,
            kwds,
            callback,
            error_callback,
            "apply_async",
            snapshot=True,
            progress=progress,
            task_timeout=task_timeout,
        )

    def _apply_async(
        self,
        func: Any,
        args: Iterable[Any],
        kwds: Any,
        callback: Any,
        error_callback: Any,
        method: str,
        snapshot: bool,
        progress: Any = False,
        task_timeout: Any = POOL_DEFAULT,
    ) -> ApplyResult:
        self._check_running()
        timeout = self._timeout_for(task_timeout)
        label = f"{method}({_func_name(func)})"
        result = ApplyResult(self._core, callback, error_callback, label=label)
        _watch(result, progress, label)
        call = ((tuple(args), dict(kwds or {})), 1)
        with _cancelled_on_interrupt(result):
            _submit_chunks(self._core, lambda: result, func, APPLY, [call], snapshot, method, 1, None, timeout)
        return result

    def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> list[Any]:
        """``list(map(func, iterable))`` computed by the workers, in chunks.

        ``progress`` (keyword-only): ``True`` (a bar), ``False`` (none), a label (a bar with
        that title), a callable (receives every :class:`~nbproc.progress.ProgressEvent` of
        this call) or left out (:data:`nbproc.config.progress` decides: off in a script). The
        bar is a widget in a notebook kernel, a text line on stderr elsewhere, and counts
        items, whatever the chunksize.

        Blocks without a time limit until every chunk is back (on error, raises the first
        error once all chunks are done); a KeyboardInterrupt while waiting cancels the
        outstanding chunks (workers running them are terminated and replaced) and propagates.
        """
        return self._map_async(func, iterable, MAP, chunksize, None, None, "map", False, progress, task_timeout).get()

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> MapResult:
        """Like :meth:`map`, returning a :class:`MapResult` at once."""
        return self._map_async(
            func, iterable, MAP, chunksize, callback, error_callback, "map_async", True, progress, task_timeout
        )

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> list[Any]:
        """Like :meth:`map`, each item unpacked as the arguments: ``func(*item)``; blocks as :meth:`map`."""
        return self._map_async(
            func, iterable, STARMAP, chunksize, None, None, "starmap", False, progress, task_timeout
        ).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        *,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> MapResult:
        """Like :meth:`starmap`, returning a :class:`MapResult` at once."""
        return self._map_async(
            func,
            iterable,
            STARMAP,
            chunksize,
            callback,
            error_callback,
            "starmap_async",
            True,
            progress,
            task_timeout,
        )

    def _map_async(
        self,
        func: Any,
        iterable: Iterable[Any],
        kind: int,
        chunksize: int | None,
        callback: Any,
        error_callback: Any,
        method: str,
        snapshot: bool,
        progress: Any = False,
        task_timeout: Any = POOL_DEFAULT,
    ) -> MapResult:
        self._check_running()
        timeout = self._timeout_for(task_timeout)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        length = len(iterable)  # type: ignore[arg-type]
        if chunksize is None:
            chunksize, extra = divmod(length, self._processes * 4)
            if extra:
                chunksize += 1
        elif chunksize < 1 and length:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if length == 0:
            chunksize = 0
        label = f"{method}({_func_name(func)})"
        result = MapResult(self._core, chunksize, length, callback, error_callback, label=label)
        _watch(result, progress, label)
        if chunksize:
            chunks = ((c, len(c)) for c in _chunked(iterable, chunksize))
            with _cancelled_on_interrupt(result):
                _submit_chunks(
                    self._core, lambda: result, func, kind, chunks, snapshot, method, chunksize, None, timeout
                )
        return result

    def imap(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        buffersize: int | None = None,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> IMapIterator:
        """A lazier :meth:`map`: an iterator over the results, in order.

        ``buffersize`` (nbproc addition): at most that many tasks (chunks) submitted and not
        yet consumed; the iterable is read as results are consumed. Without it, the iterable
        is read eagerly in the background, as the stdlib does. ``progress``: as for :meth:`map`;
        over an iterable of unknown length the bar shows a count (no ETA) until the input ends,
        and an iterator dropped before its input was read to the end marks its bar "stopped".
        ``close()`` on the iterator stops the rest of the work.
        """
        return self._imap(IMapIterator, func, iterable, chunksize, buffersize, "imap", progress, task_timeout)

    def imap_unordered(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int = 1,
        *,
        buffersize: int | None = None,
        progress: Any = None,
        task_timeout: float | None = POOL_DEFAULT,
    ) -> IMapIterator:
        """Like :meth:`imap`, yielding results in the order they complete."""
        return self._imap(
            IMapUnorderedIterator, func, iterable, chunksize, buffersize, "imap_unordered", progress, task_timeout
        )

    def _imap(
        self,
        cls: type[IMapIterator],
        func: Any,
        iterable: Any,
        chunksize: int,
        buffersize: int | None,
        method: str,
        progress: Any = False,
        task_timeout: Any = POOL_DEFAULT,
    ) -> IMapIterator:
        self._check_running()
        timeout = self._timeout_for(task_timeout)
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        label = f"{method}({_func_name(func)})"
        result = cls(self._core, label=label, buffersize=buffersize)
        _watch(result, progress, label)
        core = self._core
        core.feeder_started()
        if buffersize is None and hasattr(iterable, "__len__"):
            # Sized input: serialize here (errors still surface per position, at next()).
            _feed_imap(core, lambda: result, None, func, iterable, chunksize, method, timeout)
        else:
            feeder = threading.Thread(
                target=_feed_imap,
                args=(core, weakref.ref(result), result._room, func, iterable, chunksize, method, timeout),
                name=f"nbproc-{self._name}-feeder",
                daemon=True,
            )
            feeder.start()
        return result

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; workers exit once every submitted task has completed."""
        self._core.close()

    def terminate(self) -> None:
        """Stop the workers now; outstanding results raise :class:`TaskCancelledError`."""
        self._core.terminate()

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first.

        Blocks without a time limit (until the outstanding work is done, after ``close``). A
        KeyboardInterrupt while waiting terminates the pool, then propagates.
        """
        state = self._state
        if state == RUN:
            raise ValueError("Pool is still running")
        if state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        try:
            self._core.join()
        except KeyboardInterrupt:
            self.terminate()
            raise


class ThreadPool(Pool):
    """The Pool API on threads of this process (nothing is serialized), like the stdlib's."""

    def __init__(
        self, processes: int | None = None, initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        super().__init__(processes, initializer, initargs)

    def _make_core(
        self, processes: int, initializer: Any, initargs: tuple, maxtasks: int | None, context: Any
    ) -> PoolEngine:
        from ._pool_threads import ThreadCore

        return ThreadCore(processes, initializer, initargs, self._name)

    def _timeout_for(self, task_timeout: Any) -> float | None:
        """Threads cannot be stopped: a ThreadPool refuses a task_timeout rather than ignore it."""
        if task_timeout is not POOL_DEFAULT and task_timeout is not None:
            raise ValueError("ThreadPool cannot stop a running thread: task_timeout needs a process Pool")
        return None
