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
from typing import Any

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows: buffers stay in the pipe
    _posixshmem = None

__all__ = ["SHM_THRESHOLD", "PREFIX", "available", "export", "is_ref", "attach", "discard", "sweep"]

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
    while True:
        name = _new_name()
        tracker.register(name, _RTYPE)
        try:
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:  # a name left by an earlier process with this pid
            tracker.unregister(name, _RTYPE)
            continue
        except BaseException:
            tracker.unregister(name, _RTYPE)
            raise
        break
    try:
        # write() fills tmpfs pages directly: no page faults, one copy.
        view = raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw
        done = 0
        while done < size:
            done += os.pwrite(fd, view[done:], done)
    except BaseException:
        _unlink(name, tracker)
        raise
    finally:
        os.close(fd)
    return _HEAD.pack(_MAGIC, size, raw.readonly) + name.encode("ascii")


def is_ref(frame: Any) -> bool:
    """Whether a buffer frame is a reference made by :func:`export`."""
    return len(frame) < _MAX_REF and bytes(frame[: len(_MAGIC)]) == _MAGIC


def _parse(frame: Any) -> tuple[int, bool, str]:
    _, size, readonly = _HEAD.unpack_from(frame)
    return size, readonly, bytes(frame[_HEAD.size :]).decode("ascii")


def attach(frame: Any) -> memoryview:
    """Map the segment named by a reference frame and remove its name; returns its memory.

    Read-only buffers come back read-only (as the stdlib's in-band copy does), writable ones
    writable. The memory lives as long as the returned view or any object built on it.
    Raises ``FileNotFoundError`` if the segment is gone (its sender discarded it).
    """
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
