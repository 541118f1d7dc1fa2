"""``nbproc.dummy``: the API on threads, compared with the stdlib's ``multiprocessing.dummy``.

Where the stdlib's dummy and real processes disagree, nbproc.dummy follows the processes and
the test says so (exit codes, one-way pipes, end of file, ``maxlength``).
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import multiprocessing.dummy as std_dummy
import multiprocessing.dummy.connection as std_dummy_connection
import queue
import threading
import types

import pytest
from _connection_semantics import connection_semantics

import nbproc.dummy as dummy
from nbproc.dummy import connection as dummy_connection

BOTH = pytest.mark.parametrize("mod", [std_dummy, dummy], ids=["stdlib", "nbproc"])


def test_public_names_match_stdlib():
    assert dummy.__all__ == std_dummy.__all__
    for name in [*std_dummy.__all__, "DummyProcess", "Namespace", "Value", "Array", "dict", "list", "shutdown"]:
        assert hasattr(dummy, name), name
    for name in ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier"]:
        assert getattr(dummy, name) is getattr(std_dummy, name) is getattr(threading, name), name
    assert dummy.current_process is threading.current_thread
    assert dummy.dict is dict and dummy.list is list
    assert dummy_connection.__all__[:3] == std_dummy_connection.__all__
    assert dummy.freeze_support() is None


# -- Process ---------------------------------------------------------------------------------


def _lifecycle(mod) -> list:
    seen = []
    started, release = threading.Event(), threading.Event()

    def target(x, y=0):
        seen.append((x, y, mod.current_process().name))
        started.set()
        release.wait(10)

    p = mod.Process(target=target, args=(1,), kwargs={"y": 2}, name="worker")
    states = [("before start", p.is_alive(), p.exitcode, mod.active_children())]
    p.start()
    started.wait(10)
    states.append(("running", p.is_alive(), p.exitcode, [c.name for c in mod.active_children()]))
    release.set()
    p.join(10)
    states.append(("joined", p.is_alive(), p.exitcode, mod.active_children()))
    with pytest.raises(RuntimeError):  # a thread, like a process, starts only once
        p.start()
    states.append(("seen", seen, p.name, isinstance(p, threading.Thread)))
    return states


def test_process_lifecycle_matches_stdlib():
    assert _lifecycle(dummy) == _lifecycle(std_dummy)


@BOTH
def test_only_the_creating_thread_may_start(mod):
    p = mod.Process(target=lambda: None)
    result = []

    def other():
        try:
            p.start()
        except RuntimeError as exc:
            result.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert result and "MainThread" in result[0]


@BOTH
def test_active_children_are_per_thread(mod):
    release = threading.Event()
    outer = mod.Process(target=release.wait, args=(10,))
    outer.start()
    seen_in_child = []

    def inner():
        seen_in_child.append(mod.active_children())

    t = mod.Process(target=inner)
    t.start()
    t.join(10)
    assert seen_in_child == [[]], "a thread does not see its parent's children"
    assert outer in mod.active_children()
    release.set()
    outer.join(10)
    assert mod.active_children() == []


def _exit_codes(mod) -> list:
    def fail():
        raise ValueError("boom in a dummy process")

    def leave(code):
        raise SystemExit(code)

    procs = [
        mod.Process(target=lambda: None),
        mod.Process(target=fail),
        mod.Process(target=leave, args=(3,)),
        mod.Process(target=leave, args=(None,)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(10)
    return [p.exitcode for p in procs]


def test_exitcode_follows_processes(monkeypatch):
    """Deliberate difference: the stdlib's dummy reports 0 even when the target raised."""
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # keep the expected traceback quiet
    assert _exit_codes(std_dummy) == [0, 0, 0, 0]
    assert _exit_codes(dummy) == [0, 1, 3, 0]


def test_exit_code_of_a_subclass_run():
    class Failing(dummy.Process):
        def run(self):
            raise SystemExit(7)

    p = Failing()
    assert p.exitcode is None
    p.start()
    p.join(10)
    assert p.exitcode == 7
    p.close()


def test_close_while_running_raises():
    release = threading.Event()
    p = dummy.Process(target=release.wait, args=(10,), daemon=True)
    assert p.daemon
    p.start()
    with pytest.raises(ValueError):
        p.close()
    release.set()
    p.join(10)
    p.close()


# -- queues ------------------------------------------------------------------------------------


