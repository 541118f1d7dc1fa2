"""What a Pool call returns (``AsyncResult``, ``MapResult``, ``IMapIterator``) and the errors it raises.

A *job* is one call (``apply_async``, ``map_async``, ``imap``...). Its tasks (one call, or one
chunk of a map) are run by a pool *engine* — worker processes (:mod:`nbproc._pool_workers`),
threads (:mod:`nbproc._pool_threads`) or a Dask cluster (:mod:`nbproc._dask_core`), all
fulfilling :class:`nbproc._pool_engine.PoolEngine` — which reports each task through the
job's :class:`~nbproc._pool_engine.ResultSink` (``sink.done(index, ok, value, nitems)``) from
its result thread; the sink is made by :meth:`_Job._sink` from the result's private methods, so
a result object has no engine-facing public method. The caller's thread blocks in ``get``/``wait``/
``next``. Semantics follow CPython's ``multiprocessing.pool``:

- ``ApplyResult``: one value; ``callback``/``error_callback`` run on the result thread before
  waiters are released.
- ``MapResult``: a list assembled from chunks; the first error wins, but the result is only
  ready once every chunk is back (so no task of the map is still running when ``map`` raises).
- ``IMapIterator``: results in order (``IMapUnorderedIterator``: as they arrive); an error is
  raised at its position and iteration goes on after it.

Additions: a KeyboardInterrupt while a caller waits cancels the job's outstanding work (queued
tasks are dropped, workers running them are terminated and replaced) before propagating; a
result whose pool was terminated raises :class:`TaskCancelledError` instead of waiting forever;
and ``imap(..., buffersize=n)`` bounds the tasks in flight (see :class:`IMapIterator`).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _output, progress, remote_error
from ._pool_engine import JobRegistry, ResultSink
from .exceptions import (
    InitializerError,
    MaybeEncodingError,
    TaskCancelledError,
    TaskTimeoutError,
    TimeoutError,
    WorkerLostError,
)
from .remote_error import RemoteErrorCarrier, RemoteTraceback

__all__ = [
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
]

_job_counter = itertools.count()


def attach_remote_traceback(exc: BaseException, remote_tb: RemoteErrorCarrier | str | None) -> BaseException:
    """Make the worker's traceback the ``__cause__`` of ``exc`` (as the stdlib does; see :mod:`nbproc.remote_error`)."""
    return remote_error.attach(exc, remote_tb)


if TYPE_CHECKING:
    from typing import Protocol

    class JobHost(Protocol):
        """What a result needs from the pool core that runs its tasks."""

        jobs: JobRegistry
        listeners: list[progress.Listener]
        name: str

        def cancel(self, job: int) -> None: ...


def _report_callback_error(what: str) -> None:
    """A failing callback must not kill the result thread (the stdlib's then hangs every waiter)."""
    print(f"nbproc: exception in Pool {what}:", file=sys.stderr)
    traceback.print_exc()


