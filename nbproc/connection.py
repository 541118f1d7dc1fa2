"""Connections, ``Pipe``, ``Listener``/``Client`` and ``wait`` — sending through nbproc's serializer.

What is reused from the stdlib: the wire format of frames (a 4-byte length header, 8 bytes
more for frames over 2 GiB), the socket and pipe handling, ``send_bytes``/``recv_bytes``,
``wait`` and the HMAC challenge/response (``deliver_challenge``/``answer_challenge``) — they
are proven, and reusing them keeps nbproc interoperable with a stdlib peer for byte-level
traffic.

What nbproc owns: how objects become frames, and the one implementation of writing and
reading them (the "framing" section below, which the pool's worker pipes use too). ``Connection.send`` serializes with
:mod:`nbproc.serialization` (cloudpickle by default), so a notebook-defined function, lambda
or class instance crosses under every start method. Large contiguous buffers (numpy arrays,
``pickle.PickleBuffer`` objects above :data:`OOB_THRESHOLD`) travel *out of band*: the pickle stream carries a
reference and each buffer follows as its own frame, which saves a copy on each side::

    sender                                         receiver
    [OOB header: magic + buffer count] ----------> FrameReader -> magic? read count
    [pickle stream (small)]            ---------->   read pickle frame
    [buffer 1] ... [buffer n]          ---------->   read n frames, pickle.loads(..., buffers)

A message without large buffers is a single ordinary pickle frame, exactly what the stdlib
sends.

``Listener.accept`` and ``Client`` authenticate before anything from the peer is unpickled
(server side, one thread, all bytes; each frame at most 256 bytes)::

    Listener.accept()                                 Client()
      socket accept  <-------------- connect ------------
      deliver_challenge: #CHALLENGE# + random -------->  answer_challenge
                         <-------------------- HMAC(key, challenge)
                         #WELCOME# / #FAILURE# -------->
      answer_challenge   <------ #CHALLENGE# + random  deliver_challenge
                         HMAC(key, challenge) -------->
                         <------------- #WELCOME# / #FAILURE#
      return Connection                               return Connection

The server side reads under a deadline (``handshake_timeout``), so a client that connects
and goes silent, or sends half a frame, costs the listener at most that long.
"""

from __future__ import annotations

import multiprocessing.connection as _std
import os
import pickle
import select
import socket
import struct
import sys
import time
from multiprocessing import reduction as _std_reduction
from multiprocessing.process import current_process

from . import _shm_buffers as _shm
from . import serialization
from .exceptions import (
    AuthenticationError,
    BufferTooShort,
    HandshakeEOFError,
    HandshakeMessageError,
    HandshakeTimeoutError,
    TruncatedFrameError,
)

TYPE_CHECKING = False  # typing is not imported: every pool worker imports this module (~2.5 ms)
if TYPE_CHECKING:
    from typing import Any

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
    "HandshakeTimeoutError",
    "HandshakeEOFError",
    "TruncatedFrameError",
    "HandshakeMessageError",
    "DEFAULT_HANDSHAKE_TIMEOUT",
]

address_type = _std.address_type
arbitrary_address = _std.arbitrary_address
families = _std.families
default_family = _std.default_family
CONNECTION_TIMEOUT = _std.CONNECTION_TIMEOUT

# The handshake's protocol constants and helpers are the running stdlib's (nbproc speaks its
# HMAC protocol, so a stdlib peer of the same version agrees). Their names changed in 3.12
# (``CHALLENGE`` became ``_CHALLENGE``, digest negotiation added ``_create_response``...);
# whichever this Python has is available here under the same name.
for _name in (
    "CHALLENGE", "WELCOME", "FAILURE", "MESSAGE_LENGTH",
    "_CHALLENGE", "_WELCOME", "_FAILURE", "_MD5ONLY_MESSAGE_LENGTH", "_MD5_DIGEST_LEN",
    "_MAX_DIGEST_LEN", "_ALLOWED_DIGESTS", "_create_response", "_verify_challenge",
):  # fmt: skip
    if hasattr(_std, _name):
        globals()[_name] = getattr(_std, _name)
del _name


def wait(object_list: Any, timeout: float | None = None) -> list[Any]:
    """Wait until an object in ``object_list`` is ready; return the ready ones (the stdlib's ``wait``).

    Objects may be readable connections, connected sockets, and ``Process.sentinel`` values
    (or any object with ``fileno()``, or a file descriptor). A connection or socket is ready
    when it has data or its peer has closed; a sentinel is ready when its process has ended.
    Blocking: waits at most ``timeout`` seconds (``None``: no limit; negative counts as 0)
    and returns an empty list when it runs out. Interrupted system calls are retried.
    """
    return _std.wait(object_list, timeout)


