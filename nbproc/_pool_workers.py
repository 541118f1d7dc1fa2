"""The process pool's engine: worker processes, the pool thread, and the messages between them.

Data flow (two one-way pipes per worker — OS pipes have about half the round-trip latency of
a socketpair; only the pool thread reads or writes the parent's ends)::

    caller thread(s)                     pool thread "nbproc-pool"                worker process i
    ----------------                     -------------------------                ----------------
    map()/apply_async()/imap feeder
      serialize the function once  --> FunctionEntry(id, frame)
      serialize each task          --> pending deque  ---- dispatch ---->  [Forget] [Function] Task
          (errors surface here)           ^   (wake pipe)                       |  run, in order
                                          |                                     v
    result.get() <---- sink.done() ---- receive Result / Ready  <---------- Result (+ big buffers)
                                        watch sentinel i  <---- exits/dies ----
                                          fail the task it was running,
                                          requeue what it never started,
                                          start a replacement

The pool thread waits on one selector holding the wake pipe, every worker's pipe and every
worker's *sentinel*, so a dead worker is noticed at once rather than never (the stdlib's Pool
replaces it but leaves its task pending forever). Workers never share a queue: the pool thread
chooses who runs what, which is what lets it know exactly which task a dead worker held.

Functions travel once: the caller serializes the task function once per call (identical bytes
are shared between calls), each worker caches it by id, and the pool thread sends the function
frame to a worker only before the first task that needs it. Tasks carry only the id.

Messages are frames written and read by :mod:`nbproc.connection`'s framing layer
(``write_frames``, ``FrameReader`` in read-ahead mode on the raw pipe descriptors; the buffer
policy is its ``OutOfBand``). The first byte is a tag; a
``struct`` header follows; then a pickle body; then ``nbuffers`` raw frames holding the
out-of-band buffers (PEP 574) of large arrays, so a 16 MB array is neither copied into a
pickle nor out of one; from 1 MiB on, such a frame only names a shared-memory segment, which
the pool (for tasks) and each worker (for results) recycle once the receiver has let go of
it (:class:`nbproc._shm_buffers.SegmentCache`):

    parent -> worker   TASK(job, index, func_id, kind, nbuffers) + pickle(args)
                       FUNCTION(func_id) + pickle(func)      FORGET(func_id)      STOP
    worker -> parent   READY                                 INIT_FAILED + pickle(Failure)
                       RESULT(job, index, ok, nbuffers) + pickle(value | Failure)

Start-up: a new worker is sent its first task at once, before its READY message (the task waits
in its pipe while it starts), so a fresh pool's first tasks do not wait for that round trip —
except when the pool has an initializer, whose failure must fail tasks with InitializerError,
for tasks with a timeout, whose clock would otherwise include the worker's start-up, and for a
task (with its function) over PREFETCH_BYTES, whose write could block the pool thread until the
worker reads. A worker
that dies before READY fails the task it held as "died while starting" (a spawned worker whose
main module cannot be imported: every task fails at once instead of waiting for ever).

Prefetch: a worker whose tasks are measured to be tiny (under :data:`FAST_TASK`) is given up
to :data:`PREFETCH` small tasks, refilled several at a time in one write, so that it never
waits for the round trip and the pool thread's writes land in a pipe nobody is blocked on (a
write that wakes a sleeping reader costs several times more; reads likewise take every
waiting frame at once). Any other worker gets one task at a time, so a task does not wait
behind a long one while another worker is idle — except, rarely, a task queued behind one that
runs long after a series of tiny ones. A worker's results come back in the order it received
its tasks, so on its death the first task it holds is the one that was running, and the
others never started.

A worker also watches its parent: a thread waits on the parent's sentinel and exits the
process when the parent is gone, even in the middle of a long task (no orphans). Workers
ignore SIGINT: Ctrl-C (or a Jupyter interrupt, sent to the whole process group) is handled by
the parent, which cancels the interrupted job and terminates only the workers running it.
"""

from __future__ import annotations

import itertools
import os
import selectors
import signal
import struct
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from multiprocessing import parent_process
from multiprocessing.connection import wait as _wait_ready
from multiprocessing.process import BaseProcess
from time import monotonic

from . import _output, serialization
from . import _shm_buffers as _shm
from ._pool_engine import (
    APPLY,
    CLOSE,
    MAP,
    RUN,
    STARMAP,
    TERMINATE,
    Failure,
    JobRegistry,
    JobSink,
    encoding_error,
    run_task,
)
from .connection import FrameReader, Pipe, dumps_with_buffers, write_frames
from .exceptions import InitializerError, TaskCancelledError, TaskTimeoutError, WorkerLostError

# A worker process imports this module, and nothing it does not need before its first task:
# the result types, progress events and the remote-error carrier (which import dataclasses,
# ~4 ms, and multiprocessing.pool) are imported where a failure or the parent side needs them.
TYPE_CHECKING = False  # nor typing (~2.5 ms)
if TYPE_CHECKING:
    from typing import Any

    from .progress import PoolStatistics

__all__ = ["ProcessCore", "worker_main", "APPLY", "MAP", "STARMAP"]

# Flag or-ed into a task's kind (nbproc._pool_engine's APPLY/MAP/STARMAP) when it has a
# task_timeout: the worker then says when each item of a chunk after the first starts
# (ItemStartedMessage), so the deadline applies per item. Untimed tasks send nothing extra.
TIMED = 0x80

