"""SharedMemory, ShareableList and SharedMemoryManager through nbproc, under every start method."""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers as std_managers
import multiprocessing.shared_memory as std_shared_memory

import pytest

import nbproc
from nbproc import shared_memory
from nbproc.shared_memory import ShareableList, SharedMemory, SharedMemoryManager


def _double_list(sl):
    for i in range(len(sl)):
        sl[i] = sl[i] * 2


def test_reexports_the_stdlib_classes():
    assert shared_memory.SharedMemory is std_shared_memory.SharedMemory
    assert shared_memory.ShareableList is std_shared_memory.ShareableList
    assert issubclass(SharedMemoryManager, std_managers.SharedMemoryManager)


def test_cell_defined_workers_attach_by_name(ctx):
    """A closure and a lambda defined here (as in a notebook cell) attach to a block by name in
    the child and write into it; the parent sees the bytes."""
    shm = SharedMemory(create=True, size=64)
    try:
        greeting = b"hello from the child"

        def write_greeting(name):
            block = SharedMemory(name=name)
            try:
                block.buf[: len(greeting)] = greeting
            finally:
                block.close()

        p = ctx.Process(target=write_greeting, args=(shm.name,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert bytes(shm.buf[: len(greeting)]) == greeting

        p = ctx.Process(
            target=lambda name: (lambda block: (block.buf.__setitem__(slice(40, 44), b"ABCD"), block.close()))(
                SharedMemory(name=name)
            ),
            args=(shm.name,),
        )
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert bytes(shm.buf[40:44]) == b"ABCD"
    finally:
        shm.close()
        shm.unlink()


def test_shareable_list_as_argument_and_queue_item(ctx):
    sl = ShareableList([1, 2.5, 7])
    try:
        p = ctx.Process(target=_double_list, args=(sl,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert list(sl) == [2, 5.0, 14]
        q = ctx.Queue()
        q.put(sl)  # attaches by name on the other side: fine outside spawning, unlike locks
        other = q.get(timeout=10)
        other[0] = -1
        assert sl[0] == -1
        other.shm.close()
    finally:
        sl.shm.close()
        sl.shm.unlink()


def test_manager_runs_its_server_with_nbproc_context(ctx):
    with SharedMemoryManager(ctx=ctx) as smm:
        assert isinstance(smm._process, ctx.Process)
        block = smm.SharedMemory(32)
        sl = smm.ShareableList(["a", 1])
        name = block.name
        p = ctx.Process(target=_double_list, args=(sl,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
        assert list(sl) == ["aa", 2]
        block.buf[:3] = b"abc"
        again = SharedMemory(name=name)
        assert bytes(again.buf[:3]) == b"abc"
        again.close()
        block.close()
        sl.shm.close()
    with pytest.raises(FileNotFoundError):
        SharedMemory(name=name)  # the server unlinked its blocks at shutdown


def test_manager_default_context_is_nbprocs():
    before = multiprocessing.get_start_method(allow_none=True)
    smm = SharedMemoryManager()
    smm.start()
    try:
        expected = nbproc.get_context().Process
        assert isinstance(smm._process, expected)
        assert multiprocessing.get_start_method(allow_none=True) == before
    finally:
        smm.shutdown()