# -- framing: the one implementation of frames and out-of-band buffers -----------------------
#
# Every byte nbproc sends between processes goes through this section: connections, queues
# (through Connection) and the pool's worker pipes (on raw descriptors, see _pool_workers).
#
#   sender                                                 receiver
#   OutOfBand(snapshot) collects the large buffers         FrameReader(fd, read_ahead=...)
#     while serialization.dumps pickles the rest             header -> size (4 bytes, or -1 then 8)
#   pack_frames(frames) -> [header+small frames joined,      small frame: bytes / view of the chunk
#                           big frame's header, big view]    large frame: read into its own bytearray
#   write_all(fd, part) / Connection._send(part)           read_buffer(): always a writable buffer
#
# The wire format is the stdlib's connection framing, so a stdlib peer reads ordinary messages.

#: Buffers (PEP 574) of at least this many bytes travel *out of band*, as frames of their own,
#: and frames this large are read into a buffer of their own: an extra frame costs a system
#: call and a header, which pays off only once copying the data costs more (measured: ~64 KiB).
#: Smaller ones are copied into the pickle stream, where unpickling them is cheapest.
OOB_THRESHOLD = 64 * 1024
#: Frames up to this size are written together with their header (and with the frames around
#: them) in one system call; larger ones are written from a view, without joining, since a copy
#: of the body would then cost more than the extra call. The stdlib uses the same bound.
SMALL_FRAME = 16 * 1024
#: A reader that owns its descriptor (a pool pipe) asks for this much per read: the capacity of
#: a Linux pipe, so one call takes every frame already waiting. Larger would only allocate more.
READ_CHUNK = 64 * 1024
#: Largest size the 4-byte header holds; bigger frames send -1 and then an 8-byte size.
MAX_SHORT_FRAME = 0x7FFFFFFF

_HEADER = struct.Struct("!i")  # the stdlib's frame header: signed 32-bit length, -1 = 64-bit follows
_LONG_HEADER = struct.Struct("!Q")
_LONG_MARKER = _HEADER.pack(-1)  # the 4-byte header of a frame whose size follows in 8 bytes
# 0xFF is not a pickle opcode, so an out-of-band header can never be mistaken for a pickle.
_OOB_MAGIC = b"\xffNBPROC-OOB"
_COUNT = struct.Struct("!I")


def frame_header(size: int) -> bytes:
    """The header written before a frame of ``size`` bytes (the stdlib's encoding)."""
    if size > MAX_SHORT_FRAME:
        return _LONG_MARKER + _LONG_HEADER.pack(size)
    return _HEADER.pack(size)


def parse_header(data: Any, offset: int = 0) -> tuple[int, int] | None:
    """``(frame size, header length)`` from ``data[offset:]``, or ``None`` if the header is incomplete.

    Raises :class:`OSError` for a negative size other than -1 (not a frame of this protocol).
    """
    if len(data) - offset < _HEADER.size:
        return None
    (size,) = _HEADER.unpack_from(data, offset)
    if size >= 0:
        return size, _HEADER.size
    if size != -1:
        raise OSError(f"bad message length: {size}")
    if len(data) - offset < _HEADER.size + _LONG_HEADER.size:
        return None
    (size,) = _LONG_HEADER.unpack_from(data, offset + _HEADER.size)
    return size, _HEADER.size + _LONG_HEADER.size


def pack_frames(frames: list[Any]) -> list[Any]:
    """The writes that put ``frames`` on the wire: as few system calls as copying allows.

    Consecutive small frames are joined with their headers into one ``bytes`` (one wake-up of
    the reader); a large frame is preceded by its header and kept as a view, never copied.
    """
    pack = _HEADER.pack
    if len(frames) == 1 and type(frames[0]) is bytes and len(frames[0]) <= SMALL_FRAME:
        return [pack(len(frames[0])) + frames[0]]  # the common case, without the loop
    parts: list[Any] = []
    small: list[Any] = []
    for frame in frames:
        if type(frame) is bytes and len(frame) <= SMALL_FRAME:  # the pool's hot path: tasks, results
            small.append(pack(len(frame)))
            small.append(frame)
            continue
        view = frame if isinstance(frame, bytes) else memoryview(frame).cast("B")
        if len(view) <= SMALL_FRAME:
            small.append(pack(len(view)))
            small.append(view)
            continue
        small.append(frame_header(len(view)))
        parts.append(b"".join(small))
        parts.append(view)
        small = []
    if small:
        parts.append(b"".join(small))
    return parts


