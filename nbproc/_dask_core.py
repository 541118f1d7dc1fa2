"""The Dask engine: nbproc's Pool API running its tasks on a Dask distributed cluster.

Data flow (the facade, :class:`nbproc.dask.Pool`, chunks and serializes exactly as a local
Pool does; only where a task runs differs)::

    callers / imap feeder          launcher thread            collector thread          Dask worker (any host)
    ---------------------          ---------------            ----------------          ----------------------
    prepare_function: func bytes
      (small: sent in each task;
       large: one payload task)
    make_task: args bytes
    submit --> pending deque -----> while pending and room:
                                      one client.map(batch) --------------------------> loads func (cached)
                                                                                         run_task(func, kind, args)
                                                               next_batch(as_completed) <-- bytes(ok, value|Failure,
                                    <-- room freed (notify) -- one gather for the batch            captured output)
                                                               output -> the cell / stdout
                                                               sink.done(...)  (callbacks run here)

At most ``limit`` futures exist at once (:data:`INFLIGHT_PER_SLOT` per worker thread): a
100,000-task ``imap`` is 100,000 small byte strings in the pending deque, never 100,000
futures on the scheduler. Callers only queue; the launcher turns what is pending into one
``client.map`` whenever a batch's worth of room is free (:data:`REFILL_FRACTION`), so a loop
of ``apply_async`` calls costs the scheduler one ``update_graph`` per batch, not per call.
Everything a task needs crosses as bytes made by :mod:`nbproc.serialization`, so
cell-defined functions, lambdas, closures and classes work as in a local pool, whatever
Dask's own serializers would do; Dask only moves bytes.

Failure modes, and what the caller sees:

- the task raises: the exception, with the worker's traceback (cell lines in a kernel) as
  ``__cause__`` — the same :class:`Failure` carrier as a local pool;
- the result cannot be serialized: :class:`MaybeEncodingError`, as the stdlib's;
- a Dask worker dies: Dask re-runs its tasks elsewhere; after its ``allowed-failures`` the
  task fails with :class:`WorkerLostError` whose ``__cause__`` is Dask's ``KilledWorker``;
- ``terminate()`` / KeyboardInterrupt: the futures are cancelled and outstanding results raise
  :class:`TaskCancelledError` at once. Dask cannot interrupt a task that already runs in a
  worker thread: it runs to its end there and its result is dropped.

Worker output: what a task writes through ``sys.stdout``/``sys.stderr`` (``print``, logging
to a stream handler set up on those) is captured per task in the worker and shown by the
caller when the result arrives: in a kernel in the cell that submitted the job, otherwise on
the caller's ``sys.stdout``/``sys.stderr``. Output written to file descriptors 1 and 2
directly (C extensions, subprocesses) stays in the worker's own log, as Dask does.
"""

from __future__ import annotations

import itertools
import sys
import threading
import uuid
from collections import OrderedDict, deque
from typing import Any

from . import serialization
from ._pool_engine import CLOSE, RUN, TERMINATE, Failure, JobRegistry, JobSink, dump_outcome, run_task
from .exceptions import InitializerError, TaskCancelledError, WorkerLostError
from .progress import PoolStatistics

__all__ = ["DaskCore"]

# Futures in flight per worker thread. Dask's scheduler queues what its workers cannot start
# yet, so a deep window costs only scheduler memory, while each refill costs an update_graph
# and a gather whatever its size: 32 per slot keeps refills large (a few per thousand
# one-item tasks) and still bounds the futures of a huge map; more would leave more queued
# work behind a cancel or terminate.
INFLIGHT_PER_SLOT = 32
# ... but never fewer than this, so that a small cluster still gets large refills.
MIN_INFLIGHT = 128
# Refill the window only once this fraction of it is free (unless every pending task fits):
# each client.map is one update_graph on the scheduler, whose fixed cost dominates small
# batches; waiting for more of the window to be free would leave workers idle meanwhile.
REFILL_FRACTION = 4
# A function (or initializer) serialized to at most this many bytes travels inside every task
# that uses it; a larger one is held on the cluster once and fetched by each worker once. The
# trade: bytes per task through the scheduler vs one dependency per task (see DaskCore._hold).
INLINE_PAYLOAD_BYTES = 4096
# Distinct functions the client keeps on the cluster (LRU); a loop of apply_async(f) reuses one.
RECENT_FUNCTIONS = 16
# Functions a worker process keeps deserialized, over all pools that use it (LRU).
WORKER_FUNCTION_CACHE = 64
# A cancelled future raises its cancellation at once; this only bounds a client that is closing.
CANCEL_REASON_TIMEOUT = 1.0
# How long terminate() waits for the collector thread to see its cancelled futures.
COLLECTOR_JOIN_TIMEOUT = 5.0