# A worker gets a second task while it runs the first only if the queued bytes stay below this:
# such a write never blocks (a Linux pipe holds 64 KiB), so the pool thread cannot stall
# behind a busy worker. Larger tasks wait until a worker is idle.
PREFETCH_BYTES = 32 * 1024
# Tasks held by one worker whose tasks are tiny: enough to cover the pool thread's reaction
# time (~20 us) several times over; each one may wait behind a task that turns out long.
PREFETCH = 6
# ... and is refilled once it holds this many or fewer, so one write carries several tasks.
REFILL_AT = 3
# A worker counts as running tiny tasks while its recent tasks took less than this (and the
# current one has not been running longer): above it, the round trip is noise anyway.
FAST_TASK = 0.001
# A timed task sent together with its function gets this long to load it (imports included)
# before its own clock starts; the worker starts the clock as soon as the function is loaded
# (ItemStartedMessage for item 0). Longer only delays stopping a task whose loading hangs.
FUNCTION_LOAD_GRACE = 30.0
_EWMA = 0.3  # weight of the newest task duration in a worker's average
# Functions a worker keeps; the pool thread evicts (FORGET) the least recently used beyond it.
# Large enough for interleaved jobs, small enough that closures over big data are released.
WORKER_FUNCTION_CACHE = 32
# Recently serialized functions the parent remembers by their bytes, so that a loop of
# apply_async(f, ...) sends f once per worker; entries over the size limit are not kept.
RECENT_FUNCTIONS = 16
RECENT_FUNCTION_MAX_BYTES = 1024 * 1024

TAG_TASK, TAG_FUNCTION, TAG_FORGET, TAG_STOP = 1, 2, 3, 4
TAG_READY, TAG_RESULT, TAG_INIT_FAILED, TAG_ITEM_STARTED = 11, 12, 13, 14


class TaskMessage:
    """parent -> worker: call function ``func_id`` on ``args`` (one apply call or one chunk)."""

    HEADER = struct.Struct("<BqqqBI")  # tag, job, index, func_id, kind, nbuffers

    @classmethod
    def encode(
        cls,
        job: int,
        index: int,
        func_id: int,
        kind: int,
        args: Any,
        snapshot: bool,
        segments: _shm.SegmentCache | None = None,
    ) -> list[Any]:
        body, buffers = dumps_with_buffers(args, what=None, snapshot=snapshot, segments=segments)
        return [cls.HEADER.pack(TAG_TASK, job, index, func_id, kind, len(buffers)) + body, *buffers]


class FunctionMessage:
    """parent -> worker: the function behind ``func_id`` (sent to each worker once)."""

    HEADER = struct.Struct("<Bq")  # tag, func_id

    @classmethod
    def encode(cls, func_id: int, payload: bytes) -> bytes:
        return cls.HEADER.pack(TAG_FUNCTION, func_id) + payload


class ForgetMessage:
    """parent -> worker: drop function ``func_id`` from the cache (the parent tracks the LRU)."""

    HEADER = struct.Struct("<Bq")

    @classmethod
    def encode(cls, func_id: int) -> bytes:
        return cls.HEADER.pack(TAG_FORGET, func_id)


class ItemStartedMessage:
    """worker -> parent: item ``item`` (0-based) of timed chunk ``(job, index)`` starts now.

    For ``item > 0`` the body is the outcome ``(ok, value)`` of item ``item - 1``: should item
    ``item`` run out of time, the items the chunk finished are delivered, not lost with it.
    """

    HEADER = struct.Struct("<Bqqq")  # tag, job, index, item

    @classmethod
    def encode(cls, job: int, index: int, item: int, previous: Any = None) -> bytes:
        header = cls.HEADER.pack(TAG_ITEM_STARTED, job, index, item)
        if item == 0:
            return header
        try:
            return header + serialization.dumps((True, previous), what="pool task result")
        except Exception as exc:  # noqa: BLE001 - the item's result cannot travel: it fails as a result would
            return header + serialization.dumps((False, encoding_error(exc, previous)))


STOP_FRAME = bytes([TAG_STOP])  # parent -> worker: finish; sent only when no task is outstanding
READY_FRAME = bytes([TAG_READY])  # worker -> parent: the initializer ran, tasks are welcome


class ResultMessage:
    """worker -> parent: the outcome of task ``(job, index)``: a value, or a :class:`Failure`."""

    HEADER = struct.Struct("<BqqBI")  # tag, job, index, ok, nbuffers

    @classmethod
    def encode(cls, job: int, index: int, ok: bool, value: Any, segments: _shm.SegmentCache | None = None) -> list[Any]:
        try:
            body, buffers = dumps_with_buffers(value, what="pool task result", segments=segments)
        except Exception as exc:  # noqa: BLE001 - whatever the pickler raised, the parent must hear of it
            body, buffers, ok = serialization.dumps(encoding_error(exc, value)), [], False
        return [cls.HEADER.pack(TAG_RESULT, job, index, ok, len(buffers)) + body, *buffers]


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------


def _watch_parent() -> None:
    """Exit this worker when the pool's process dies, even in the middle of a task.

    A worker started as an nbproc Process (daemonic) already has the ``nbproc.orphans`` set-up
    hook's watch thread; this one is for workers a duck-typed context started without it.
    """
    from . import _orphans

    if _orphans.watching_parent():
        return
    parent = parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        _wait_ready([sentinel])
        os._exit(_orphans.ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="nbproc-parent-watch", daemon=True).start()