@BOTH
def test_queue_semantics(mod):
    q = mod.Queue(2)
    assert isinstance(q, queue.Queue)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert [q.get(), q.get_nowait()] == [1, 2]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(block=False)


@BOTH
def test_joinable_queue(mod):
    q = mod.JoinableQueue()
    done = []

    def worker():
        for item in iter(q.get, None):
            done.append(item * 2)
            q.task_done()
        q.task_done()

    t = mod.Process(target=worker)
    t.start()
    for i in range(5):
        q.put(i)
    q.join()
    assert done == [0, 2, 4, 6, 8]
    q.put(None)
    t.join(10)


def test_queue_close_like_a_process_queue():
    for q in (dummy.Queue(), multiprocessing.Queue()):
        q.put("x")
        q.close()
        with pytest.raises(ValueError, match="is closed"):
            q.put("y")
        with pytest.raises(ValueError, match="is closed"):
            q.get()
        q.join_thread()
    dummy.Queue().cancel_join_thread()


# -- Manager, Value, Array, Namespace -------------------------------------------------------------


@BOTH
def test_manager_is_the_module(mod):
    m = mod.Manager()
    assert m is mod
    assert isinstance(m, types.ModuleType)
    assert m.list([1, 2]) == [1, 2] and m.dict(a=1) == {"a": 1}
    ns = m.Namespace(b=2, a=1, _hidden=3)
    assert (ns.a, ns.b) == (1, 2)
    assert repr(ns) == "Namespace(a=1, b=2)"
    m.shutdown()


