"""Progress events of pools, and a text progress bar that consumes them.

The hook: a *listener* is any callable taking one :class:`ProgressEvent`. Register it on one
pool (``pool.add_listener(fn)``) or on every pool of the process (:func:`add_listener`); a
listener added as a context manager is removed at the end of the block::

    with nbproc.progress.TextProgress().attach(pool):
        pool.map(f, range(10_000))

What is reported, per *job* (one ``map``/``imap``/``apply_async``... call), counted in *items*
(elements of the iterable; 1 for ``apply``):

- ``submitted`` — items were serialized and queued for the workers (caller or feeder thread);
- ``done`` / ``failed`` — a task's items came back (the pool's result thread); a failed
  chunk counts all its items as failed;
- ``worker_lost`` — a worker process died without delivering its task (result thread); the
  job's ``failed`` event follows separately;
- ``cancelled`` — the job was abandoned: its outstanding items are counted as failed, and
  ``reason`` says why: ``"interrupted"`` (KeyboardInterrupt while waiting, or a caller such as
  ``%%parallel --fail-fast`` stopping it), ``"terminated"`` (the pool was terminated) or
  ``"stopped"`` (an ``imap`` iterator dropped before its input was read to the end).

Each event carries the job's running totals, so a listener can draw a bar from any single
event without keeping state. The event with ``finished=True`` is the job's last one.

Threads: listeners run on the thread where the event happens (the caller's, an ``imap``
feeder's, the pool's result thread, or a ThreadPool worker), so they must be quick and must
not block on the pool. A listener that raises is reported once on stderr and removed:
progress display never breaks the computation, nor floods a log from a background thread.

A listener that draws (a widget, a text line) is wrapped in :class:`Throttled`, which passes
at most one update per job every ``interval`` seconds (plus the final one, and the latest
skipped one once the interval has passed), whatever the task rate: throttling lives here,
not in each display.

``Pool(...).statistics()`` returns a :class:`PoolStatistics`: a frozen snapshot of the pool's
workers (pid, state, tasks done) and task counts, cheap enough for a view to poll.

Cost when nobody listens: one truth test of two lists per event site (see ``listening``).
"""

from __future__ import annotations

import heapq
import itertools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

__all__ = [
    "ProgressEvent",
    "Listener",
    "add_listener",
    "remove_listener",
    "TextProgress",
    "Throttled",
    "Batch",
    "PoolStatistics",
    "WorkerStatistics",
]

#: What a listener is: any callable that takes one :class:`ProgressEvent`.
Listener = Callable[["ProgressEvent"], Any]

#: Listeners that hear every pool of this process (e.g. the Jupyter layer's widget).
_global_listeners: list[Listener] = []


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of one job; the counts are the job's totals *after* this step."""

    kind: str  #: "submitted", "done", "failed", "worker_lost" or "cancelled"
    job: int  #: the job's id, unique within the process
    label: str  #: what the job is, e.g. "map(square)"
    items: int  #: how many items this event is about (0 for worker_lost)
    total: int | None  #: items in the job, None while an imap is still reading its iterable
    submitted: int
    done: int
    failed: int
    finished: bool  #: True on the job's last event
    pool: str = ""  #: repr-like name of the pool, to tell pools apart
    pid: int | None = None  #: worker_lost: the dead worker's pid
    exitcode: int | None = None  #: worker_lost: its exit code (negative: killed by that signal)
    reason: str = ""  #: cancelled: "interrupted", "terminated" or "stopped"


