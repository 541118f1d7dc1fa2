"""``%%parallel``: run a cell's body in warm worker processes (kernel side).

Data flow::

    kernel main thread (the cell)                 warm Pool (nbproc.pool)          workers
    -----------------------------                 -----------------------          -------
    %%parallel -n 4 / --map x in EXPR
      parse options (UsageError if wrong)
      names the body reads (from its AST)
      their current values, serialized once
      CellJob ---------------------------------> imap_unordered(run_cell_reporting(job), tasks)
                                                   job sent once per worker ------> run_cell_reporting
      ParallelRun.collect():                                                         (see
        next(timeout) <---- CellOutcome(index, ok, value | traceback text) <------  _cell_runner)
        --fail-fast / --timeout: cancel the job (running workers replaced)
      results in index order -> cell result / --out NAME / ParallelError

    --bg: collect() runs on a thread "nbproc-parallel-bg" and the cell gets the ParallelRun.

The warm pool: started on first use, kept in this module, reused by every later run with the
same size and start method (a different one replaces it), stopped by ``%parallel --shutdown``,
``%unload_ext nbproc`` or the kernel's exit. Interrupting a run cancels its tasks (their workers
are terminated and replaced), so the pool stays usable.

Plug points for the notebook-runtime issue (output routing, tracebacks rendered with cell
source): worker lines are already prefixed ``[i]`` in the worker, and their tracebacks are
formatted there with the cell's lines; routing them into this cell from any thread is the
runtime layer's job (its set-up hook wraps the worker's streams; nothing here changes).
"""

from __future__ import annotations

import argparse
import ast
import atexit
import re
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from .. import serialization
from .._progress_display import listener_for
from ..context import TimeoutError
from ..exceptions import TaskCancelledError
from ..remote_error import RemoteErrorCarrier, attach, render
from ._cell_runner import CellFailed, CellJob, CellOutcome, run_cell_reporting

__all__ = ["ParallelError", "ParallelRun", "register", "shutdown_warm_pool", "warm_pool"]

PARALLEL_DOC = """Run the cell's body in warm worker processes (nbproc).

    %%parallel [-n N] [--start-method M] [--timeout S] [--fail-fast] [--bg] [--out NAME]
    %%parallel --map TARGETS in EXPR [options]
    %parallel --status | --shutdown

Without --map the body runs once in each of N workers (default: the CPU count) with
`worker_id` (0..N-1) and `n_workers` defined. With --map it runs once per item of EXPR
(evaluated in the notebook; TARGETS as in a for loop: `x` or `x, y`), spread over the
warm workers, with a progress bar; `worker_id` is then the item's position.

Every notebook name the body reads reaches the workers by value with its current value;
names the body defines stay in that run. The value of the body's last expression in each
run is collected in order and shown as the cell's result. Plain Python only (no magics).

Options:
  -n N                 number of workers (default: CPU count)
  --map T in EXPR      one run per item of EXPR (may come before or after other options)
  --out NAME           store the list of results in NAME instead of showing it; a failed
                       run's slot holds its exception
  --start-method M     fork, spawn or forkserver (default: nbproc's default)
  --timeout S          stop runs still going after S seconds (their workers are replaced)
  --fail-fast          stop the other runs at the first error
  --bg                 return at once with a handle (.get(), .ready(), .results)
  --status             show the warm pool (line magic)
  --shutdown           stop the warm pool (line magic)
  --cluster ADDRESS    run on the Dask cluster whose scheduler is at ADDRESS (needs
                       nbproc[dask]); -n defaults to the cluster's worker threads, and the
                       runs are spread by Dask (not necessarily one per worker); Dask
                       cannot stop a running task, so --timeout/--fail-fast/interrupt
                       abandon runs (their results are dropped) rather than stop them

Workers stay warm between cells: the pool starts on first use and is reused by later
cells with the same -n and --start-method; a cell with another size or method replaces it
(a --bg run still going on the old pool is then stopped).
"""

_OPTIONS_AFTER_MAP = re.compile(
    r"\s(?=(?:-n|--out|--start-method|--timeout|--fail-fast|--bg|--status|--shutdown|--cluster)(?:\s|=|$))"
)
# IPython's own names in the user namespace: never shipped to workers.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "_ih", "_oh", "_dh", "_", "__", "___"}
_IPYTHON_HISTORY = re.compile(r"_i{0,3}\d*$")

