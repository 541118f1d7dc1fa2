"""Process-shared FIFO queues — ``Queue``, ``JoinableQueue`` and ``SimpleQueue`` — fed through nbproc.

Data flow of :class:`Queue` (and :class:`JoinableQueue`)::

    any process, caller's thread          same process, feeder thread        any process holding the queue
    ----------------------------          ---------------------------        -----------------------------
    put(obj)
      1. take a slot       (_sem; Full)
      2. dump_frames(obj) -> bytes
         (SerializationError raised
          here, in put()'s caller)
      3a. small item, nothing pending,
          pipe writable: with _wlock,
          write it now  ----------------------------------------------->  pipe  --->  get()
      3b. otherwise: append to _buffer,                                    ^            6. with _rlock: read one
          notify  --------------------->  4. pop all buffered messages     |               message's frames
                                          5. with _wlock: write each       |            7. free a slot (_sem)
                                             message's frames  ------------+            8. load_frames -> obj
                                                                                           (after releasing _rlock)

* **put()'s caller** serializes (with :mod:`nbproc.serialization`, so lambdas, closures and
  notebook-defined classes travel by value): an unpicklable item raises
  :class:`nbproc.SerializationError` naming the culprit in the code that called put(), where
  the stdlib loses it in its feeder thread with a traceback on stderr. The item's state is the
  one it had when put() ran (large writable buffers are copied, see ``snapshot`` in
  :func:`nbproc.connection.dump_frames`), not whatever it became by the time it was flushed.
  A small item is written by the caller itself when that provably cannot block (3a, see
  ``_DIRECT_WRITE``): it saves the two thread wake-ups of the hand-over to the feeder, which
  are most of a small item's latency. put() never waits for a reader either way.
* **the feeder thread** (one per queue per process, started by the first put() that needs it,
  a daemon) only writes bytes; ``_wlock`` keeps messages of different processes from
  interleaving. It exits after the sentinel that :meth:`Queue.close` (or the queue's finalizer)
  appends, closing this process's ends of the pipe, as the stdlib's does.
* **get()** in any process reads one whole message under ``_rlock`` and unpickles it after
  releasing the lock, so a slow unpickle never holds up other consumers.

What is reused from the stdlib: the pipe and its framing (:func:`nbproc.connection.Pipe`), the
locks and semaphores of the context (``ctx.Lock()``, ``ctx.BoundedSemaphore()``...), the
finalizer and after-fork registries of ``multiprocessing.util`` (so exit-time flushing runs in
the same order as for the stdlib's queues), and ``queue.Empty``/``queue.Full``.

Deliberate differences from ``multiprocessing.queues``:

* Serialization happens in put()'s caller (see above), so put() costs the pickling time that the
  stdlib spends later in its feeder thread; small items may be written by put() itself.
* An unpicklable item raises in put() (the stdlib prints a traceback from its feeder thread and
  drops the item), except for subclasses that override ``_on_queue_feeder_error``: they get the
  error through that hook, as with the stdlib.
* A blocking get() in a child process also watches its parent: when the parent has died and the
  queue is empty, get() raises :class:`EOFError` instead of waiting forever. The pipe itself can
  never report "all writers gone" because every process holding the queue holds its write end;
  the parent is the one writer a child can watch cheaply. (A sibling that is still producing
  does not keep this from happening; a parent dying before its children is already abnormal.)
* A queue received by a spawned child re-arms the after-fork reset, so a grandchild forked from
  it starts with a fresh feeder too.
* Not a subclass of ``multiprocessing.queues.Queue``; the private attributes the stdlib ``Pool``
  relies on (``_reader``, ``_writer``, ``_rlock``, ``_wlock``, ``_poll``) have the same meaning,
  and ``_writer.send``/``_reader.recv`` speak the same wire format as put()/get().
"""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import math
import os
import select
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterator
from multiprocessing import context as _std_context
from multiprocessing import process as _std_process
from multiprocessing import util
from queue import Empty, Full
from typing import Any

try:  # POSIX only; used to tell whether a queue's pipe is empty
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None  # type: ignore[assignment]