def add_listener(listener: Listener) -> None:
    """Hear the events of every pool of this process (existing and future ones)."""
    _global_listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Undo :func:`add_listener` (no error if it was not registered)."""
    try:
        _global_listeners.remove(listener)
    except ValueError:
        pass


def deliver(listeners: list[Listener], event: ProgressEvent, own: list[Listener] | None = None) -> None:
    """Call the job's ``own`` listeners, the pool's and the global ones.

    A listener that raises is reported once and removed from the list that held it: a
    broken display must neither break the work nor print a traceback for every event.
    """
    for where in (own, listeners, _global_listeners):
        if not where:
            continue
        for listener in tuple(where):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a progress display must never break the work
                _drop_failed(where, listener, exc)


_drop_lock = threading.Lock()


def _drop_failed(where: list[Listener], listener: Listener, exc: BaseException) -> None:
    with _drop_lock:
        try:
            where.remove(listener)
        except ValueError:
            return  # another thread saw it fail first and reported it
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    print(f"nbproc: progress listener {listener!r} raised and was removed:\n{text}", end="", file=sys.stderr)


def listening(listeners: list[Listener], own: list[Listener] | None = None) -> bool:
    """Whether any event would reach anybody — checked before an event is even built."""
    return bool(listeners) or bool(_global_listeners) or bool(own)


class Throttled:
    """Pass a listener at most one event per job every ``interval`` seconds.

    Always passed: a job's first event, its final one (``finished``) and ``worker_lost``.
    An event skipped because it came too soon is kept, and delivered when the interval ends
    unless a newer one has replaced it (by one timer thread shared by every bar), so a
    burst of results followed by a quiet spell still shows its last count. Events carry
    running totals, so skipping intermediate ones loses nothing a bar needs. Delivery happens
    under a lock, so the final event is always the last one the listener sees.
    """

    def __init__(self, listener: Callable[[ProgressEvent], Any], interval: float) -> None:
        self.listener = listener
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[int, float] = {}  # job -> when it was last passed on
        self._held: dict[int, ProgressEvent] = {}  # job -> the newest event not passed on yet
        self._scheduled: set[int] = set()  # jobs with a flush pending on the timer thread
        self._closed: set[int] = set()

    def __repr__(self) -> str:
        return f"Throttled({self.listener!r}, {self.interval})"

    def __call__(self, event: ProgressEvent) -> None:
        job = event.job
        with self._lock:
            if job in self._closed:
                return
            now = time.monotonic()
            if event.finished or event.kind == "worker_lost":
                if event.finished:
                    self._closed.add(job)
                    self._forget(job)
                self.listener(event)
                return
            last = self._last.get(job)
            if last is None or now - last >= self.interval:
                self._last[job] = now
                self._held.pop(job, None)
                self.listener(event)
                return
            self._held[job] = event
            if job not in self._scheduled:
                self._schedule(job, last + self.interval)

    def _schedule(self, job: int, due: float) -> None:
        self._scheduled.add(job)
        _timer.call_at(due, partial(self._flush, job))

    def _flush(self, job: int) -> None:
        with self._lock:
            self._scheduled.discard(job)
            if job in self._closed or job not in self._held:
                return
            now = time.monotonic()
            due = self._last.get(job, now - self.interval) + self.interval
            if due > now:  # an event passed directly since this flush was planned: wait for the rest
                self._schedule(job, due)
                return
            event = self._held.pop(job)
            self._last[job] = now
            try:
                self.listener(event)
            except Exception as exc:  # noqa: BLE001 - on the timer thread: report once, stop drawing
                self._closed.add(job)
                _drop_failed([self.listener], self.listener, exc)

    def _forget(self, job: int) -> None:
        self._last.pop(job, None)
        self._held.pop(job, None)  # a pending flush then finds nothing to do


class _Timer:
    """One daemon thread running the delayed flushes of every :class:`Throttled`.

    Why one shared thread: starting a thread per job (``threading.Timer``) costs about as
    much as a short ``map`` itself. Calls run in due order; a call that raises is reported and
    the thread goes on. Started on first use, and again in a forked child (threads do not
    survive a fork).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Fresh state (also in a forked child: the lock may have been held by the parent's thread)."""
        self._cond = threading.Condition(threading.Lock())
        self._due: list[tuple[float, int, Callable[[], Any]]] = []
        self._order = itertools.count()
        self._pid = -1

    def call_at(self, due: float, call: Callable[[], Any]) -> None:
        with self._cond:
            heapq.heappush(self._due, (due, next(self._order), call))
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="nbproc-progress-timer", daemon=True).start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._due:
                        self._cond.wait()
                        continue
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, call = heapq.heappop(self._due)
            try:
                call()
            except Exception:  # noqa: BLE001 - one broken display must not stop the others' flushes
                traceback.print_exc()


_timer = _Timer()
os.register_at_fork(after_in_child=_timer._reset)


def call_later(delay: float, call: Callable[[], Any]) -> None:
    """Run ``call()`` on the shared progress timer thread after ``delay`` seconds (no thread
    per call: displays use it, e.g. to show a bar once a job has run for a while)."""
    _timer.call_at(time.monotonic() + delay, call)