_warm_lock = threading.Lock()
_warm: Any = None
_warm_key: tuple[int, str] | None = None
_cluster_pools: dict[str, Any] = {}  # scheduler address -> nbproc.dask.Pool (under _warm_lock)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        from IPython.core.error import UsageError

        raise UsageError(f"%%parallel: {message}")


def _parser() -> _Parser:
    parser = _Parser(prog="%%parallel", add_help=False)
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--start-method", default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--fail-fast", action="store_true")
    parser.add_argument("--bg", action="store_true")
    parser.add_argument("--status", action="store_true")
    parser.add_argument("--shutdown", action="store_true")
    parser.add_argument("--cluster", default=None)
    return parser


def _usage(message: str) -> Exception:
    from IPython.core.error import UsageError

    return UsageError(f"%%parallel: {message}")


def parse_line(line: str) -> tuple[argparse.Namespace, str | None]:
    """The options of a magic line, and the ``--map`` spec as written (or None)."""
    spec = None
    match = re.search(r"(?:^|\s)--map(?:\s+|=)", line)
    if match:
        rest = line[match.end() :]
        cut = _OPTIONS_AFTER_MAP.search(rest)
        spec = (rest[: cut.start()] if cut else rest).strip()
        line = line[: match.start()] + " " + (rest[cut.start() :] if cut else "")
        if not spec:
            raise _usage("--map needs `TARGETS in EXPR`, e.g. --map x in range(10)")
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise _usage(str(exc)) from None
    options = _parser().parse_args(words)
    return options, spec


def split_map_spec(spec: str) -> tuple[str, str]:
    """``"x, y in zip(a, b)"`` -> ``("x, y", "zip(a, b)")``, checked as a ``for`` header would be."""
    try:
        loop = ast.parse(f"for {spec}:\n    pass").body[0]
    except SyntaxError:
        raise _usage(f"--map expects `TARGETS in EXPR` (as in a for loop), got {spec!r}") from None
    assert isinstance(loop, ast.For)
    return ast.unparse(loop.target), ast.unparse(loop.iter)


