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
- ``cancelled`` — the job was abandoned (KeyboardInterrupt while waiting, ``terminate()``):
  its outstanding items are counted as failed.

Each event carries the job's running totals, so a listener can draw a bar from any single
event without keeping state. The event with ``finished=True`` is the job's last one.

Threads: listeners run on the thread where the event happens (the caller's, an ``imap``
feeder's, the pool's result thread, or a ThreadPool worker), so they must be quick and must
not block on the pool. An exception raised by a listener is printed and otherwise ignored:
progress display never breaks the computation.

Cost when nobody listens: one truth test of two lists per event site (see ``listening``).
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["ProgressEvent", "Listener", "add_listener", "remove_listener", "TextProgress"]

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


def add_listener(listener: Listener) -> None:
    """Hear the events of every pool of this process (existing and future ones)."""
    _global_listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Undo :func:`add_listener` (no error if it was not registered)."""
    try:
        _global_listeners.remove(listener)
    except ValueError:
        pass


def deliver(listeners: list[Listener], event: ProgressEvent) -> None:
    """Call the pool's own listeners and the global ones; a failing listener is reported, not raised."""
    for listener in (*listeners, *_global_listeners):
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a progress display must never break the work
            print(f"nbproc: exception in progress listener {listener!r}:", file=sys.stderr)
            traceback.print_exc()


def listening(listeners: list[Listener]) -> bool:
    """Whether any event would reach anybody — checked before an event is even built."""
    return bool(listeners) or bool(_global_listeners)


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
        state = " cancelled" if event.kind == "cancelled" else (" done" if event.finished else "")
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
