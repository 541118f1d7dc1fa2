"""The thread pool's engine, behind :class:`nbproc.pool.ThreadPool` (and ``nbproc.dummy.Pool``).

Data flow (nothing is serialized: threads share the objects)::

    caller thread(s)                      worker threads (``processes`` of them)
    ----------------                      --------------------------------------
    map()/apply_async()/imap feeder
      Task(sink, index, func, args) --> SimpleQueue --> run func --> sink.done()
                                                                       (callbacks run here)
    close(): one None per worker after the last task; terminate(): queued tasks are dropped.

Threads cannot be killed: ``terminate()`` drops queued tasks, fails outstanding results with
:class:`TaskCancelledError` and returns at once; tasks already running finish in the
background (daemon threads) and their results are dropped — as the stdlib's ThreadPool does.
A cancelled job (KeyboardInterrupt while waiting) likewise loses its queued tasks only.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

from ._pool_engine import CLOSE, RUN, TERMINATE, JobRegistry, JobSink, run_task
from .exceptions import InitializerError, TaskCancelledError
from .progress import PoolStatistics, WorkerStatistics

__all__ = ["ThreadCore"]


class ThreadTask:
    """One call or one chunk, queued for a worker thread."""

    __slots__ = ("sink", "job", "index", "func", "kind", "args", "nitems")

    def __init__(self, sink: JobSink, index: int, func: Any, kind: int, args: Any, nitems: int) -> None:
        self.sink = sink
        self.job = sink.job
        self.index = index
        self.func = func
        self.kind = kind
        self.args = args
        self.nitems = nitems


class ThreadCore:
    """Worker threads behind ThreadPool; fulfils :class:`nbproc._pool_engine.PoolEngine`."""

    def __init__(self, processes: int, initializer: Any, initargs: tuple, name: str) -> None:
        self.processes = processes
        self.name = name
        self.jobs = JobRegistry()  # outstanding jobs
        self.listeners: list[Any] = []
        self.state = RUN
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._queue: queue.SimpleQueue[ThreadTask | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cancelled: set[int] = set()
        self._feeders = 0
        self._stop_sent = False
        self._broken: BaseException | None = None
        self._busy = self._tasks_done = self._tasks_failed = 0  # statistics, under _lock
        self._threads = [
            threading.Thread(target=self._work, name=f"nbproc-{name}-worker-{i}", daemon=True) for i in range(processes)
        ]
        for thread in self._threads:
            thread.start()

    def prepare_function(self, func: Any, what: str) -> Any:
        return func

    def make_task(
        self, sink: JobSink, index: int, func: Any, kind: int, args: Any, nitems: int, snapshot: bool
    ) -> ThreadTask:
        return ThreadTask(sink, index, func, kind, args, nitems)

    def submit(self, tasks: list[ThreadTask]) -> None:
        for task in tasks:
            if self.state == TERMINATE:
                task.sink.abort(TaskCancelledError("the pool was terminated"))
            else:
                self._queue.put(task)

    def feeder_started(self) -> None:
        with self._lock:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._lock:
            self._feeders -= 1
        self._maybe_stop()

    def cancel(self, job: int) -> None:
        self._cancelled.add(job)

    def close(self) -> None:
        if self.state == RUN:
            self.state = CLOSE
        self._maybe_stop()

    def _maybe_stop(self) -> None:
        """After close, once no feeder can add tasks: one stop marker per thread, behind the tasks."""
        with self._lock:
            if self.state == RUN or self._feeders or self._stop_sent:
                return
            self._stop_sent = True
        for _ in self._threads:
            self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads to finish the queued work (after close); after terminate, return
        at once: a thread still running an abandoned task cannot be stopped."""
        if self.state == TERMINATE:
            return
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def terminate(self) -> None:
        self.state = TERMINATE
        dropped = []
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                dropped.append(task)
        with self._lock:
            self._stop_sent = True
        for _ in self._threads:
            self._queue.put(None)
        error = "the pool was terminated before this task completed"
        for task in dropped:
            task.sink.abort(TaskCancelledError(error))
        self.jobs.abort_all(lambda: TaskCancelledError(error))

    def worker_processes(self) -> list[Any]:
        return list(self._threads)

    def statistics(self) -> PoolStatistics:
        """A snapshot; threads are not told apart by state (only how many are busy)."""
        pid = os.getpid()
        with self._lock:
            busy, done, failed = self._busy, self._tasks_done, self._tasks_failed
        workers = tuple(
            WorkerStatistics(pid, t.name, "running" if t.is_alive() else "exited", t.is_alive(), 0)
            for t in self._threads
        )
        return PoolStatistics(
            name=self.name,
            start_method="thread",
            state=self.state,
            processes=self.processes,
            workers=workers,
            queued=max(self._queue.qsize() - (len(self._threads) if self._stop_sent else 0), 0),
            running=busy,
            done=done,
            failed=failed,
            jobs=len(self.jobs),
        )

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:  # noqa: BLE001 - every task will report it
                self._broken = exc
        get = self._queue.get
        while True:
            task = get()
            if task is None:
                return
            if self.state == TERMINATE or task.job in self._cancelled:
                continue
            if self._broken is not None:
                error = InitializerError(f"the pool's initializer failed: {self._broken!r}")
                error.__cause__ = self._broken
                task.sink.done(task.index, False, error, task.nitems)
                continue
            with self._lock:
                self._busy += 1
            ok, value = run_task(task.func, task.kind, task.args, capture=False)  # the live exception, if any
            with self._lock:
                self._busy -= 1
                if ok:
                    self._tasks_done += 1
                else:
                    self._tasks_failed += 1
            task.sink.done(task.index, ok, value, task.nitems)
            del task, value
