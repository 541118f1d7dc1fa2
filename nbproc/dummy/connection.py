"""``nbproc.dummy.connection``: ``Listener``, ``Client`` and ``Pipe`` between threads of one process.

The same API as :mod:`nbproc.connection`, for code that runs its "processes" as threads
(:mod:`nbproc.dummy`). Objects are handed over by reference — nothing is pickled, as between
threads — and the semantics are those of real connections where threads allow them.

Data flow (one process; any thread may hold either end)::

    Pipe():   conn_a.send(obj) --> [_Channel a->b] --> conn_b.recv()
              conn_a.recv()   <-- [_Channel b->a] <-- conn_b.send(obj)
              conn_a.close()  does nothing, as in the stdlib's dummy (the "child" thread holds the
                              same object); closing a Listener ends its pending clients' channels

    Listener(address)  registers itself under ``address`` in this module's table
    Client(address)    makes a Pipe(), queues the server end in the listener's backlog
                       (never blocks) and returns the client end
    Listener.accept()  takes the oldest queued server end (blocks until a client arrives)

Deliberate differences from the stdlib's ``multiprocessing.dummy.connection``, each towards
what a real connection does: ``Pipe(duplex=False)`` returns a read-only and a write-only
end; ``recv_bytes(maxlength)``,
``recv_bytes_into`` and ``send_bytes(buf, offset, size)`` check their arguments and raise
what real connections raise; a ``Listener`` is found by the address it was given (a
``(host, port)`` tuple or a path works as with sockets; the default is a fresh unique
string), ``Client`` to an unknown address raises ``ConnectionRefusedError``, and ``authkey``
is accepted and ignored (threads share memory: there is nobody to authenticate).
"""

from __future__ import annotations

import collections
import errno
import io
import itertools
import threading
import time
from typing import Any

from ..context import BufferTooShort

__all__ = ["Client", "Listener", "Pipe", "Connection"]

families = [None]

_FINISHED = object()  # queued by close(): what the reader sees after the last message


def _byte_range(length: int, offset: int, size: int | None) -> slice:
    """The part of a ``length``-byte buffer that ``send_bytes(buf, offset, size)`` sends.

    Invalid arguments raise ``ValueError`` with the messages of the stdlib's connections (the
    first failed check in this order), so code and tests written against either see the same.
    """
    stop = length if size is None else offset + size
    checks = (
        (offset < 0, "offset is negative"),
        (offset > length, "buffer length < offset"),
        (size is not None and size < 0, "size is negative"),
        (stop > length, "buffer length < offset + size"),
    )
    for failed, message in checks:
        if failed:
            raise ValueError(message)
    return slice(offset, stop)


def _is_buffer(obj: Any) -> bool:
    try:
        memoryview(obj).release()
    except TypeError:
        return False
    return True


class _Channel:
    """One direction of a connection: a FIFO of messages plus "writer closed" / "reader closed"."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._writer_closed = False
        self._reader_closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            if self._reader_closed:
                raise BrokenPipeError(errno.EPIPE, "the other end of the connection is closed")
            self._items.append(item)
            self._cond.notify()

    def get(self) -> Any:
        """The next message; blocks without limit; ``EOFError`` once the writer closed and all is read."""
        with self._cond:
            while not self._items:
                if self._writer_closed:
                    raise EOFError
                self._cond.wait()
            return self._items.popleft()

    def ready(self, timeout: float | None) -> bool:
        """Whether a message (or end of file) is there; waits at most ``timeout`` s (``None``: no limit)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while not (self._items or self._writer_closed):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close_writer(self) -> None:
        with self._cond:
            self._writer_closed = True
            self._cond.notify_all()

    def close_reader(self) -> None:
        with self._cond:
            self._reader_closed = True
            self._items.clear()


