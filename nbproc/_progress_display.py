"""Turn a Pool call's ``progress=`` argument into the listener that draws its bar.

``progress=`` is keyword-only on every Pool call that takes it; its values:

- ``None`` (left out): :data:`nbproc.config.progress` decides — ``"off"`` draws nothing (a
  plain script behaves as the stdlib), ``"auto"`` draws a bar for work that is still running
  after :data:`nbproc.config.progress_after` seconds, ``"on"`` always draws one;
- ``True`` / ``False``: a bar now / none;
- a string: a bar with that label instead of ``map(f)``;
- a :class:`nbproc.progress.Batch`: one bar shared by several calls;
- any other callable: a listener that receives every :class:`~nbproc.progress.ProgressEvent`
  of this call (unthrottled).

Which bar: the ipywidgets bar of :mod:`nbproc.jupyter.progress` when this process runs a
Jupyter kernel and ipywidgets imports; otherwise :class:`nbproc.progress.TextProgress` on
stderr. IPython is never imported here: a kernel is recognised by IPython already being
loaded (``sys.modules``), so a worker or a script pays nothing.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from multiprocessing import parent_process
from typing import Any

from . import config
from .progress import Batch, Listener, ProgressEvent, TextProgress, Throttled

__all__ = ["listener_for", "display_for", "in_kernel"]


def listener_for(progress: Any, label: str) -> Listener | None:
    """The listener for one call (None: draw nothing); ``TypeError`` for a value it cannot use."""
    auto = False
    if progress is None:
        mode = config.progress
        if mode == "off":
            return None
        auto = mode == "auto"
    elif progress is False:
        return None
    elif progress is True:
        pass
    elif isinstance(progress, str):
        label = progress
    elif isinstance(progress, Batch):
        if progress._display is None:
            progress._display = display_for(progress.label, auto=False)
        return progress
    elif callable(progress):
        return progress
    else:
        raise TypeError(f"progress must be True, False, None, a label or a callable listener, not {progress!r}")
    return display_for(label, auto=auto)


def in_kernel() -> bool:
    """Whether this process (not a child forked from it) runs an IPython kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None or parent_process() is not None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a half-initialised IPython: no kernel for us
        return False
    return getattr(shell, "kernel", None) is not None


def display_for(label: str, *, auto: bool) -> Listener:
    """A throttled bar for one job: a widget in a kernel, else text on stderr."""
    delay = config.progress_after if auto else 0.0
    display: Listener | None = None
    if in_kernel():
        try:
            from .jupyter.progress import WidgetProgress
        except ImportError:  # no ipywidgets: the text bar below
            pass
        else:
            display = WidgetProgress(label, delay=delay)
    if display is None:
        display = _Relabel(TextProgress(interval=0.0), label)
        if delay:
            display = _Delayed(display, delay)
    return Throttled(display, config.progress_interval)


class _Relabel:
    """Pass events on under another label (``progress="loading"``)."""

    def __init__(self, listener: Listener, label: str) -> None:
        self.listener = listener
        self.label = label

    def __call__(self, event: ProgressEvent) -> None:
        if event.label != self.label:
            event = dataclasses.replace(event, label=self.label)
        self.listener(event)


class _Delayed:
    """Pass events on only once the job has run for ``delay`` seconds (automatic mode, text)."""

    def __init__(self, listener: Listener, delay: float) -> None:
        self.listener = listener
        self.delay = delay
        self._started: float | None = None
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            now = time.monotonic()
            if self._started is None:
                self._started = now
            if now - self._started < self.delay:
                return
        self.listener(event)