def worker_main(
    tasks: Any, results: Any, initializer: Any, initargs: tuple, maxtasks: int | None, inherited_fds: tuple
) -> None:
    """Body of a pool worker: run the initializer, then tasks until STOP, ``maxtasks`` or EOF.

    ``tasks`` is the read end of the parent's task pipe, ``results`` the write end of the
    result pipe (connections; only their descriptors are used).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited_fds:  # fork only: the parent's ends of other pipes must not stay open here
        try:
            os.close(fd)
        except OSError:
            pass
    _watch_parent()
    reader, out = FrameReader(tasks.fileno(), read_ahead=True), results.fileno()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then this worker ends
            write_frames(out, [bytes([TAG_INIT_FAILED]) + serialization.dumps(Failure.capture(exc))])
            sys.exit(1)
    write_frames(out, [READY_FRAME])
    functions: dict[int, Any] = {}
    # Results' large buffers reuse the segments the parent has finished with; what is left at
    # exit, the pool sweeps by this worker's pid.
    segments = _shm.SegmentCache()
    done = 0
    loaded = False  # a function arrived since the last task: a timed task then says when it starts
    task_header = TaskMessage.HEADER
    while maxtasks is None or done < maxtasks:
        try:
            frame = reader.read()
        except (EOFError, OSError):
            return  # the parent is gone
        tag = frame[0]
        if tag == TAG_TASK:
            _, job, index, func_id, kind, nbuffers = task_header.unpack_from(frame)
            buffers = [_shm.resolve(reader.read_buffer()) for _ in range(nbuffers)]
            _output.task_started(job)  # in a kernel: route what this task writes to its job's cell
            if kind & TIMED:
                reporter = _item_reporter(out, job, index)
                ok, value = _run_task(
                    functions, func_id, kind & ~TIMED, frame[task_header.size :], buffers, reporter, loaded
                )
            else:
                ok, value = _run_task(functions, func_id, kind, frame[task_header.size :], buffers)
            loaded = False
            _output.task_finished()  # ... and have it all in the pipes before the result leaves
            del frame, buffers
            write_frames(out, ResultMessage.encode(job, index, ok, value, segments))
            del value
            done += 1
        elif tag == TAG_FUNCTION:
            loaded = True
            (_, func_id) = FunctionMessage.HEADER.unpack_from(frame)
            try:
                functions[func_id] = serialization.loads(frame[FunctionMessage.HEADER.size :])
            except BaseException as exc:  # noqa: BLE001 - each task using it will report this
                functions[func_id] = Failure.capture(exc)
        elif tag == TAG_FORGET:
            (_, func_id) = ForgetMessage.HEADER.unpack_from(frame)
            functions.pop(func_id, None)
        elif tag == TAG_STOP:
            return


def _item_reporter(out: int, job: int, index: int) -> Any:
    """For a timed chunk: a callable telling the parent that item ``k`` starts now (and what
    item ``k - 1`` returned)."""

    def started(k: int, values: list[Any]) -> None:
        write_frames(out, [ItemStartedMessage.encode(job, index, k, values[-1] if k else None)])

    return started


def _run_task(
    functions: dict[int, Any],
    func_id: int,
    kind: int,
    body: Any,
    buffers: list,
    started: Any = None,
    announce_first: bool = False,
) -> tuple[bool, Any]:
    """Decode one task's arguments and run it through :func:`nbproc._pool_engine.run_task`.

    ``started(k)`` (timed tasks) announces item ``k`` of a chunk to the parent; the first
    item only with ``announce_first`` (otherwise the parent times it from the moment the task
    became the worker's head).
    """
    func = functions.get(func_id)
    if isinstance(func, Failure):
        return False, func
    try:
        args = serialization.loads(body, buffers=buffers)
    except BaseException as exc:  # noqa: BLE001 - e.g. an argument's class cannot be imported here
        return False, Failure.capture(exc)
    hook = None
    if started is not None:

        def hook(k: int, values: list[Any]) -> None:
            if k or announce_first:
                started(k, values)

    return run_task(func, kind, args, started=hook)


# --------------------------------------------------------------------------------------------
# The parent side
# --------------------------------------------------------------------------------------------


class FunctionEntry:
    """A serialized task function, shared by the tasks of one or more calls."""

    __slots__ = ("id", "frame", "__weakref__")

    def __init__(self, func_id: int, payload: bytes) -> None:
        self.id = func_id
        self.frame = FunctionMessage.encode(func_id, payload)


def _release(task: Task) -> None:
    """Give up the shared memory of a task's arrays that no worker mapped (finished or dropped
    task): a fresh segment is removed, a recycled one marked free for the pool's next task."""
    if len(task.frames) > 1:
        _shm.discard(task.frames[1:])


class Task:
    """A serialized task waiting for, or held by, a worker (parent side only)."""

    __slots__ = ("sink", "job", "index", "func", "frames", "nbytes", "nitems", "timeout", "first_item", "loads")

    def __init__(
        self,
        sink: JobSink,
        index: int,
        func: FunctionEntry,
        frames: list[Any],
        nitems: int,
        timeout: float | None = None,
        first_item: int = 0,
    ) -> None:
        self.sink = sink
        self.job = sink.job
        self.index = index
        self.func = func
        self.frames = frames
        self.nbytes = sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
        self.nitems = nitems
        self.timeout = timeout  # seconds each item may run (task_timeout), or None
        self.first_item = first_item  # position of the chunk's first item in the call's input
        self.loads = False  # sent together with its function: its clock starts when that is loaded


