"""The thin mirror modules: nbproc.heap, resource_tracker, resource_sharer, spawn, forkserver.

They exist so that code (and CPython's own test suite) written against
``multiprocessing.<module>`` works with ``nbproc.<module>``. What matters is *which* object each
name is: process-wide machinery nbproc reuses must be the stdlib's very object (one heap, one
resource tracker, one fd-sharing thread); nbproc's own settings (executable, fork server,
start-up data) must be nbproc's.
"""

from __future__ import annotations

import multiprocessing.heap
import multiprocessing.resource_sharer
import multiprocessing.resource_tracker
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import nbproc
import nbproc.forkserver
import nbproc.heap
import nbproc.resource_sharer
import nbproc.resource_tracker
import nbproc.spawn
from nbproc import popen

MIRRORS = [nbproc.heap, nbproc.resource_tracker, nbproc.resource_sharer, nbproc.spawn, nbproc.forkserver]


@pytest.mark.parametrize("module", MIRRORS, ids=lambda m: m.__name__)
def test_all_names_exist_and_cover_the_stdlib_all(module):
    stdlib = sys.modules["multiprocessing." + module.__name__.split(".", 1)[1]]
    __import__(stdlib.__name__)
    assert set(stdlib.__all__) <= set(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_shared_machinery_is_the_stdlibs_own_object():
    assert nbproc.heap.BufferWrapper is multiprocessing.heap.BufferWrapper
    assert nbproc.resource_tracker._resource_tracker is multiprocessing.resource_tracker._resource_tracker
    assert nbproc.resource_tracker._CLEANUP_FUNCS is multiprocessing.resource_tracker._CLEANUP_FUNCS
    assert nbproc.resource_sharer._resource_sharer is multiprocessing.resource_sharer._resource_sharer


def _report_forkserver(conn):
    conn.send(nbproc.forkserver._forkserver is popen.forkserver_instance())
    conn.send(id(nbproc.forkserver._forkserver))


def test_forkserver_instance_is_nbprocs_and_follows_a_fork():
    assert nbproc.forkserver._forkserver is popen.forkserver_instance()
    assert nbproc.forkserver._forkserver is not multiprocessing.forkserver._forkserver
    ctx = nbproc.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=_report_forkserver, args=(child_end,))
    p.start()
    assert parent_end.poll(10)
    assert parent_end.recv() is True
    assert parent_end.recv() != id(popen.forkserver_instance())  # the child got a fresh instance
    p.join(10)
    assert p.exitcode == 0


def test_forkserver_ensure_running_leaves_the_stdlib_start_method_unset():
    before = multiprocessing.get_start_method(allow_none=True)
    nbproc.forkserver.ensure_running()
    assert multiprocessing.get_start_method(allow_none=True) == before


def test_spawn_command_line_uses_nbprocs_executable():
    cmd = nbproc.spawn.get_command_line(tracker_fd=3, pipe_handle=4)
    assert cmd[0] == popen.get_executable()
    assert "spawn_main(tracker_fd=3, pipe_handle=4)" in cmd[-2]


@pytest.mark.parametrize(
    "path", [sys.executable, sys.executable.encode(), pathlib.Path(sys.executable)], ids=["str", "bytes", "pathlike"]
)
def test_set_executable_accepts_str_bytes_and_pathlike(path):
    ctx = nbproc.get_context("spawn")
    try:
        ctx.set_executable(path)
        assert nbproc.spawn.get_executable() == os.fsencode(sys.executable)
        p = ctx.Process(target=int)
        p.start()
        p.join(30)
        assert p.exitcode == 0
    finally:
        popen.set_executable(None)
    assert nbproc.spawn.get_executable() == multiprocessing.spawn.get_executable()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unguarded_main_raises_instead_of_a_fork_bomb(method, tmp_path):
    script = tmp_path / "bomb.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import nbproc
            nbproc.set_start_method({method!r})
            p = nbproc.Process(target=print, args=("child ran",))
            p.start()   # no `if __name__ == "__main__":` guard: the child re-runs this line
            p.join()
            sys.exit(p.exitcode)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr and "bootstrapping phase" in proc.stderr
    assert "child ran" not in proc.stdout