def names_read(tree: ast.AST) -> set[str]:
    """Every name the code reads anywhere (nested functions, comprehensions, decorators included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Load, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def globals_used(values: dict[str, Any], namespace: dict[str, Any]) -> set[str]:
    """Notebook names read, directly or through each other, by the notebook's functions and
    classes among ``values``.

    A pool worker keeps the notebook's functions in one ``__main__`` namespace (as the stdlib
    does) where a global it already holds is not overwritten; ``%%parallel`` promises current
    values, so these names are shipped too and installed there before the body runs.
    """
    found: set[str] = set()
    todo = [v for v in values.values() if _is_notebook_definition(v)]
    seen: set[int] = set()
    while todo:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        functions = [value] if not isinstance(value, type) else [v for v in vars(value).values() if callable(v)]
        for func in functions:
            code = getattr(func, "__code__", None)
            if code is None:
                continue
            for name in _code_names(code):
                if name in namespace and name not in found and _shippable(name):
                    found.add(name)
                    if _is_notebook_definition(namespace[name]):
                        todo.append(namespace[name])
    return found


def _is_notebook_definition(value: Any) -> bool:
    return callable(value) and getattr(value, "__module__", None) == "__main__"


def _code_names(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _shippable(name: str) -> bool:
    return not (name in _IPYTHON_NAMES or _IPYTHON_HISTORY.fullmatch(name) or name.startswith("__"))


def capture_values(names: set[str], namespace: dict[str, Any]) -> tuple[bytes, frozenset[str]]:
    """Serialize the current values of ``names`` found in ``namespace`` and of the globals the
    notebook functions among them read; name the culprit on failure. Also returns the latter
    names (to be installed in the workers' ``__main__``, see :func:`globals_used`)."""
    values = {name: namespace[name] for name in sorted(names) if name in namespace and _shippable(name)}
    main_names = globals_used(values, namespace)
    values.update((name, namespace[name]) for name in main_names)
    try:
        return serialization.dumps(values), frozenset(main_names)
    except Exception:  # noqa: BLE001 - find which name, and say so
        for name, value in values.items():
            try:
                serialization.dumps(value, what=f"notebook variable `{name}`")
            except Exception as exc:  # noqa: BLE001
                raise _usage(f"cannot send `{name}` to the workers: {exc}") from None
        raise


# ------------------------------------------------------------------------------ the warm pool
def warm_pool(n: int, start_method: str) -> Any:
    """The warm pool of size ``n`` and this start method, started (or replaced) if needed."""
    global _warm, _warm_key
    from .. import get_context

    with _warm_lock:
        key = (n, start_method)
        if _warm is not None and (_warm_key != key or _warm._state != "RUN"):
            _warm.terminate()
            _warm = None
        if _warm is None:
            _warm = get_context(start_method).Pool(n)
            _warm_key = key
        return _warm


def cluster_pool(address: str) -> Any:
    """The warm :class:`nbproc.dask.Pool` connected to the scheduler at ``address`` (made on first use)."""
    with _warm_lock:
        pool = _cluster_pools.get(address)
        if pool is None or pool._state != "RUN":
            try:
                from ..dask import Pool as DaskPool
            except ImportError as exc:
                raise _usage(f"--cluster needs Dask distributed (pip install nbproc[dask]): {exc}") from None
            try:
                pool = _cluster_pools[address] = DaskPool(address=address)
            except (OSError, TimeoutError, ValueError) as exc:
                raise _usage(f"--cluster: cannot connect to {address}: {exc}") from None
        return pool


def current_warm_pool() -> Any:
    return _warm


def shutdown_warm_pool() -> bool:
    """Stop the warm pool (and disconnect the ``--cluster`` pools); False if there was none."""
    global _warm, _warm_key
    with _warm_lock:
        pool, _warm, _warm_key = _warm, None, None
        clusters = list(_cluster_pools.values())
        _cluster_pools.clear()
    for cluster in clusters:  # our connections to the clusters; the clusters themselves stay up
        cluster.terminate()
    if pool is None:
        return bool(clusters)
    pool.terminate()
    return True


atexit.register(shutdown_warm_pool)


# ------------------------------------------------------------------------------ one run
class ParallelError(Exception):
    """Some runs of a ``%%parallel`` cell failed; ``results`` holds every slot (exceptions where failed).

    In a notebook it shows each failed run's traceback — formatted in the worker, with the
    cell's source lines — labelled with its worker (``[i]``).
    """

    def __init__(self, message: str, results: list[Any], tracebacks: dict[int, RemoteErrorCarrier | str]) -> None:
        super().__init__(message)
        self.results = results
        self.tracebacks = tracebacks

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of this exception's own traceback (the magic's internals)."""
        lines: list[str] = []
        for index, carrier in sorted(self.tracebacks.items()):
            text = carrier if isinstance(carrier, str) else render(carrier)
            lines.append(f"[{index}] " + "-" * 60)
            lines.extend(text.rstrip("\n").splitlines())
        lines.append(f"{type(self).__name__}: {self}")
        return lines


class ParallelRun:
    """A ``%%parallel`` run in progress; what ``--bg`` returns (an AsyncResult-like handle).

    ``results`` fills in as runs finish (None until then; an exception where one failed).
    """

    def __init__(
        self,
        pool: Any,
        job: CellJob,
        tasks: list[tuple[int, Any]],
        *,
        timeout: float | None,
        fail_fast: bool,
        progress: Any,
    ) -> None:
        self.pool = pool
        self.size = len(tasks)
        self.results: list[Any] = [None] * self.size
        self.tracebacks: dict[int, RemoteErrorCarrier | str] = {}  # failed runs' errors, rendered when shown
        self.pids: dict[int, int] = {}
        self.elapsed: float | None = None
        self._timeout = timeout
        self._fail_fast = fail_fast
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        self._iterator = pool.imap_unordered(partial(run_cell_reporting, job), tasks, progress=progress)

    def __repr__(self) -> str:
        state = "running" if not self.ready() else ("ok" if self.successful() else f"{len(self.tracebacks)} failed")
        return f"<ParallelRun {self.size} runs, {state}>"

    def ready(self) -> bool:
        return self._done.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None and not self.tracebacks

    def wait(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> list[Any]:
        """The results in order; raises :class:`ParallelError` if any run failed,
        :class:`nbproc.TimeoutError` if not done within ``timeout``."""
        if not self._done.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        self._raise_failures()
        return list(self.results)

    def cancel(self) -> None:
        """Stop the runs still going (their workers are replaced)."""
        self._iterator._cancel("cancelled")

    def _raise_failures(self) -> None:
        if self.tracebacks:
            failed = sorted(self.tracebacks)
            first = self.results[failed[0]]
            raise ParallelError(
                f"{len(failed)} of {self.size} runs failed (first: [{failed[0]}] {type(first).__name__}: {first})",
                list(self.results),
                dict(self.tracebacks),
            )

    def collect(self) -> None:
        """Wait for every run, honouring ``--timeout`` and ``--fail-fast``.

        KeyboardInterrupt while waiting cancels the runs (their workers are terminated and
        replaced, the pool stays usable) and propagates.
        """
        try:
            self._collect()
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self.elapsed = time.perf_counter() - self._started
            self._done.set()

    def _collect(self) -> None:
        it = self._iterator
        pending = set(range(self.size))
        unplaced: list[BaseException] = []  # a worker died (or its outcome could not be sent): index unknown
        deadline = None if self._timeout is None else self._started + self._timeout
        stop: Callable[[int], BaseException] | None = None
        while pending and len(unplaced) < len(pending):
            remaining = None if deadline is None else max(deadline - time.perf_counter(), 0)
            try:
                outcome = it.next(remaining)
            except StopIteration:
                break
            except CellFailed as failed:  # the body raised: counted as failed by the pool and its bar
                outcome = failed.outcome
            except TimeoutError:
                it._cancel(f"stopped by --timeout {self._timeout:g}s")
                stop = partial(_timed_out, self._timeout)
                break
            except Exception as exc:  # noqa: BLE001 - e.g. WorkerLostError: no index travels with it
                unplaced.append(exc)
                continue
            self._record(outcome)
            pending.discard(outcome.index)
            if not outcome.ok and self._fail_fast and pending:
                it._cancel("stopped by --fail-fast")
                stop = _stopped_by_fail_fast
                break
        for index in sorted(pending):
            exc = unplaced.pop(0) if unplaced else (stop(index) if stop else TaskCancelledError("no result"))
            self.results[index] = exc
            self.tracebacks[index] = f"{type(exc).__name__}: {exc}\n"

    def _record(self, outcome: CellOutcome) -> None:
        self.pids[outcome.index] = outcome.pid
        if outcome.ok:
            self.results[outcome.index] = outcome.value
            return
        self.results[outcome.index] = attach(outcome.value, outcome.carrier)  # __cause__: the worker's traceback
        self.tracebacks[outcome.index] = outcome.carrier or f"{type(outcome.value).__name__}: {outcome.value}\n"


# How long a run waits for a new pool's workers to be up before submitting anyway: far longer
# than a spawn start-up on a loaded machine; a pool whose workers cannot start fails its tasks
# by itself, so this bounds only how long "once per worker" is insisted upon.
READY_WAIT = 60.0


def _wait_until_ready(pool: Any, n: int) -> None:
    """Wait until the pool's ``n`` workers are all up, so that the ``n`` runs go one to each
    worker (the pool gives a task to an idle worker first, and a worker that is still starting
    is not idle); instant on a warm pool. Workers busy with a ``--bg`` run are not waited for.
    KeyboardInterrupt while waiting propagates (nothing was submitted)."""
    deadline = time.monotonic() + READY_WAIT
    while time.monotonic() < deadline:
        workers = pool.statistics().workers
        if len(workers) >= n and not any(w.state == "starting" for w in workers):
            return
        time.sleep(0.005)


def _timed_out(seconds: float, index: int) -> BaseException:
    return TimeoutError(f"run [{index}] exceeded --timeout {seconds:g}s and its worker was stopped")


def _stopped_by_fail_fast(index: int) -> BaseException:
    return TaskCancelledError(f"run [{index}] was stopped by --fail-fast")


def _cell_filename(shell: Any, source: str, count: int) -> str:
    """A filename for the cell whose lines the kernel knows and labels ``Cell In[N]``.

    IPython's compiler cache is the kernel's own registry of cell sources (linecache) and
    labels; the magic's cell is registered there as written, magic line included.
    """
    compiler = getattr(shell, "compile", None)
    if compiler is not None and hasattr(compiler, "cache"):
        return compiler.cache(source, count)
    return f"<%%parallel In[{count}]-{uuid.uuid4().hex[:6]}>"


def start_run(shell: Any, line: str, cell: str) -> tuple[ParallelRun, Any]:
    """Parse, capture the names, submit; returns the run and the parsed options."""
    options, spec = parse_line(line)
    if options.cluster is not None and options.start_method is not None:
        raise _usage("--start-method does not apply with --cluster: Dask starts its own workers")
    if options.status or options.shutdown:
        raise _usage("--status and --shutdown are line-magic options: use `%parallel --status`")
    if options.n is not None and options.n < 1:
        raise _usage(f"-n must be at least 1, not {options.n}")
    if options.timeout is not None and options.timeout <= 0:
        raise _usage(f"--timeout must be a positive number of seconds, not {options.timeout:g}")
    if options.out is not None and not options.out.isidentifier():
        raise _usage(f"--out needs a variable name, not {options.out!r}")
    from .. import get_all_start_methods, get_start_method
    from ..pool import _cpu_count

    method = options.start_method or get_start_method()
    if method not in get_all_start_methods():
        raise _usage(f"--start-method must be one of {', '.join(get_all_start_methods())}, not {method!r}")
    count = getattr(shell, "execution_count", 1) - 1  # IPython counts the cell before running it
    source = f"%%parallel {line}\n{cell}"
    filename = _cell_filename(shell, source, count)
    try:
        tree = ast.parse(cell, filename)
    except SyntaxError as exc:
        raise _usage(f"the body is not valid Python: {exc}") from None
    names = names_read(tree)
    targets = None
    pool = cluster_pool(options.cluster) if options.cluster is not None else None
    n = options.n or (pool._processes if pool is not None else _cpu_count())
    if spec is not None:
        targets, expr = split_map_spec(spec)
        names -= names_read(ast.parse(targets))
        try:
            items = list(eval(expr, shell.user_ns))  # noqa: S307 - the user's own expression, in their namespace
        except Exception as exc:  # noqa: BLE001 - reported as a usage problem of --map
            raise _usage(f"--map: evaluating {expr!r} failed: {type(exc).__name__}: {exc}") from None
        tasks = list(enumerate(items))
        progress = listener_for(True, f"%%parallel --map {spec}")  # --map always draws its bar
    else:
        tasks = [(i, None) for i in range(n)]
        progress = listener_for(None, f"%%parallel -n {n}") or False  # as nbproc.config says
    names -= {"worker_id", "n_workers"}
    values, main_names = capture_values(names, shell.user_ns)
    job = CellJob(
        filename=filename,
        source=source,
        body_line=2,
        values=values,
        main_names=main_names,
        n_workers=n,
        targets=targets,
    )
    if pool is None:
        pool = warm_pool(n, method)
        if spec is None:
            _wait_until_ready(pool, n)
    run = ParallelRun(pool, job, tasks, timeout=options.timeout, fail_fast=options.fail_fast, progress=progress)
    return run, options


def parallel_magic(shell: Any, line: str, cell: str | None) -> Any:
    """The body of ``%parallel`` / ``%%parallel`` (see :data:`PARALLEL_DOC`)."""
    if cell is None:
        options, spec = parse_line(line)
        if options.shutdown:
            print("stopped the warm pool" if shutdown_warm_pool() else "no warm pool to stop")
            return None
        if options.status:
            pool = current_warm_pool()
            if pool is None:
                print("no warm pool (the first %%parallel cell starts one)")
                return None
            return pool
        raise _usage("as a line magic, %parallel takes --status or --shutdown; use %%parallel to run a cell")
    run, options = start_run(shell, line, cell)
    if options.bg:
        thread = threading.Thread(target=_collect_quietly, args=(run,), name="nbproc-parallel-bg", daemon=True)
        thread.start()
        if options.out:
            shell.user_ns[options.out] = run.results  # filled in place as runs finish
        return run
    run.collect()
    if options.out:
        shell.user_ns[options.out] = list(run.results)
    run._raise_failures()
    return None if options.out else list(run.results)


def _collect_quietly(run: ParallelRun) -> None:
    try:
        run.collect()
    except BaseException:  # noqa: BLE001 - kept in the handle; get() raises it
        pass


def register(ipython: Any) -> None:
    """Register ``%parallel`` / ``%%parallel`` on this shell."""

    def magic(line: str, cell: str | None = None) -> Any:
        return parallel_magic(ipython, line, cell)

    magic.__doc__ = PARALLEL_DOC
    ipython.register_magic_function(magic, "line_cell", "parallel")