def test_manager_works_in_a_with_block():
    with dummy.Manager() as m:
        assert m is dummy
        shared = m.list()
        lock = m.Lock()
        threads = [m.Process(target=lambda i=i: (lock.acquire(), shared.append(i), lock.release())) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(shared) == [0, 1, 2, 3]


def test_value_matches_stdlib_and_adds_lock():
    for args in [("i", 3), ("d", 2.5), (ctypes.c_int, 7)]:
        ours, theirs = dummy.Value(*args), std_dummy.Value(*args)
        assert repr(ours) == repr(theirs)
        assert ours.value == theirs.value
        ours.value = theirs.value = 11
        assert repr(ours) == repr(theirs)
    assert dummy.Value("i").value == 0 and dummy.Value("d").value == 0.0 and dummy.Value(ctypes.c_double).value == 0.0
    counter = dummy.Value("i", 0)

    def bump():
        for _ in range(1000):
            with counter.get_lock():
                counter.value += 1

    threads = [dummy.Process(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert counter.value == 4000
    assert counter.get_obj().value == 4000
    own_lock = dummy.Lock()
    assert dummy.Value("i", 1, lock=own_lock).get_lock() is own_lock
    with pytest.raises(TypeError):
        dummy.Value("i", 1, 2)


def test_array_matches_stdlib_and_accepts_sizes():
    assert dummy.Array("i", [1, 2, 3]) == std_dummy.Array("i", [1, 2, 3])
    assert repr(dummy.Array("d", [1.5])) == repr(std_dummy.Array("d", [1.5]))
    assert list(dummy.Array("i", 4)) == [0, 0, 0, 0]  # a size, as multiprocessing.Array accepts
    assert list(dummy.Array(ctypes.c_double, 2)) == [0.0, 0.0]
    assert list(dummy.Array("i", range(3), lock=False)) == [0, 1, 2]
    with pytest.raises(TypeError):
        dummy.Array(object, 3)


# -- Pool ------------------------------------------------------------------------------------------


@BOTH
def test_pool_is_a_thread_pool(mod):
    offset = 100
    with mod.Pool(3) as pool:
        assert pool.map(lambda x: x + offset, range(10)) == [x + 100 for x in range(10)]  # no pickling needed
        names = set(pool.map(lambda _: threading.current_thread().name, range(20)))
        assert all(isinstance(name, str) for name in names)
        assert pool.apply_async(pow, (2, 10)).get(10) == 1024
    with mod.Pool(2, initializer=lambda: setattr(threading.current_thread(), "tagged", True)) as pool:
        assert all(pool.map(lambda _: getattr(threading.current_thread(), "tagged", False), range(6)))


def test_pool_comes_from_nbproc():
    from nbproc.pool import ThreadPool

    with dummy.Pool(2) as pool:
        assert isinstance(pool, ThreadPool)


# -- connections ---------------------------------------------------------------------------------


def test_pipe_semantics_match_real_connections():
    """The documented Connection behaviour, step by step, equal to the stdlib's real Pipe —
    except what close() does to the peer: there thread connections follow the stdlib's dummy."""
    assert connection_semantics(dummy.Pipe, closing=False) == connection_semantics(multiprocessing.Pipe, closing=False)


def test_pipe_between_threads_matches_stdlib_dummy():
    def run(mod):
        a, b = mod.Pipe()
        out = []
        t = threading.Thread(target=lambda: out.extend([b.recv(), b.recv_bytes()]))
        t.start()
        obj = {"unpicklable": threading.Lock()}  # threads pass objects by reference
        a.send(obj)
        a.send_bytes(b"bytes")
        t.join(10)
        return [out[0] is obj, out[1], b.poll(), a.poll(0.01)]

    assert run(dummy) == run(std_dummy) == [True, b"bytes", False, False]


def test_dummy_connection_has_no_fileno():
    a, b = dummy.Pipe()
    with pytest.raises(io.UnsupportedOperation):
        a.fileno()
    with pytest.raises(OSError):
        a.fileno()


def test_poll_wakes_when_data_arrives_from_another_thread():
    a, b = dummy.Pipe()
    timer = threading.Timer(0.05, a.send, args=("late",))
    timer.start()
    assert b.poll(10)
    assert b.recv() == "late"
    timer.join()


def _echo(conn):
    for msg in iter(conn.recv_bytes, b""):
        conn.send_bytes(msg)


def test_closing_the_childs_end_after_start_is_harmless_as_in_stdlib_dummy():
    """The "close the child's end in the parent" idiom: with threads the child holds the same
    object, so close() must not end it (the stdlib's dummy close() is a no-op too)."""

    def run(mod):
        conn, child_conn = mod.Pipe()
        p = mod.Process(target=_echo, args=(child_conn,))
        p.start()
        child_conn.close()
        conn.send_bytes(b"hello")
        got = conn.recv_bytes()
        conn.send([1, "any object"])  # send_bytes/recv_bytes pass objects through, as in the stdlib's dummy
        obj = conn.recv()
        conn.send_bytes(b"")
        p.join(10)
        return got, obj, p.is_alive()

    assert run(dummy) == run(std_dummy) == (b"hello", [1, "any object"], False)


def test_listener_and_client_between_threads():
    with dummy_connection.Listener(("localhost", 6000), authkey=b"ignored") as listener:
        assert listener.address == ("localhost", 6000)
        assert listener.last_accepted is None

        def server():
            with listener.accept() as conn:
                conn.send(("welcome", conn.recv()))

        t = dummy.Process(target=server)
        t.start()
        with dummy_connection.Client(("localhost", 6000), authkey=b"ignored") as conn:
            conn.send("client")
            assert conn.recv() == ("welcome", "client")
        t.join(10)
        assert t.exitcode == 0
        with pytest.raises(OSError):
            dummy_connection.Listener(("localhost", 6000))  # address in use
    with pytest.raises(ConnectionRefusedError):
        dummy_connection.Client(("localhost", 6000))


def test_listener_default_address_and_close():
    listener = dummy_connection.Listener()
    other = dummy_connection.Listener()
    assert listener.address != other.address
    other.close()
    first = dummy_connection.Client(listener.address)  # never blocks, even beyond the backlog of 1
    second = dummy_connection.Client(listener.address)
    for client, word in [(first, "first"), (second, "second")]:
        listener.accept().send(word)  # accepted in the order they connected
        assert client.recv() == word
    waiting = []
    t = threading.Thread(target=lambda: waiting.append(_accept_outcome(listener)))
    t.start()
    listener.close()
    t.join(10)
    assert waiting == ["closed"], "close() wakes a blocked accept()"
    with pytest.raises(OSError, match="listener is closed"):
        listener.accept()
    with pytest.raises(TypeError):
        dummy_connection.Listener(authkey="not bytes")


def _accept_outcome(listener) -> str:
    try:
        listener.accept()
    except OSError:
        return "closed"
    return "accepted"


def test_unaccepted_clients_see_eof_when_listener_closes():
    listener = dummy_connection.Listener()
    pending = dummy_connection.Client(listener.address)
    listener.close()
    assert pending.poll(1.0)
    with pytest.raises(EOFError):
        pending.recv()
