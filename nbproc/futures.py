"""``nbproc.futures``: ``concurrent.futures.ProcessPoolExecutor`` on nbproc's Pool engine.

The stdlib's executor pickles calls with the stdlib pickler in its own queues, so even with
``mp_context=nbproc.get_context("spawn")`` a lambda or a function defined in a notebook cell
fails with ``PicklingError``. This executor has the same API (``submit``, ``map`` with
``chunksize`` and ``timeout``, ``shutdown(wait, cancel_futures)``, ``initializer``/``initargs``,
``max_tasks_per_child``) and returns real :class:`concurrent.futures.Future` objects, so
``as_completed``, ``wait`` and asyncio's ``wrap_future`` work with it; calls travel through
:mod:`nbproc.serialization`, so cell functions, lambdas and closures work under every start
method.

Data flow (the engine is :class:`nbproc._pool_workers.ProcessCore`, see its module docstring)::

    caller thread                          pool thread "nbproc-pool-..."          worker i
    -------------                          -----------------------------          --------
    submit(fn, *args, **kwargs)
      Future + _FutureCall (the "job")
      serialize fn (once per worker
      per version) and the arguments ---> pending -- a worker is free: ------->  fn(*args)
                                            on_dispatch: Future.set_running_or_notify_cancel()
                                            (False: cancelled while pending -> dropped)
      future.result() <------------------ _FutureCall.done(): set_result/set_exception <-- Result
                                          worker died: only its task fails (BrokenWorkerError)

Differences from the stdlib, on purpose:

- **A broken worker fails only its task.** When a worker dies mid-task, the stdlib marks the
  whole executor broken and fails every pending future. Here the future of the task that
  worker was running fails with :class:`BrokenWorkerError` — a
  :class:`~concurrent.futures.process.BrokenProcessPool` (so ``except BrokenProcessPool``
  still catches it) and a :class:`nbproc.WorkerLostError` naming pid and exit code — and the
  worker is replaced; other futures complete and the executor stays usable. An initializer
  that fails does break the executor, as in the stdlib (:class:`BrokenInitializerError`).
- Workers start together at the first ``submit``, not one by one as work arrives.
- ``import nbproc.futures as futures`` can stand for ``from concurrent import futures``: the
  module re-exports the rest of the stdlib's API (``Future``, ``wait``, ``as_completed``, the
  constants and errors, ``ThreadPoolExecutor``) unchanged.
- ``progress=`` as the Pool's (``True``, ``False``, a label or a listener; left out, it follows
  :data:`nbproc.config.progress`): a widget in a notebook, text on stderr elsewhere. The whole
  executor is one progress job counting submitted/done/failed calls.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    ThreadPoolExecutor,
    TimeoutError,
    as_completed,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from time import monotonic
from typing import Any

from . import _output
from . import progress as _progress
from ._pool_results import _job_counter
from ._pool_workers import APPLY, STARMAP, ProcessCore
from ._progress_display import listener_for
from .exceptions import InitializerError, SerializationError, WorkerLostError
from .pool import SUBMIT_BATCH, _cpu_count, _func_name, _nbproc_context

__all__ = [
    "ProcessPoolExecutor",
    "BrokenWorkerError",
    "BrokenInitializerError",
    "BrokenProcessPool",
    # the rest of concurrent.futures, unchanged
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

_executor_counter = itertools.count(1)


# These two live here, not in nbproc.exceptions: they subclass the stdlib's BrokenProcessPool,
# and importing concurrent.futures.process there would make every `import nbproc` pay for it.


class BrokenWorkerError(WorkerLostError, BrokenProcessPool):
    """The worker running this call died (``os._exit``, a signal, a segfault); the executor
    replaced it and stays usable. A ``BrokenProcessPool`` for code written for the stdlib."""


class BrokenInitializerError(InitializerError, BrokenProcessPool):
    """The executor's initializer raised in a worker: the executor cannot run calls (as the stdlib)."""


def _as_executor_error(exc: BaseException) -> BaseException:
    """The engine's worker-loss errors, re-classed so that ``except BrokenProcessPool`` sees them."""
    kind = type(exc)
    if kind is InitializerError:
        new: BaseException = BrokenInitializerError(*exc.args)
    elif kind is WorkerLostError:
        new = BrokenWorkerError(*exc.args, pid=exc.pid, exitcode=exc.exitcode)  # type: ignore[attr-defined]
    else:
        return exc
    new.__cause__ = exc.__cause__
    return new


class _ExecutorProgress:
    """The executor as one progress job: calls submitted, done, failed (``finished`` at shutdown)."""

    def __init__(self, listeners: list[Any], label: str, pool: str) -> None:
        self.listeners = listeners
        self.job = next(_job_counter)
        self.label = label
        self.pool = pool
        self.submitted = self.done = self.failed = 0
        self.total: int | None = None
        self._lock = threading.Lock()

    def note(self, kind: str, items: int, finished: bool = False) -> None:
        if not _progress.listening(self.listeners):
            return
        with self._lock:
            if kind == "submitted":
                self.submitted += items
            elif kind == "done":
                self.done += items
            elif kind == "failed":
                self.failed += items
            event = _progress.ProgressEvent(
                kind=kind,
                job=self.job,
                label=self.label,
                items=items,
                total=self.total,
                submitted=self.submitted,
                done=self.done,
                failed=self.failed,
                finished=finished,
                pool=self.pool,
            )
        _progress.deliver(self.listeners, event)


