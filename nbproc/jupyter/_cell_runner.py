"""The worker side of ``%%parallel``: run a cell's body once, in a pool worker.

Imported in workers, so it imports neither IPython nor ipywidgets. What crosses the boundary:

    kernel (magic)                                        pool worker
    --------------                                        -----------
    CellJob(source, names' values, targets...)  -- sent once per worker as the task function
    (index, item) per task                      -->  run_cell(job, task)
                                                       exec the body in a fresh namespace
    CellOutcome(index, ok, value | error+carrier) <--  (stdout/stderr lines prefixed "[i] ")

Every task runs in a fresh namespace holding only the names the notebook shipped (so nothing
defined by one run leaks into the next), ``worker_id``, ``n_workers`` and, with ``--map``,
the item's targets. The job (holding the shipped values, serialized once by the kernel) is
the pool task's function, so the pool sends it once per worker, and the worker decodes and
compiles it once per run. The body is compiled under the cell's filename (the one the kernel
registered for it) with line numbers of the cell, and its lines go into the worker's
``linecache`` too. An error travels as :mod:`nbproc.remote_error`'s carrier (frames + the
worker's text), which the kernel renders as ``Cell In[N], line L`` with the cell's source.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..remote_error import RemoteErrorCarrier, capture

__all__ = ["CellFailed", "CellJob", "CellOutcome", "run_cell", "run_cell_reporting", "split_body"]

#: Name under which a ``--map`` item reaches the body before it is unpacked into the targets.
ITEM_NAME = "__nbproc_item__"


@dataclass
class CellJob:
    """What every task of one ``%%parallel`` run needs: sent once per worker, as its function."""

    filename: str  #: the "file" of the cell in tracebacks, e.g. ``<%%parallel In[3]>``
    source: str  #: the whole cell (magic line included), for linecache
    body_line: int  #: line of the cell where the body starts (1-based)
    values: bytes  #: the notebook's names the body reads, with their values, serialized once
    n_workers: int
    main_names: frozenset[str] = frozenset()  #: values to (over)write in the worker's ``__main__``
    targets: str | None = None  #: ``--map`` targets as written, e.g. ``"x, y"``
    compiled: Any = field(default=None, repr=False, compare=False)  #: worker-side cache
    loaded: Any = field(default=None, repr=False, compare=False)  #: worker-side cache of ``values``

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["compiled"] = state["loaded"] = None  # rebuilt once in each worker (the pool caches the job)
        return state


@dataclass
class CellOutcome:
    """One task's result: the body's last expression value, or its error and the error's carrier."""

    index: int
    ok: bool
    value: Any = None  #: the last expression's value (ok), or the exception (a stand-in if it cannot be sent)
    carrier: RemoteErrorCarrier | None = None  #: the error's frames and text (not ok)
    pid: int = 0


def split_body(body: str, filename: str, first_line: int) -> tuple[Any, Any]:
    """Compile ``body`` as statements plus, if it ends with an expression, that expression apart.

    Line numbers are shifted to the cell's (the body starts on line ``first_line``).
    """
    tree = ast.parse(body, filename, "exec")
    ast.increment_lineno(tree, first_line - 1)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    statements = compile(tree, filename, "exec")
    expression = compile(last, filename, "eval") if last is not None else None
    return statements, expression


class _Prefixed:
    """A text stream that writes ``prefix`` at the start of each line, flushing at line ends,
    so a worker's output reaches the notebook line by line, attributed to its worker."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        parts = text.split("\n")
        out = []
        for i, part in enumerate(parts):
            if i:
                out.append("\n")
                self._at_line_start = True
            if part:
                if self._at_line_start:
                    out.append(self._prefix)
                    self._at_line_start = False
                out.append(part)
        self._stream.write("".join(out))
        if "\n" in text:
            self._stream.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _failure(index: int, exc: BaseException) -> CellOutcome:
    """The outcome of a run that raised; the traceback starts in the cell, not in this module."""
    import os

    from .. import serialization

    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is run_cell.__code__:
        exc = exc.with_traceback(tb.tb_next)
    carrier = capture(exc)
    try:
        serialization.dumps(exc)  # it may hold something unpicklable: then a stand-in goes back
    except Exception:  # noqa: BLE001
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return CellOutcome(index, False, exc, carrier, os.getpid())


def run_cell(job: CellJob, task: tuple[int, Any]) -> CellOutcome:
    """Run the body for task ``(index, item)`` (item only with ``--map``); never raises."""
    import os

    from .. import serialization

    index, item = task
    linecache.cache[job.filename] = (len(job.source), None, job.source.splitlines(True), job.filename)
    if job.compiled is None:
        try:
            body = "\n".join(job.source.splitlines()[job.body_line - 1 :])
            job.loaded = serialization.loads(job.values)  # e.g. a module the worker cannot import
            main = sys.modules["__main__"].__dict__  # where the notebook's functions find their globals
            main.update((name, job.loaded[name]) for name in job.main_names)
            job.compiled = split_body(body, job.filename, job.body_line)
        except Exception as exc:  # noqa: BLE001 - reported like an error of the body
            return _failure(index, exc)
    statements, expression = job.compiled
    namespace: dict[str, Any] = {"__name__": "__parallel__", "__builtins__": builtins}
    namespace.update(job.loaded)
    namespace["worker_id"] = index
    namespace["n_workers"] = job.n_workers
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Prefixed(sys.stdout, f"[{index}] "), _Prefixed(sys.stderr, f"[{index}] ")
    try:
        if job.targets is not None:
            namespace[ITEM_NAME] = item
            exec(f"{job.targets} = {ITEM_NAME}", namespace)  # noqa: S102 - unpacks like a for loop would
            del namespace[ITEM_NAME]
        exec(statements, namespace)  # noqa: S102 - running the user's cell is the point
        value = eval(expression, namespace) if expression is not None else None  # noqa: S307
    except BaseException as exc:  # noqa: BLE001 - reported to the notebook, labelled with the worker
        return _failure(index, exc)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            sys.stdout, sys.stderr = saved
    return CellOutcome(index, True, value, "", os.getpid())


class CellFailed(Exception):  # noqa: N818 - it carries an outcome, not an error of its own
    """A run's failure travelling as the pool task's error, so the pool counts it as failed.

    The pool's progress bar and ``statistics()`` count a task as failed only when it raises;
    a run that caught its error and returned it would end the bar "done" over failed runs.
    The magic unwraps :attr:`outcome` (the body's own error with the cell-labelled carrier).
    """

    def __init__(self, outcome: CellOutcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome

    def __str__(self) -> str:
        return f"run [{self.outcome.index}] failed: {type(self.outcome.value).__name__}: {self.outcome.value}"


def run_cell_reporting(job: CellJob, task: tuple[int, Any]) -> CellOutcome:
    """:func:`run_cell` for the pool: a failed run raises :class:`CellFailed` carrying its outcome."""
    outcome = run_cell(job, task)
    if not outcome.ok:
        raise CellFailed(outcome)
    return outcome