from .connection import Connection, Pipe, dump_frames, load_frames
from .connection import wait as _wait
from .serialization import SerializationError

__all__ = ["Queue", "SimpleQueue", "JoinableQueue", "Empty", "Full"]

# Marks the end of the feeder thread's work; appended by close() and by the queue's finalizer.
_SENTINEL = object()

_HAVE_POLL = hasattr(select, "poll")

# put() writes a message itself, skipping the hand-over to the feeder thread (two thread
# wake-ups per item, the bulk of a small item's latency), when (1) the message is one frame of at
# most PIPE_BUF bytes with its 4-byte header, (2) the feeder has nothing buffered or in flight, so
# this process's items stay in order, (3) the write lock is free right now, and (4) the pipe is
# empty (FIONREAD). Writing at most PIPE_BUF bytes into an empty pipe cannot block, and no other
# writer can fill it meanwhile (they all take the write lock): put() still never waits for a
# reader. A non-empty pipe means a reader is behind: then latency does not matter and the feeder,
# which flushes a burst of items with one system call, gives more throughput. Anything else
# (large items, a backlog, a busy lock, other platforms) goes through the feeder as before.
_DIRECT_WRITE = sys.platform == "linux" and hasattr(termios, "FIONREAD")
_DIRECT_WRITE_MAX = getattr(select, "PIPE_BUF", 0) - 4
# The feeder joins consecutive small messages into one write of at most this many bytes: larger
# batches would only add copying, while the system calls saved are already few.
_COALESCE_MAX = 256 * 1024


class _FeedState:
    """What put() and the feeder thread share, guarded by ``notempty``."""

    def __init__(self) -> None:
        self.notempty = threading.Condition(threading.Lock())
        self.buffer: collections.deque[Any] = collections.deque()
        # True while the feeder writes a batch it took from ``buffer``: put() must not write
        # around it. Cleared without the lock (a stale True only sends put() to the buffer).
        self.writing = False


def _sem_value_max() -> int:
    # Imported lazily, as the stdlib does: platforms without working shared semaphores raise
    # ImportError here, at queue creation, rather than at ``import nbproc``.
    from multiprocessing.synchronize import SEM_VALUE_MAX

    return SEM_VALUE_MAX


class _PipeWatch:
    """This process's view of a queue's pipe: is there data to read, is the pipe empty?

    A wait for data in a child process also ends when the parent exits: if there is still
    nothing to read then, :class:`EOFError` is raised (no writer may be left). The ``poll``
    object is built on first use and kept — rebuilding it per call cost more than the rest of a
    small get(). Callers hold the queue's read lock (waits) or write lock (``pipe_empty``), so
    nothing here is used by two threads at once. Queues make a fresh watch in each process
    (after fork, after unpickling), so the parent is the right one.
    """

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self._reader = reader
        self._writer = writer
        self._prepared = False
        self._parent: Any = None
        self._sentinel: Any = None
        self._poller: Any = None
        self._unread = array.array("i", [0])  # FIONREAD's output, reused

    def _prepare(self) -> None:
        # Lazily: a spawned child unpickles its queues before it knows its parent.
        self._parent = _std_process.parent_process()
        if self._parent is not None:
            self._sentinel = self._parent.sentinel
            if _HAVE_POLL:
                self._poller = select.poll()
                self._poller.register(self._reader.fileno(), select.POLLIN)
                self._poller.register(self._sentinel, select.POLLIN)
        self._prepared = True

    def before_blocking_read(self) -> None:
        """Called before a read without timeout: in a child, wait for data or the parent's end."""
        if not self._prepared:
            self._prepare()
        if self._parent is not None:
            self.wait_readable(None)

    def wait_readable(self, timeout: float | None) -> bool:
        """``True`` once data is there; ``False`` when ``timeout`` seconds pass first.

        ``None`` waits without limit; a negative timeout counts as zero. Interrupted waits
        resume. ``EOFError`` if the parent died and nothing is left to read.
        """
        if not self._prepared:
            self._prepare()
        if self._parent is None:
            return self._reader.poll(timeout)
        if self._poller is not None:
            ready = self._poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
            for fd, _ in ready:
                if fd != self._sentinel:
                    return True
        else:  # pragma: no cover - Windows: sentinels are handles, not descriptors
            ready = _wait([self._reader, self._sentinel], timeout)
            if self._reader in ready:
                return True
        if ready and not self._reader.poll():
            raise EOFError(
                f"the parent process (pid {self._parent.pid}) exited while this process waited on an "
                "empty queue; nothing is left to read"
            )
        return False

    def pipe_empty(self) -> bool:
        """Whether no byte is waiting in the pipe right now (Linux; callers hold the write lock)."""
        fcntl.ioctl(self._writer.fileno(), termios.FIONREAD, self._unread, True)
        return self._unread[0] == 0