def write_all(fd: int, data: Any) -> None:
    """Write all of ``data`` to ``fd`` (blocks while the peer has no room; raises what ``os.write`` raises)."""
    done = os.write(fd, data)
    if done == len(data):  # almost always: a pipe takes a small write whole
        return
    view = memoryview(data)[done:]
    while view:
        view = view[os.write(fd, view) :]


def write_frames(fd: int, frames: list[Any]) -> None:
    """Write ``frames`` to the descriptor ``fd`` (see :func:`pack_frames` and :func:`write_all`)."""
    for part in pack_frames(frames):
        write_all(fd, part)


class OutOfBand:
    """Decides, buffer by buffer, what the pickler sends out of band — the seam for shared memory.

    An instance is the pickler's ``buffer_callback`` (PEP 574): called with each
    :class:`pickle.PickleBuffer` the object holds; returning ``True`` keeps that buffer in the
    pickle stream, ``False`` means it is in :attr:`buffers` and will travel as a frame of its own.
    Kept in band: buffers under :data:`OOB_THRESHOLD`, and non-contiguous ones (``raw()``
    raises ``BufferError``; the pickler then copies them into the stream itself). With
    ``snapshot`` the writable buffers are copied now — for callers that write the frames later
    and promise the object's state at call time; read-only ones cannot change and are not copied.

    A transport that places large buffers elsewhere (shared memory) subclasses this and
    overrides :meth:`take`; everything else — framing, reading, rebuilding — stays as it is.
    """

    __slots__ = ("buffers", "snapshot")

    def __init__(self, snapshot: bool = False) -> None:
        self.buffers: list[Any] = []
        self.snapshot = snapshot

    def __call__(self, buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous
            return True
        if raw.nbytes < OOB_THRESHOLD:
            return True
        return self.take(raw)

    def take(self, raw: memoryview) -> bool:
        """Keep ``raw`` (a large contiguous buffer) for its own frame; ``False`` = not in band."""
        self.buffers.append(bytes(raw) if self.snapshot and not raw.readonly else raw)
        return False


class _SharedMemoryOutOfBand(OutOfBand):
    """Out of band, and buffers of :data:`nbproc._shm_buffers.SHM_THRESHOLD` bytes or more in
    shared memory: their frame holds only the segment's name (see :mod:`nbproc._shm_buffers`).
    The copy into the segment is also a snapshot. Falls back to the pipe if a segment cannot
    be made (``/dev/shm`` full). With ``segments`` (a sender's :class:`~nbproc._shm_buffers.SegmentCache`),
    segments its receivers have finished with are written again instead of fresh ones."""

    __slots__ = ("segments",)

    def take(self, raw: memoryview) -> bool:
        if raw.nbytes >= _shm.SHM_THRESHOLD:
            try:
                self.buffers.append(_shm.export(raw) if self.segments is None else self.segments.export(raw))
                return False
            except OSError:
                pass
        return super().take(raw)


def dumps_with_buffers(
    obj: Any,
    *,
    what: str | None,
    snapshot: bool = False,
    shared_memory: bool = True,
    segments: _shm.SegmentCache | None = None,
) -> tuple[bytes, list[Any]]:
    """Serialize ``obj``: the pickle stream, and the large buffers sent apart (see :class:`OutOfBand`).

    ``shared_memory``: whether the receiver is a process of this tree on this machine, so that
    the largest buffers may travel through shared memory (used when this process shares a
    resource tracker with its peers, see :func:`nbproc._shm_buffers.available`).
    ``segments``: the sender's recycled segments, for a channel whose segments its owner
    removes when it shuts down (the pool's); others get a fresh segment per buffer.
    """
    out_of_band: OutOfBand
    if shared_memory and _shm.available():
        out_of_band = shared = _SharedMemoryOutOfBand(snapshot)
        shared.segments = segments  # (set here rather than by an __init__: this runs for every message)
    else:
        out_of_band = OutOfBand(snapshot)
    return serialization.dumps(obj, what=what, buffer_callback=out_of_band), out_of_band.buffers


def dump_frames(
    obj: Any, *, what: str, snapshot: bool = False, out_of_band: bool = True, shared_memory: bool = True
) -> list[Any]:
    """Serialize ``obj`` into the frames of one message, as :meth:`Connection.send` writes them.

    ``[pickle stream]`` for ordinary objects; ``[OOB header, pickle stream, buffer...]`` when
    ``obj`` holds buffers of at least :data:`OOB_THRESHOLD` bytes. The buffers are views of
    ``obj``'s own memory unless ``snapshot`` (see :class:`OutOfBand`).
    ``out_of_band=False`` keeps every buffer in the pickle stream: one frame, readable by a
    stdlib peer. ``shared_memory=False`` keeps even the largest buffers in the pipe (a peer that
    may be on another machine, or in another process tree). Raises
    :class:`nbproc.SerializationError` naming the culprit, with ``what`` as its label.
    """
    if not out_of_band:
        return [serialization.dumps(obj, what=what)]
    data, buffers = dumps_with_buffers(obj, what=what, snapshot=snapshot, shared_memory=shared_memory)
    if not buffers:
        return [data]
    return [_OOB_MAGIC + _COUNT.pack(len(buffers)), data, *buffers]


def load_frames(frames: list[Any]) -> Any:
    """Rebuild the object from one message's frames (see :func:`dump_frames`)."""
    if len(frames) == 1:
        return serialization.loads(frames[0])
    return serialization.loads(frames[1], buffers=[_shm.resolve(frame) for frame in frames[2:]])


def oob_count(first: Any) -> int | None:
    """How many frames follow ``first`` in its message: ``None`` for an ordinary one-frame message."""
    # Testing the first byte (0xFF never starts a pickle) spares ordinary messages the slower
    # slice comparison.
    if not first or first[0] != _OOB_MAGIC[0] or first[: len(_OOB_MAGIC)] != _OOB_MAGIC:
        return None
    (count,) = _COUNT.unpack_from(first, len(_OOB_MAGIC))
    return count + 1


class FrameReader:
    """Reads frames from a descriptor.

    ``read_ahead=True`` — for a reader that owns the descriptor (a pool pipe): each read asks
    for :data:`READ_CHUNK` bytes, so frames already waiting come in one call; small frames are
    returned as read-only views of that chunk, and :meth:`has_frame` tells whether one is
    buffered (a selector will not report it). ``read_ahead=False`` — for a descriptor others
    may read or poll too (a Connection): never reads past the current frame; small frames come
    back as ``bytes``. Either way a frame of :data:`OOB_THRESHOLD` bytes or more is read
    straight into a writable ``bytearray`` of its size, copied once.

    Blocking: :meth:`read` waits until the frame is complete. End of file before a frame starts
    raises :class:`EOFError`; inside a frame, :class:`TruncatedFrameError`.
    """

    __slots__ = ("fd", "_ahead", "_buf", "_pos")

    def __init__(self, fd: int, *, read_ahead: bool) -> None:
        self.fd = fd
        self._ahead = read_ahead
        self._buf: Any = b""
        self._pos = 0

    def has_frame(self) -> bool:
        """Whether a complete frame is already buffered (a malformed header: ``read`` raises)."""
        try:
            header = parse_header(self._buf, self._pos)
        except OSError:
            return True  # the next read() reports it, where the caller handles read errors
        return header is not None and sum(header) <= len(self._buf) - self._pos

    def read(self) -> Any:
        """The next frame (bytes-like)."""
        if not self._ahead:
            return self._read_exactly()
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= 4:  # fast path: a whole small frame already buffered
            (size,) = _HEADER.unpack_from(buf, pos)
            end = pos + 4 + size
            if 0 <= size and end <= len(buf):
                self._pos = end
                return memoryview(buf)[pos + 4 : end]
        return self._read_ahead()

    def read_buffer(self) -> Any:
        """The next frame as a writable buffer (out-of-band data, e.g. an array's memory)."""
        frame = self.read()
        return frame if isinstance(frame, bytearray) else bytearray(frame)

    def _read_exactly(self) -> Any:
        """Exact mode: the header, then the body, and not a byte more."""
        header = self._read_exact(_HEADER.size, started=False)
        if header == _LONG_MARKER:
            header += self._read_exact(_LONG_HEADER.size)
        size, _ = parse_header(header)  # type: ignore[misc] - complete by construction
        if size < OOB_THRESHOLD:
            return self._read_exact(size)
        target = bytearray(size)  # writable, so arrays rebuilt on it are writable as the stdlib's are
        _read_into(self.fd, memoryview(target))
        return target

    def _read_exact(self, n: int, *, started: bool = True) -> bytes:
        """``n`` bytes; ``started=False``: end of file before the first one is a clean EOFError."""
        data = os.read(self.fd, n) if n else b""
        if len(data) == n:
            return data
        if not data and not started:
            raise EOFError  # the peer closed between messages; bare, as the stdlib raises it
        while len(data) < n:  # a short read: rare, so the copies do not matter
            chunk = os.read(self.fd, n - len(data))
            if not chunk:
                raise TruncatedFrameError("got end of file during message")
            data += chunk
        return data

    def _read_ahead(self) -> Any:
        """Read-ahead mode, when the buffer holds no complete small frame."""
        data = self._buf[self._pos :]
        self._buf, self._pos = b"", 0
        header = parse_header(data)
        while header is None:
            data = self._more(data)
            header = parse_header(data)
        size, head = header
        if size >= OOB_THRESHOLD:
            target = bytearray(size)  # see _read_exactly
            part = memoryview(data)[head : head + size]
            target[: len(part)] = part
            if len(data) - head > size:  # the chunk held the start of the next frame too
                self._buf, self._pos = data, head + size
            _read_into(self.fd, memoryview(target)[len(part) :])
            return target
        while len(data) < head + size:
            data = self._more(data)
        self._buf, self._pos = data, head + size
        return memoryview(data)[head : head + size]

    def _more(self, data: Any) -> Any:
        """``data`` plus the next chunk read (at least one byte, at most :data:`READ_CHUNK`)."""
        chunk = os.read(self.fd, READ_CHUNK)
        if not chunk:
            if data:
                raise TruncatedFrameError("got end of file during message")
            raise EOFError  # the peer closed between messages; bare, as the stdlib raises it
        return data + chunk if data else chunk


def _read_into(fd: int, view: memoryview) -> None:
    """Fill ``view`` from ``fd``; :class:`TruncatedFrameError` if the stream ends first."""
    pos, size = 0, len(view)
    while pos < size:
        n = os.readv(fd, [view[pos:]])
        if n == 0:
            raise TruncatedFrameError("got end of file during message")
        pos += n


class Connection(_std.Connection):
    """A stdlib ``Connection`` whose ``send``/``recv`` use nbproc's serializer."""

    #: Whether ``send`` may put large buffers in frames of their own. Only the sender decides
    #: (``recv`` reads both forms), so it is off where the peer may be the stdlib: connections
    #: from ``Listener``/``Client`` (unless asked for with ``out_of_band=True``).
    _out_of_band = True
    #: Whether those buffers may go through shared memory: only between processes of one tree
    #: on one machine (``Pipe()`` ends, queues), never for ``Listener``/``Client`` connections.
    _shared_memory = True

    def __reduce__(self) -> Any:
        # Also for the stdlib's pickler (a stdlib Process or executor handed an nbproc queue or
        # connection): without this it would copy the bare descriptor number into the child.
        return reduce_connection(self)

    def send(self, obj: Any) -> None:
        """Send a serializable object (see :mod:`nbproc.serialization`)."""
        self._check_closed()
        self._check_writable()
        self._send_frames(
            dump_frames(
                obj, what="Connection.send() object", out_of_band=self._out_of_band, shared_memory=self._shared_memory
            )
        )

    def recv(self) -> Any:
        """Receive an object; blocks until one arrives, raises ``EOFError`` if the peer closed."""
        return load_frames(self._recv_frames())

    def _send_frames(self, frames: list[Any]) -> None:
        """Write one message as produced by :func:`dump_frames` (callers serialize writers)."""
        self._check_closed()
        self._check_writable()
        for part in pack_frames(frames):
            self._send(part)

    def _send_small_messages(self, frames: list[Any]) -> None:
        """Write several one-frame messages, small ones joined into as few system calls as possible.

        The bytes on the wire are exactly those of sending each frame in turn; a queue's feeder
        uses this to flush a burst of small items at once.
        """
        self._send_frames(frames)

    def _recv_frames(self) -> list[Any]:
        """Read one whole message (all its frames) without deserializing it.

        Lets a reader that shares the connection (a queue's consumers) hold its lock only while
        bytes are read, and unpickle after releasing it. Never reads past the message, so
        ``poll()`` and other processes reading the same pipe see the next one intact.
        """
        self._check_closed()
        self._check_readable()
        reader = FrameReader(self._handle, read_ahead=False)
        first = reader.read()
        count = oob_count(first)
        if count is None:
            return [first]
        return [first, *(reader.read() for _ in range(count))]


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


# -- authentication: the challenge/response exchange, with a deadline ----------------------
#
# The HMAC protocol itself is the stdlib's (``multiprocessing.connection.deliver_challenge``
# and ``answer_challenge`` of the running Python), so an nbproc peer and a stdlib peer always
# agree on it. What nbproc adds is *how the handshake reads*: the stdlib reads each handshake
# frame with a blocking ``recv_bytes(256)``, so a client that connects and then sends nothing,
# or half a frame, blocks ``Listener.accept()`` forever. nbproc hands the stdlib functions a
# channel whose ``recv_bytes`` reads the frame itself, waiting for the descriptor to become
# readable before every read and giving up at a deadline. Only bytes are ever read during a
# handshake: nothing the peer sends is unpickled before it has proved it knows the key.

#: Seconds an authenticating ``Listener.accept()`` gives a connected client to finish the
#: challenge/response exchange. An honest peer needs two round trips of ~300 bytes and one
#: HMAC — milliseconds even on a loaded machine — so the budget only has to survive a peer
#: paused by a debugger or heavy swapping; it is the stdlib's own ``CONNECTION_TIMEOUT`` (the
#: time it gives a client to connect). Shorter would reject slow-but-honest peers; longer (or
#: ``None``, the stdlib's behaviour) lets one silent client stall a single-threaded accept loop.
DEFAULT_HANDSHAKE_TIMEOUT: float = float(CONNECTION_TIMEOUT)


class _HandshakeChannel:
    """What ``deliver_challenge``/``answer_challenge`` talk through during one handshake.

    ``send_bytes`` is the connection's own; ``recv_bytes`` reads one frame straight from the
    descriptor, never more bytes than the frame holds (so nothing after the handshake is
    consumed), and raises :class:`HandshakeTimeoutError` once ``deadline`` (a
    ``time.monotonic()`` value, or ``None`` for no limit) has passed. A frame longer than
    ``maxlength`` is rejected from its header alone: its body is never read.
    """

    def __init__(self, conn: Any, deadline: float | None) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        self._deadline = deadline
        self._poller: Any = None
        if deadline is not None and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(self._fd, select.POLLIN)

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        self._conn.send_bytes(buf, offset, size)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        header = self._read_exact(_HEADER.size, frame_started=False)
        if header == _LONG_MARKER:
            header += self._read_exact(_LONG_HEADER.size, frame_started=True)
        try:
            size, _ = parse_header(header)  # type: ignore[misc] - complete by construction
        except OSError as exc:  # a negative length
            raise HandshakeMessageError(str(exc)) from None
        if maxlength is not None and size > maxlength:
            raise HandshakeMessageError(f"bad message length: {size} bytes, at most {maxlength} allowed")
        return self._read_exact(size, frame_started=True)

    def _read_exact(self, n: int, *, frame_started: bool) -> bytes:
        data = bytearray()
        while len(data) < n:
            self._wait_readable()
            chunk = os.read(self._fd, n - len(data))
            if not chunk:
                if data or frame_started:
                    raise HandshakeMessageError("got end of file during message")
                raise HandshakeEOFError("peer closed the connection during authentication")
            data += chunk
        return bytes(data)

    def _wait_readable(self) -> None:
        if self._deadline is None:
            return  # os.read blocks until data or end of file, as the stdlib does
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or not self._readable_within(remaining):
            raise HandshakeTimeoutError("peer did not complete authentication in time")

    def _readable_within(self, seconds: float) -> bool:
        # poll(2) directly: a third of the cost of building a selector per read through
        # ``wait()``, and unlike select(2) it has no limit on the descriptor's number.
        if self._poller is None:
            return bool(_std.wait([self._fd], seconds))
        return bool(self._poller.poll(seconds * 1000))


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise ValueError(f"handshake timeout must be a non-negative number of seconds or None, not {timeout!r}")
    return time.monotonic() + timeout


def _channel(connection: Any, deadline: float | None) -> Any:
    """The deadline-aware channel for fd-based connections; anything else is used as it is."""
    if isinstance(connection, _std.Connection) and sys.platform != "win32":
        return _HandshakeChannel(connection, deadline)
    if deadline is not None:
        raise TypeError(f"a handshake timeout needs a file-descriptor connection, not {type(connection).__name__}")
    return connection


def deliver_challenge(
    connection: Any, authkey: bytes, digest_name: str | None = None, *, timeout: float | None = None
) -> None:
    """Send a random challenge, check the peer's HMAC of it with ``authkey``, then welcome it.

    Raises :class:`AuthenticationError` if the reply is wrong (the peer is told so first).
    Blocking: waits for the peer's reply for at most ``timeout`` seconds (``None``: no limit),
    then raises :class:`HandshakeTimeoutError`. The reply is read as bytes, at most 256 of them;
    nothing is unpickled. ``digest_name`` is passed on to the stdlib (Python 3.12+ only).
    """
    extra = {} if digest_name is None else {"digest_name": digest_name}
    _std.deliver_challenge(_channel(connection, _deadline(timeout)), authkey, **extra)


def answer_challenge(connection: Any, authkey: bytes, *, timeout: float | None = None) -> None:
    """Answer the peer's challenge with an HMAC keyed by ``authkey`` and expect its welcome.

    Raises :class:`AuthenticationError` if the peer rejects the answer. Blocking: waits for
    the challenge and for the verdict for at most ``timeout`` seconds in total (``None``: no
    limit), then raises :class:`HandshakeTimeoutError`. Only bytes are read; nothing is unpickled.
    """
    _std_answer_challenge(_channel(connection, _deadline(timeout)), authkey)


def _std_answer_challenge(channel: Any, authkey: bytes) -> None:
    """The stdlib's ``answer_challenge``, raising :class:`AuthenticationError` on every Python.

    Python 3.10/3.11 check "the peer's first message is a challenge" with an ``assert``
    (an ``AssertionError``, or no check at all under ``python -O``); 3.12 made it an
    ``AuthenticationError``. Either way nothing is unpickled; we only unify the exception.
    """
    try:
        _std.answer_challenge(channel, authkey)
    except AssertionError as exc:
        raise AuthenticationError(f"protocol error, expected a challenge: {exc}") from exc


def _authenticate(conn: Connection, authkey: bytes, timeout: float | None, *, server: bool) -> None:
    """Both challenges, the server's first, under one deadline; close ``conn`` on any failure."""
    channel = _channel(conn, _deadline(timeout))
    try:
        if server:
            _std.deliver_challenge(channel, authkey)
            _std_answer_challenge(channel, authkey)
        else:
            _std_answer_challenge(channel, authkey)
            _std.deliver_challenge(channel, authkey)
    except BaseException:
        conn.close()
        raise


def _resolve_authkey(authkey: Any, authenticate: bool) -> bytes | None:
    """The reference's rule: ``authkey`` if given, else the process's key when ``authenticate``."""
    if authkey is not None and not isinstance(authkey, bytes):
        raise TypeError("authkey should be a byte string")
    if authkey is None and authenticate:
        return bytes(current_process().authkey)
    return authkey


class Listener(_std.Listener):
    """A bound socket "listening" for connections; ``accept()`` returns :class:`Connection` objects.

    Signature and semantics follow the reference: ``address`` (``(host, port)`` for
    ``'AF_INET'``, a path for ``'AF_UNIX'``; inferred from ``family`` when ``None``, in a
    private temporary directory for ``'AF_UNIX'``), ``family`` (inferred from ``address``),
    ``backlog`` (passed to ``listen()``), ``authkey`` (a byte string: every accepted client must
    prove it knows it). Keyword-only additions:

    ``authenticate``
        The reference's flag: with ``authkey=None``, authenticate with
        ``current_process().authkey``. (CPython's positional order has ``authkey`` where the
        reference has ``authenticate``, so it is keyword-only here.)
    ``handshake_timeout``
        Seconds a connected client gets to complete authentication in ``accept()``
        (:data:`DEFAULT_HANDSHAKE_TIMEOUT`); ``None`` waits forever, as the stdlib does.
    ``out_of_band``
        ``False`` (default): accepted connections send every object as one ordinary pickle
        frame, which a stdlib ``multiprocessing`` peer can read. ``True``: large buffers
        (numpy arrays...) travel as frames of their own, saving a copy — only for nbproc peers.

    Deliberate difference: authentication is on whenever ``authkey is not None`` (the
    reference's wording, and what ``Client`` does); CPython skips it for ``authkey=b''``,
    which leaves a ``Client(authkey=b'')`` waiting for a challenge that never comes.
    """

    def __init__(
        self,
        address: Any = None,
        family: str | None = None,
        backlog: int = 1,
        authkey: bytes | None = None,
        *,
        authenticate: bool = False,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        out_of_band: bool = False,
    ) -> None:
        # Checked before binding, so that a bad argument leaves no socket (or socket file) behind.
        authkey = _resolve_authkey(authkey, authenticate)
        _deadline(handshake_timeout)
        super().__init__(address, family, backlog)
        self._authkey = authkey
        self._handshake_timeout = handshake_timeout
        self._out_of_band = out_of_band

    def accept(self) -> Connection:
        """Wait for a client and return its :class:`Connection`, authenticated if there is a key.

        Blocks until a client connects (no timeout, as in the stdlib). With an authkey, the
        client then has ``handshake_timeout`` seconds to pass the challenge both ways; until it
        has, only bytes are read from it and nothing is unpickled. A client that fails —
        wrong key (:class:`AuthenticationError`), silence or a cut-off frame
        (:class:`HandshakeTimeoutError`), an oversized or malformed frame
        (:class:`HandshakeMessageError`), hanging up (:class:`HandshakeEOFError`) — makes this
        call raise; every one of those is an :class:`AuthenticationError`. Its connection is
        closed and the listener stays open for the next client.
        """
        if self._listener is None:
            raise OSError("listener is closed")
        conn = _adopt(self._listener.accept())
        conn._out_of_band = self._out_of_band
        conn._shared_memory = False  # the client may be on another machine
        if self._authkey is not None:
            _authenticate(conn, self._authkey, self._handshake_timeout, server=True)
        return conn


def _connect_socket(address: Any, family: str) -> Connection:
    with socket.socket(getattr(socket, family)) as sock:
        sock.setblocking(True)
        sock.connect(address)
        return Connection(sock.detach())


def Client(  # noqa: N802 - stdlib name
    address: Any,
    family: str | None = None,
    authkey: bytes | None = None,
    *,
    authenticate: bool = False,
    handshake_timeout: float | None = None,
    out_of_band: bool = False,
) -> Connection:
    """Connect to a :class:`Listener` at ``address`` and return a :class:`Connection`.

    ``family`` is inferred from the address format when omitted (see :func:`address_type`).
    With ``authkey`` (or ``authenticate=True``, which uses ``current_process().authkey``) both
    sides prove they know the key before this returns; a failure raises
    :class:`AuthenticationError` and closes the connection. Connecting raises what the socket
    raises (``ConnectionRefusedError``, ``FileNotFoundError``...).

    Blocking: connecting and the handshake wait without limit by default, as in the stdlib —
    the listener may call ``accept()`` long after the operating system accepted the
    connection, so a client-side default deadline would reject a healthy but busy server.
    ``handshake_timeout`` (keyword-only, seconds) bounds the handshake and raises
    :class:`HandshakeTimeoutError` when it runs out. ``out_of_band``: as for :class:`Listener`
    (off by default, so that a stdlib listener can read everything this connection sends).
    """
    authkey = _resolve_authkey(authkey, authenticate)
    _deadline(handshake_timeout)
    family = family or address_type(address)
    _std._validate_family(family)
    if family == "AF_PIPE":  # pragma: no cover - Windows named pipes
        conn = _adopt(_std.PipeClient(address))
    else:
        conn = _connect_socket(address, family)
    conn._out_of_band = out_of_band
    conn._shared_memory = False  # the listener may be on another machine
    if authkey is not None:
        _authenticate(conn, authkey, handshake_timeout, server=False)
    return conn


# -- crossing process boundaries ------------------------------------------------------------


def rebuild_connection(
    df: Any, readable: bool, writable: bool, out_of_band: bool = True, shared_memory: bool = True
) -> Connection:
    conn = Connection(df.detach(), readable, writable)
    if not out_of_band:
        conn._out_of_band = False
    if not shared_memory:
        conn._shared_memory = False
    return conn


def reduce_connection(conn: Connection) -> tuple[Any, tuple[Any, bool, bool, bool, bool]]:
    """A connection handed to a child travels as a duplicated file descriptor."""
    df = _std_reduction.DupFd(conn.fileno())
    return rebuild_connection, (df, conn.readable, conn.writable, conn._out_of_band, conn._shared_memory)


serialization.register(Connection, reduce_connection)
