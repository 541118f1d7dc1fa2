"""Connections, ``Pipe``, ``Listener``/``Client`` and ``wait`` — sending through nbproc's serializer.

What is reused from the stdlib: the framing (a 4-byte length header, 8 bytes more for frames
over 2 GiB), the socket and pipe handling, ``wait`` and the HMAC challenge/response
(``deliver_challenge``/``answer_challenge``) — they are proven, and reusing them keeps nbproc
interoperable with a stdlib peer for byte-level traffic.

What nbproc owns: how objects become frames. ``Connection.send`` serializes with
:mod:`nbproc.serialization` (cloudpickle by default), so a notebook-defined function, lambda
or class instance crosses under every start method. Large contiguous buffers (numpy arrays,
bytearrays above :data:`OOB_THRESHOLD`) travel *out of band*: the pickle stream carries a
reference and each buffer follows as its own frame, which saves a copy on each side::

    sender                                         receiver
    [OOB header: magic + buffer count] ----------> recv_bytes -> magic? read count
    [pickle stream (small)]            ---------->   read pickle frame
    [buffer 1] ... [buffer n]          ---------->   read n frames, pickle.loads(..., buffers)

A message without large buffers is a single ordinary pickle frame, exactly what the stdlib
sends. ``Listener.accept`` and ``Client`` authenticate before anything from the peer is
unpickled: the challenge exchange uses only ``send_bytes``/``recv_bytes`` with a length limit.
"""

from __future__ import annotations

import multiprocessing.connection as _std
import os
import pickle
import socket
import struct
from multiprocessing import reduction as _std_reduction
from typing import Any

from . import serialization
from .context import AuthenticationError, BufferTooShort

__all__ = [
    "Client",
    "Connection",
    "Listener",
    "Pipe",
    "wait",
    "deliver_challenge",
    "answer_challenge",
    "AuthenticationError",
    "BufferTooShort",
]

# Buffers smaller than this stay in the pickle stream: an extra frame costs a syscall and a
# header, which only pays off once copying the data costs more (measured: ~64 KiB here).
OOB_THRESHOLD = 64 * 1024
# 0xFF is not a pickle opcode, so an out-of-band header can never be mistaken for a pickle.
_OOB_MAGIC = b"\xffNBPROC-OOB"
_COUNT = struct.Struct("!I")

wait = _std.wait
deliver_challenge = _std.deliver_challenge
answer_challenge = _std.answer_challenge
address_type = _std.address_type
arbitrary_address = _std.arbitrary_address
families = _std.families
default_family = _std.default_family
CONNECTION_TIMEOUT = _std.CONNECTION_TIMEOUT


class Connection(_std.Connection):
    """A stdlib ``Connection`` whose ``send``/``recv`` use nbproc's serializer."""

    def send(self, obj: Any) -> None:
        """Send a serializable object (see :mod:`nbproc.serialization`)."""
        self._check_closed()
        self._check_writable()
        buffers: list[memoryview] = []

        def keep_in_band(buf: pickle.PickleBuffer) -> bool:
            raw = buf.raw()
            if raw.nbytes < OOB_THRESHOLD:
                return True
            buffers.append(raw)
            return False

        data = serialization.dumps(obj, what="Connection.send() object", buffer_callback=keep_in_band)
        if buffers:
            self._send_bytes(_OOB_MAGIC + _COUNT.pack(len(buffers)))
            self._send_bytes(data)
            for raw in buffers:
                self._send_bytes(raw)
        else:
            self._send_bytes(data)

    def recv(self) -> Any:
        """Receive an object; blocks until one arrives, raises ``EOFError`` if the peer closed."""
        self._check_closed()
        self._check_readable()
        view = self._recv_bytes().getbuffer()
        if view[: len(_OOB_MAGIC)] == _OOB_MAGIC:
            (count,) = _COUNT.unpack_from(view, len(_OOB_MAGIC))
            view.release()
            data = self._recv_bytes().getbuffer()
            buffers = [self._recv_bytes().getbuffer() for _ in range(count)]
            return serialization.loads(data, buffers=buffers)
        return serialization.loads(view)


def _adopt(conn: Any) -> Connection:
    """Turn a stdlib connection (from the stdlib's listener or client) into an nbproc one.

    The stdlib's Connection has no ``detach()``; taking its handle and clearing it is what
    keeps the stdlib object from closing the descriptor when it is collected.
    """
    handle, conn._handle = conn._handle, None
    return Connection(handle, readable=conn.readable, writable=conn.writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:  # noqa: N802 - stdlib name
    """A pair of connected Connections (duplex by default; else ``(read end, write end)``)."""
    if duplex:
        s1, s2 = socket.socketpair()
        s1.setblocking(True)
        s2.setblocking(True)
        return Connection(s1.detach()), Connection(s2.detach())
    read_fd, write_fd = os.pipe()
    return Connection(read_fd, writable=False), Connection(write_fd, readable=False)


class Listener(_std.Listener):
    """A bound socket that accepts authenticated :class:`Connection` objects."""

    def accept(self) -> Connection:
        """Wait for a client; with an authkey, run the challenge both ways before returning.

        A client that fails authentication raises :class:`AuthenticationError` here and its
        connection is closed; the listener stays open for the next client.
        """
        if self._listener is None:
            raise OSError("listener is closed")
        conn = _adopt(self._listener.accept())
        if self._authkey:
            try:
                deliver_challenge(conn, self._authkey)
                answer_challenge(conn, self._authkey)
            except BaseException:
                conn.close()
                raise
        return conn


def Client(address: Any, family: str | None = None, authkey: bytes | None = None) -> Connection:  # noqa: N802
    """Connect to a :class:`Listener` at ``address`` (and authenticate with ``authkey``)."""
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")
    family = family or address_type(address)
    _std._validate_family(family)
    raw = _std.PipeClient(address) if family == "AF_PIPE" else _std.SocketClient(address)
    conn = _adopt(raw)
    if authkey is not None:
        try:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
        except BaseException:
            conn.close()
            raise
    return conn


# -- crossing process boundaries ------------------------------------------------------------


def rebuild_connection(df: Any, readable: bool, writable: bool) -> Connection:
    return Connection(df.detach(), readable, writable)


def reduce_connection(conn: Connection) -> tuple[Any, tuple[Any, bool, bool]]:
    """A connection handed to a child travels as a duplicated file descriptor."""
    df = _std_reduction.DupFd(conn.fileno())
    return rebuild_connection, (df, conn.readable, conn.writable)


serialization.register(Connection, reduce_connection)