class Queue:
    """A multi-producer, multi-consumer FIFO queue shared between processes.

    ``maxsize <= 0`` means unbounded (in practice the platform's largest semaphore value).
    Pass it to children as a ``Process`` argument (or let fork inherit it); pickling it any
    other way raises ``RuntimeError``, as in the stdlib.
    """

    def __init__(self, maxsize: int = 0, *, ctx: Any) -> None:
        if maxsize <= 0:
            maxsize = _sem_value_max()
        self._maxsize = maxsize
        self._reader, self._writer = Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._opid = os.getpid()
        # Writes to a message-oriented win32 pipe are atomic; elsewhere writers take a lock.
        self._wlock = None if sys.platform == "win32" else ctx.Lock()
        self._sem = ctx.BoundedSemaphore(maxsize)
        self._ignore_epipe = False  # set by owners that tear the reader down on purpose
        self._reset()
        self._register_after_fork()

    # -- crossing process boundaries ----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        _std_context.assert_spawning(self)
        return {
            "ignore_epipe": self._ignore_epipe,
            "maxsize": self._maxsize,
            "reader": self._reader,
            "writer": self._writer,
            "rlock": self._rlock,
            "wlock": self._wlock,
            "sem": self._sem,
            "opid": self._opid,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._ignore_epipe = state["ignore_epipe"]
        self._maxsize = state["maxsize"]
        self._reader = state["reader"]
        self._writer = state["writer"]
        self._rlock = state["rlock"]
        self._wlock = state["wlock"]
        self._sem = state["sem"]
        self._opid = state["opid"]
        self._reset()
        self._register_after_fork()

    def _register_after_fork(self) -> None:
        if sys.platform != "win32":
            util.register_after_fork(self, Queue._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the parent's feeder thread and buffer do not exist here."""
        util.debug("Queue._after_fork()")
        self._reset()

    def _reset(self) -> None:
        self._feed = _FeedState()
        self._notempty = self._feed.notempty
        self._buffer = self._feed.buffer
        self._thread: threading.Thread | None = None
        self._jointhread: util.Finalize | None = None
        self._joincancelled = False
        self._closed = False
        self._close: util.Finalize | None = None
        self._wrote_directly = False
        self._poll = self._reader.poll
        self._watch = _PipeWatch(self._reader, self._writer)

    # -- producing ------------------------------------------------------------------------
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` on the queue; it is serialized now, in this thread.

        Blocks while the queue is full: for ever with ``timeout=None``, at most ``timeout``
        seconds otherwise, then raises ``queue.Full``; with ``block=False`` raises ``queue.Full``
        at once (timeout ignored). An unserializable ``obj`` raises
        :class:`nbproc.SerializationError` and takes no slot. ``ValueError`` once closed.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if not self._sem.acquire(block, timeout):
            raise Full
        try:
            self._append(dump_frames(obj, what="Queue item", snapshot=True))
        except BaseException as exc:
            self._sem.release()
            if isinstance(exc, SerializationError) and self._reports_errors_itself():
                self._on_queue_feeder_error(exc.__cause__ or exc, obj)
                return
            raise

    def _reports_errors_itself(self) -> bool:
        # A subclass that overrides the stdlib's error hook (as concurrent.futures' executor
        # queue does, to fail the one task whose item cannot be pickled) is handed the
        # serialization error and the item, as the stdlib's feeder would; put() then returns.
        return type(self)._on_queue_feeder_error is not Queue._on_queue_feeder_error

    def _append(self, message: list[Any]) -> None:
        """Hand a serialized message over: written right here if possible, else buffered."""
        with self._notempty:
            if not self._write_now(message):
                self._buffer_for_feeder(message)

    def _buffer_for_feeder(self, message: list[Any]) -> None:
        # Caller holds self._notempty.
        if self._thread is None:
            self._start_thread()
        self._buffer.append(message)
        self._notempty.notify()

    def _write_now(self, message: list[Any]) -> bool:
        """Write ``message`` from the calling thread if that cannot block (see ``_DIRECT_WRITE``).

        Caller holds ``self._notempty``. Returns whether the message was written.
        """
        if (
            not _DIRECT_WRITE
            or self._feed.writing
            or self._buffer
            or len(message) != 1
            or len(message[0]) > _DIRECT_WRITE_MAX
            or self._wlock is None
            or not self._wlock.acquire(False)
        ):
            return False
        try:
            if not self._watch.pipe_empty():
                return False  # a reader is behind: let the feeder batch
            self._writer._send_bytes(message[0])
        finally:
            self._wlock.release()
        self._wrote_directly = True
        return True

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``: raises ``queue.Full`` at once if there is no free slot."""
        return self.put(obj, False)

    # -- consuming ------------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item.

        Blocks while the queue is empty: for ever with ``timeout=None``, at most ``timeout``
        seconds otherwise, then raises ``queue.Empty``; with ``block=False`` raises
        ``queue.Empty`` unless an item is there now (timeout ignored). In a child process whose
        parent has died, a get() that finds nothing raises ``EOFError``. ``ValueError`` once
        closed.
        """
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        forever = block and timeout is None
        deadline = time.monotonic() + timeout if block and not forever else 0.0
        if not self._rlock.acquire(block, timeout):  # (True, None) waits for ever
            raise Empty
        try:
            if forever:
                self._watch.before_blocking_read()
            elif not self._watch.wait_readable(max(0.0, deadline - time.monotonic()) if block else 0.0):
                raise Empty  # the time left after waiting for the lock ran out (or block=False)
            message = self._reader._recv_frames()
            self._sem.release()  # a slot is free: a put() blocked on maxsize may go on
        finally:
            self._rlock.release()
        return load_frames(message)  # unpickled outside the lock: other readers need not wait

    def get_nowait(self) -> Any:
        """``get(False)``: raises ``queue.Empty`` at once if no item is available."""
        return self.get(False)

    # -- state (approximate, as documented) ---------------------------------------------------
    def qsize(self) -> int:
        """Approximate number of items (put but not yet got); ``NotImplementedError`` on macOS."""
        return self._maxsize - self._sem._semlock._get_value()

    def empty(self) -> bool:
        """Whether the pipe holds nothing right now (items still in a feeder buffer don't count)."""
        return not self._poll()

    def full(self) -> bool:
        return self._sem._semlock._is_zero()

    # -- shutting down ------------------------------------------------------------------------
    def close(self) -> None:
        """No more puts from this process; the feeder flushes what it holds, then exits.

        Once the queue has been used by this process, its ends of the pipe are closed after the
        flush (``empty()``/``get()`` then raise), as in the stdlib; closing an unused queue only
        forbids further puts.
        """
        self._closed = True
        close, self._close = self._close, None
        if close is not None:
            close()  # the feeder closes the ends after flushing
        elif self._wrote_directly:
            # No feeder ever ran: every put() wrote its item itself, so nothing is left to flush.
            with self._notempty:
                self._reader.close()
                self._writer.close()

    def join_thread(self) -> None:
        """Wait until the feeder thread has flushed everything and exited (after :meth:`close`).

        Blocks without a timeout — until a reader has made room in the pipe for all buffered
        data. Does nothing after :meth:`cancel_join_thread` or if nothing was ever put.
        """
        util.debug("Queue.join_thread()")
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")
        if self._jointhread is not None:
            self._jointhread()

    def cancel_join_thread(self) -> None:
        """Let this process exit without flushing (buffered items may be lost)."""
        util.debug("Queue.cancel_join_thread()")
        self._joincancelled = True
        if self._jointhread is not None:
            self._jointhread.cancel()

    def _terminate_broken(self) -> None:
        """Shut down a queue whose readers are gone (used by executors, as in the stdlib)."""
        self._reader.close()
        self.close()
        self.join_thread()

    # -- the feeder thread ----------------------------------------------------------------------
    def _start_thread(self) -> None:
        util.debug("Queue._start_thread()")
        self._buffer.clear()
        thread = threading.Thread(
            target=_feed,
            args=(
                self._feed,
                self._writer,
                self._wlock,
                self._reader.close,
                self._ignore_epipe,
                self._on_queue_feeder_error,
                self._sem,
            ),
            name="QueueFeederThread",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            # During interpreter shutdown a thread can fail to start (gh-109047): keep the queue
            # consistent so that a later put() may try again.
            self._thread = None
            raise
        self._thread = thread
        if not self._joincancelled:
            # Runs at exit after the close finalizer below (priorities: higher first).
            self._jointhread = util.Finalize(thread, _finalize_join, [weakref.ref(thread)], exitpriority=-5)
        # Sends the sentinel when the queue is garbage collected or the process exits.
        self._close = util.Finalize(self, _finalize_close, [self._buffer, self._notempty], exitpriority=10)

    @staticmethod
    def _on_queue_feeder_error(exc: BaseException, message: Any) -> None:
        """Called in the feeder thread when writing a message fails (hook kept from the stdlib).

        The message is dropped and its slot freed. Serialization errors are raised by put()
        instead — unless a subclass overrides this hook: then put() calls it with the original
        exception and the object, and returns (the stdlib's contract for the hook).
        """
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)

    __class_getitem__ = classmethod(types.GenericAlias)


def _finalize_join(thread_ref: weakref.ref[threading.Thread]) -> None:
    util.debug("joining queue thread")
    thread = thread_ref()
    if thread is not None:
        thread.join()


def _finalize_close(buffer: collections.deque[Any], notempty: threading.Condition) -> None:
    util.debug("telling queue thread to quit")
    with notempty:
        buffer.append(_SENTINEL)
        notempty.notify()


def _feed(
    state: _FeedState,
    writer: Connection,
    wlock: Any,
    reader_close: Any,
    ignore_epipe: bool,
    onerror: Any,
    sem: Any,
) -> None:
    """Body of the feeder thread: move serialized messages from ``buffer`` to the pipe.

    Takes everything buffered at once (one wake-up per burst of puts, not per item). Holds no
    reference to the queue itself, so the queue can be collected — its finalizer then sends the
    sentinel. A write error drops that message, frees its slot and is reported through
    ``onerror``; errors while the interpreter is exiting are only logged.
    """
    util.debug("starting thread to feed data to pipe")
    buffer, notempty = state.buffer, state.notempty
    while True:
        state.writing = False
        with notempty:
            while not buffer:
                notempty.wait()
            batch = list(buffer)
            buffer.clear()
            state.writing = True
        for group in _write_groups(batch):
            if group is _SENTINEL:
                util.debug("feeder thread got sentinel -- exiting")
                reader_close()
                writer.close()
                return
            try:
                if wlock is None:
                    _write_group(writer, group)
                else:
                    with wlock:
                        _write_group(writer, group)
            except Exception as exc:
                if ignore_epipe and getattr(exc, "errno", 0) == errno.EPIPE:
                    return
                if util.is_exiting():
                    util.info("error in queue thread: %s", exc)
                    return
                for message in group:  # none of them was delivered intact
                    sem.release()
                    onerror(exc, message)


def _write_groups(batch: list[Any]) -> Iterator[Any]:
    """Split a batch into groups written with one system call each (or the sentinel).

    Consecutive one-frame messages are grouped up to :data:`_COALESCE_MAX` bytes; a message
    with out-of-band buffers, or a single large frame, is a group of its own.
    """
    group: list[Any] = []
    size = 0
    for message in batch:
        if message is _SENTINEL or len(message) != 1 or len(message[0]) >= _COALESCE_MAX:
            if group:
                yield group
                group, size = [], 0
            yield message if message is _SENTINEL else [message]
            continue
        group.append(message)
        size += len(message[0])
        if size >= _COALESCE_MAX:
            yield group
            group, size = [], 0
    if group:
        yield group


def _write_group(writer: Connection, group: list[Any]) -> None:
    if len(group) == 1:
        writer._send_frames(group[0])
    else:
        writer._send_small_messages([message[0] for message in group])


class JoinableQueue(Queue):
    """A :class:`Queue` with ``task_done()`` and ``join()``."""

    def __init__(self, maxsize: int = 0, *, ctx: Any) -> None:
        super().__init__(maxsize, ctx=ctx)
        self._unfinished_tasks = ctx.Semaphore(0)
        self._cond = ctx.Condition()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["cond"] = self._cond
        state["unfinished_tasks"] = self._unfinished_tasks
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._cond = state["cond"]
        self._unfinished_tasks = state["unfinished_tasks"]

    def _append(self, message: list[Any]) -> None:
        # Counted while holding _cond: a consumer that already got a directly written item
        # waits in task_done() for _cond, so it never sees the count before the increment.
        with self._notempty, self._cond:
            if not self._write_now(message):
                self._buffer_for_feeder(message)
            self._unfinished_tasks.release()

    def _all_done(self) -> bool:
        """Every item put so far was marked done (the semaphore counts the unfinished ones)."""
        return self._unfinished_tasks._semlock._is_zero()

    def task_done(self) -> None:
        """Mark one got item as processed; ``ValueError`` if called more times than items were put."""
        with self._cond:
            if not self._unfinished_tasks.acquire(False):
                raise ValueError("task_done() called too many times")
            if self._all_done():
                self._cond.notify_all()

    def join(self) -> None:
        """Block until every item put so far has been got and marked done (no timeout)."""
        with self._cond:
            self._cond.wait_for(self._all_done)


class SimpleQueue:
    """A locked pipe: put() serializes and writes in the caller's thread, get() reads.

    put() blocks while the pipe is full (there is no feeder thread and no size limit).
    """

    def __init__(self, *, ctx: Any) -> None:
        self._reader, self._writer = Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._wlock = None if sys.platform == "win32" else ctx.Lock()
        self._poll = self._reader.poll
        self._reset()
        self._register_after_fork()

    def _register_after_fork(self) -> None:
        if sys.platform != "win32":
            util.register_after_fork(self, SimpleQueue._reset)

    def _reset(self) -> None:
        """Fresh per-process state (after fork, or once unpickled in a child)."""
        self._watch = _PipeWatch(self._reader, self._writer)

    def __getstate__(self) -> dict[str, Any]:
        _std_context.assert_spawning(self)
        return {"reader": self._reader, "writer": self._writer, "rlock": self._rlock, "wlock": self._wlock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._reader = state["reader"]
        self._writer = state["writer"]
        self._rlock = state["rlock"]
        self._wlock = state["wlock"]
        self._poll = self._reader.poll
        self._reset()
        self._register_after_fork()

    def close(self) -> None:
        """Close both ends in this process; later calls raise ``OSError``."""
        self._reader.close()
        self._writer.close()

    def empty(self) -> bool:
        return not self._poll()

    def get(self) -> Any:
        """Remove and return an item, blocking without a timeout while the queue is empty.

        In a child process whose parent has died, finding nothing raises ``EOFError``.
        """
        with self._rlock:
            self._watch.before_blocking_read()
            message = self._reader._recv_frames()
        return load_frames(message)

    def put(self, obj: Any) -> None:
        """Serialize ``obj`` (``SerializationError`` names what failed) and write it to the pipe."""
        message = dump_frames(obj, what="SimpleQueue item")
        # Without a write lock (a Windows message pipe, where each write is atomic) nothing
        # needs guarding.
        with self._wlock if self._wlock is not None else contextlib.nullcontext():
            self._writer._send_frames(message)

    __class_getitem__ = classmethod(types.GenericAlias)
