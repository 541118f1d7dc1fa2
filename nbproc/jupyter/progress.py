"""The notebook progress bar of one Pool call: an ipywidgets bar that advances while the cell blocks.

Data flow (all in the kernel process)::

    caller thread (cell)            any thread that reports progress          timer thread
    --------------------            --------------------------------          ------------
    Pool.map(..., progress=True)
      WidgetProgress(label)
        captures the cell's parent header
                                    Throttled -> WidgetProgress(event)
                                      first event: show now (delay 0) ------> or after `delay`
                                      later events: update the widget model      (automatic mode;
                                                                                  the shared
                                                                                  progress timer)
                                      final event: end state + update_display

Why it works while the cell blocks: a widget's model changes are comm messages that
ipykernel sends on IOPub from any thread; the front end applies them at once. Why the
parent header is captured: the bar's ``display_data`` must land in the cell that made the
call even when it is sent later from another thread, so it is sent with that cell's parent
(the version-independent way; see ``notes/jupyter-layer-research.md``).

What a saved notebook keeps: nbclient and JupyterLab save the widgets' final state, and the
display's ``text/plain`` part is replaced (``update_display_data``) by a line such as
``map(square): 100/100 done in 1.2s``, so a static render shows where the bar ended.
End states: green (``success``) when every item succeeded, red (``danger``) with the failure
count, amber (``warning``) marked "interrupted" (KeyboardInterrupt, ``--fail-fast``),
"terminated" (the pool was) or "stopped" (an ``imap`` dropped before its end).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import ipywidgets

from ..progress import ProgressEvent, call_later

__all__ = ["WidgetProgress", "format_status"]


def _kernel_and_parent() -> tuple[Any, Any]:
    """The kernel and the parent header of the request now executing (caller's thread)."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None, None
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # ipykernel < 6 took no channel
        parent = kernel.get_parent()
    return kernel, parent


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def items_finished(event: ProgressEvent) -> tuple[int, int]:
    """(items that ran to an end, of which failed); a cancelled job's abandoned items are not
    counted, so an interrupted bar stops where the work stopped."""
    abandoned = event.items if event.kind == "cancelled" else 0
    failed = event.failed - abandoned
    return event.done + failed, failed


def format_status(event: ProgressEvent, elapsed: float) -> str:
    """The text beside the bar, e.g. ``37/100 · 2 failed · 120/s · ETA 3s`` (no ETA without a total)."""
    finished, failed = items_finished(event)
    parts = [f"{finished}/{event.total}" if event.total is not None else f"{finished} done"]
    if failed:
        parts.append(f"{failed} failed")
    if event.finished:
        if event.kind == "cancelled":
            parts.append(event.reason or "cancelled")
        else:
            parts.append(f"done in {elapsed:.1f}s")
        return " · ".join(parts)
    if elapsed > 0 and finished:
        rate = finished / elapsed
        parts.append(f"{rate:.3g}/s")
        if event.total is not None:
            parts.append(f"ETA {_duration((event.total - finished) / rate)}")
    return " · ".join(parts)


class WidgetProgress:
    """A listener drawing one job's bar (wrap it in :class:`nbproc.progress.Throttled`).

    Create it on the thread of the cell that makes the call (it captures that cell). With
    ``delay`` > 0 (automatic mode) nothing is created unless the job is still running after
    ``delay`` seconds, so quick calls leave no widget behind.
    """

    def __init__(self, label: str, *, delay: float = 0.0) -> None:
        self.label = label
        self.delay = delay
        self._kernel, self._parent = _kernel_and_parent()
        self._lock = threading.Lock()
        self._started: float | None = None
        self._latest: ProgressEvent | None = None
        self._ended = False
        self._box: Any = None
        self._bar: Any = None
        self._status: Any = None
        self._display_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<WidgetProgress {self.label!r}>"

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._ended:
                return
            if self._started is None:
                self._started = time.monotonic()
                if self.delay > 0 and not event.finished:
                    call_later(self.delay, self._show_late)
            self._latest = event
            if event.finished:
                self._ended = True
            if self._box is None and (self.delay <= 0 or time.monotonic() - self._started >= self.delay):
                self._show()
            if self._box is not None:
                self._draw(event)

    # ------------------------------------------------------------------ drawing
    def _show_late(self) -> None:
        with self._lock:
            if self._box is None and self._latest is not None and not self._latest.finished:
                self._show()
                self._draw(self._latest)

    def _show(self) -> None:
        """Create the widgets and send their display to the captured cell (lock held)."""
        self._bar = ipywidgets.IntProgress(value=0, min=0, max=1, layout=ipywidgets.Layout(width="40%"))
        self._bar.add_class("nbproc-progress-bar")
        self._status = ipywidgets.HTML(value="")
        title = ipywidgets.HTML(value=f"<b>{_escape(self.label)}</b>")
        self._box = ipywidgets.HBox([title, self._bar, self._status])
        self._box.add_class("nbproc-progress")
        self._send("display_data", f"{self.label}: starting")

    def _draw(self, event: ProgressEvent) -> None:
        elapsed = time.monotonic() - (self._started or time.monotonic())
        finished, failed = items_finished(event)
        total = event.total if event.total is not None else max(event.submitted, finished, 1)
        status = format_status(event, elapsed)
        with self._box.hold_sync(), self._bar.hold_sync():
            self._bar.max = max(total, 1)
            self._bar.value = min(finished, self._bar.max)
            if event.finished:
                if event.kind == "cancelled":
                    self._bar.bar_style = "warning"
                else:
                    self._bar.bar_style = "danger" if failed else "success"
            elif failed:
                self._bar.bar_style = "danger"
            self._status.value = _escape(status)
        if event.finished:
            self._send("update_display_data", f"{self.label}: {status}")

    def _send(self, msg_type: str, text: str) -> None:
        """Display (or replace) the bar in the captured cell, with ``text`` for static renders."""
        bundle = self._box._repr_mimebundle_()
        data = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        data["text/plain"] = text
        content = {"data": data, "metadata": {}, "transient": {"display_id": self._display_id}}
        kernel = self._kernel
        if kernel is not None and self._parent is not None:
            kernel.session.send(kernel.iopub_socket, msg_type, content, parent=self._parent, ident=b"display_data")
            return
        from IPython.display import display, update_display  # no kernel captured: the current cell

        if msg_type == "display_data":
            display(data, raw=True, display_id=self._display_id)
        else:
            update_display(data, raw=True, display_id=self._display_id)


def _escape(text: str) -> str:
    from html import escape

    return escape(text)