class WorkerSlot:
    """One worker process as the pool thread sees it."""

    __slots__ = (
        "process",
        "pid",
        "tasks",
        "results",
        "wfd",
        "fd",
        "sentinel",
        "inflight",
        "queued_bytes",
        "known",
        "sent",
        "ready",
        "unwritable",
        "head_started",
        "avg_time",
        "reader",
        "done",
        "progress",
        "finished_items",
        "stop_for",
        "stop_error",
        "sent_buffers",
    )

    def __init__(self, process: Any, tasks: Any, results: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.tasks = tasks  # write end of the task pipe
        self.results = results  # read end of the result pipe
        self.wfd: int = tasks.fileno()
        # It sent a result with out-of-band buffers: its segment cache may have left segments
        # (sent results outlive their worker; the parent releases them later), swept at its exit.
        self.sent_buffers = False
        self.fd: int = results.fileno()  # -1 once the worker closed it
        self.reader = FrameReader(self.fd, read_ahead=True)
        self.sentinel: int = process.sentinel
        self.inflight: deque[Task] = deque()  # sent, result not back; [0] is the one running
        self.queued_bytes = 0  # bytes of inflight[1:], the part that sits in the pipe
        self.known: OrderedDict[int, None] = OrderedDict()  # function ids cached in the worker
        self.sent = 0  # tasks sent (for maxtasksperchild)
        self.ready = False  # READY received
        self.unwritable = False  # a write to it failed: it is exiting, its sentinel will tell
        self.head_started = 0.0  # when inflight[0] started (as far as the parent can tell)
        self.avg_time = FAST_TASK * 10  # task duration average; unknown counts as slow
        self.done = 0  # tasks it completed (statistics)
        # (task, item, when): the item of a timed task that the worker last said it started.
        # Stale once that task is no longer inflight[0]; then item 0 runs, timed from head_started.
        self.progress: tuple[Task, int, float] | None = None
        # The outcomes (serialized) of the items that timed task finished, in order: delivered
        # if a later item of its chunk runs out of time. Same lifetime as ``progress``.
        self.finished_items: list[bytes] = []
        self.stop_for: Task | None = None  # the task we killed this worker to stop (timeout/cancel)
        self.stop_error: BaseException | None = None  # what that task fails with (None: cancelled)


def _finished_items(slot: WorkerSlot, task: Task) -> list[tuple[bool, Any]]:
    """The outcomes of the items of ``task`` (a timed chunk) that its worker finished before it
    was stopped, as the worker reported them in its item-started messages."""
    progress = slot.progress
    if progress is None or progress[0] is not task:
        return []
    outcomes = []
    for data in slot.finished_items:
        try:
            ok, value = serialization.loads(data)
        except BaseException as exc:  # noqa: BLE001 - e.g. the value's class is not importable here
            ok, value = False, exc
        else:
            if not ok:
                value = value.rebuild()
        outcomes.append((ok, value))
    return outcomes


# Seconds a worker stopped with SIGTERM gets to exit before SIGKILL: it dies at once unless
# its code blocks the signal, so waiting longer only delays the error that is propagating.
_TERMINATE_GRACE = 2.0


def _stop_unwatched(process: Any) -> None:
    """Terminate and join a started worker the pool thread never watched (a failed pool start)."""
    process.terminate()
    if isinstance(process, BaseProcess):
        process.join(_TERMINATE_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
    else:
        process.join()  # a duck-typed context's process: only the calls the stdlib's Pool makes


_WAKE, _RESULT, _DEATH = 0, 1, 2


def _bytes_to_send(slot: WorkerSlot, task: Task) -> int:
    """What sending ``task`` to ``slot`` writes: the task, and its function if the worker lacks it."""
    return task.nbytes + (0 if task.func.id in slot.known else len(task.func.frame))


class ProcessCore:
    """Workers and the pool thread behind :class:`nbproc.pool.Pool`; fulfils :class:`nbproc._pool_engine.PoolEngine`.

    The facade (``Pool``) owns the public API and keeps only a reference to this object, so a
    Pool that is dropped without ``close()`` can be garbage collected and terminate us.
    """

    def __init__(
        self,
        processes: int,
        initializer: Any,
        initargs: tuple,
        maxtasksperchild: int | None,
        context: Any,
        name: str,
    ) -> None:
        self.processes = processes
        self.name = name
        self.jobs = JobRegistry()  # outstanding jobs
        self.listeners: list[Any] = []
        # Called by the pool thread as a task is handed to a worker; False drops the task.
        # The executor (nbproc.futures) marks its Future running here; the Pool sets none.
        self.on_dispatch: Callable[[Task], bool] | None = None
        self.state = RUN
        self._ctx = context
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasks = maxtasksperchild
        self._lock = threading.Lock()  # guards _pending, _cancelled, state changes, _recent
        self._pending: deque[Task] = deque()
        self._cancelled: set[int] = set()
        self._cancel_requested = False
        self._timed = 0  # timed tasks held by workers: deadlines are checked only while this is > 0
        self._feeders = 0
        self._slots: dict[int, WorkerSlot] = {}
        self._recent: OrderedDict[bytes, FunctionEntry] = OrderedDict()
        self._func_ids = itertools.count()
        self._broken: BaseException | None = None
        self._stopping = False
        self._retiring = False  # set at interpreter exit (nbproc._exit): the pool thread retires the workers
        self._shut_down = False
        self._terminate_inline = False
        self._tasks_done = self._tasks_failed = 0  # written by the pool thread only (statistics)
        self._segments = _shm.SegmentCache()  # tasks' large buffers; removed at shutdown
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, (_WAKE, None))
        try:
            self._start_workers(processes)
        except BaseException:
            self._shutdown()
            raise
        self._thread = threading.Thread(target=self._run, name=f"nbproc-pool-{name}", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- caller-thread API
    def prepare_function(self, func: Any, what: str) -> FunctionEntry:
        """Serialize ``func`` (raises :class:`SerializationError`); identical bytes share one id."""
        payload = serialization.dumps(func, what=what)
        with self._lock:
            entry = self._recent.get(payload)
            if entry is not None:
                self._recent.move_to_end(payload)
                return entry
            entry = FunctionEntry(next(self._func_ids), payload)
            if len(payload) <= RECENT_FUNCTION_MAX_BYTES:
                self._recent[payload] = entry
                if len(self._recent) > RECENT_FUNCTIONS:
                    self._recent.popitem(last=False)
        return entry

    def make_task(
        self,
        sink: JobSink,
        index: int,
        func: FunctionEntry,
        kind: int,
        args: Any,
        nitems: int,
        snapshot: bool,
        *,
        timeout: float | None = None,
        first_item: int = 0,
    ) -> Task:
        """Serialize one task's arguments now, in the caller's thread (raises :class:`SerializationError`).

        With ``timeout``, each item of the task may run that many seconds; a late one has its
        worker killed and the task fails with :class:`TaskTimeoutError` (see ``_check_deadlines``).
        """
        if timeout is not None:
            kind |= TIMED
        frames = TaskMessage.encode(sink.job, index, func.id, kind, args, snapshot, self._segments)
        return Task(sink, index, func, frames, nitems, timeout, first_item)

    def submit(self, tasks: list[Task]) -> None:
        """Queue tasks for the workers; they start as soon as a worker is free."""
        if not tasks:
            return
        with self._lock:
            broken = self._broken
            if broken is None and self.state != TERMINATE:
                self._pending.extend(tasks)
        if broken is not None:
            for task in tasks:
                task.sink.done(task.index, False, self._broken_error(), task.nitems)
        elif self.state == TERMINATE:
            for task in tasks:
                task.sink.abort(TaskCancelledError("the pool was terminated"))
        else:
            self._wake()

    def feeder_started(self) -> None:
        with self._lock:
            self._feeders += 1

    def feeder_done(self) -> None:
        with self._lock:
            self._feeders -= 1
        self._wake()

    def cancel(self, job: int) -> None:
        """Drop the job's queued tasks and terminate the workers running its tasks (they are replaced)."""
        with self._lock:
            self._cancelled.add(job)
            if any(task.job == job for task in self._pending):
                for task in self._pending:
                    if task.job == job:
                        _release(task)
                self._pending = deque(task for task in self._pending if task.job != job)
            self._cancel_requested = True
        self._wake()

    def close(self) -> None:
        with self._lock:
            if self.state == RUN:
                self.state = CLOSE
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the pool thread and all workers have exited (after close or terminate)."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._shutdown()

    def terminate(self) -> None:
        """Stop now: terminate the workers, fail outstanding results with TaskCancelledError."""
        with self._lock:
            if self._shut_down:
                return
            self.state = TERMINATE
        self._wake()
        if threading.current_thread() is self._thread:
            self._terminate_inline = True  # called from a callback: the pool thread finishes the job
            return
        if self._thread.is_alive():
            self._thread.join()
        self._shutdown()

    def retire_at_exit(self) -> None:
        """At interpreter exit, for a pool never closed: let idle workers exit the orderly way.

        The pool thread sends STOP to each idle worker (it then flushes its output and runs its
        finalizers) and terminates the busy ones, as the stdlib's exit terminates a pool; queued
        tasks are dropped. Returns at once; the caller bounds the wait with :meth:`join` and
        escalates with :meth:`terminate` (see :mod:`nbproc._exit`).
        """
        with self._lock:
            if self._shut_down or self.state == TERMINATE:
                return
            self.state = CLOSE
            self._retiring = True
        self._wake()

    @property
    def broken(self) -> BaseException | None:
        """Why the pool cannot run tasks (its initializer failed), or None."""
        return self._broken

    def worker_processes(self) -> list[Any]:
        return [slot.process for slot in list(self._slots.values())]

    def statistics(self) -> PoolStatistics:
        """A snapshot without locks or messages: read while the pool thread works, so counts
        taken a moment apart may disagree by a task — good enough for a view that polls."""
        from .progress import PoolStatistics, WorkerStatistics  # parent side only: not in a worker

        workers = []
        running = queued = 0
        for slot in list(self._slots.values()):
            held = len(slot.inflight)
            running += held > 0
            queued += max(held - 1, 0)
            state = "starting" if not slot.ready else ("busy" if held else "idle")
            alive = not self._shut_down and slot.fd >= 0  # not exitcode: its waitpid would race the pool thread's
            workers.append(WorkerStatistics(slot.pid, slot.process.name, state, alive, slot.done))
        return PoolStatistics(
            name=self.name,
            start_method=self._ctx.get_start_method(),
            state=self.state,
            processes=self.processes,
            workers=tuple(workers),
            queued=queued + len(self._pending),
            running=running,
            done=self._tasks_done,
            failed=self._tasks_failed,
            jobs=len(self.jobs),
        )

    # ---------------------------------------------------------------- internals
    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the pool thread will wake anyway) or already closed

    def _broken_error(self) -> InitializerError:
        cause = self._broken
        err = InitializerError(f"the pool's initializer failed in a worker: {cause!r}; the pool cannot run tasks")
        err.__cause__ = cause
        return err

    def _inherited_fds(self, *new_parent_ends: int) -> tuple[int, ...]:
        """Descriptors a forked worker inherits but must not keep (fork only).

        Besides hygiene this keeps end-of-file meaningful: a worker holding a copy of the
        parent's end of its own task pipe would never see EOF when the parent dies.
        """
        if self._ctx.get_start_method() != "fork":
            return ()
        fds = [*new_parent_ends, self._wake_r, self._wake_w]
        try:
            fds.append(self._selector.fileno())  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
        for slot in self._slots.values():
            fds.extend(fd for fd in (slot.fd, slot.wfd) if fd >= 0)
        return tuple(fds)

    def _start_workers(self, count: int) -> None:
        """Start the pool's first ``count`` workers, then watch them all.

        Failure mode handled here: a start that raises (out of memory or processes, a context
        whose ``Process`` fails). The workers started before it are stopped and joined before
        the error propagates, so a pool that fails to build leaves no process behind. Watching
        only after every start also means a duck-typed context's processes need nothing beyond
        what the stdlib's Pool uses (``start``, ``terminate``, ``join``) until they all started.
        """
        launched: list[tuple[Any, Any, Any]] = []
        try:
            for _ in range(count):
                held = [end.fileno() for _, task_w, result_r in launched for end in (task_w, result_r)]
                launched.append(self._launch(held, pid_on_demand=True))
            for process, _, _ in launched:
                process.pid  # noqa: B018 - forkserver: the pids the launches did not wait for (see nbproc.popen)
        except BaseException:
            for process, task_w, result_r in launched:
                task_w.close()
                result_r.close()
                _stop_unwatched(process)
            raise
        for process, task_w, result_r in launched:
            self._watch(process, task_w, result_r)

    def _start_worker(self) -> WorkerSlot:
        """Start and watch one more worker (a replacement for one that ended)."""
        return self._watch(*self._launch([]))

    def _launch(self, unwatched_fds: list[int], pid_on_demand: bool = False) -> tuple[Any, Any, Any]:
        """Start a worker process; returns it with the parent's ends of its task and result pipes.

        ``unwatched_fds``: parent ends of workers launched but not yet watched, which a forked
        worker must close as it closes the watched ones (see :meth:`_inherited_fds`).
        ``pid_on_demand``: the caller reads ``process.pid`` before watching the worker, so a
        forkserver launch need not wait for the pid (:class:`nbproc.popen.ForkServerPopen`).
        """
        task_r, task_w = Pipe(duplex=False)
        result_r, result_w = Pipe(duplex=False)
        try:
            inherited = self._inherited_fds(task_w.fileno(), result_r.fileno(), *unwatched_fds)
            process = self._ctx.Process(
                target=worker_main,
                args=(task_r, result_w, self._initializer, self._initargs, self._maxtasks, inherited),
                daemon=True,
            )
            process.name = process.name.replace("Process", "PoolWorker")
            if pid_on_demand:
                process._nbproc_pid_on_demand = True
            process.start()
        except BaseException:
            task_w.close()
            result_r.close()
            raise
        finally:
            task_r.close()
            result_w.close()
        return process, task_w, result_r

    def _watch(self, process: Any, task_w: Any, result_r: Any) -> WorkerSlot:
        """Let the pool thread see the worker's results and its death (its sentinel)."""
        slot = WorkerSlot(process, task_w, result_r)
        self._slots[slot.pid] = slot
        self._selector.register(slot.fd, selectors.EVENT_READ, (_RESULT, slot))
        self._selector.register(slot.sentinel, selectors.EVENT_READ, (_DEATH, slot))
        return slot

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug here must fail the callers, not hang them
            print("nbproc: the pool thread failed:", file=sys.stderr)
            import traceback  # not at the top: a worker would import it (~3 ms) for nothing

            traceback.print_exc()
            with self._lock:
                self._broken = self._broken or exc
                self.state = TERMINATE
            self._terminate_inline = True
        if self._terminate_inline:
            self._shutdown()

    def _loop(self) -> None:
        select = self._selector.select
        while True:
            for key, _ in select(self._check_deadlines() if self._timed else None):
                kind, slot = key.data
                if kind == _RESULT:
                    if self._slots.get(slot.pid) is slot and slot.fd >= 0:
                        self._receive(slot)
                elif kind == _DEATH:
                    if self._slots.get(slot.pid) is slot:
                        self._bury(slot)
                else:
                    self._drain_wake()
            if self.state == TERMINATE:
                return
            if self._retiring:
                self._retire()
            if self._cancel_requested:
                self._stop_cancelled()
            if self._pending:
                self._dispatch()
            if self.state == CLOSE:
                if not self._stopping and self._all_done():
                    self._stopping = True
                    for slot in list(self._slots.values()):
                        self._send(slot, [STOP_FRAME])
                if self._stopping and not self._slots:
                    return

    def _retire(self) -> None:
        """Pool thread, at exit (see :meth:`retire_at_exit`): STOP idle workers, terminate busy ones."""
        with self._lock:
            self._retiring = False
            self._stopping = True  # no replacements from now on (state is CLOSE)
            self._pending.clear()
            self._cancelled.update(task.job for slot in self._slots.values() for task in slot.inflight)
        for slot in list(self._slots.values()):
            if slot.inflight or not self._send(slot, [STOP_FRAME]):
                try:
                    slot.process.terminate()
                except (OSError, ValueError):
                    pass

    def _all_done(self) -> bool:
        return not self._pending and self._feeders == 0 and not any(s.inflight for s in self._slots.values())

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _receive(self, slot: WorkerSlot) -> None:
        """Handle every message the worker has sent so far (pool thread).

        All buffered messages are handled now: the selector only reports new data.
        """
        reader = slot.reader
        while True:
            try:
                frame = reader.read()
                tag = frame[0]
                if tag == TAG_RESULT:
                    _, job, index, ok, nbuffers = ResultMessage.HEADER.unpack_from(frame)
                    buffers = [_shm.resolve(reader.read_buffer()) for _ in range(nbuffers)]
                    slot.sent_buffers = slot.sent_buffers or nbuffers > 0
            except (EOFError, OSError):
                # The worker is exiting; its sentinel will tell us how. Stop watching the pipe.
                self._selector.unregister(slot.fd)
                slot.fd = -1
                return
            if tag == TAG_RESULT:
                self._complete(slot, job, index, bool(ok), frame, buffers)
            elif tag == TAG_READY:
                slot.ready = True
            elif tag == TAG_INIT_FAILED:
                self._initializer_failed(serialization.loads(frame[1:]))
            elif tag == TAG_ITEM_STARTED:
                self._item_started(slot, frame)
            del frame
            if not reader.has_frame():
                return

    def _complete(self, slot: WorkerSlot, job: int, index: int, ok: bool, frame: Any, buffers: list[Any]) -> None:
        task = slot.inflight.popleft()
        _release(task)
        now = monotonic()
        slot.avg_time += _EWMA * (now - slot.head_started - slot.avg_time)
        if task.timeout is not None:
            self._timed -= 1
            slot.progress = None  # it names this task (and so holds its result): let both go
            slot.finished_items = []
        if slot.inflight:
            slot.queued_bytes -= slot.inflight[0].nbytes
            slot.head_started = now
        if task.job != job or task.index != index:  # pragma: no cover - protocol invariant
            raise RuntimeError(f"worker {slot.pid} answered task {(job, index)}, expected {(task.job, task.index)}")
        try:
            value = serialization.loads(frame[ResultMessage.HEADER.size :], buffers=buffers)
        except BaseException as exc:  # noqa: BLE001 - e.g. the result's class is not importable here
            ok, value = False, exc
        else:
            if not ok:
                value = value.rebuild()
        slot.done += 1
        if ok:
            self._tasks_done += 1
        else:
            self._tasks_failed += 1
        task.sink.done(index, ok, value, task.nitems)

    def _initializer_failed(self, failure: Failure) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = failure.rebuild()
            pending, self._pending = self._pending, deque()
        for task in pending:
            _release(task)
            task.sink.done(task.index, False, self._broken_error(), task.nitems)

    def _bury(self, slot: WorkerSlot) -> None:
        """A worker's sentinel fired: account for its tasks, then replace it (pool thread).

        Failure mode handled here: a worker that dies mid-task (``os._exit``, a signal, a
        segfault). Results it finished before dying are still read from its pipe; the task
        it was running fails with :class:`WorkerLostError`; tasks it held but never started
        go back to the front of the queue.
        """
        while slot.fd >= 0 and (slot.reader.has_frame() or _wait_ready([slot.fd], 0)):
            self._receive(slot)
        if slot.fd >= 0:
            self._selector.unregister(slot.fd)
        self._selector.unregister(slot.sentinel)
        del self._slots[slot.pid]
        slot.process.join(5)  # it has exited (its sentinel fired); this only reaps it
        exitcode = slot.process.exitcode
        slot.tasks.close()
        slot.results.close()
        self._timed -= sum(1 for t in slot.inflight if t.timeout is not None)
        running = slot.inflight.popleft() if slot.inflight else None
        unstarted = list(slot.inflight)
        slot.inflight.clear()
        stopped_for, error = slot.stop_for, slot.stop_error
        if stopped_for is not None and running is not None and running is not stopped_for:
            # We killed the worker for a task that finished just before: the next one had barely
            # started, and its failure would be ours, not its own. Run it again elsewhere.
            unstarted.insert(0, running)
            running = None
        # Shared memory the dead worker held: the running task's arrays (if it had not mapped
        # them yet) and what it created for a result it never sent. Unstarted tasks keep theirs.
        # And the recycled segments of results it sent: they outlive it (the parent may still be
        # reading them), so its cache left them. A worker that exited 0 holding no task and never
        # sent a buffer has nothing there: no listing of /dev/shm (~1 ms) on its orderly exit.
        if running is not None:
            _release(running)
        if running is not None or exitcode != 0 or slot.sent_buffers:
            _shm.sweep(slot.pid)
        with self._lock:
            cancelled = running is not None and running.job in self._cancelled
            for task in unstarted:
                if task.job in self._cancelled:
                    _release(task)
            self._pending.extendleft(t for t in reversed(unstarted) if t.job not in self._cancelled)
        if running is not None and not cancelled:
            self._tasks_failed += 1
            if error is None:
                error = self._lost_error(slot, exitcode, running)
            finished = _finished_items(slot, running) if isinstance(error, TaskTimeoutError) else []
            if finished:
                running.sink.partly_done(running.index, finished, error, running.nitems)
            else:
                running.sink.done(running.index, False, error, running.nitems)
        if stopped_for is None and (running is not None or exitcode not in (0, None)) and not cancelled:
            self._report_lost(slot, exitcode)
        try:
            slot.process.close()
        except ValueError:
            pass
        if self.state == TERMINATE or self._broken is not None:
            return
        if self.state == RUN or not self._stopping:
            self._start_worker()

    def _lost_error(self, slot: WorkerSlot, exitcode: int | None, task: Task) -> WorkerLostError:
        how = f"exit code {exitcode}"
        if exitcode is not None and exitcode < 0:
            try:
                how += f" ({signal.Signals(-exitcode).name})"
            except ValueError:
                pass
        what = f"task {task.index} of {task.sink.label}"
        # A worker is sent its first task while it starts (see _choose): one that never said
        # READY died starting up (its main module failed to import, say), before the task ran.
        when = f"while running {what}" if slot.ready else f"while starting, holding {what}"
        return WorkerLostError(
            f"pool worker {slot.process.name} (pid {slot.pid}) died with {how} {when}; the pool replaced it",
            pid=slot.pid,
            exitcode=exitcode,
        )

    def _report_lost(self, slot: WorkerSlot, exitcode: int | None) -> None:
        from . import progress

        if progress.listening(self.listeners):
            progress.deliver(
                self.listeners,
                progress.ProgressEvent(
                    kind="worker_lost",
                    job=-1,
                    label="",
                    items=0,
                    total=None,
                    submitted=0,
                    done=0,
                    failed=0,
                    finished=False,
                    pool=self.name,
                    pid=slot.pid,
                    exitcode=exitcode,
                ),
            )

    def _stop_cancelled(self) -> None:
        """Terminate workers whose running task belongs to a cancelled job (KeyboardInterrupt)."""
        with self._lock:
            self._cancel_requested = False
            cancelled = set(self._cancelled)
        for slot in list(self._slots.values()):
            if slot.inflight and slot.inflight[0].job in cancelled and slot.stop_for is None:
                self._stop_worker(slot, slot.inflight[0], None)

    # ---------------------------------------------------------------- per-task timeouts
    def _item_started(self, slot: WorkerSlot, frame: Any) -> None:
        """A timed chunk's worker moved on to its next item: that item's clock starts now."""
        _, job, index, item = ItemStartedMessage.HEADER.unpack_from(frame)
        head = slot.inflight[0] if slot.inflight else None
        if head is not None and head.job == job and head.index == index:
            if slot.progress is None or slot.progress[0] is not head:
                slot.finished_items = []
            slot.progress = (head, item, monotonic())
            if item > 0:
                slot.finished_items.append(bytes(frame[ItemStartedMessage.HEADER.size :]))

    def _check_deadlines(self) -> float | None:
        """Kill workers whose timed item ran past its task_timeout; seconds until the next deadline.

        Called by the pool thread before each wait, only while timed tasks are held by
        workers. Failure mode handled: a task that never returns (a hang, an endless loop, a
        blocking C call that holds the GIL) — nothing inside the worker can be trusted to stop
        it, so the worker is killed (SIGKILL) and ``_bury`` fails the task with
        :class:`TaskTimeoutError` when the sentinel fires, then starts a replacement.
        """
        now = monotonic()
        wait: float | None = None
        for slot in self._slots.values():
            if not slot.inflight or slot.stop_for is not None:
                continue
            task = slot.inflight[0]
            if task.timeout is None:
                continue
            progress = slot.progress
            if progress is not None and progress[0] is task:
                _, item, started = progress
            else:  # the worker has not reported yet: its first item, timed from when it became the head
                item, started = 0, slot.head_started + (FUNCTION_LOAD_GRACE if task.loads else 0.0)
            left = started + task.timeout - now
            if left <= 0:
                self._stop_worker(slot, task, self._timeout_error(slot, task, item))
            elif wait is None or left < wait:
                wait = left
        return wait

    def _timeout_error(self, slot: WorkerSlot, task: Task, item: int) -> TaskTimeoutError:
        item += task.first_item
        return TaskTimeoutError(
            f"task {item} of {task.sink.label} ran longer than its task_timeout of {task.timeout:g} s; "
            f"its worker (pid {slot.pid}) was stopped and replaced",
            index=item,
            timeout=task.timeout,
        )

    def _stop_worker(self, slot: WorkerSlot, task: Task, error: BaseException | None) -> None:
        """Kill ``slot``'s worker to stop ``task``; ``_bury`` fails the task with ``error`` (None:
        the task was cancelled and gets no result) when the worker's sentinel fires."""
        slot.stop_for, slot.stop_error = task, error
        try:
            if error is None:
                slot.process.terminate()
            else:
                slot.process.kill()
        except (OSError, ValueError):
            pass

    def _choose(self, task: Task, now: float, filling: dict[WorkerSlot, list[Any]]) -> WorkerSlot | None:
        """An idle worker, else the least loaded one running tiny tasks with room, else None.

        A worker still starting (no READY yet) may take its first task (see the module docstring).

        A worker already being sent tasks in this round (``filling``) is topped up to
        PREFETCH; any other busy worker only once it is down to REFILL_AT tasks, so that
        refills go out several tasks per write.
        """
        best = None
        best_held = PREFETCH
        maxtasks = self._maxtasks
        for slot in self._slots.values():
            if slot.fd < 0 or slot.unwritable or (maxtasks is not None and slot.sent >= maxtasks):
                continue
            held = len(slot.inflight)
            if not slot.ready and (held or not self._may_start_with(slot, task)):
                continue
            if held == 0:
                return slot
            if (
                held < best_held
                and (held <= REFILL_AT or slot in filling)
                and slot.avg_time < FAST_TASK
                and now - slot.head_started < FAST_TASK
            ):
                if slot.queued_bytes + _bytes_to_send(slot, task) <= PREFETCH_BYTES:
                    best, best_held = slot, held
        return best

    def _may_start_with(self, slot: WorkerSlot, task: Task) -> bool:
        """Whether ``task`` may go to a worker still starting (its READY not received yet): no
        initializer runs first (its failure must fail tasks with InitializerError, not as a lost
        worker), the task is untimed (its clock would include the start-up), and it is small
        enough that the write cannot block (the worker reads its pipe only once it has started,
        and the pool thread must not wait for that)."""
        return self._initializer is None and task.timeout is None and _bytes_to_send(slot, task) <= PREFETCH_BYTES

    def _dispatch(self) -> None:
        """Hand queued tasks to workers with room (pool thread); one write per worker per round."""
        sends: dict[WorkerSlot, list[Any]] = {}
        with self._lock:
            if self._broken is not None:
                return
            pending = self._pending
            now = monotonic()
            cancelled = self._cancelled
            on_dispatch = self.on_dispatch
            while pending:
                task = pending[0]
                if task.job in cancelled:  # submitted by an imap feeder after its job was cancelled
                    pending.popleft()
                    continue
                slot = self._choose(task, now, sends)
                if slot is None:
                    break
                pending.popleft()
                if on_dispatch is not None and not on_dispatch(task):
                    continue
                frames = sends.setdefault(slot, [])
                known = slot.known
                func_id = task.func.id
                if func_id in known:
                    known.move_to_end(func_id)
                    loads = False
                else:
                    if len(known) >= WORKER_FUNCTION_CACHE:
                        old, _ = known.popitem(last=False)
                        frames.append(ForgetMessage.encode(old))
                    known[func_id] = None
                    frames.append(task.func.frame)
                    loads = True
                frames.extend(task.frames)
                if slot.inflight:
                    slot.queued_bytes += task.nbytes
                else:
                    slot.head_started = now
                if task.timeout is not None:
                    task.loads = loads
                    self._timed += 1
                slot.inflight.append(task)
                slot.sent += 1
        for slot, frames in sends.items():
            if not self._send(slot, frames):
                # The worker died before reading these tasks: they never ran, so they go back
                # to the queue; _bury handles the rest when the sentinel fires.
                unsent = [t for t in slot.inflight if any(f is t.frames[0] for f in frames)]
                for task in unsent:
                    slot.inflight.remove(task)
                    if task.timeout is not None:
                        self._timed -= 1
                slot.unwritable = True
                with self._lock:
                    self._pending.extendleft(reversed(unsent))

    def _send(self, slot: WorkerSlot, frames: list[Any]) -> bool:
        if slot.fd < 0:
            return False
        try:
            write_frames(slot.wfd, frames)
        except OSError:
            return False
        return True

    def _shutdown(self) -> None:
        """Terminate workers, fail what is outstanding, release descriptors (runs once)."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            if self.state == RUN:
                self.state = TERMINATE
            pending, self._pending = self._pending, deque()
        slots = list(self._slots.values())
        for slot in slots:
            if slot.process.exitcode is None:
                try:
                    slot.process.terminate()
                except (OSError, ValueError):
                    pass
        for slot in slots:
            slot.process.join(2)  # SIGTERM kills at once unless the task blocks it; then SIGKILL
            if slot.process.exitcode is None:
                slot.process.kill()
                slot.process.join()
            for task in slot.inflight:
                _release(task)
            _shm.sweep(slot.pid)
            slot.tasks.close()
            slot.results.close()
            try:
                slot.process.close()
            except ValueError:
                pass
        self._slots.clear()
        error = "the pool was terminated before this task completed"
        for task in pending:
            _release(task)
            task.sink.abort(TaskCancelledError(error))
        self.jobs.abort_all(lambda: TaskCancelledError(error))
        self._segments.close()  # the workers are gone: nobody will attach what is left
        self._selector.close()
        wake_fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in wake_fds:  # -1 first: a late _wake() must not write into a reused descriptor
            try:
                os.close(fd)
            except OSError:
                pass
