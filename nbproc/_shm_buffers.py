"""Large out-of-band buffers carried through POSIX shared memory instead of a pipe.

A pipe copies a buffer twice (sender -> kernel -> receiver) in 64 KiB pieces, each a system
call and, on a busy machine, a context switch. Above :data:`SHM_THRESHOLD` a buffer is instead
written once into a fresh shared-memory segment, and the receiver maps that segment: its array
is built on the mapping itself (no second copy). Only a small *reference frame* travels in the
message, where the buffer's own frame would have been; every framing that carries protocol-5
out-of-band buffers as frames (connections, queues, the pool's pipes) carries these unchanged.

Data flow of one buffer (any thread that serializes / deserializes)::

    sender                                             receiver
    export(buffer):                                    attach(ref frame):
      register name with the resource tracker            open + map the segment
      create /nbp_<tree>_<pid>_<n>, write the bytes      unlink it, unregister the name
      -> ref frame (name, size, read-only flag) ------>  -> memoryview of the mapping
                                                         (freed with the last array using it)

Who removes a segment, in every case:

- the receiver, as soon as it has mapped it (the common case): the name disappears from
  ``/dev/shm`` at once, the memory when the receiver drops the object;
- the sender, when it knows the receiver never will (:func:`discard`): the pool discards the
  segments of a task whose worker died, or that was cancelled; :func:`sweep` removes what a
  dead worker had created for results it never sent;
- the stdlib's resource tracker, for everything else (a killed parent, a queue item nobody
  read): all processes of a tree share one tracker, which unlinks every name still registered
  once the last of them has exited. The sender registers *before* creating, so a process
  killed in between leaks nothing; exactly one side unregisters (whoever unlinked).

The pool's tasks and results use *recycled* segments instead (:class:`SegmentCache`, see the
section below): the sender writes the next buffer into a segment whose receiver has let go of
it, so neither side pays for fresh pages again; the sender removes them (its pool shuts down),
or the pool's :func:`sweep` (a worker's), or the resource tracker (a killed tree).

Segments are used only by a process that shares a resource tracker with its peers (it has a
tracker descriptor: a child started by nbproc, or a parent that started one); otherwise, or
where POSIX shared memory is missing, buffers stay in the pipe. nbproc starts the tracker
before it forks, so fork children share their parent's.

Names: ``nbp_<tree>_<pid hex>_<counter hex>`` — ``tree`` is a token the first nbproc process
of a tree puts in the environment (children inherit it), so a test can watch exactly its own
tree's segments, and :func:`sweep` finds a dead process's by its pid. Short enough for macOS
(31 characters).
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import sys
import threading
import weakref
from collections import deque

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows: buffers stay in the pipe
    _posixshmem = None

TYPE_CHECKING = False  # typing is not imported: every pool worker imports this module (~2.5 ms)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SHM_THRESHOLD",
    "RECYCLE_BYTES",
    "PREFIX",
    "SegmentCache",
    "available",
    "export",
    "is_ref",
    "attach",
    "discard",
    "sweep",
]

#: Buffers of at least this many bytes travel through shared memory. Below it the pipe wins:
#: a segment costs a fixed ~60-100 us (create, map, unmap, unlink; two resource-tracker
#: messages), which a pipe spends on ~0.5-1 MiB of copying (measured here: at 64-512 KiB the
#: pipe was faster, at 1 MiB they were level). Above it the sender writes once and goes on
#: (it no longer waits for the reader 64 KiB at a time) and the receiver maps instead of
#: copying: 16 MiB results came back 1.8-2.9x faster than through nbproc's pipe path
#: (``benchmarks/arrays.py``, column ``nbproc pipe``). The cost that remains is the kernel
#: allocating fresh shared pages for every segment: on a VM where that is slow, a single
#: sender (the parent feeding many workers) gains little. Raising the threshold costs
#: throughput for mid-sized arrays; lowering it adds segments whose set-up exceeds the copy saved.
#: With recycled segments (the pool) the fixed cost is lower, but the crossing point barely
#: moved (pool tasks of 64 arrays, 2 workers, loaded machine: 128-256 KiB pipe 25-35 % faster,
#: 512 KiB level, 1 MiB level under fork and 2.4x faster through shared memory under forkserver).
#: Where fresh shared-memory pages are slow to allocate (some VMs), raise it with the
#: ``NBPROC_SHM_THRESHOLD`` environment variable (bytes; children inherit it).
SHM_THRESHOLD = int(os.environ.get("NBPROC_SHM_THRESHOLD", 1024 * 1024))

_ENV_TREE = "NBPROC_SHM_TREE"
_TREE = os.environ.setdefault(_ENV_TREE, os.urandom(3).hex())
#: Every segment nbproc creates is named with this prefix (without the leading slash).
PREFIX = f"nbp_{_TREE}_"
_SHM_DIR = "/dev/shm"  # Linux lists segments here; elsewhere sweep() relies on the tracker

# A reference frame: magic, size, read-only flag, then the name. Its length (< 100 bytes)
# sets it apart from a buffer's own frame, which is never shorter than the out-of-band
# threshold; the magic is a second check.
_MAGIC = b"\xffNBPSHM\x00"
_HEAD = struct.Struct("!8sQ?")
_MAX_REF = 128
_RTYPE = "shared_memory"  # the resource tracker's cleanup for it is shm_unlink

_counter = itertools.count()
_pid = -1


def _tracker() -> Any:
    """The resource tracker this process shares with its peers, or None."""
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is None or tracker._resource_tracker._fd is None:
        return None
    return tracker


def available() -> bool:
    """Whether :func:`export` can be used here (shared memory and a shared resource tracker)."""
    return _posixshmem is not None and _tracker() is not None


def _new_name() -> str:
    global _counter, _pid
    if _pid != os.getpid():  # a forked child counts afresh; its pid keeps names apart
        _pid, _counter = os.getpid(), itertools.count()
    return f"/{PREFIX}{_pid:x}_{next(_counter):x}"


def export(raw: memoryview) -> bytes:
    """Copy the contiguous ``raw`` buffer into a new segment; return its reference frame.

    Raises ``OSError`` (e.g. ``/dev/shm`` full) after undoing what it did; callers then send
    the buffer through the pipe instead.
    """
    tracker = _tracker()
    size = raw.nbytes
    name, fd = _create(tracker)
    try:
        _write_all(fd, _bytes_of(raw), 0)
    except BaseException:
        _unlink(name, tracker)
        raise
    finally:
        os.close(fd)
    return _HEAD.pack(_MAGIC, size, raw.readonly) + name.encode("ascii")


def _bytes_of(raw: memoryview) -> memoryview:
    """``raw`` as flat bytes (what a copy into a segment takes)."""
    return raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    """Write ``view`` at ``offset``: write() fills fresh tmpfs pages without faulting them in
    here (no page faults, one copy)."""
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


def _create(tracker: Any) -> tuple[str, int]:
    """A new segment, registered with the tracker first (a kill in between leaks nothing)."""
    while True:
        name = _new_name()
        tracker.register(name, _RTYPE)
        try:
            return name, _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:  # a name left by an earlier process with this pid
            tracker.unregister(name, _RTYPE)
        except BaseException:
            tracker.unregister(name, _RTYPE)
            raise


def is_ref(frame: Any) -> bool:
    """Whether a buffer frame is a reference made by :func:`export` or :meth:`SegmentCache.export`."""
    return len(frame) < _MAX_REF and bytes(frame[: len(_MAGIC)]) in (_MAGIC, _RECYCLED_MAGIC)


def _parse(frame: Any) -> tuple[int, bool, str]:
    _, size, readonly = _HEAD.unpack_from(frame)
    return size, readonly, bytes(frame[_HEAD.size :]).decode("ascii")


def attach(frame: Any) -> memoryview:
    """Map the segment named by a reference frame and remove its name; returns its memory.

    Read-only buffers come back read-only (as the stdlib's in-band copy does), writable ones
    writable. The memory lives as long as the returned view or any object built on it.
    Raises ``FileNotFoundError`` if the segment is gone (its sender discarded it).
    """
    if bytes(frame[: len(_MAGIC)]) == _RECYCLED_MAGIC:
        return _attach_recycled(frame)
    size, readonly, name = _parse(frame)
    fd = _posixshmem.shm_open(name, os.O_RDONLY if readonly else os.O_RDWR, mode=0o600)
    try:
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        # MAP_POPULATE maps every page now, in one call, instead of one page fault per 4 KiB.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fd, size, flags=flags, prot=prot)
    finally:
        os.close(fd)
    _unlink(name, _tracker())
    view = memoryview(mapping)
    return view.toreadonly() if readonly else view


def resolve(frame: Any) -> Any:
    """A received buffer frame as the buffer it stands for (mapped if it is a reference)."""
    return attach(frame) if len(frame) < _MAX_REF and is_ref(frame) else frame


def _unlink(name: str, tracker: Any) -> bool:
    """Remove ``name``; unregister it if we were the one who removed it."""
    try:
        _posixshmem.shm_unlink(name)
    except FileNotFoundError:
        return False  # the other side removed (and unregistered) it
    if tracker is not None:
        tracker.unregister(name, _RTYPE)
    return True


def discard(frames: Any) -> None:
    """Sender side: remove the segments of ``frames`` that no receiver attached.

    For a message that will never be read (its receiver died, its task was cancelled). Frames
    that are not references are skipped; a segment already attached is left alone.
    """
    tracker = _tracker()
    for frame in frames:
        if len(frame) < _MAX_REF and is_ref(frame):
            if bytes(frame[: len(_MAGIC)]) == _RECYCLED_MAGIC:
                _, _, token, name = _parse_recycled(frame)
                _set_state(name, token, RELEASED, only_from=SENT)
            else:
                _unlink(_parse(frame)[2], tracker)


def sweep(pid: int) -> int:
    """Remove every segment that process ``pid`` of this tree created and nobody attached.

    For a process known to be dead (a pool worker killed while sending a result). Linux
    only (it lists ``/dev/shm``); elsewhere the resource tracker removes them at exit.
    Returns how many were removed.
    """
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return 0
    prefix = f"{PREFIX}{pid:x}_"
    tracker = _tracker()
    return sum(_unlink("/" + name, tracker) for name in names if name.startswith(prefix))


def collector(refs: list[bytes]) -> Any:
    """A pickle ``buffer_callback`` for a stream that is loaded *without* a buffer list (a
    spawned child's start-up data): buffers of at least :data:`SHM_THRESHOLD` bytes go to
    shared memory (their reference frames appended to ``refs``), all others stay in band.
    Wrap the result in :class:`WithSharedBuffers` when ``refs`` is not empty."""
    shared = available()

    def callback(buf: Any) -> bool:
        raw = buf.raw() if shared else None
        if raw is None or raw.nbytes < SHM_THRESHOLD:
            return True
        try:
            refs.append(export(raw))
        except OSError:
            return True
        return False

    return callback


class WithSharedBuffers:
    """A pickle stream plus the shared-memory buffers it refers to, as one picklable object:
    unpickling it loads the stream with the mapped buffers (for readers that take no buffer list)."""

    __slots__ = ("data", "refs")

    def __init__(self, data: bytes, refs: list[bytes]) -> None:
        self.data = data
        self.refs = refs

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _load_with_shared_buffers, (self.data, self.refs)


def _load_with_shared_buffers(data: bytes, refs: list[bytes]) -> Any:
    from . import serialization

    return serialization.loads(data, buffers=[attach(ref) for ref in refs])


# -- recycled segments (the pool's tasks and results) -----------------------------------------
#
# A fresh segment costs its sender the kernel's allocation of every page (writing 16 MiB into
# new tmpfs pages ran at ~3.5 GB/s here, into pages that already exist and are mapped at
# ~9 GB/s, memcpy speed) and its receiver their freeing when it lets go. Between a pool and its
# workers the same sizes travel again and again, so a sender keeps the segments its receivers
# have finished with and writes the next buffer into one of them.
#
# A recycled segment starts with a header page (then the data, page-aligned so that the
# receiver can map the data alone)::
#
#     offset 0: token (8 bytes, new for every use)   offset 8: state (SENT, ATTACHED, RELEASED)
#
#     sender (SegmentCache.export)            receiver (attach)                 receiver, later
#     idle segment, state RELEASED
#     token := new, state := SENT
#     copy the buffer in  -- ref frame -->    open, state := ATTACHED,          the last object
#     keep it "busy"                          map the data; keep the name       using the mapping
#     ...                                                                        is freed:
#     state == RELEASED? -> idle again  <---------------------------------------  state := RELEASED
#                                                                                  (if token matches)
#
# The receiver never unlinks a recycled segment; the sender does, when it drops one (over
# RECYCLE_BYTES of idle segments, or SegmentCache.close() when its pool shuts down); a dead
# worker's are swept by the pool (sweep(pid)), a killed tree's by the resource tracker.
# A segment is written again only once its receiver said RELEASED, which it says only after the
# mapping is gone — a receiver may keep an array forever, its segment then stays busy. Before a
# fork, every mapping then alive is pinned (never released): a forked child inherits the
# mapping, and its copy of the array must not change under it.

#: Bytes of idle (released) segments a sender keeps for reuse. The trade-off: memory held in
#: ``/dev/shm`` between calls against the cost of fresh pages on the next call (a 16 MiB
#: buffer: ~4.5 ms into a fresh segment, ~1.7 ms into a recycled one, and the receiver no
#: longer frees 4096 pages when it lets go). A map over arrays totalling less than this reuses
#: all its segments on the next call; 0 turns recycling off. ``NBPROC_SHM_RECYCLE_BYTES``.
RECYCLE_BYTES = int(os.environ.get("NBPROC_SHM_RECYCLE_BYTES", 256 * 1024 * 1024))

_RECYCLED_MAGIC = b"\xffNBPSHR\x00"
_RHEAD = struct.Struct("!8sQ?Q")  # magic, size, read-only flag, token; then the name
_STATE = struct.Struct("<QB")  # the header: token, state
_STATE_AT = _STATE.size - 1  # offset of the state byte, which the receiver writes alone
_DATA = mmap.ALLOCATIONGRANULARITY  # where the data starts (an mmap offset must be a multiple)
SENT, ATTACHED, RELEASED = 0, 1, 2
#: Busy segments whose state a sender looks at per export: a bound on the work per export when
#: receivers keep many arrays (larger finds released ones sooner, costs more per export).
_SCAN = 32
#: A segment is reused for a buffer at least this fraction of its size (more reuse vs memory
#: that a small buffer would pin in a large segment).
_FIT = 2


class _Segment:
    """A recycled segment as its sender holds it: the name and a mapping of all of it."""

    __slots__ = ("name", "capacity", "mapping")

    def __init__(self, name: str, capacity: int, mapping: mmap.mmap) -> None:
        self.name = name
        self.capacity = capacity
        self.mapping = mapping

    def state(self) -> int:
        return self.mapping[_STATE_AT]


class _Held:
    """A cache's segments, apart from the cache so that its finalizer can remove them."""

    __slots__ = ("lock", "idle", "idle_bytes", "busy", "closed", "pid")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Segment] = []  # released by their receivers, oldest first
        self.idle_bytes = 0
        self.busy: deque[_Segment] = deque()  # sent, not yet released
        self.closed = False
        self.pid = os.getpid()


class SegmentCache:
    """A sender's recycled segments (one per pool in the parent, one per worker for results).

    Thread-safe (several threads may submit to one pool, another may shut it down). Not
    usable in a forked child: it then exports fresh segments, and never touches the parent's.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = RECYCLE_BYTES if budget is None else budget
        self._held = _Held()
        # Dropped or at exit, a cache removes only what no receiver will read: a worker may end
        # (maxtasksperchild) with a result still unread in its pipe, whose segment must outlive
        # it (the pool sweeps it once read).
        self._finalizer = weakref.finalize(self, _close_segments, self._held, False)

    def export(self, raw: memoryview) -> bytes:
        """Like :func:`export`, into a segment a receiver has finished with where one fits."""
        held = self._held
        if self.budget <= 0 or held.pid != os.getpid() or held.closed:
            return export(raw)
        size = raw.nbytes
        with held.lock:
            segment = self._take(size)
        view = _bytes_of(raw)
        token = int.from_bytes(os.urandom(8), "little")
        if segment is None:
            try:
                segment = _new_segment(view, token)
            except OSError:  # /dev/shm full (a container's is often 64 MiB): give back the idle ones
                if not self._drop_idle():
                    raise
                segment = _new_segment(view, token)
        else:
            try:
                # (A copy with the GIL released, NumPy's, was no faster here: 0.98-1.0x.)
                segment.mapping[_DATA : _DATA + size] = view
                segment.mapping[: _STATE.size] = _STATE.pack(token, SENT)
            except BaseException:
                _drop(segment)
                raise
        with held.lock:
            if held.closed:  # shut down meanwhile: nobody will read the message
                _drop(segment)
            else:
                held.busy.append(segment)
        return _RHEAD.pack(_RECYCLED_MAGIC, size, raw.readonly, token) + segment.name.encode("ascii")

    def _take(self, size: int) -> _Segment | None:
        """An idle segment for ``size`` bytes, after collecting the released ones (lock held)."""
        held = self._held
        for _ in range(min(_SCAN, len(held.busy))):
            segment = held.busy.popleft()
            if segment.state() == RELEASED:
                held.idle.append(segment)
                held.idle_bytes += segment.capacity
            else:
                held.busy.append(segment)
        best = None
        for segment in held.idle:
            if size <= segment.capacity <= size * _FIT and (best is None or segment.capacity < best.capacity):
                best = segment
        if best is not None:
            held.idle.remove(best)
            held.idle_bytes -= best.capacity
        while held.idle_bytes > self.budget:
            oldest = held.idle.pop(0)
            held.idle_bytes -= oldest.capacity
            _drop(oldest)
        return best

    def _drop_idle(self) -> bool:
        """Remove the idle segments; whether there were any."""
        held = self._held
        with held.lock:
            idle, held.idle, held.idle_bytes = held.idle, [], 0
        for segment in idle:
            _drop(segment)
        return bool(idle)

    def close(self) -> None:
        """Remove every segment (the pool has shut down: no receiver will attach any more)."""
        self._finalizer.detach()
        _close_segments(self._held, True)


def _new_segment(view: memoryview, token: int) -> _Segment:
    """A segment holding ``view``'s bytes after a header page, mapped by its sender."""
    tracker = _tracker()
    size = view.nbytes
    name, fd = _create(tracker)
    try:
        os.pwrite(fd, _STATE.pack(token, SENT), 0)
        _write_all(fd, view, _DATA)
        # Mapped (every page at once) for the next uses: copying into mapped pages is faster
        # than write(), and the state byte is read through it.
        mapping = mmap.mmap(fd, _DATA + size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
    except BaseException:
        _unlink(name, tracker)
        raise
    finally:
        os.close(fd)
    return _Segment(name, size, mapping)


def _drop(segment: _Segment) -> None:
    _unlink(segment.name, _tracker())
    segment.mapping.close()


def _close_segments(held: _Held, everything: bool) -> None:
    """Remove the idle segments, and the busy ones too if ``everything`` (else only those
    released meanwhile: the others may still be on their way to a receiver)."""
    if held.pid != os.getpid():  # a forked child inheriting the finalizer: the segments are the parent's
        return
    with held.lock:
        held.closed = True
        segments = held.idle + [s for s in held.busy if everything or s.state() == RELEASED]
        held.idle, held.busy, held.idle_bytes = [], deque(), 0
    for segment in segments:
        _drop(segment)


def _parse_recycled(frame: Any) -> tuple[int, bool, int, str]:
    _, size, readonly, token = _RHEAD.unpack_from(frame)
    return size, readonly, token, bytes(frame[_RHEAD.size :]).decode("ascii")


# Mappings of recycled segments alive in this process, by token: released when their objects
# are freed, or pinned (detached) before a fork.
_live: dict[int, weakref.finalize] = {}


def _attach_recycled(frame: Any) -> memoryview:
    size, readonly, token, name = _parse_recycled(frame)
    fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    try:
        if _STATE.unpack(os.pread(fd, _STATE.size, 0)) != (token, SENT):
            raise FileNotFoundError(f"shared memory segment {name} was reused or discarded")
        os.pwrite(fd, bytes([ATTACHED]), _STATE_AT)
        prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fd, size, flags=flags, prot=prot, offset=_DATA)
    finally:
        os.close(fd)
    finalizer = weakref.finalize(mapping, _release, name, token)
    finalizer.atexit = False  # at exit the objects may still be in use: the sender then drops it
    _live[token] = finalizer
    view = memoryview(mapping)
    return view.toreadonly() if readonly else view


def _release(name: str, token: int) -> None:
    """The receiver's mapping is gone: its sender may write the segment again."""
    _live.pop(token, None)
    _set_state(name, token, RELEASED)


def _set_state(name: str, token: int, state: int, only_from: int | None = None) -> None:
    """Set a recycled segment's state if it still holds ``token`` (and state ``only_from``)."""
    try:
        fd = _posixshmem.shm_open(name, os.O_RDWR, mode=0o600)
    except OSError:
        return  # its sender has dropped it
    try:
        held, current = _STATE.unpack(os.pread(fd, _STATE.size, 0))
        if held == token and (only_from is None or current == only_from):
            os.pwrite(fd, bytes([state]), _STATE_AT)
    finally:
        os.close(fd)


def _pin_before_fork() -> None:
    """A forked child inherits the mappings alive now: never release them for reuse."""
    for finalizer in list(_live.values()):
        finalizer.detach()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_pin_before_fork)
