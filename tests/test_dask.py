"""``nbproc.dask``: the Pool API on real Dask processes on 127.0.0.1.

Two clusters, one of each per module (they are what costs time): a ``LocalCluster`` of two
one-thread worker processes, and a ``dask scheduler`` plus two ``dask worker`` processes
started here from the command line (killed at the end). Task functions are defined inside the
tests: like a notebook cell's, the workers cannot import them, so they travel by value.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

import nbproc  # noqa: E402
import nbproc.dask  # noqa: E402
from nbproc.pool import MaybeEncodingError, RemoteTraceback, TaskCancelledError  # noqa: E402

DASK = str(Path(sys.executable).with_name("dask"))
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host=HOST, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def pool(client):
    with nbproc.dask.Pool(client=client) as p:
        yield p


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_worker(address: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DASK, "worker", address, "--host", HOST, "--nthreads", "1", "--no-nanny", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def cli_cluster():
    """(address, [worker processes]) of a scheduler and two workers started with the ``dask`` CLI."""
    address = f"tcp://{HOST}:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    procs = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", HOST, "--port", port, "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        workers = [_start_worker(address) for _ in range(2)]
        procs += workers
        with distributed.Client(address, set_as_default=False, timeout=60) as probe:
            probe.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for proc in reversed(procs):
            _stop(proc)


# -- the Pool API on a LocalCluster(processes=True) ----------------------------------------------


def test_cell_defined_code_runs_on_the_cluster(pool):
    offset = 10

    class Point:  # defined here: a worker cannot import it
        def __init__(self, x):
            self.x = x

        def shifted(self):
            return Point(self.x + offset)

    assert pool.map(lambda p: p.shifted(), [Point(i) for i in range(5)])[3].x == 13
    assert pool.map(lambda x: x * offset, range(7)) == [x * offset for x in range(7)]
    assert pool.starmap(lambda a, b: a - b, [(5, 1), (9, 3)]) == [4, 6]
    assert pool.apply(lambda a, *, b: a + b, (1,), {"b": 2}) == 3
    assert list(pool.imap(lambda x: -x, range(9), chunksize=2)) == [-x for x in range(9)]
    assert sorted(pool.imap_unordered(lambda x: x % 3, range(6))) == [0, 0, 1, 1, 2, 2]
    assert pool.map(lambda x: x, []) == []


def test_async_results_and_callbacks(pool):
    got, errors = [], []
    done = threading.Event()
    res = pool.map_async(lambda x: x + 1, range(10), chunksize=3, callback=got.append)
    assert res.get(timeout=30) == list(range(1, 11))
    assert res.ready() and res.successful()
    assert got == [list(range(1, 11))]

    def boom(x):
        raise KeyError(x)

    failing = pool.apply_async(boom, (7,), error_callback=lambda e: (errors.append(e), done.set()))
    assert done.wait(30)
    assert isinstance(errors[0], KeyError) and not failing.successful()
    with pytest.raises(KeyError):
        failing.get()
    slow = pool.apply_async(time.sleep, (0.5,))
    with pytest.raises(nbproc.TimeoutError):
        slow.get(timeout=0.01)
    assert slow.get(timeout=30) is None  # a timed-out get leaves the task running


def test_exception_carries_the_remote_traceback(pool):
    def check_item(x):
        if x == 4:
            raise ValueError(f"item {x} is bad")  # the line the traceback must show
        return x

    with pytest.raises(ValueError, match="item 4 is bad") as info:
        pool.map(check_item, range(8), chunksize=1)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    raise_line = check_item.__code__.co_firstlineno + 2
    assert f'{__file__}", line {raise_line}, in check_item' in str(cause)
    assert 'raise ValueError(f"item {x} is bad")' in str(cause)


def test_unserializable_result_is_maybe_encoding_error(pool):
    with pytest.raises(MaybeEncodingError):
        pool.apply(lambda: threading.Lock())


def test_initializer_runs_in_each_worker_before_tasks(client):
    def init(value):
        os.environ["NBPROC_DASK_INIT"] = value

    with nbproc.dask.Pool(client=client, initializer=init, initargs=("ready",)) as p:
        assert set(p.map(lambda _: os.environ.get("NBPROC_DASK_INIT"), range(6), chunksize=1)) == {"ready"}


def test_worker_output_reaches_the_caller(pool, capsys):
    def noisy(x):
        print(f"line from task {x}")
        print(f"warning {x}", file=sys.stderr)
        return x

    assert pool.map(noisy, range(3), chunksize=1) == [0, 1, 2]
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == [f"line from task {x}" for x in range(3)]
    assert sorted(err.splitlines()) == [f"warning {x}" for x in range(3)]


def test_progress_listener_sees_every_item(pool):
    events = []
    pool.add_listener(events.append)
    try:
        pool.map(lambda x: x, range(20), chunksize=5)
    finally:
        pool.remove_listener(events.append)
    assert events[-1].finished and events[-1].done == 20 and events[-1].total == 20
    assert sum(e.items for e in events if e.kind == "done") == 20


def test_many_small_tasks_never_become_as_many_futures(client, monkeypatch):
    """100,000 items are chunked, and chunksize=1 calls keep at most the engine's limit in flight.

    The window is made small here (the mechanism is under test, not its size), so that a few
    hundred calls are far more than it may hold.
    """
    monkeypatch.setattr(nbproc._dask_core, "INFLIGHT_PER_SLOT", 4)
    monkeypatch.setattr(nbproc._dask_core, "MIN_INFLIGHT", 16)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(1 for key in list(client.futures) if str(key).startswith("nbproc-")))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with nbproc.dask.Pool(client=client) as pool:
            assert pool.map(lambda x: x + 1, range(100_000))[-1] == 100_000
            results = [pool.apply_async(lambda x: x, (i,)) for i in range(300)]
            assert [r.get(timeout=60) for r in results] == list(range(300))
            limit = pool._core._limit
    finally:
        stop.set()
        watcher.join()
    assert limit == 16
    # At most `limit` futures run; the launcher refills the window while the collector still
    # holds a finished batch (at most `limit` more), and the client forgets a released future
    # on its event loop a moment later: 3 x limit bounds all that, far below one per task.
    assert 0 < peak[0] <= 3 * limit < 300


def test_small_functions_travel_in_the_tasks_large_ones_once(pool):
    """A function of a few hundred bytes is sent inside each task (no dependency to schedule);
    a closure over more than ``INLINE_PAYLOAD_BYTES`` goes to the cluster once, as a payload task."""
    blob = bytes(range(256)) * 64  # 16 KiB, captured by the closure below

    def pick(i):
        return blob[i]

    def small(i):
        return i

    assert pool.map(pick, range(8), chunksize=1) == list(blob[:8])
    assert pool.map(small, range(8), chunksize=1) == list(range(8))
    big_entry = pool._core.prepare_function(pick, "a test's function")
    small_entry = pool._core.prepare_function(small, "a test's function")
    assert isinstance(big_entry.source, distributed.Future) and big_entry.source.key.startswith("nbproc_payload-")
    assert isinstance(small_entry.source, bytes) and len(small_entry.source) <= nbproc._dask_core.INLINE_PAYLOAD_BYTES


def test_imap_over_a_generator_reads_it_lazily(pool):
    read = [0]

    def endless():
        while True:
            read[0] += 1
            yield read[0]

    it = pool.imap(lambda x: x * 2, endless())
    assert [next(it) for _ in range(30)] == [2 * x for x in range(1, 31)]
    time.sleep(0.3)  # let the feeder run ahead as far as it may
    assert read[0] <= 30 + pool._processes * nbproc.dask.IMAP_BUFFER_PER_SLOT + 1
    del it


def test_terminate_cancels_outstanding_work(client):
    p = nbproc.dask.Pool(client=client)
    slow = [p.apply_async(time.sleep, (0.5,)) for _ in range(6)]
    started = time.monotonic()
    p.terminate()
    for res in slow:
        with pytest.raises(TaskCancelledError):
            res.get(timeout=10)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(abs, [1])
    assert client.status == "running"  # a client we were given stays open


def test_close_then_join_waits_for_the_work(client):
    p = nbproc.dask.Pool(client=client)
    res = p.map_async(lambda x: (time.sleep(0.05), x)[1], range(8), chunksize=1)
    p.close()
    p.join()
    assert res.ready() and res.get() == list(range(8))


def test_owned_local_cluster_is_closed_with_the_pool():
    with nbproc.dask.Pool(1) as p:
        assert p.map(lambda x: x + 1, range(4)) == [1, 2, 3, 4]
        assert len(p.client.nthreads()) == 1
    # the autouse fixture checks that the LocalCluster's processes are gone


def test_arguments_are_checked_before_connecting(client):
    with pytest.raises(ValueError, match="at least 1"):
        nbproc.dask.Pool(0, client=client)
    with pytest.raises(TypeError, match="initializer"):
        nbproc.dask.Pool(client=client, initializer=3)
    with pytest.raises(ValueError, match="either client= or address="):
        nbproc.dask.Pool(client=client, address="tcp://127.0.0.1:1")


def test_task_timeout_is_refused_clearly(pool):
    with pytest.raises(ValueError, match="Dask cannot stop a running task"):
        pool.map(abs, [1], task_timeout=1)
    with pytest.raises(ValueError, match="Dask cannot stop a running task"):
        pool.imap(abs, iter([1]), task_timeout=1)
    assert pool.map(abs, [-1]) == [1]  # the pool is unharmed


def test_import_nbproc_does_not_import_dask():
    code = "import sys, nbproc.pool; print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- a cluster started with the dask command line --------------------------------------------------


def test_pool_on_a_scheduler_address(cli_cluster):
    address, workers = cli_cluster
    with nbproc.dask.Pool(address=address) as p:
        assert p._processes == 2
        results = p.map(lambda x: (x * x, os.getpid(), time.sleep(0.2)), range(8), chunksize=1)
    assert [r[0] for r in results] == [x * x for x in range(8)]
    assert {r[1] for r in results} == {w.pid for w in workers}


def test_killed_worker_during_a_map_completes_or_fails_clearly(cli_cluster):
    address, _ = cli_cluster
    extra = _start_worker(address)
    try:
        with distributed.Client(address, set_as_default=False) as client:
            client.wait_for_workers(3, timeout=60)
            extra_address = next(a for a, pid in client.run(os.getpid).items() if pid == extra.pid)
            with nbproc.dask.Pool(client=client) as p:
                res = p.map_async(lambda x: (time.sleep(0.3), x)[1], range(12), chunksize=1)
                deadline = time.monotonic() + 30
                while not client.processing(workers=[extra_address]).get(extra_address):
                    assert time.monotonic() < deadline, "the extra worker never got a task"
                    time.sleep(0.01)
                os.kill(extra.pid, signal.SIGKILL)
                try:
                    assert res.get(timeout=60) == list(range(12))  # Dask re-ran the lost tasks
                except nbproc.WorkerLostError as exc:  # ... or gave up on them: a clear error
                    assert "died" in str(exc)
    finally:
        _stop(extra)


def test_scheduler_killed_during_a_map_fails_clearly():
    """The other side dying is noticed: outstanding results fail at once, nothing hangs."""
    address = f"tcp://{HOST}:{_free_port()}"
    scheduler = subprocess.Popen(
        [DASK, "scheduler", "--host", HOST, "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = _start_worker(address)
    try:
        p = nbproc.dask.Pool(address=address)
        try:
            res = p.map_async(time.sleep, [0.5] * 6, chunksize=1)
            time.sleep(0.2)
            scheduler.kill()
            with pytest.raises(TaskCancelledError, match="cancelled by the Dask cluster"):
                res.get(timeout=60)
        finally:
            p.terminate()
    finally:
        _stop(worker)
        _stop(scheduler)


def test_parallel_magic_runs_on_a_cluster(cli_cluster, capsys):
    """``%%parallel --cluster ADDRESS``: the cell's body, with the notebook's names, on the Dask workers."""
    from nbproc.jupyter import parallel

    address, workers = cli_cluster
    shell = types.SimpleNamespace(user_ns={"scale": 10, "f": lambda v: v * 10}, execution_count=3)
    body = "import os\nprint('run', worker_id)\n(f(x) + scale, os.getpid())\n"
    try:
        mapped = parallel.parallel_magic(shell, f"--cluster {address} --map x in range(6)", body)
        per_slot = parallel.parallel_magic(shell, f"--cluster {address}", "(worker_id, n_workers)")
        assert parallel.cluster_pool(address) is parallel.cluster_pool(address)  # warm between cells
    finally:
        assert parallel.shutdown_warm_pool()
    assert [r[0] for r in mapped] == [x * 10 + 10 for x in range(6)]
    assert {r[1] for r in mapped} <= {w.pid for w in workers}
    assert per_slot == [(0, 2), (1, 2)]  # -n defaults to the cluster's two worker threads
    out = capsys.readouterr().out
    assert sorted(line for line in out.splitlines() if " run " in line) == [f"[{i}] run {i}" for i in range(6)]