# --------------------------------------------------------------------------------------------
# Worker side: runs inside a Dask worker process, in one of its task threads.
# --------------------------------------------------------------------------------------------

_worker_lock = threading.Lock()
_functions: OrderedDict[tuple[str, int], Any] = OrderedDict()  # (pool token, func id) -> function | Failure
_initialized: dict[str, Failure | None] = {}  # pool token -> the initializer's failure, if it failed
_task_output = threading.local()  # .chunks: list of (stream name, text) while an nbproc task runs


class _StreamSwitch:
    """A Dask worker's ``sys.stdout``/``sys.stderr``: inside an nbproc task, writes go to the
    task's capture (Dask worker threads share one ``sys.stdout``); elsewhere they go through."""

    def __init__(self, name: str, target: Any) -> None:
        self._name = name
        self._target = target

    def write(self, text: str) -> int:
        chunks = getattr(_task_output, "chunks", None)
        if chunks is None:
            return self._target.write(text)
        chunks.append((self._name, text))
        return len(text)

    def flush(self) -> None:
        if getattr(_task_output, "chunks", None) is None:
            self._target.flush()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target, attr)


def _install_stream_switches() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _StreamSwitch):
            setattr(sys, name, _StreamSwitch(name, stream))


def _merged(chunks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive writes to the same stream as one text (``print`` writes the end separately)."""
    merged: list[tuple[str, str]] = []
    for name, text in chunks:
        if merged and merged[-1][0] == name:
            merged[-1] = (name, merged[-1][1] + text)
        else:
            merged.append((name, text))
    return merged


def _function(token: str, func_id: int, payload: bytes) -> Any:
    key = (token, func_id)
    with _worker_lock:
        func = _functions.get(key)
        if func is not None:
            _functions.move_to_end(key)
            return func
    try:
        func = serialization.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - each task using it reports this
        func = Failure.capture(exc)
    with _worker_lock:
        _functions[key] = func
        while len(_functions) > WORKER_FUNCTION_CACHE:
            _functions.popitem(last=False)
    return func


def _initializer_failure(token: str, init_payload: bytes | None) -> Failure | None:
    """Run the pool's initializer once per worker process (under the lock: once, even with threads)."""
    if init_payload is None:
        return None
    with _worker_lock:
        if token not in _initialized:
            try:
                initializer, initargs = serialization.loads(init_payload)
                initializer(*initargs)
                _initialized[token] = None
            except BaseException as exc:  # noqa: BLE001 - every task of the pool on this worker reports it
                _initialized[token] = Failure.capture(exc)
        return _initialized[token]


def _payload(data: bytes) -> bytes:
    """The Dask task that holds a function's (or initializer's) bytes on the cluster."""
    return data


def _run_on_worker(
    token: str, func_id: int, func_payload: bytes, init_payload: bytes | None, kind: int, args_payload: bytes
) -> bytes:
    """The Dask task: run one nbproc task; return ``dump_outcome(ok, value | Failure, output)``.

    Never raises for the user's code (its exception is the outcome): a Dask-level error then
    means the cluster lost the task, not that the function failed.
    """
    _install_stream_switches()
    _task_output.chunks = chunks = []
    try:
        failed_init = _initializer_failure(token, init_payload)
        if failed_init is not None:
            error = InitializerError(f"the pool's initializer failed on this Dask worker: {failed_init.exc!r}")
            return dump_outcome(False, Failure(error, failed_init.tb), _merged(chunks))
        func = _function(token, func_id, func_payload)
        if isinstance(func, Failure):
            return dump_outcome(False, func, _merged(chunks))
        try:
            args = serialization.loads(args_payload)
        except BaseException as exc:  # noqa: BLE001 - e.g. a class the worker cannot import
            return dump_outcome(False, Failure.capture(exc), _merged(chunks))
        ok, value = run_task(func, kind, args)
        return dump_outcome(ok, value, _merged(chunks))
    finally:
        _task_output.chunks = None


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


class DaskFunction:
    """A task function as the tasks that use it name it: its bytes themselves when small, else
    a payload task on the cluster that they depend on (see :meth:`DaskCore._hold`)."""

    __slots__ = ("id", "source", "route")

    def __init__(self, func_id: int, source: Any, route: Any) -> None:
        self.id = func_id
        self.source = source  # bytes, or a Future whose value is the bytes
        self.route = route  # the kernel cell the call came from (None outside a kernel)


class DaskTask:
    """One apply call or one chunk, serialized, waiting for (or holding) a Dask future."""

    __slots__ = ("sink", "job", "index", "func", "kind", "payload", "nitems", "future")

    def __init__(self, sink: JobSink, index: int, func: DaskFunction, kind: int, payload: bytes, nitems: int) -> None:
        self.sink = sink
        self.job: int = sink.job
        self.index = index
        self.func = func
        self.kind = kind
        self.payload = payload
        self.nitems = nitems
        self.future: Any = None


def _current_route() -> Any:
    """In a kernel: the cell executing now, for the tasks' output; else None (IPython never imported)."""
    if "ipykernel" not in sys.modules:
        return None
    from .jupyter import output

    return output.current_parent()


def _show_output(route: Any, chunks: list[tuple[str, str]]) -> None:
    if route is not None:
        from .jupyter import output

        for name, text in chunks:
            output.send_stream(name, text, route)
        return
    for name, text in chunks:
        stream = getattr(sys, name)
        stream.write(text)
        stream.flush()


class _CancelledByDask:
    """The outcome of a future Dask cancelled without our asking (e.g. the scheduler is gone)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _cancel_reason(future: Any) -> str:
    """Dask's reason for cancelling ``future`` ("scheduler-connection-lost"...), read without a round trip."""
    try:
        future.result(timeout=CANCEL_REASON_TIMEOUT)
    except BaseException as exc:  # noqa: BLE001 - the cancellation is what we are reading
        return str(getattr(exc, "reason", None) or exc or type(exc).__name__)
    return "unknown reason"


class DaskCore:
    """Runs a Pool's tasks on a Dask cluster through ``client`` (see the module docstring).

    ``owned`` are the objects this engine closes when it ends (the Client and LocalCluster
    it made itself); a Client given by the user is left open.
    """

    def __init__(self, client: Any, owned: list[Any], slots: int, initializer: Any, initargs: tuple, name: str) -> None:
        from distributed import as_completed

        self.name = name
        self.processes = slots
        self.state = RUN
        self.jobs = JobRegistry()
        self.listeners: list[Any] = []
        self.client = client
        self._owned = owned
        self._token = uuid.uuid4().hex
        self._limit = max(MIN_INFLIGHT, slots * INFLIGHT_PER_SLOT)
        self._refill = max(1, self._limit // REFILL_FRACTION)
        self._cond = threading.Condition()  # guards everything below
        self._pending: deque[DaskTask] = deque()
        self._running: dict[str, DaskTask] = {}  # future key -> task
        self._tracked = 0  # futures handed to as_completed and not yet collected
        self._launching = 0  # futures being created by some thread right now
        self._feeders = 0
        self._cancelled: set[int] = set()
        self._keys = itertools.count()
        self._func_ids = itertools.count()
        self._recent: OrderedDict[bytes, DaskFunction] = OrderedDict()
        self._shut_down = False
        self._tasks_done = self._tasks_failed = 0  # statistics (collector thread; read under _cond)
        self._init_source = None  # the initializer and its arguments (bytes, or on the cluster once)
        if initializer is not None:
            payload = serialization.dumps((initializer, tuple(initargs)), what="initializer passed to Pool()")
            self._init_source = self._hold(payload)
        self._completed = as_completed(loop=client.loop)
        self._collector = threading.Thread(target=self._collect, name=f"nbproc-dask-{name}", daemon=True)
        self._launcher = threading.Thread(target=self._launch_loop, name=f"nbproc-dask-{name}-launch", daemon=True)
        self._collector.start()
        self._launcher.start()

    # ---------------------------------------------------------------- caller-thread API
    def prepare_function(self, func: Any, what: str) -> DaskFunction:
        """Serialize ``func`` and put it on the cluster (once per distinct function among recent calls)."""
        payload = serialization.dumps(func, what=what)
        route = _current_route()
        with self._cond:
            entry = self._recent.get(payload)
            if entry is not None and entry.route is route:
                self._recent.move_to_end(payload)
                return entry
        entry = DaskFunction(next(self._func_ids), self._hold(payload), route)
        with self._cond:
            self._recent[payload] = entry
            while len(self._recent) > RECENT_FUNCTIONS:
                self._recent.popitem(last=False)
        return entry

    def make_task(
        self,
        sink: JobSink,
        index: int,
        func: DaskFunction,
        kind: int,
        args: Any,
        nitems: int,
        snapshot: bool,
        **options: Any,
    ) -> DaskTask:
        """Serialize one task's arguments now (raises :class:`SerializationError`); ``snapshot``
        needs nothing more here: the bytes are a copy already."""
        return DaskTask(sink, index, func, kind, serialization.dumps(args), nitems)

    def submit(self, tasks: list[DaskTask]) -> None:
        if not tasks:
            return
        with self._cond:
            if self.state != TERMINATE:
                self._pending.extend(tasks)
                tasks = []
            self._cond.notify_all()  # the launcher thread takes them (several calls' tasks at once)
        for task in tasks:
            task.sink.abort(TaskCancelledError("the pool was terminated"))

    def feeder_started(self) -> None:
        with self._cond:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._cond:
            self._feeders -= 1
            self._cond.notify_all()

    def cancel(self, job: int) -> None:
        """Drop the job's queued tasks and cancel its futures (a running task ends on its own)."""
        with self._cond:
            self._cancelled.add(job)
            self._pending = deque(t for t in self._pending if t.job != job)
            futures = [t.future for t in self._running.values() if t.job == job and t.future is not None]
            self._cond.notify_all()
        self._cancel_futures(futures)

    def close(self) -> None:
        with self._cond:
            if self.state == RUN:
                self.state = CLOSE
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        """After close: wait until every task is back, then release the cluster resources we own."""
        with self._cond:
            if self.state != TERMINATE:
                self._cond.wait_for(self._idle, timeout)
            done = self._idle() or self.state == TERMINATE
        if done:
            self._shutdown()

    def terminate(self) -> None:
        """Cancel everything now: outstanding results raise TaskCancelledError; owned resources close."""
        with self._cond:
            if self._shut_down:
                return
            self.state = TERMINATE
            pending, self._pending = self._pending, deque()
            futures = [t.future for t in self._running.values() if t.future is not None]
            self._cond.notify_all()
        self._cancel_futures(futures)
        error = "the pool was terminated before this task completed"
        for task in pending:
            task.sink.abort(TaskCancelledError(error))
        self.jobs.abort_all(lambda: TaskCancelledError(error))
        self._shutdown()

    def worker_processes(self) -> list[Any]:
        return []  # the workers are Dask's, possibly on other hosts

    def statistics(self) -> PoolStatistics:
        """A snapshot of this pool's side: ``running`` counts the futures handed to Dask (running or
        queued on the cluster), ``queued`` the tasks not yet handed over; no per-worker rows (the
        workers are Dask's: see its dashboard)."""
        with self._cond:
            queued, running = len(self._pending), len(self._running)
            done, failed = self._tasks_done, self._tasks_failed
        return PoolStatistics(
            name=self.name,
            start_method="dask",
            state=self.state,
            processes=self.processes,
            workers=(),
            queued=queued,
            running=running,
            done=done,
            failed=failed,
            jobs=len(self.jobs),
        )

    # ---------------------------------------------------------------- internals
    def _hold(self, payload: bytes) -> Any:
        """What tasks pass for ``payload``: the bytes themselves if small, else a future whose
        value they are, for tasks to depend on.

        Small bytes travel in each task's spec: a few hundred bytes per task cost the scheduler
        less than a dependency does (an edge to track, a who-has lookup per task), and tasks
        without dependencies are scheduled as Dask's own ``client.map`` tasks are. Larger ones
        (a closure over data) go to the cluster once, as a task, not ``client.scatter``:
        scattered data lives only on the workers that got it, and when they die Dask cancels
        every task depending on it; a task's bytes live in its spec on the scheduler, so Dask
        recomputes them elsewhere and the dependents carry on.
        """
        if len(payload) <= INLINE_PAYLOAD_BYTES:
            return payload
        return self.client.submit(_payload, payload, key=f"nbproc_payload-{self._token}-{next(self._keys)}", pure=False)

    def _idle(self) -> bool:
        return not self._pending and not self._running and not self._feeders and not self._launching

    def _cancel_futures(self, futures: list[Any]) -> None:
        if futures:
            try:
                self.client.cancel(futures)
            except Exception:  # noqa: BLE001 - the client is closing: the collector stops anyway
                pass

    def _room(self) -> int:
        """How many pending tasks may become futures now (``_cond`` held); 0: not yet."""
        room = self._limit - len(self._running) - self._launching
        if room <= 0 or not self._pending or self.state == TERMINATE:
            return 0
        if room < self._refill and room < len(self._pending):
            return 0  # wait for a batch's worth of room: one larger update_graph, not many
        return min(room, len(self._pending))

    def _launch_loop(self) -> None:
        """Launcher thread: whenever there are pending tasks and room, launch them as one batch.

        Callers only queue (``submit``): a loop of ``apply_async`` calls made while a batch is
        being launched becomes the next batch, one ``client.map`` for all of them.
        """
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._shut_down or self._room() > 0)
                if self._shut_down:
                    return
            self._launch()

    def _launch(self) -> None:
        """Turn pending tasks into futures while fewer than ``limit`` are in flight (launcher thread)."""
        from distributed import Future

        while True:
            with self._cond:
                room = self._room()
                if room == 0:
                    return
                batch = [self._pending.popleft() for _ in range(room)]
                self._launching += len(batch)
            launched = len(batch)
            futures: list[Future] = []
            try:
                # One client.map per batch: one message to the scheduler, far cheaper per task
                # than a submit() each.
                futures = self.client.map(
                    _run_on_worker,
                    [self._token] * len(batch),
                    [task.func.id for task in batch],
                    [task.func.source for task in batch],
                    [self._init_source] * len(batch),
                    [task.kind for task in batch],
                    [task.payload for task in batch],
                    key=[f"nbproc-{self._token}-{next(self._keys)}" for _ in batch],
                    pure=False,
                )
                for task, future in zip(batch, futures, strict=True):
                    task.future = future
            except BaseException as exc:  # noqa: BLE001 - e.g. the client is closed: fail these tasks
                futures = []
                for task in batch:
                    task.sink.done(task.index, False, exc, task.nitems)
                batch = []
            with self._cond:
                for task in batch:
                    self._running[task.future.key] = task
                self._launching -= launched
                terminated = self.state == TERMINATE
            if terminated:  # terminate() ran while this batch was launched: it did not see these
                self._cancel_futures(futures)
                return
            self._completed.update(futures)
            with self._cond:
                self._tracked += len(futures)
                self._cond.notify_all()

    def _collect(self) -> None:
        """Collector thread: take every finished future, fetch their outcomes in one round trip,
        hand each to its result; the room they free wakes the launcher."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._tracked > 0 or self._shut_down)
                if self._shut_down:
                    return  # terminated or joined: what is still tracked was cancelled
            try:
                batch = self._completed.next_batch(block=True)
            except StopIteration:  # pragma: no cover - _tracked counts only what as_completed holds
                continue
            with self._cond:
                self._tracked -= len(batch)
                tasks = [self._running.pop(future.key, None) for future in batch]
                self._cond.notify_all()
            # (the launcher, woken above, gives the cluster new work while we unpack these)
            live = [
                (task, future)
                for task, future in zip(tasks, batch, strict=True)
                if task is not None and task.job not in self._cancelled and self.state != TERMINATE
            ]
            outcomes = self._fetch([future for _, future in live])
            for (task, future), outcome in zip(live, outcomes, strict=True):
                self._deliver(task, future, outcome)
            del tasks, batch, live, outcomes

    def _fetch(self, futures: list[Any]) -> list[Any]:
        """The finished futures' bytes in one gather; the others' Dask error or cancellation."""
        finished = [f for f in futures if f.status == "finished"]
        values: dict[str, Any] = {}
        if finished:
            try:
                values = dict(zip((f.key for f in finished), self.client.gather(finished), strict=True))
            except BaseException:  # noqa: BLE001 - one of them vanished meanwhile: ask each
                for future in finished:
                    try:
                        values[future.key] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - reported as that task's error
                        values[future.key] = exc
        outcomes = []
        for future in futures:
            if future.key in values:
                outcomes.append(values[future.key])
            elif future.status == "cancelled":
                outcomes.append(_CancelledByDask(_cancel_reason(future)))
            else:
                try:
                    outcomes.append(future.exception())
                except BaseException as exc:  # noqa: BLE001 - e.g. the client is closing
                    outcomes.append(exc)
        return outcomes

    def _deliver(self, task: DaskTask, future: Any, outcome: Any) -> None:
        if isinstance(outcome, bytes):
            try:
                ok, value, output = serialization.loads(outcome)
            except BaseException as exc:  # noqa: BLE001 - e.g. the result's class is not importable here
                ok, value, output = False, exc, None
            else:
                if not ok and isinstance(value, Failure):
                    value = value.rebuild()
            if output:
                _show_output(task.func.route, output)
        elif isinstance(outcome, _CancelledByDask):
            ok, value = (
                False,
                TaskCancelledError(
                    f"task {task.index} of {task.sink.label} was cancelled by the Dask cluster ({outcome.reason})"
                ),
            )
        else:
            ok, value = False, self._lost_error(task, outcome)
        with self._cond:
            if ok:
                self._tasks_done += 1
            else:
                self._tasks_failed += 1
        task.sink.done(task.index, ok, value, task.nitems)

    def _lost_error(self, task: DaskTask, outcome: Any) -> BaseException:
        """A Dask-level failure (the task never reported an outcome of its own)."""
        exc = outcome if isinstance(outcome, BaseException) else RuntimeError(repr(outcome))
        if type(exc).__name__ == "KilledWorker":
            error = WorkerLostError(
                f"task {task.index} of {task.sink.label} was lost: the Dask workers running it died ({exc})"
            )
            error.__cause__ = exc
            return error
        return exc

    def _shutdown(self) -> None:
        """Stop the collector and close what we own (runs once)."""
        with self._cond:
            if self._shut_down:
                return
            self._shut_down = True
            if self.state == RUN:
                self.state = TERMINATE
            self._recent.clear()
            self._init_source = None
            self._cond.notify_all()
        for thread in (self._collector, self._launcher):
            if threading.current_thread() is not thread:
                thread.join(COLLECTOR_JOIN_TIMEOUT)
        for resource in self._owned:
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - closing a half-dead cluster must not raise at exit
                pass
