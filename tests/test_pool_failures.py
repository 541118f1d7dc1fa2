"""Pool failure modes that hang the stdlib forever — each must fail fast and leave the pool usable.

- a worker dying mid-task (``os._exit``, SIGKILL, a segfault) fails exactly its task with
  :class:`nbproc.WorkerLostError` naming pid and exit code;
- an argument that cannot be serialized raises the serializer's precise error; a result that
  cannot be sent back raises :class:`MaybeEncodingError` in the parent;
- KeyboardInterrupt while waiting cancels the job and terminates the workers running it;
- when the parent process dies, its workers exit.

Every test then runs a new ``map`` on the same pool. Time bounds are generous (10 s): the
machine is shared, and the point is "not forever".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import unittest.mock

import psutil
import pytest

import nbproc
import nbproc.pool
from nbproc.pool import MaybeEncodingError

BOUND = 10.0  # seconds: "promptly" on a loaded 2-core machine; the stdlib waits forever


def still_alive(pids, timeout=BOUND):
    """The pids among ``pids`` whose processes have not exited (or become zombies) within ``timeout``."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + timeout
    while procs and time.monotonic() < deadline:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        procs = alive
        time.sleep(0.05)
    return [p.pid for p in procs]


def square(x):
    return x * x


def die_by(how, x=None):
    if x is not None and x != 3:
        return x
    if how == "exit":
        os._exit(7)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        import ctypes
        import faulthandler
        import resource

        faulthandler.disable()  # inherited from pytest under fork: keep the log quiet
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        ctypes.string_at(0)
    raise AssertionError(how)


def die_on_three(x):
    return die_by("exit", x)


EXPECTED_EXIT = {"exit": 7, "kill": -signal.SIGKILL, "segfault": -signal.SIGSEGV}


def test_dead_worker_fails_exactly_its_task(ctx):
    with ctx.Pool(2) as pool:
        for how, code in EXPECTED_EXIT.items():
            start = time.monotonic()
            result = pool.apply_async(die_by, (how,))
            with pytest.raises(nbproc.WorkerLostError) as info:
                result.get(timeout=BOUND)
            assert time.monotonic() - start < BOUND
            err = info.value
            assert isinstance(err, nbproc.ProcessError)
            assert err.exitcode == code and err.pid > 0
            assert f"pid {err.pid}" in str(err) and f"exit code {code}" in str(err)
            assert not psutil.pid_exists(err.pid) or psutil.Process(err.pid).status() == psutil.STATUS_ZOMBIE
            assert pool.map(square, range(10)) == [x * x for x in range(10)]
        # in a map, only the dead worker's chunk fails; imap goes on past it
        with pytest.raises(nbproc.WorkerLostError):
            pool.map(die_on_three, range(8), chunksize=1)
        it = pool.imap(die_on_three, range(6))
        got = []
        for _ in range(6):
            try:
                got.append(next(it))
            except nbproc.WorkerLostError:
                got.append("lost")
        assert got == [0, 1, 2, "lost", 4, 5]
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        assert len(pool._pool) == 2  # replaced


def test_worker_lost_is_reported_to_progress_listeners(start_method):
    events = []
    with nbproc.get_context(start_method).Pool(1) as pool:
        pool.add_listener(events.append)
        with pytest.raises(nbproc.WorkerLostError):
            pool.apply(die_by, ("exit",))
    lost = [e for e in events if e.kind == "worker_lost"]
    assert len(lost) == 1 and lost[0].exitcode == 7
    assert [e.kind for e in events if e.kind != "worker_lost"][-1] == "failed"


def test_unserializable_argument_and_result(ctx):
    lock = threading.Lock()
    with ctx.Pool(2) as pool:
        with pytest.raises(nbproc.SerializationError, match=r"item 2 of the iterable passed to Pool.map\(\).*lock"):
            pool.map(square, [1, 2, lock, 4])
        result = pool.apply_async(square, (lock,))
        with pytest.raises(nbproc.SerializationError, match=r"argument 1 of Pool.apply_async\(\).*lock"):
            result.get(timeout=BOUND)
        with pytest.raises(nbproc.SerializationError, match="function passed to Pool.map"):
            pool.map(lambda x: lock, [1])
        start = time.monotonic()
        with pytest.raises(MaybeEncodingError, match="lock") as info:
            pool.apply(make_lock)
        assert isinstance(info.value, nbproc.SerializationError)
        with pytest.raises(MaybeEncodingError, match="lock"):
            pool.map(make_lock_if_odd, range(4))
        assert time.monotonic() - start < BOUND
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