class Batch:
    """One bar for several calls: pass the same ``Batch`` as ``progress=`` to each of them.

    ``batch = Batch("fetch", total=len(xs)); rs = [pool.apply_async(f, (x,), progress=batch)
    for x in xs]`` draws one bar over all the calls. With ``total`` (in items: 1 per
    ``apply_async``) the bar finishes when that many items are done; without it, the total
    grows with each call seen and the bar finishes when every call seen so far has finished
    (so a call made after that is not drawn). ``display`` is the listener that draws; the
    pool picks the one ``progress=True`` would use when it is None.
    """

    _ids = itertools.count(-2, -1)  # negative: never equal to a real job's id (those count up from 0)

    def __init__(
        self, label: str = "batch", display: Callable[[ProgressEvent], Any] | None = None, *, total: int | None = None
    ) -> None:
        self.label = label
        self.total = total
        self._display = display
        self._job = next(self._ids)
        self._lock = threading.Lock()
        # job -> (total, submitted, done, failed, finished)
        self._jobs: dict[int, tuple[int | None, int, int, int, bool]] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "worker_lost":
            return
        with self._lock:
            self._jobs[event.job] = (event.total, event.submitted, event.done, event.failed, event.finished)
            states = list(self._jobs.values())
            done, failed = sum(s[2] for s in states), sum(s[3] for s in states)
            if self.total is not None:
                total: int | None = self.total
                finished = done + failed >= self.total
            else:
                total = sum(s[0] or 0 for s in states) if all(s[0] is not None for s in states) else None
                finished = all(s[4] for s in states)
            combined = ProgressEvent(
                kind=event.kind,
                job=self._job,
                label=self.label,
                items=event.items,
                total=total,
                submitted=sum(s[1] for s in states),
                done=done,
                failed=failed,
                finished=finished,
                pool=event.pool,
                reason=event.reason,
            )
        if self._display is not None:
            self._display(combined)


class TextProgress:
    """A one-line text progress bar per job, for terminals and logs (no notebook needed).

    On a terminal the line is redrawn in place (``\\r``); elsewhere a line is written at most
    every ``interval`` seconds and once at the end, so logs stay short. Use it as a listener
    (``pool.add_listener(TextProgress())``) or with :meth:`attach`.
    """

    def __init__(self, file: TextIO | None = None, *, interval: float = 0.2, width: int = 30) -> None:
        self._file = file
        self._interval = interval  # redraws per second are capped: a bar must cost less than the work
        self._width = width
        self._lock = threading.Lock()  # events arrive from several threads
        self._last_draw: dict[int, float] = {}
        self._lost = 0

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "worker_lost":
                self._lost += 1
                self.file.write(f"\nnbproc: worker {event.pid} lost (exit code {event.exitcode})\n")
                return
            now = time.monotonic()
            last = self._last_draw.get(event.job)
            if not event.finished and last is not None and now - last < self._interval:
                return
            self._last_draw[event.job] = now
            line = self.format(event)
            if event.finished:
                self._last_draw.pop(event.job, None)
            tty = getattr(self.file, "isatty", lambda: False)()
            if tty:
                self.file.write("\r" + line + ("\n" if event.finished else ""))
            else:
                self.file.write(line + "\n")
            self.file.flush()

    def format(self, event: ProgressEvent) -> str:
        """The text of one progress line, e.g. ``map(f) [#####.....] 50/100 (2 failed)``."""
        total = event.total
        finished_items = event.done + event.failed
        if total:
            filled = int(self._width * finished_items / total)
            bar = "[" + "#" * filled + "." * (self._width - filled) + "]"
            count = f"{finished_items}/{total}"
        else:
            bar = ""
            count = f"{finished_items}/{event.submitted}+"
        extra = f" ({event.failed} failed)" if event.failed else ""
        state = f" {event.reason or 'cancelled'}" if event.kind == "cancelled" else (" done" if event.finished else "")
        return f"{event.label} {bar} {count}{extra}{state}".replace("  ", " ")

    @contextmanager
    def attach(self, pool: Any = None) -> Iterator[TextProgress]:
        """Listen to ``pool`` (or to every pool when None) for the duration of a ``with`` block."""
        if pool is None:
            add_listener(self)
        else:
            pool.add_listener(self)
        try:
            yield self
        finally:
            if pool is None:
                remove_listener(self)
            else:
                pool.remove_listener(self)


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """One worker as the pool saw it when the snapshot was taken."""

    pid: int  #: the worker process's pid (a ThreadPool reports its own process's pid)
    name: str
    state: str  #: "starting" (initializer not done), "idle" or "busy"
    alive: bool
    tasks_done: int  #: tasks (calls or chunks) it completed


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A frozen snapshot of a pool, cheap to take (no message to any worker): see ``Pool.statistics()``.

    Counts are in *tasks* (one ``apply`` call, or one chunk of a map), as the pool schedules them.
    """

    name: str
    start_method: str  #: "fork", "spawn", "forkserver", "thread", or "dask"
    state: str  #: "RUN", "CLOSE" or "TERMINATE"
    processes: int  #: the pool's size
    workers: tuple[WorkerStatistics, ...]
    queued: int  #: tasks waiting for a worker (including those sent ahead to a busy worker)
    running: int  #: tasks a worker is running now
    done: int  #: tasks completed successfully since the pool started
    failed: int  #: tasks that raised, or whose worker died
    jobs: int  #: calls still outstanding
