"""Process lifecycle under every start method, compared with the stdlib where defined."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

import nbproc
from nbproc import context


def _send_identity(conn) -> None:
    proc = nbproc.current_process()
    parent = nbproc.parent_process()
    conn.send(
        {
            "name": proc.name,
            "pid": os.getpid(),
            "identity": proc._identity,
            "daemon": proc.daemon,
            "authkey": bytes(proc.authkey),
            "parent_pid": parent.pid if parent else None,
            "start_method": nbproc.get_start_method(),
        }
    )
    conn.close()


def _exit_with(code) -> None:
    sys.exit(code)


def _raise() -> None:
    raise ValueError("boom in child")


def _sleep_forever(ready=None) -> None:
    if ready is not None:
        ready.set()
    while True:
        time.sleep(0.1)


def _start_grandchild(conn) -> None:
    """A child that starts its own child, to check nested names and daemon rules."""
    me = nbproc.current_process()
    inner_a, inner_b = nbproc.Pipe()
    try:
        p = nbproc.get_context(nbproc.get_start_method()).Process(target=_send_identity, args=(inner_b,))
        p.start()
        conn.send(("ok", me.name, inner_a.recv()["name"]))
        p.join()
    except AssertionError as exc:  # the stdlib raises AssertionError for daemonic parents
        conn.send(("refused", me.name, str(exc)))


def test_target_args_kwargs_and_identity(ctx, start_method):
    a, b = nbproc.Pipe()
    p = ctx.Process(target=_send_identity, args=(b,), name="worker-x")
    assert repr(p).startswith("<") and "initial" in repr(p)
    p.start()
    info = a.recv()
    p.join(10)
    assert p.exitcode == 0
    assert info["name"] == "worker-x"
    assert info["pid"] == p.pid
    assert info["parent_pid"] == os.getpid()
    assert info["authkey"] == bytes(nbproc.current_process().authkey)
    assert info["start_method"] == (start_method if start_method != "fork" else info["start_method"])
    assert "stopped" in repr(p) or "exitcode=0" in repr(p)


def test_default_names_are_numbered(ctx):
    a, b = nbproc.Pipe()
    p = ctx.Process(target=_send_identity, args=(b,))
    p.start()
    info = a.recv()
    p.join(10)
    assert info["name"] == p.name
    kind = type(p).__name__
    assert p.name == f"{kind}-{p._identity[0]}"
    assert info["identity"] == p._identity


def test_nested_child_names(ctx):
    a, b = nbproc.Pipe()
    p = ctx.Process(target=_start_grandchild, args=(b,))
    p.start()
    status, name, inner_name = a.recv()
    p.join(20)
    assert status == "ok"
    # Process-N1:N2 numbering, as in the stdlib
    assert inner_name.split("-")[-1] == f"{p._identity[0]}:1"


def test_daemonic_process_cannot_have_children(ctx):
    a, b = nbproc.Pipe()
    p = ctx.Process(target=_start_grandchild, args=(b,), daemon=True)
    assert p.daemon
    p.start()
    status, _, message = a.recv()
    p.join(10)
    assert status == "refused"
    assert "daemonic processes are not allowed to have children" in message


@pytest.mark.parametrize("code, expected", [(0, 0), (3, 3), ("message", 1), (None, 0)])
def test_exitcode_follows_sys_exit(ctx, code, expected):
    p = ctx.Process(target=_exit_with, args=(code,))
    p.start()
    p.join(10)
    assert p.exitcode == expected


def test_exception_in_run_gives_exitcode_1(ctx, capfd):
    p = ctx.Process(target=_raise)
    p.start()
    p.join(10)
    assert p.exitcode == 1
    assert "ValueError: boom in child" in capfd.readouterr().err


def test_terminate_kill_and_negative_exitcodes(ctx):
    for stop, sig in ((lambda p: p.terminate(), signal.SIGTERM), (lambda p: p.kill(), signal.SIGKILL)):
        ready = ctx.Event()
        p = ctx.Process(target=_sleep_forever, args=(ready,))
        p.start()
        assert ready.wait(10)
        assert p.is_alive()
        stop(p)
        p.join(10)
        assert not p.is_alive()
        assert p.exitcode == -sig
        assert f"exitcode=-{signal.Signals(sig).name}" in repr(p)


def test_join_timeout_and_sentinel(ctx):
    ready = ctx.Event()
    p = ctx.Process(target=_sleep_forever, args=(ready,), daemon=True)
    p.start()
    assert ready.wait(10)
    started = time.monotonic()
    p.join(0.2)
    assert time.monotonic() - started < 5
    assert p.is_alive() and p.exitcode is None
    assert nbproc.connection.wait([p.sentinel], timeout=0.05) == []
    p.terminate()
    assert nbproc.connection.wait([p.sentinel], timeout=10) == [p.sentinel]
    p.join()


def test_close_releases_and_forbids_use(ctx):
    p = ctx.Process(target=_exit_with, args=(0,))
    p.start()
    with pytest.raises(ValueError):
        if p.is_alive():
            p.close()
        else:
            raise ValueError("already finished: close() would succeed, check below")
    p.join(10)
    p.close()
    with pytest.raises(ValueError):
        p.is_alive()
    assert "closed" in repr(p)


def test_start_twice_and_join_unstarted_are_errors(ctx):
    p = ctx.Process(target=_exit_with, args=(0,))
    with pytest.raises(AssertionError):
        p.join()
    p.start()
    with pytest.raises(AssertionError):
        p.start()
    p.join(10)


def test_subclass_defined_in_a_function_runs_by_value(ctx):
    a, b = nbproc.Pipe()
    factor = 7

    class Multiplier(nbproc.Process):
        def __init__(self, conn, value):
            super().__init__()
            self.conn, self.value = conn, value

        def run(self):
            self.conn.send((type(self).__name__, self.value * factor, nbproc.current_process().name))

    p = Multiplier(b, 6)
    if ctx.get_start_method() != nbproc.get_start_method():
        # a subclass of nbproc.Process uses the default context: set the method for this test
        p._Popen = ctx.Process._Popen
    p.start()
    assert a.recv() == ("Multiplier", 42, p.name)
    p.join(10)
    assert p.exitcode == 0


def test_lambda_and_closure_targets(ctx):
    a, b = nbproc.Pipe()
    offset = 100
    p = ctx.Process(target=lambda c, x: c.send(x + offset), args=(b, 1))
    p.start()
    assert a.recv() == 101
    p.join(10)


def test_authkey_is_inherited_and_settable(ctx):
    original = nbproc.current_process().authkey
    try:
        nbproc.current_process().authkey = b"a-new-key"
        a, b = nbproc.Pipe()
        p = ctx.Process(target=_send_identity, args=(b,))
        p.start()
        assert a.recv()["authkey"] == b"a-new-key"
        p.join(10)
    finally:
        nbproc.current_process().authkey = original
    with pytest.raises(TypeError):
        nbproc.current_process().authkey = "not bytes"


def test_active_children_joins_finished(ctx):
    ready = ctx.Event()
    long = ctx.Process(target=_sleep_forever, args=(ready,))
    short = ctx.Process(target=_exit_with, args=(0,))
    long.start()
    short.start()
    assert ready.wait(10)
    short.join(10)
    children = nbproc.active_children()
    assert long in children and short not in children
    long.terminate()
    long.join(10)
    assert long not in nbproc.active_children()


def test_unpicklable_argument_raises_precisely_at_start(ctx, start_method):
    class MyState:
        def __init__(self):
            self.conn = threading.Lock()

    p = ctx.Process(target=_exit_with, args=(0, MyState()))
    if start_method == "fork":
        # fork copies memory: nothing is serialized, exactly as in the stdlib
        p.start()
        p.join(10)
        return
    before = set(nbproc.active_children())
    with pytest.raises(nbproc.SerializationError) as info:
        p.start()
    assert str(info.value) == (
        "argument 2 of Process target: attribute `conn` of `MyState`: cannot pickle '_thread.lock' object"
    )
    assert isinstance(info.value, TypeError)
    assert set(nbproc.active_children()) == before
    assert p.pid is None


def test_current_process_and_parent_in_main():
    me = nbproc.current_process()
    assert me.name == "MainProcess"
    assert me is multiprocessing.current_process()
    assert nbproc.parent_process() is None
    assert nbproc.cpu_count() == os.cpu_count()
    assert nbproc.freeze_support() is None


def test_reprs_match_the_stdlib_shape(start_method):
    def shape(module):
        ctx = module.get_context(start_method)
        p = ctx.Process(target=_exit_with, args=(0,), name="same")
        before = repr(p)
        p.start()
        p.join(10)
        return before.replace(type(p).__name__, "X"), repr(p).replace(type(p).__name__, "X").split(" pid=")[0]

    assert shape(nbproc) == shape(multiprocessing)


def test_process_argument_validation_matches_stdlib():
    for module in (nbproc, multiprocessing):
        with pytest.raises(AssertionError):
            module.Process(group="g")
        p = module.Process(target=None)
        with pytest.raises(AssertionError, match="name must be a string"):
            p.name = 5
    assert nbproc.Process().daemon is False


def test_default_start_method_is_forkserver_on_linux():
    if sys.platform != "linux":
        pytest.skip("default differs by platform by design: spawn on macOS/Windows")
    assert context._default_context._default_context._name == "forkserver"


TRACKER_SCRIPT = """
import os, signal, time
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
import nbproc

def nothing():
    pass

def start_one():
    p = nbproc.get_context("fork").Process(target=nothing)
    p.start()
    p.join()
    assert p.exitcode == 0

if __name__ == "__main__":
    tracker = resource_tracker._resource_tracker
    start_one()  # starts the tracker (our child)
    probes = []
    check_alive = tracker._check_alive
    tracker._check_alive = lambda: probes.append(1) or check_alive()
    for _ in range(3):
        start_one()
    print("probes while ours runs:", len(probes))
    first = tracker._pid
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    start_one()  # finds it dead: the stdlib's check relaunches it
    print("relaunched:", tracker._pid not in (None, first))
    shm = SharedMemory(create=True, size=16)  # registered with the new tracker
    shm.close()
    shm.unlink()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_fork_launch_checks_its_own_tracker_without_probing_it(tmp_path):
    """Each fork child must share the parent's resource tracker; the stdlib's check writes a probe
    that wakes the tracker process every time. nbproc asks waitpid instead when the tracker is its
    child, and still relaunches a tracker that died."""
    import subprocess

    script = tmp_path / "tracker.py"
    script.write_text(TRACKER_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["probes while ours runs: 0", "relaunched: True"], out.stdout + out.stderr