def make_lock(_=None):
    return threading.Lock()


def make_lock_if_odd(x):
    return threading.Lock() if x % 2 else x


def _sleep_marking(path_seconds):
    path, seconds = path_seconds
    open(path, "w").close()
    time.sleep(seconds)
    return seconds


def _interrupt_main_when(paths, deadline):
    def run():
        while time.monotonic() < deadline and not all(os.path.exists(p) for p in paths):
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("wait", ["map", "get", "imap"])
def test_keyboard_interrupt_cancels_the_job(start_method, wait, tmp_path):
    with nbproc.get_context(start_method).Pool(2) as pool:
        pool.map(square, range(4))  # workers are up
        workers = {p.pid for p in pool._pool}
        paths = [str(tmp_path / f"started-{i}") for i in range(2)]
        args = [(p, 60) for p in paths]
        start = time.monotonic()
        _interrupt_main_when(paths, start + BOUND)
        with pytest.raises(KeyboardInterrupt):
            if wait == "map":
                pool.map(_sleep_marking, args, chunksize=1)
            elif wait == "get":
                pool.map_async(_sleep_marking, args, chunksize=1).get()
            else:
                list(pool.imap(_sleep_marking, args))
        assert time.monotonic() - start < BOUND + 2
        # the workers that ran the interrupted tasks are terminated, and replaced
        assert not still_alive(workers)
        assert pool.map(square, range(6)) == [x * x for x in range(6)]
        assert not workers & {p.pid for p in pool._pool}


PARENT_SCRIPT = """
import sys, time
import nbproc

def sleeper(seconds):
    time.sleep(seconds)

if __name__ == "__main__":
    pool = nbproc.get_context(sys.argv[1]).Pool(2)
    pool.map(abs, range(4))
    busy = pool.apply_async(sleeper, (60,))  # one worker busy in a long task, one idle
    time.sleep(0.2)
    print(" ".join(str(p.pid) for p in pool._pool), flush=True)
    time.sleep(60)
"""


