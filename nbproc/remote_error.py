"""The carrier of an exception raised in another process: structured frames + text, rendered by the receiver.

Why a carrier: a traceback does not pickle, so the stdlib flattens it to text in the worker.
Text formatted in a spawn/forkserver worker cannot show a notebook cell's source (the worker
has no cell "files"), and it cannot say ``Cell In[N]`` (only the kernel knows execution counts).
So the worker sends the frames themselves — filename, line number, function, and the source
line if the worker knows it — plus the stdlib's own text, and the *receiver* renders them with
its ``linecache`` and its cell labels::

    worker (any process)                          receiver (the caller's process)
    --------------------                          -------------------------------
    except BaseException as exc:
      carrier = RemoteErrorCarrier.capture(exc)
      send (exc, carrier)  ---- pickled ---->     exc = attach(exc, carrier)
                                                    exc keeps its type; exc.__cause__ is a
                                                    RemoteTraceback (is-a the stdlib Pool's)
                                                  str(exc.__cause__) -> carrier.render():
                                                    in a notebook kernel: frames of cells are
                                                    labelled "Cell In[N], line L" with the
                                                    kernel's source lines;
                                                    elsewhere: the worker's text, verbatim
                                                    (the stdlib's text and behaviour)

Users: Pool tasks and initializers, Process (the child's "Process Name:" report), manager
methods, and the ``%%parallel`` magic (``capture``/``attach``/``render`` are the small API).

A kernel is detected lazily from ``sys.modules`` (IPython is never imported here). A child
started from a kernel gets the kernel's cell sources and labels through a set-up hook
(:func:`_capture_cells`), so what it renders itself (a ``Process`` traceback) shows them too.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.pool import RemoteTraceback as _StdRemoteTraceback
from typing import Any

__all__ = ["RemoteFrame", "RemoteErrorCarrier", "RemoteTraceback", "attach", "capture", "render"]

#: The link lines the stdlib prints between chained exceptions.
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

#: Cell filename -> label (``"Cell In[3]"``) shipped to a child started from a kernel.
_shipped_labels: dict[str, str] = {}


@dataclass(frozen=True)
class RemoteFrame:
    """One frame of a remote traceback; ``line`` is the source line as the worker saw it (or None)."""

    filename: str
    lineno: int | None
    name: str
    line: str | None


@dataclass(frozen=True)
class _Segment:
    """One exception of a chain: its frames (outermost first), its ``Type: message`` lines, and
    the link text that led to the next exception (empty for the last one)."""

    frames: tuple[RemoteFrame, ...]
    exception_only: str
    link: str


@dataclass(frozen=True)
class RemoteErrorCarrier:
    """An exception's story as sent between processes. ``text`` is the stdlib's formatting,
    made in the worker; ``segments`` are the same chain as structured frames."""

    segments: tuple[_Segment, ...]
    text: str

    @classmethod
    def capture(cls, exc: BaseException) -> RemoteErrorCarrier:
        """In the worker: record ``exc`` (with its ``__cause__``/``__context__`` chain)."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(tuple(_segments(exc)), text)

    def render(self) -> str:
        """The traceback text for this process: notebook-aware in a kernel, else the worker's text."""
        labels = _cell_labels()
        if not labels or not any(f.filename in labels for s in self.segments for f in s.frames):
            return self.text
        return "".join(_render_segment(segment, labels) for segment in self.segments)


def _segments(exc: BaseException) -> Iterator[_Segment]:
    """The chain oldest first, as the stdlib prints it (``__suppress_context__`` respected)."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    for item, link_after in reversed(chain):
        frames = tuple(
            RemoteFrame(summary.filename, summary.lineno, summary.name, summary.line or None)
            for summary in traceback.extract_tb(item.__traceback__)
        )
        only = "".join(traceback.format_exception_only(type(item), item))
        yield _Segment(frames, only, link_after)


def _render_segment(segment: _Segment, labels: dict[str, str]) -> str:
    parts = ["Traceback (most recent call last):\n"] if segment.frames else []
    for frame in segment.frames:
        label = labels.get(frame.filename)
        where = f"{label}, line {frame.lineno}" if label else f'File "{frame.filename}", line {frame.lineno}'
        parts.append(f"  {where}, in {frame.name}\n")
        line = _source_line(frame)
        if line:
            parts.append(f"    {line}\n")
    parts.append(segment.exception_only)
    parts.append(segment.link)
    return "".join(parts)


def _source_line(frame: RemoteFrame) -> str | None:
    """The receiver's own copy of the line (a kernel knows its cells), else the worker's."""
    if frame.lineno:
        line = linecache.getline(frame.filename, frame.lineno).strip()
        if line:
            return line
    return frame.line


def _kernel_shell() -> Any:
    """The running IPython shell, if this process is a kernel — never importing IPython."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython is not None else None


def _cell_labels() -> dict[str, str]:
    """Cell filename -> ``"Cell In[N]"`` as IPython labels cells (from the kernel's compiler)."""
    shell = _kernel_shell()
    filename_map = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if not filename_map:
        return _shipped_labels
    return {**_shipped_labels, **{name: f"Cell In[{count}]" for name, count in filename_map.items()}}


class RemoteTraceback(_StdRemoteTraceback):
    """The ``__cause__`` of an exception re-raised from another process: renders the remote traceback.

    Is-a ``multiprocessing.pool.RemoteTraceback`` (``isinstance`` checks keep working); ``tb``
    is the rendered text framed as the stdlib frames it (``'\\n\"\"\"\\n...\"\"\"'``), computed
    when shown, so a kernel labels the frames of its cells.
    """

    def __init__(self, carrier: RemoteErrorCarrier | str) -> None:
        Exception.__init__(self, carrier)
        self.carrier = carrier

    @property  # type: ignore[override]
    def tb(self) -> str:
        text = self.carrier if isinstance(self.carrier, str) else self.carrier.render()
        return f'\n"""\n{text}"""'

    def __str__(self) -> str:
        return self.tb

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteTraceback, (self.carrier,))


def capture(exc: BaseException) -> RemoteErrorCarrier:
    """In the process where ``exc`` was raised: the carrier to send along with it."""
    return RemoteErrorCarrier.capture(exc)


def attach(exc: BaseException, carrier: RemoteErrorCarrier | str | None) -> BaseException:
    """In the receiver: make the remote traceback ``exc.__cause__`` (as the stdlib Pool does); returns ``exc``."""
    if carrier:
        exc.__cause__ = RemoteTraceback(carrier)
    return exc


def render(carrier: RemoteErrorCarrier) -> str:
    """The traceback text for this process (see :meth:`RemoteErrorCarrier.render`)."""
    return carrier.render()