class _FutureCall:
    """What the engine sees as a job (a :class:`nbproc._pool_engine.JobSink`): one ``submit`` or
    one chunk of a ``map``, bridged to its Future. Not user-facing: the user holds the Future."""

    __slots__ = ("job", "label", "future", "_host", "__weakref__")

    def __init__(self, future: Future, label: str, host: ProcessPoolExecutor) -> None:
        self.job = next(_job_counter)
        self.label = label
        self.future = future
        self._host = host
        _output.note_job(self.job)  # in a kernel: the call's worker output goes to the submitting cell

    def done(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        """The outcome arrived (pool thread): complete the Future; a cancelled one stays cancelled."""
        future = self.future
        try:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(_as_executor_error(value))
        except InvalidStateError:
            return
        finally:
            self._host._finished(self.job)
        self._host._progress.note("done" if ok else "failed", nitems)

    def partly_done(self, index: int, finished: list[tuple[bool, Any]], error: BaseException, nitems: int) -> None:
        """A chunk that ran out of time after its first items: one Future, so it fails as a whole."""
        self.done(index, False, error, nitems)

    def abort(self, exc: BaseException) -> None:
        """The engine gave up on the call (its pool was terminated)."""
        self.done(0, False, exc)


def _claim(task: Any) -> bool:
    """on_dispatch hook (pool thread): a call becomes *running* as it is handed to a worker."""
    call: _FutureCall = task.sink
    future = call.future
    if future.running():
        return True  # handed out again after its worker died before starting it
    try:
        if future.set_running_or_notify_cancel():
            return True
    except RuntimeError:  # already finished (e.g. its executor broke meanwhile)
        pass
    call._host._finished(call.job)
    return False


def _run_initializer(initializer: Callable[..., Any], initargs: tuple) -> None:
    """In a worker: run the user's initializer; a failure is logged as the stdlib's executor logs
    it (``concurrent.futures`` logger, CRITICAL, with the traceback), then breaks the executor."""
    try:
        initializer(*initargs)
    except BaseException:
        import logging

        logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
        raise


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor`` for notebook code (see the module docstring).

    ``max_workers`` defaults to the CPU count; ``mp_context`` is an nbproc context (a stdlib
    context is mapped to nbproc's of the same start method; default: nbproc's default start
    method, or spawn with ``max_tasks_per_child`` as in the stdlib, which refuses fork there).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        *,
        max_tasks_per_child: int | None = None,
        progress: Any = None,
    ) -> None:
        if max_workers is None:
            max_workers = _cpu_count()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context is None:
                mp_context = "spawn"  # as the stdlib: its default (fork) cannot replace workers safely
        if isinstance(mp_context, str):
            from . import context as _context

            self._mp_context = _context._default_context.get_context(mp_context)
        else:
            self._mp_context = _nbproc_context(mp_context)
        if max_tasks_per_child is not None and self._mp_context.get_start_method() == "fork":
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' multiprocessing start method; "
                "supply a different mp_context."
            )
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._max_tasks_per_child = max_tasks_per_child
        self._name = f"{type(self).__name__}-{next(_executor_counter)}"
        label = progress if isinstance(progress, str) else self._name
        listener = listener_for(progress, label)  # the Pool's forms and default (nbproc.config)
        self._listeners: list[Any] = [listener] if listener is not None else []
        self._progress = _ExecutorProgress(self._listeners, label, self._name)
        self._lock = threading.Lock()  # guards _core creation and _shutdown_flag
        self._core: ProcessCore | None = None
        self._shutdown_flag = False
        self._outstanding: dict[int, Future] = {}  # job -> future, for shutdown(cancel_futures=True)

    # -- stdlib-compatible introspection ---------------------------------------------------------
    @property
    def _processes(self) -> dict[int, Any]:
        """Live worker processes by pid (the stdlib's attribute of the same name)."""
        core = self._core
        return {p.pid: p for p in core.worker_processes()} if core is not None else {}

    @property
    def _broken(self) -> str | bool:
        """Why the executor cannot run calls (its initializer failed), else False (as the stdlib's)."""
        core = self._core
        if core is None or core.broken is None:
            return False
        return f"the executor's initializer failed, the process pool is not usable anymore: {core.broken!r}"

    @property
    def _executor_manager_thread(self) -> threading.Thread | None:
        """The thread that feeds workers and collects results (the stdlib's attribute of the
        same name): the engine's pool thread; it ends after ``shutdown`` once the work is done."""
        core = self._core
        return core._thread if core is not None else None

    def __reduce__(self) -> Any:
        raise NotImplementedError("executor objects cannot be passed between processes or pickled")

    # -- submitting work ---------------------------------------------------------------------
    def _start(self) -> ProcessCore:
        """The engine, started at the first call (lock held)."""
        broken = self._broken
        if broken:
            raise BrokenProcessPool(broken)
        if self._shutdown_flag:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        core = self._core
        if core is None:
            initializer, initargs = self._initializer, self._initargs
            if initializer is not None:
                initializer, initargs = _run_initializer, (initializer, initargs)
            core = ProcessCore(
                self._max_workers,
                initializer,
                initargs,
                self._max_tasks_per_child,
                self._mp_context,
                self._name,
            )
            core.on_dispatch = _claim
            core.listeners = self._listeners
            self._core = core
            _live_cores.add(core)
            weakref.finalize(self, core.close)  # dropped without shutdown: finish the work, then stop
        return core

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; returns its Future at once.

        An argument (or ``fn``) that cannot be serialized fails the Future with nbproc's
        :class:`SerializationError` (a ``PicklingError``), as the stdlib fails it with its own.
        """
        future: Future = Future()
        call = _FutureCall(future, f"submit({_func_name(fn)})", self)
        with self._lock:
            core = self._start()
            try:
                entry = core.prepare_function(fn, what="function passed to ProcessPoolExecutor.submit()")
                task = core.make_task(call, 0, entry, APPLY, (args, kwargs), 1, True)
            except SerializationError as exc:
                future.set_exception(exc)
                return future
            self._outstanding[call.job] = future
            core.jobs.add(call.job, call.abort)
            core.submit([task])
        self._progress.note("submitted", 1)
        return future

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[Any]:
        """``map(fn, *iterables)`` computed by the workers, ``chunksize`` calls per task.

        The iterables are read and every chunk submitted now; the returned iterator yields
        results in order. ``timeout`` (seconds from this call) bounds the whole iteration:
        ``next()`` raises ``TimeoutError`` once it is reached (the calls go on). A call's
        exception is raised when its result is reached; closing the iterator early cancels
        the chunks not yet running.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else monotonic() + timeout
        items = zip(*iterables, strict=False)  # the shortest iterable ends the map, as map() does
        futures: deque[Future] = deque()
        with self._lock:
            core = self._start()
            label = f"map({_func_name(fn)})"
            try:
                entry = core.prepare_function(fn, what="function passed to ProcessPoolExecutor.map()")
            except SerializationError as exc:
                failed: Future = Future()
                failed.set_exception(exc)
                return _results(deque([failed]), deadline)
            batch: list[Any] = []
            submitted = 0
            while chunk := tuple(itertools.islice(items, chunksize)):
                future: Future = Future()
                call = _FutureCall(future, label, self)
                try:
                    batch.append(core.make_task(call, 0, entry, STARMAP, chunk, len(chunk), True))
                except SerializationError as exc:
                    future.set_exception(exc)
                else:
                    self._outstanding[call.job] = future
                    core.jobs.add(call.job, call.abort)
                    submitted += len(chunk)
                futures.append(future)
                if len(batch) >= SUBMIT_BATCH:
                    core.submit(batch)
                    batch = []
            core.submit(batch)
        if submitted:
            self._progress.note("submitted", submitted)
        return _results(futures, deadline)

    def _finished(self, job: int) -> None:
        self._outstanding.pop(job, None)
        core = self._core
        if core is not None:
            core.jobs.discard(job)

    # -- lifecycle -----------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; the workers exit once the outstanding ones are done.

        ``wait``: block until then (no time limit). ``cancel_futures``: cancel the calls that
        have not started (running ones complete).
        """
        with self._lock:
            self._shutdown_flag = True
            core = self._core
        if cancel_futures:
            for future in list(self._outstanding.values()):
                future.cancel()  # not yet handed to a worker: dropped at dispatch
        if core is None:
            return
        core.close()
        if wait:
            core.join()
            self._progress.total = self._progress.submitted
            self._progress.note("done", 0, finished=True)


def _results(futures: deque[Future], deadline: float | None) -> Iterator[Any]:
    """Yield each chunk's values in order; cancel what is left if the consumer stops early.

    Values are popped as they are yielded, and each chunk's Future is dropped once read, so
    a result the consumer has let go of is freed (nothing here keeps it alive).
    """
    try:
        while futures:
            future = futures.popleft()
            values = future.result() if deadline is None else future.result(deadline - monotonic())
            del future
            values.reverse()
            while values:
                yield values.pop()
    finally:
        for future in futures:
            future.cancel()


# -- interpreter exit: let outstanding calls finish, as the stdlib's executor does -------------
_live_cores: weakref.WeakSet[ProcessCore] = weakref.WeakSet()
_interpreter_exiting = False


def _finish_at_exit() -> None:
    """Wait for every executor's outstanding calls (threading's exit hook, before daemon threads stop).

    A forked child inherits this hook — a process runs threading's exit hooks when it ends,
    workers included — but not the executors: their copies in a child name the parent's
    workers, and joining them would terminate those. So a child forgets them at fork.
    """
    global _interpreter_exiting
    _interpreter_exiting = True
    for core in list(_live_cores):
        core.close()
        core.join()


threading._register_atexit(_finish_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_live_cores.clear)