def test_workers_exit_when_the_parent_dies(start_method, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT_SCRIPT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    parent = subprocess.Popen(
        [sys.executable, str(script), start_method],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, line
        assert all(psutil.pid_exists(pid) for pid in pids)
        parent.kill()
        parent.wait()
        assert not still_alive(pids)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


CHILDREN_CANNOT_START = """
import sys
import nbproc

if __name__ == "__mp_main__":  # the main module, re-run in a spawn or forkserver child, fails
    raise RuntimeError("this main module fails in a child")

if __name__ == "__main__":
    with nbproc.get_context(sys.argv[1]).Pool(2) as pool:
        try:
            pool.map(abs, range(4))
        except nbproc.WorkerLostError as exc:
            print("lost:", exc)
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])  # a forked child does not re-run main
def test_workers_that_cannot_start_fail_the_job_instead_of_hanging(start_method, tmp_path):
    """Each worker is sent its first task while it starts; when every worker dies starting up,
    map() fails with a WorkerLostError that says so (the stdlib's Pool, and nbproc's before it
    handed tasks out only after a worker's READY, wait for ever as the pool replaces them)."""
    script = tmp_path / "main.py"
    script.write_text(CHILDREN_CANNOT_START)
    out = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=60, start_new_session=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lost: pool worker" in out.stdout and "while starting, holding task" in out.stdout, out.stdout
    assert "this main module fails in a child" in out.stderr


SLOW_TO_START = """
import sys, time
import nbproc

if __name__ == "__mp_main__":  # a spawned worker takes 30 s to import the main module
    time.sleep(30)

if __name__ == "__main__":
    pool = nbproc.get_context("spawn").Pool(1)
    pool.apply_async(len, (bytes(300_000),))  # a task larger than a pipe holds
    time.sleep(0.5)
    started = time.monotonic()
    pool.terminate()
    print(f"terminated in {time.monotonic() - started:.1f} s")
"""


def test_a_large_first_task_waits_for_a_starting_worker_instead_of_blocking_the_pool(tmp_path):
    """Only a task that fits in the pipe is written to a worker still starting: a larger write
    would block the pool thread until the worker reads, and terminate() (which joins that
    thread) with it."""
    script = tmp_path / "main.py"
    script.write_text(SLOW_TO_START)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    seconds = float(out.stdout.split()[2])
    assert seconds < 10, out.stdout


def test_pool_that_fails_to_start_leaves_no_worker(ctx):
    # A start that raises (here the third) must not leave the two started workers running.
    starts = {"n": 0}  # what the class closes over travels to spawned workers: no processes in it

    class ThirdStartFails(ctx.Process):
        def start(self):
            starts["n"] += 1
            if starts["n"] == 3:
                raise OSError("induced start failure")
            super().start()

    made = []

    def make_process(*args, **kwargs):
        made.append(ThirdStartFails(*args, **kwargs))
        return made[-1]

    duck = types.SimpleNamespace(Process=make_process, get_start_method=ctx.get_start_method)
    with pytest.raises(OSError, match="induced start failure"):
        nbproc.pool.Pool(4, context=duck)
    assert len(made) == 3
    assert [p.exitcode is not None for p in made[:2]] == [True, True]


def test_duck_typed_context_like_cpythons_suite():
    # CPython's test_release_unused_processes: a mock context whose Process objects have only
    # start/terminate/join/is_alive; the stdlib's Pool uses nothing else on them when a start fails.
    made = []

    class FakeProcess:
        def __init__(self, **kwargs):
            self.name = "Fake Process"
            self.state = None
            made.append(self)

        def start(self):
            if len(made) > 2:
                raise OSError("Manually induced OSError")
            self.state = "started"

        def terminate(self):
            self.state = "stopping"

        def join(self):
            if self.state == "stopping":
                self.state = "stopped"

        def is_alive(self):
            return self.state in ("started", "stopping")

    with pytest.raises(OSError, match="Manually induced OSError"):
        nbproc.pool.Pool(5, context=unittest.mock.MagicMock(Process=FakeProcess))
    assert len(made) == 3 and not any(p.is_alive() for p in made)


@pytest.mark.parametrize("call", ["map", "apply_async"])
def test_keyboard_interrupt_while_still_submitting_cancels_what_started(start_method, call, tmp_path):
    """The interrupt lands after the tasks were handed to the workers but before the caller waits."""
    with nbproc.get_context(start_method).Pool(2) as pool:
        pool.map(square, range(4))  # workers are up
        workers = {p.pid for p in pool._pool}
        paths = [str(tmp_path / f"started-{i}") for i in range(2 if call == "map" else 1)]
        real_submit = pool._core.submit
        submitted = []

        def submit_then_interrupt(batch):
            real_submit(batch)
            submitted.extend(batch)
            if len(submitted) < len(paths):
                return  # the first batch holds one task (batches grow): interrupt after the last
            deadline = time.monotonic() + BOUND
            while time.monotonic() < deadline and not all(os.path.exists(p) for p in paths):
                time.sleep(0.01)
            raise KeyboardInterrupt

        pool._core.submit = submit_then_interrupt
        with pytest.raises(KeyboardInterrupt):
            if call == "map":
                pool.map(_sleep_marking, [(p, 60) for p in paths], chunksize=1)
            else:
                pool.apply_async(_sleep_marking, ((paths[0], 60),))
        del pool._core.submit
        running = workers if call == "map" else None
        if running is not None:
            assert not still_alive(running)
        else:  # one worker ran the task: it is gone, the other one may stay
            assert len(still_alive(workers, timeout=1)) <= 1
        assert pool.map(square, range(6)) == [x * x for x in range(6)]