class Connection:
    """One end of a thread connection: ``send``/``recv`` objects, ``send_bytes``/``recv_bytes`` data."""

    def __init__(self, inbox: _Channel | None, outbox: _Channel | None) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False

    # -- state ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readable(self) -> bool:
        return self._inbox is not None

    @property
    def writable(self) -> bool:
        return self._outbox is not None

    def _check(self, *, reading: bool) -> Any:
        if self._closed:
            raise OSError("handle is closed")
        channel = self._inbox if reading else self._outbox
        if channel is None:
            raise OSError("connection is write-only" if reading else "connection is read-only")
        return channel

    def fileno(self) -> int:
        """Thread connections have no file descriptor (use :meth:`poll` to wait for one)."""
        raise io.UnsupportedOperation("a thread connection has no file descriptor")

    def close(self) -> None:
        """Does nothing, as with the stdlib's ``multiprocessing.dummy`` connections.

        A "child" here is a thread holding the *same* object as its parent, so the usual idiom
        of closing the child's end in the parent right after ``start()`` would otherwise close
        it under the running thread. (A message too long for ``recv_bytes(maxlength)`` still
        shuts this end for reading, as a real connection does.)
        """

    def _shut(self) -> None:
        """Really close this end: the peer reads what was sent, then gets ``EOFError``."""
        if self._closed:
            return
        self._closed = True
        if self._outbox is not None:
            self._outbox.close_writer()
        if self._inbox is not None:
            self._inbox.close_reader()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- objects -------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Hand ``obj`` to the other end (by reference). ``BrokenPipeError`` if the peer closed."""
        self._check(reading=False).put(obj)

    def recv(self) -> Any:
        """The next object; blocks without limit; ``EOFError`` when the peer closed and all is read."""
        return self._check(reading=True).get()

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether :meth:`recv` would not block: a message is waiting or the peer closed.

        Waits at most ``timeout`` seconds (``None``: no limit, a negative value: not at all).
        """
        return self._check(reading=True).ready(timeout)

    # -- byte messages -------------------------------------------------------------------
    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send ``buf[offset:offset + size]`` (offset and size in bytes) as one message."""
        channel = self._check(reading=False)
        if offset == 0 and size is None and not _is_buffer(buf):
            # The stdlib's dummy connections make send_bytes an alias of send: code written
            # against them (CPython's own tests among it) passes any object through.
            channel.put(buf)
            return
        with memoryview(buf) as view, view.cast("B") as data:
            message = bytes(data[_byte_range(len(data), offset, size)])
        channel.put(message)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """The next byte message; blocks without limit; ``EOFError`` when the peer closed.

        A message longer than ``maxlength`` raises ``OSError`` and, as with a real connection,
        this end can no longer read: a duplex end stops being readable, a read-only end closes.
        """
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        inbox = self._check(reading=True)
        message = inbox.get()
        if maxlength is not None and _is_buffer(message) and len(message) > maxlength:
            if self._outbox is not None:
                inbox.close_reader()
                self._inbox = None
            else:
                self._shut()
            raise OSError("bad message length")
        return message

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Copy the next byte message into ``buf`` at byte ``offset``; return its length.

        Blocks without limit. If it does not fit, raises :class:`BufferTooShort` whose
        ``args[0]`` is the whole message (which is consumed).
        """
        channel = self._check(reading=True)
        with memoryview(buf) as view, view.cast("B") as target:
            if offset < 0:
                raise ValueError("negative offset")
            if offset > len(target):
                raise ValueError("offset too large")
            message = channel.get()
            size = len(message)
            if offset + size > len(target):
                raise BufferTooShort(bytes(message))
            target[offset : offset + size] = message
        return size


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 - stdlib name
    """Two connected ends; with ``duplex=False`` the first only reads and the second only writes."""
    forward = _Channel()
    if not duplex:
        return Connection(forward, None), Connection(None, forward)
    backward = _Channel()
    return Connection(backward, forward), Connection(forward, backward)


_listeners: dict[Any, Listener] = {}
_listeners_lock = threading.Lock()
_fresh_ids = itertools.count(1)


class Listener:
    """Accepts :class:`Connection` objects from :func:`Client` calls in other threads.

    ``address`` is any hashable value (default: a fresh unique string); ``family``,
    ``backlog`` and ``authkey`` are accepted for compatibility and ignored — a ``Client``
    never waits for room in the backlog, and threads need no authentication.
    """

    def __init__(
        self,
        address: Any = None,
        family: Any = None,
        backlog: int = 1,
        authkey: bytes | None = None,
        **_ignored: Any,
    ) -> None:
        if authkey is not None and not isinstance(authkey, bytes):
            raise TypeError("authkey should be a byte string")
        self._backlog = _Channel()
        self._last_accepted = None
        with _listeners_lock:
            if address is None:
                address = f"nbproc.dummy.listener-{next(_fresh_ids)}"
                while address in _listeners:
                    address = f"nbproc.dummy.listener-{next(_fresh_ids)}"
            elif address in _listeners:
                raise OSError(errno.EADDRINUSE, "address already in use", str(address))
            _listeners[address] = self
        self._address = address
        self._closed = False

    @property
    def address(self) -> Any:
        return self._address

    @property
    def last_accepted(self) -> None:
        """Always ``None``: a thread connection has no peer address."""
        return self._last_accepted

    def accept(self) -> Connection:
        """The next client's connection; blocks without limit; ``OSError`` once the listener is closed."""
        if self._closed:
            raise OSError("listener is closed")
        try:
            return self._backlog.get()
        except EOFError:
            raise OSError("listener is closed") from None

    def _enqueue(self, server_end: Connection) -> None:
        self._backlog.put(server_end)

    def close(self) -> None:
        """Stop accepting: waiting ``accept()`` calls raise ``OSError``; clients not yet accepted get EOF."""
        if self._closed:
            return
        self._closed = True
        with _listeners_lock:
            if _listeners.get(self._address) is self:
                del _listeners[self._address]
        self._backlog.close_writer()
        while self._backlog.ready(0):
            try:
                self._backlog.get()._shut()
            except EOFError:
                break

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def Client(address: Any, family: Any = None, authkey: bytes | None = None, **_ignored: Any) -> Connection:  # noqa: N802
    """Connect to the :class:`Listener` at ``address``; ``ConnectionRefusedError`` if there is none.

    Never blocks: the connection waits in the listener's backlog until ``accept()`` takes it.
    """
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")
    with _listeners_lock:
        listener = _listeners.get(address)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "no listener at this address", str(address))
        client_end, server_end = Pipe()
        listener._enqueue(server_end)
    return client_end
