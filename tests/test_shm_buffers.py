"""nbproc._shm_buffers: large buffers through shared memory, byte-identical, and nothing left
in /dev/shm afterwards — after normal runs, a SIGKILLed worker, a killed parent.

Only segments named with this test session's prefix are looked at (other developers' test
runs create segments too). Sizes: 1 KiB (stays in the pickle), 1 MiB (the threshold: shared
memory), 64 MiB only in the Pool and Pipe round trips.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import resource_tracker

import numpy as np
import pytest

import nbproc
from nbproc import _shm_buffers as shm

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="lists segments in /dev/shm (Linux)")

KIB, MIB = 1024, 1024 * 1024


def _ours(prefix: str = shm.PREFIX) -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith(prefix)}


def _wait_until_gone(before: set[str], prefix: str = shm.PREFIX, timeout: float = 10.0) -> set[str]:
    """Segments of ours beyond ``before``, after giving cleanup up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        extra = _ours(prefix) - before
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


@pytest.fixture
def shm_clean():
    """Fails the test if it leaves segments of this session behind."""
    resource_tracker.ensure_running()
    before = _ours()
    yield
    assert _wait_until_gone(before) == set()


def _samples(big: bool) -> list:
    rng = np.random.default_rng(0)
    arrays = [rng.random(KIB // 8), rng.random(MIB // 8)]
    if big:
        arrays.append(rng.random(64 * MIB // 8))
    readonly = rng.random(2 * MIB // 8)
    readonly.flags.writeable = False
    return [
        *arrays,
        rng.random(4 * MIB // 8).reshape(512, -1)[:, ::3],  # a non-contiguous view
        readonly,
        rng.bytes(2 * MIB),
        memoryview(rng.random(MIB // 8)),
    ]


def _same(sent, received) -> None:
    assert type(received) is type(sent)
    assert memoryview(received).tobytes() == memoryview(sent).tobytes()
    if isinstance(sent, np.ndarray):
        assert received.shape == sent.shape and received.dtype == sent.dtype
        assert received.flags.writeable == sent.flags.writeable


def identity(x):
    return x


def digest(x) -> str:
    return hashlib.sha256(memoryview(x).tobytes()).hexdigest()


# -- the carrier itself ---------------------------------------------------------------------


def test_export_attach_roundtrip_maps_and_removes_the_name(shm_clean):
    data = np.arange(MIB // 8, dtype=np.float64)
    ref = shm.export(memoryview(data).cast("B"))
    assert shm.is_ref(ref) and len(ref) < 128
    assert len(_ours()) >= 1
    view = shm.attach(ref)
    assert not view.readonly
    assert np.frombuffer(view, dtype=np.float64).tolist() == data.tolist()
    with pytest.raises(FileNotFoundError):
        shm.attach(ref)  # its name is gone as soon as the receiver has it


def test_readonly_buffers_come_back_readonly(shm_clean):
    data = bytes(range(256)) * 4096
    view = shm.attach(shm.export(memoryview(data)))
    assert view.readonly and view.tobytes() == data


def test_discard_removes_what_nobody_attached(shm_clean):
    refs = [shm.export(memoryview(bytes(MIB))) for _ in range(2)]
    shm.attach(refs[0])
    shm.discard([b"an ordinary frame", *refs])  # the attached one is left alone


def test_sweep_removes_a_process_segments(shm_clean):
    for _ in range(2):
        shm.export(memoryview(bytes(MIB)))
    assert shm.sweep(os.getpid()) == 2


def test_small_buffers_keep_the_plain_path():
    from nbproc.connection import dump_frames

    frames = dump_frames(np.zeros(MIB // 16), what="test")
    assert len(frames) == 3 and not shm.is_ref(frames[2])  # out of band, through the pipe


def test_listener_client_connections_never_use_shared_memory(shm_clean, monkeypatch):
    """Their peer may be on another machine (or in another process tree): a segment name would
    mean nothing there, even with ``out_of_band=True``."""
    from nbproc.connection import Client, Listener

    monkeypatch.setattr(shm, "export", lambda raw: pytest.fail("exported for a Listener/Client peer"))
    array = np.arange(MIB // 4, dtype=np.float64)
    with Listener(("127.0.0.1", 0), out_of_band=True) as listener:
        client = Client(listener.address, out_of_band=True)
        server = listener.accept()
        client.send(array)
        assert (server.recv() == array).all()
        client.close()
        server.close()


# -- through every channel, under every start method ------------------------------------------


def test_pool_roundtrip(ctx, shm_clean):
    samples = _samples(big=True)
    with ctx.Pool(2) as pool:
        for sent, received in zip(samples, pool.map(identity, samples, 1), strict=True):
            _same(sent, received)


def _echo_digests(conn, items):
    conn.send([digest(x) for x in items] + [x.flags.writeable for x in items if isinstance(x, np.ndarray)])


def test_process_args_roundtrip(ctx, shm_clean):
    samples = _samples(big=False)
    a, b = ctx.Pipe()
    p = ctx.Process(target=_echo_digests, args=(b, samples))
    p.start()
    got = a.recv()
    p.join()
    assert got == [digest(x) for x in samples] + [x.flags.writeable for x in samples if isinstance(x, np.ndarray)]


def _echo_queue(inq, outq):
    while (item := inq.get()) is not None:
        outq.put(item)


def test_queue_roundtrip(ctx, shm_clean):
    samples = _samples(big=False)
    inq, outq = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_echo_queue, args=(inq, outq))
    p.start()
    for item in samples:
        inq.put(item)
    inq.put(None)
    received = [outq.get(timeout=30) for _ in samples]
    p.join()
    for sent, back in zip(samples, received, strict=True):
        _same(sent, back)


def _echo_pipe(conn):
    while (item := conn.recv()) is not None:
        conn.send(item)


def test_pipe_roundtrip(ctx, shm_clean):
    samples = _samples(big=True)
    a, b = ctx.Pipe()
    p = ctx.Process(target=_echo_pipe, args=(b,))
    p.start()
    for sent in samples:
        a.send(sent)
        _same(sent, a.recv())
    a.send(None)
    p.join()


def total(x) -> float:
    return float(x[0] + x[-1])


def test_a_thousand_tasks_leave_nothing(ctx, shm_clean, monkeypatch):
    array = np.ones(MIB // 8)  # exactly the threshold: every task goes through shared memory
    exported = []
    export = shm.SegmentCache.export
    monkeypatch.setattr(shm.SegmentCache, "export", lambda self, raw: exported.append(1) or export(self, raw))
    with ctx.Pool(2) as pool:
        assert pool.map(total, [array] * 1000, 1) == [2.0] * 1000
    assert len(exported) == 1000


# -- killed processes -------------------------------------------------------------------------


def _die_after_exporting(x):
    shm.export(memoryview(bytes(2 * MIB)))  # a result's segment, made and never sent
    os.kill(os.getpid(), signal.SIGKILL)


def _die(x):
    os.kill(os.getpid(), signal.SIGKILL)


def test_worker_sigkilled_mid_transfer(ctx, shm_clean):
    with ctx.Pool(1) as pool:
        with pytest.raises(nbproc.WorkerLostError):
            pool.apply(_die_after_exporting, (np.ones(MIB),))
        with pytest.raises(nbproc.WorkerLostError):
            pool.apply(_die, (np.ones(MIB),))
        assert pool.apply(total, (np.ones(MIB),)) == 2.0  # the replacement works


def test_workers_ending_after_each_task_keep_their_results_readable(ctx, shm_clean):
    """maxtasksperchild=1: a worker ends right after writing its result, which the parent may
    read later: the worker's segment must outlive it (the pool removes it once read)."""
    with ctx.Pool(2, maxtasksperchild=1) as pool:
        results = pool.map(filled, range(6), 1)
    assert [float(r[0]) for r in results] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def _die_holding(x):
    if x[0] == 2.0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 2


def test_worker_sigkilled_with_recycled_segments(ctx, shm_clean):
    """The worker holds a recycled task segment and idle result segments of its own when it
    is killed: the replacement works, and nothing is left once the pool is gone."""
    with ctx.Pool(1) as pool:
        for _ in range(3):  # recycled both ways by now
            assert all((r == 2.0).all() for r in pool.map(_die_holding, [np.ones(MIB // 8)] * 2, 1))
        with pytest.raises(nbproc.WorkerLostError):
            pool.apply(_die_holding, (np.full(MIB // 8, 2.0),))
        assert (pool.apply(_die_holding, (np.ones(MIB // 8),)) == 2.0).all()


def test_terminated_pool_discards_queued_arrays(ctx, shm_clean):
    pool = ctx.Pool(1)
    pool.apply_async(time.sleep, (30,))
    pending = [pool.apply_async(total, (np.ones(MIB),)) for _ in range(3)]
    time.sleep(0.2)
    pool.terminate()
    pool.join()
    assert not any(r.successful() for r in pending if r.ready())


_PARENT = """
import os, sys, time
import numpy as np
import nbproc
def hold(x):
    time.sleep(60)
if __name__ == "__main__":
    ctx = nbproc.get_context(sys.argv[1])
    q = ctx.Queue()
    q.put(np.ones(1024 * 1024))  # never read
    pool = ctx.Pool(1)
    for _ in range(3):  # one running, two queued in the parent
        pool.apply_async(hold, (np.ones(1024 * 1024),))
    time.sleep(0.5)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_killed_parent_leaves_nothing(start_method, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    token = os.urandom(3).hex()
    prefix = f"nbp_{token}_"
    env = {**os.environ, "NBPROC_SHM_TREE": token}
    parent = subprocess.Popen(
        [sys.executable, str(script), start_method], stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert parent.stdout.readline().strip() == b"ready"
        assert _ours(prefix), "the scenario should have segments in flight"
        parent.kill()
        parent.wait()
        # workers exit when their parent dies; the tracker then removes what is registered
        assert _wait_until_gone(set(), prefix, timeout=20) == set()
    finally:
        parent.kill()
        parent.wait()
        try:
            os.killpg(parent.pid, signal.SIGKILL)  # anything of its tree still alive
        except ProcessLookupError:
            pass


# -- recycled segments (the pool's) -----------------------------------------------------------


def _name(ref: bytes) -> str:
    return bytes(ref[shm._RHEAD.size :]).decode("ascii")


def test_a_segment_is_reused_only_once_its_receiver_let_go(shm_clean):
    cache = shm.SegmentCache()
    first = np.arange(MIB // 8, dtype=np.float64)
    ref_a = cache.export(memoryview(first).cast("B"))
    held = np.frombuffer(shm.attach(ref_a), dtype=np.float64)
    ref_b = cache.export(memoryview(first * 2).cast("B"))
    assert _name(ref_b) != _name(ref_a), "handed out a segment a receiver still maps"
    received_b = np.frombuffer(shm.attach(ref_b), dtype=np.float64)
    del received_b  # released: its segment may be written again
    ref_c = cache.export(memoryview(first * 3).cast("B"))
    assert _name(ref_c) == _name(ref_b)
    assert (np.frombuffer(shm.attach(ref_c), dtype=np.float64) == first * 3).all()
    assert (held == first).all(), "the array still held changed"
    cache.close()
    assert (held == first).all()  # its memory outlives the name


def test_a_discarded_recycled_segment_is_reused_an_attached_one_is_not(shm_clean):
    cache = shm.SegmentCache()
    data = memoryview(bytes(MIB))
    never_read = cache.export(data)
    shm.discard([never_read])
    assert _name(cache.export(data)) == _name(never_read)
    attached = cache.export(data)
    view = shm.attach(attached)
    shm.discard([attached])  # the pool discards a finished task's frames: must not free a mapped one
    assert _name(cache.export(data)) != _name(attached)
    del view
    cache.close()


def test_a_stale_reference_is_refused(shm_clean):
    cache = shm.SegmentCache()
    ref = cache.export(memoryview(bytes(MIB)))
    shm.discard([ref])
    cache.export(memoryview(bytes(MIB)))  # the same segment, a new token
    with pytest.raises(FileNotFoundError):
        shm.attach(ref)
    cache.close()


def _exit_at_once():
    pass


def test_mappings_alive_at_a_fork_are_never_reused(shm_clean):
    """A forked child shares the mapping: its copy of the array must not change under it."""
    cache = shm.SegmentCache()
    ref = cache.export(memoryview(bytes(MIB)))
    view = shm.attach(ref)
    p = nbproc.get_context("fork").Process(target=_exit_at_once)
    p.start()
    p.join()
    del view
    assert _name(cache.export(memoryview(bytes(MIB)))) != _name(ref)
    cache.close()


def test_a_full_dev_shm_gives_back_the_idle_segments(shm_clean, monkeypatch):
    cache = shm.SegmentCache()
    idle = cache.export(memoryview(bytes(MIB)))
    shm.discard([idle])
    cache.export(memoryview(bytes(2 * MIB)))  # (collects the idle one; too small for this)
    create = shm._new_segment
    calls = []

    def full_once(view, token):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return create(view, token)

    monkeypatch.setattr(shm, "_new_segment", full_once)
    ref = cache.export(memoryview(bytes(4 * MIB)))
    assert len(calls) == 2 and _name(idle)[1:] not in _ours() and shm.attach(ref).nbytes == 4 * MIB
    cache.close()


def test_budget_zero_means_fresh_segments(shm_clean):
    cache = shm.SegmentCache(budget=0)
    ref = cache.export(memoryview(bytes(MIB)))
    assert bytes(ref[:8]) == shm._MAGIC  # the one-shot kind: the receiver removes the name
    shm.attach(ref)
    cache.close()


_kept = []


def keep(x):
    _kept.append(x)
    return float(x[0])


def kept_digests(_):
    return [digest(x) for x in _kept]


def filled(value):
    return np.full(MIB // 4, float(value))


def test_arrays_kept_by_either_side_never_change(ctx, shm_clean):
    """The worker keeps the arrays it was sent, the parent the results: later traffic reuses
    segments, never theirs."""
    arrays = [np.full(MIB // 4, float(i)) for i in range(4)]
    with ctx.Pool(1) as pool:
        assert pool.map(keep, arrays, 1) == [0.0, 1.0, 2.0, 3.0]
        results = pool.map(filled, range(4), 1)
        for _ in range(3):
            pool.map(total, [np.ones(MIB // 4)] * 4, 1)  # recycled traffic both ways
            pool.map(filled, range(10, 14), 1)
        assert pool.apply(kept_digests, (None,)) == [digest(a) for a in arrays]
        assert [float(r[0]) for r in results] == [0.0, 1.0, 2.0, 3.0]
        assert all((r == r[0]).all() for r in results)