class _Job:
    """Bookkeeping shared by all result kinds: id, registration, progress counts, cancellation."""

    _total: int | None

    def __init__(self, core: JobHost, label: str) -> None:
        self._core = core
        self._job = next(_job_counter)
        self._label = label
        self._lock = threading.Lock()  # a ThreadPool sets results from several threads at once
        self._submitted = self._done = self._failed = 0
        self._own: list[progress.Listener] = []  # this job's listeners (``progress=``)
        self._cancelled = False
        core.jobs.add(self._job, self._abort)
        _output.note_job(self._job)  # in a kernel: this job's worker output goes to the current cell

    # -- progress ------------------------------------------------------------------------
    def _listening(self) -> bool:
        return progress.listening(self._core.listeners, self._own)

    def _emit(self, kind: str, items: int, finished: bool, reason: str = "") -> None:
        progress.deliver(
            self._core.listeners,
            progress.ProgressEvent(
                kind=kind,
                job=self._job,
                label=self._label,
                items=items,
                total=self._total,
                submitted=self._submitted,
                done=self._done,
                failed=self._failed,
                finished=finished,
                pool=self._core.name,
                reason=reason,
            ),
            self._own,
        )

    def _note_submitted(self, items: int) -> None:
        """Called by the submitting thread after ``items`` items were queued."""
        with self._lock:
            self._submitted += items
        if self._listening():
            self._emit("submitted", items, False)

    def _count(self, ok: bool, nitems: int) -> None:
        if ok:
            self._done += nitems
        else:
            self._failed += nitems

    def _finish_registration(self) -> None:
        self._core.jobs.discard(self._job)

    def _sink(self) -> ResultSink:
        """What an engine gets of this job: where to report its tasks (see :class:`ResultSink`)."""
        return ResultSink(self._job, self._label, self._set, self._set_partial, self._abort)

    def _set_partial(self, index: int, finished: list[tuple[bool, Any]], error: BaseException, nitems: int) -> None:
        """A chunk whose first items finished before another ran out of time (``task_timeout``).

        Where only the first error of a call is seen (``map``, ``apply``), the chunk fails as a
        whole; :class:`IMapIterator` overrides this to deliver the finished items first.
        """
        self._set(index, False, error, nitems)

    def _interrupted(self) -> None:
        """KeyboardInterrupt while waiting: stop the job's outstanding work, then let it propagate."""
        self._cancel("cancelled by KeyboardInterrupt")

    def _cancel(self, why: str) -> None:
        """Stop the job's outstanding work now (queued tasks dropped, its running workers
        replaced); waiters get :class:`TaskCancelledError`. Progress reports "interrupted"."""
        self._core.cancel(self._job)
        self._abort(TaskCancelledError(f"{self._label} was {why}"), reason="interrupted")

    def cancel(self) -> bool:
        """Stop this job (nbproc addition): queued tasks are dropped, workers running its tasks
        are stopped and replaced (a ThreadPool cannot stop a running thread: those finish and
        their results are dropped). Waiters get :class:`TaskCancelledError`.

        Returns False if the job had already completed (nothing to cancel), True otherwise;
        it does not wait for the workers to be replaced.
        """
        if self._finished():
            return False
        self._cancel("cancelled")
        self._cancelled = True
        return True

    def cancelled(self) -> bool:
        """Whether :meth:`cancel` (or closing an ``imap`` iterator) stopped this job."""
        return self._cancelled

    def _finished(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _abort(self, exc: BaseException, reason: str = "terminated") -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ApplyResult(_Job):
    """The result of ``apply_async`` (and the base of ``MapResult``): ``get``, ``wait``, ``ready``, ``successful``."""

    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(
        self,
        core: JobHost,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
        label: str = "apply",
    ) -> None:
        self._total = 1
        super().__init__(core, label)
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success: bool | None = None
        self._value: Any = None
        self._recent = 1  # items reported by the last event

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<{type(self).__name__} {self._label} job={self._job} {state}>"

    def ready(self) -> bool:
        """Whether the call has completed (successfully or not)."""
        return self._event.is_set()

    def _finished(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call completed without raising; ``ValueError`` if it is not ready (as the stdlib)."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the result is ready or ``timeout`` seconds have passed.

        On timeout it simply returns (check :meth:`ready`); the job keeps running. A
        KeyboardInterrupt while waiting cancels the job's outstanding work, then propagates.
        """
        try:
            self._event.wait(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        if self._event.is_set():
            _output.sync()  # in a kernel: the tasks' output reaches the cell before this returns

    def get(self, timeout: float | None = None) -> Any:
        """Return the result, or raise the remote exception (with the worker's traceback as ``__cause__``).

        With ``timeout``, raise :class:`nbproc.TimeoutError` if it is not ready in time; the job
        keeps running and ``get`` can be called again ("the pool remains available").
        """
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _set(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        """Record the outcome; runs the callback, then releases waiters (result thread)."""
        with self._lock:
            if self._event.is_set():
                return  # aborted meanwhile: a late result is dropped
            self._count(ok, nitems)
            self._success, self._value = ok, value
        self._complete()

    def _complete(self) -> None:
        if self._success:
            if self._callback is not None:
                try:
                    self._callback(self._value)
                except Exception:  # noqa: BLE001
                    _report_callback_error("callback")
        elif self._error_callback is not None:
            try:
                self._error_callback(self._value)
            except Exception:  # noqa: BLE001
                _report_callback_error("error_callback")
        self._finish_registration()
        if self._listening():  # before waiters wake: when get() returns, the bar is final
            self._emit("done" if self._success else "failed", self._recent, True)
        self._event.set()

    def _fail_job(self, exc: BaseException) -> None:
        """The whole call failed before any task ran (its function could not be serialized)."""
        with self._lock:
            if self._event.is_set():
                return
            outstanding = max((self._total or 0) - self._done - self._failed, 0)
            self._failed += outstanding
            self._recent = outstanding
            self._success, self._value = False, exc
        self._complete()

    def _abort(self, exc: BaseException, reason: str = "terminated") -> None:
        """Fail the job now without running callbacks (pool terminated / job cancelled)."""
        with self._lock:
            if self._event.is_set():
                return
            outstanding = (self._total or 0) - self._done - self._failed
            self._failed += max(outstanding, 0)
            self._success, self._value = False, exc
        self._finish_registration()
        if self._listening():
            self._emit("cancelled", max(outstanding, 0), True, reason)
        self._event.set()


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """The result of ``map_async``/``starmap_async``: a list assembled from chunks."""

    def __init__(
        self,
        core: JobHost,
        chunksize: int,
        length: int,
        callback: Callable[[Any], Any] | None,
        error_callback: Callable[[BaseException], Any] | None,
        label: str = "map",
    ) -> None:
        super().__init__(core, callback, error_callback, label)
        self._total = length
        self._chunksize = chunksize
        self._value = [None] * length  # filled chunk by chunk, in place
        self._success = True
        # Chunks still to come: ceil(length / chunksize). An empty input has none (the caller
        # passes chunksize 0) and is ready at once; the stdlib runs no callback then either.
        self._number_left = -(-length // chunksize) if chunksize > 0 else 0
        if self._number_left == 0:
            self._finish_registration()
            self._event.set()

    def _set(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._count(ok, nitems)
            self._number_left -= 1
            if ok and self._success:
                self._value[index * self._chunksize : (index + 1) * self._chunksize] = value
            elif not ok and self._success:
                self._success, self._value = False, value  # only the first error is kept
            last = self._number_left == 0
        if last:
            self._recent = nitems
            self._complete()
        elif self._listening():
            self._emit("done" if ok else "failed", nitems, False)


_NOTHING = object()


class Room:
    """How many more tasks an ``imap`` feeder may submit (``buffersize``).

    The feeder takes a place before each task and the consumer frees one per task consumed.
    Closing (job aborted, or the iterator garbage collected) wakes a waiting feeder for good.
    """

    def __init__(self, size: int) -> None:
        self._places = threading.Semaphore(size)
        self._size = size
        self.closed = False

    def wait(self) -> bool:
        """Block until a place is free (no time limit); False once closed."""
        self._places.acquire()
        return not self.closed

    def free(self) -> None:
        self._places.release()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._places.release(self._size + 1)


class _PartialChunk:
    """An imap chunk that ran out of time after its first items finished (``task_timeout``)."""

    __slots__ = ("finished", "error")

    def __init__(self, finished: list[tuple[bool, Any]], error: BaseException) -> None:
        self.finished = finished
        self.error = error

    def entries(self) -> list[tuple[bool, Any]]:
        """One entry per finished item (a value as a one-item chunk, or its error), then the error."""
        return [(ok, [value] if ok else value) for ok, value in self.finished] + [(False, self.error)]


class IMapIterator(_Job):
    """Iterator over the results of ``imap``: in order, each error raised at its position.

    ``next(timeout)`` raises :class:`nbproc.TimeoutError` when the next result is not ready
    within ``timeout`` seconds (for any chunksize); iteration can continue afterwards. A
    KeyboardInterrupt while waiting cancels the job's outstanding work, then propagates.

    With ``buffersize`` (an nbproc addition), at most that many tasks are submitted and not
    yet consumed: the input iterable is read only as results are taken, so an infinite
    generator works with bounded memory.
    """

    def __init__(self, core: JobHost, label: str = "imap", buffersize: int | None = None) -> None:
        self._total = None
        super().__init__(core, label)
        self._cond = threading.Condition(self._lock)
        self._chunks: deque[tuple[bool, Any]] = deque()  # completed tasks, in the order to yield them
        self._current: list[Any] | None = None  # the chunk being yielded
        self._pos = 0
        self._index = 0  # tasks moved to _chunks
        self._reported = 0  # tasks whose outcome arrived (placed or not)
        self._length: int | None = None  # number of tasks, once the input is exhausted
        self._unsorted: dict[int, tuple[bool, Any]] = {}
        self._aborted: BaseException | None = None
        self._abort_raised = False
        self._room = Room(buffersize) if buffersize else None
        self._prepaid = 0  # entries at the front of _chunks whose room was freed with their chunk

    def __del__(self) -> None:
        room = getattr(self, "_room", None)
        if room is not None:
            room.close()  # an abandoned iterator releases its feeder thread
        try:
            stopped = self._aborted is None and (self._length is None or self._index < self._length)
            if stopped and self._listening():
                # Dropped before its input was read to the end (``buffersize``): no task of it
                # remains (each holds the iterator), and no final event would ever come.
                self._emit("cancelled", 0, True, "stopped")
        except Exception:  # noqa: BLE001 - at interpreter exit, half-torn objects are expected
            pass

    def __iter__(self) -> IMapIterator:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label} job={self._job}>"

    def _take(self) -> Any:
        """The next result if one is available (lock held), else ``_NOTHING``."""
        if self._current is not None:
            value = self._current[self._pos]
            self._pos += 1
            if self._pos == len(self._current):
                self._current = None
            return (True, value)
        if self._chunks:
            ok, value = self._chunks.popleft()
            if self._prepaid:
                self._prepaid -= 1
            elif self._room is not None:
                self._room.free()
            if isinstance(value, _PartialChunk):  # its finished items, one by one, then its error
                entries = value.entries()
                self._chunks.extendleft(reversed(entries))
                self._prepaid += len(entries)
                return self._take()
            if not ok:
                return (False, value)
            if len(value) > 1:
                self._current, self._pos = value, 1
            elif not value:
                return self._take()
            return (True, value[0])
        return _NOTHING

    def _exhausted(self) -> bool:
        return self._index == self._length and not self._chunks and self._current is None

    def _finished(self) -> bool:
        with self._cond:
            return self._aborted is not None or self._index == self._length

    def close(self) -> None:
        """Stop the rest of this iteration (nbproc addition): see :meth:`cancel`.

        Results already received are dropped; the next ``next()`` raises ``StopIteration``.
        """
        self.cancel()
        with self._cond:
            self._chunks.clear()
            self._prepaid = 0
            self._current = None
            self._abort_raised = True

    def next(self, timeout: float | None = None) -> Any:
        """Return the next result; see the class docstring for timeout and interrupt behaviour."""
        deadline = None
        try:
            with self._cond:
                while True:
                    item = self._take()
                    if item is not _NOTHING:
                        break
                    if self._aborted is not None:
                        if self._abort_raised:
                            raise StopIteration
                        self._abort_raised = True
                        raise self._aborted
                    if self._exhausted():
                        self._finish_registration()
                        raise StopIteration
                    if timeout is not None:
                        now = time.monotonic()
                        if deadline is None:
                            deadline = now + timeout
                        elif now >= deadline:
                            raise TimeoutError
                        self._cond.wait(deadline - now)
                    else:
                        self._cond.wait()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        ok, value = item
        _output.sync()  # in a kernel: this task's output reaches the cell before its result does
        if ok:
            return value
        raise value

    __next__ = next

    def _set(self, index: int, ok: bool, value: Any, nitems: int = 1) -> None:
        with self._cond:
            if self._aborted is not None:
                return
            self._count(ok, nitems)
            self._reported += 1
            finished = self._reported == self._length
            if not finished:
                self._place(index, (ok, value))
        if not finished:
            if self._listening():
                self._emit("done" if ok else "failed", nitems, False)
            return
        # The last outcome: the final event goes out before the consumer can take the last
        # result, so a loop over the iterator ends with its bar already final.
        if self._listening():
            self._emit("done" if ok else "failed", nitems, True)
        with self._cond:
            self._place(index, (ok, value))
        self._finish_registration()

    def _set_partial(self, index: int, finished: list[tuple[bool, Any]], error: BaseException, nitems: int) -> None:
        """Chunk ``index`` ran out of time after its first items finished: those are yielded
        (counted done), then ``error`` is raised once for the rest of the chunk (counted failed)."""
        ok_items = sum(1 for ok, _ in finished if ok)
        entry = (False, _PartialChunk(finished, error))
        with self._cond:
            if self._aborted is not None:
                return
            self._count(True, ok_items)
            self._count(False, nitems - ok_items)
            self._reported += 1
            finished_all = self._reported == self._length
            if not finished_all:
                self._place(index, entry)
        if self._listening():
            if ok_items:
                self._emit("done", ok_items, False)
            self._emit("failed", nitems - ok_items, finished_all)
        if finished_all:
            with self._cond:
                self._place(index, entry)
            self._finish_registration()

    def _place(self, index: int, entry: tuple[bool, Any]) -> None:
        """Release results in input order: one that arrives early waits in ``_unsorted`` until
        every result before it has arrived, then they all become readable at once."""
        self._unsorted[index] = entry
        if index != self._index:
            return
        while self._index in self._unsorted:
            self._chunks.append(self._unsorted.pop(self._index))
            self._index += 1
        self._cond.notify()

    def _set_length(self, length: int, items: int) -> None:
        """The feeder read the whole input: ``length`` tasks holding ``items`` items."""
        with self._cond:
            if self._aborted is not None:
                return
            self._total = items
            finished = self._reported == length
            if not finished:
                self._length = length
                return
        # Every outcome is in: report the end before the consumer can see it.
        if self._listening():
            self._emit("done", 0, True)
        with self._cond:
            self._length = length
            self._cond.notify_all()
        self._finish_registration()

    def _fail_job(self, exc: BaseException) -> None:
        """The whole call failed before any task ran: ``next()`` raises ``exc`` once, then stops."""
        self._abort(exc, kind="failed", reason="")

    def _abort(self, exc: BaseException, kind: str = "cancelled", reason: str = "terminated") -> None:
        with self._cond:
            if self._aborted is not None or self._exhausted():
                return
            self._aborted = exc
            outstanding = max((self._total or self._submitted) - self._done - self._failed, 0)
            self._failed += outstanding
            self._cond.notify_all()
        if self._room is not None:
            self._room.close()  # wake a feeder waiting for room
        self._finish_registration()
        if self._listening():
            self._emit(kind, outstanding, True, reason)


class IMapUnorderedIterator(IMapIterator):
    """Iterator over the results of ``imap_unordered``: each result as soon as it arrives."""

    def _place(self, index: int, entry: tuple[bool, Any]) -> None:
        self._chunks.append(entry)
        self._index += 1
        self._cond.notify()
