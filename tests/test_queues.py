"""Queue, JoinableQueue and SimpleQueue: the reference's behaviour, the stdlib's, and what nbproc adds.

Process-level tests run under fork, spawn and forkserver (the ``ctx`` fixture). Differential tests
run the same script of operations against ``multiprocessing`` and ``nbproc`` and compare what each
step returned or raised. The soak test pushes 100,000 items through one queue from four processes.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import re
import threading
import time

import numpy as np
import pytest
from _examples import run_example, start_example

import nbproc
from nbproc import SerializationError
from nbproc.queues import JoinableQueue, Queue, SimpleQueue

# == helpers run in children (module level: importable by every start method) =====================


def _put_example(q):
    q.put([42, None, "hello"])


def _apply_and_reply(tasks, results):
    """Get (function, argument) pairs until None; put back function(argument)."""
    for func, arg in iter(tasks.get, None):
        results.put(func(arg))


def _echo_until_none(inq, outq):
    for item in iter(inq.get, None):
        outq.put(item)


def _put_range(q, start, count):
    for i in range(start, start + count):
        q.put(i)


def _put_big_range(q, start, count):
    """Items too big for put() to write itself: they need this process's feeder thread."""
    for i in range(start, start + count):
        q.put((i, b"b" * 100_000))


def _put_big_then_leave(q, cancel):
    q.put("X" * 10_000_000)  # far more than a pipe holds: the feeder blocks until read
    if cancel:
        q.cancel_join_thread()


def _report_length(q, lengths):
    lengths.put(len(q.get(timeout=30)))


def _consume_and_mark_done(q, n):
    for _ in range(n):
        q.get()
        q.task_done()


def _produce(q, producer, count):
    for seq in range(count):
        q.put((producer, seq))


def _consume_joinable(q, results):
    """Get until None, mark each item done, then report everything received, in order."""
    got = []
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            break
        got.append(item)
    results.put(got)


def _fork_grandchild_then_put(q, method):
    """In a spawned child: put through this process's feeder thread, then fork a grandchild that puts."""
    q.put(b"c" * 100_000)  # too big for put() to write itself: starts the feeder
    grandchild = nbproc.get_context("fork").Process(target=_put_big_range, args=(q, 100, 3))
    grandchild.start()
    grandchild.join()
    q.put(f"child done ({method})")


def _orphan_reader(method, blocked_q, report_q):
    """Start a grandchild blocked on an empty queue, then die without cleanup."""
    grandchild = nbproc.get_context(method).Process(target=_report_get_outcome, args=(blocked_q, report_q))
    grandchild.start()
    report_q.put(("grandchild", grandchild.pid))
    report_q.close()
    report_q.join_thread()  # flushed: os._exit() skips the exit-time flush
    os._exit(0)  # no atexit: the grandchild is not terminated, its parent is simply gone


def _report_get_outcome(blocked_q, report_q):
    try:
        blocked_q.get(timeout=30)
    except EOFError as exc:
        report_q.put(("EOFError", str(exc)))
    except queue.Empty:
        report_q.put(("Empty", ""))


# == the reference's examples ======================================================================

QUEUE_EXAMPLE = """
from multiprocessing import Process, Queue

def f(q):
    q.put([42, None, 'hello'])

if __name__ == '__main__':
    q = Queue()
    p = Process(target=f, args=(q,))
    p.start()
    print(q.get())    # prints "[42, None, 'hello']"
    p.join()
"""

WORKER_EXAMPLE = """
import time
import random

from multiprocessing import Process, Queue, current_process, freeze_support

#
# Function run by worker processes
#

def worker(input, output):
    for func, args in iter(input.get, 'STOP'):
        result = calculate(func, args)
        output.put(result)

#
# Function used to calculate result
#

def calculate(func, args):
    result = func(*args)
    return '%s says that %s%s = %s' % \\
        (current_process().name, func.__name__, args, result)

#
# Functions referenced by tasks
#

def mul(a, b):
    time.sleep(0.5*random.random())
    return a * b

def plus(a, b):
    time.sleep(0.5*random.random())
    return a + b

#
#
#

def test():
    NUMBER_OF_PROCESSES = 4
    TASKS1 = [(mul, (i, 7)) for i in range(20)]
    TASKS2 = [(plus, (i, 8)) for i in range(10)]

    # Create queues
    task_queue = Queue()
    done_queue = Queue()

    # Submit tasks
    for task in TASKS1:
        task_queue.put(task)

    # Start worker processes
    for i in range(NUMBER_OF_PROCESSES):
        Process(target=worker, args=(task_queue, done_queue)).start()

    # Get and print results
    print('Unordered results:')
    for i in range(len(TASKS1)):
        print('\\t', done_queue.get())

    # Add more tasks using `put()`
    for task in TASKS2:
        task_queue.put(task)

    # Get and print some more results
    for i in range(len(TASKS2)):
        print('\\t', done_queue.get())

    # Tell child processes to stop
    for i in range(NUMBER_OF_PROCESSES):
        task_queue.put('STOP')


if __name__ == '__main__':
    freeze_support()
    test()
"""


def test_queue_example(start_method):
    nb = run_example(QUEUE_EXAMPLE, start_method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    assert nb.stdout == "[42, None, 'hello']\n"
    std = run_example(QUEUE_EXAMPLE, start_method, "multiprocessing")
    assert std.returncode == 0, std.stderr
    assert nb.stdout == std.stdout


@pytest.mark.timeout(90)
def test_queue_worker_example_all_start_methods():
    """The reference's task/done queues example; the three start methods run side by side
    (its workers mostly sleep), and each output must hold exactly the 30 expected results."""
    running = {m: start_example(WORKER_EXAMPLE, m, "nbproc") for m in ("fork", "spawn", "forkserver")}
    expected = sorted([f"mul({i}, 7) = {i * 7}" for i in range(20)] + [f"plus({i}, 8) = {i + 8}" for i in range(10)])
    for method, example in running.items():
        done = example.finish(timeout=60)
        assert done.returncode == 0, (method, done.stderr)
        lines = done.stdout.splitlines()
        assert lines[0] == "Unordered results:"
        results = [re.fullmatch(r"\t (Process-[1-4]) says that (.*)", line) for line in lines[1:]]
        assert all(results), (method, lines)
        assert sorted(m.group(2) for m in results) == expected, method


# == basic API, in one process =======================================================================


@pytest.fixture
def fork_ctx():
    """Queues made in the test process only (no children): the start method does not matter."""
    return nbproc.get_context("fork")


def test_put_get_fifo_and_sizes(fork_ctx):
    q = fork_ctx.Queue(3)
    assert q.empty() and not q.full() and q.qsize() == 0
    for i in range(3):
        q.put(i)
    assert q.full() and q.qsize() == 3
    with pytest.raises(queue.Full):
        q.put_nowait(99)
    with pytest.raises(queue.Full):
        q.put(99, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put(99, False, 10)  # block=False ignores the timeout
    assert [q.get(timeout=10) for _ in range(3)] == [0, 1, 2]
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False, 10)


def test_get_timeout_waits_then_raises_empty(fork_ctx):
    q = fork_ctx.Queue()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 10
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)  # negative counts as zero, as in the stdlib


def test_blocked_put_proceeds_when_a_slot_frees(fork_ctx):
    q = fork_ctx.Queue(1)
    q.put("first")
    done = threading.Event()

    def put_second():
        q.put("second", timeout=10)
        done.set()

    threading.Thread(target=put_second, daemon=True).start()
    assert not done.wait(0.1)
    assert q.get(timeout=10) == "first"
    assert done.wait(10)
    assert q.get(timeout=10) == "second"


def test_order_of_one_producer_across_the_direct_and_feeder_paths(fork_ctx):
    """Small items may be written by put() itself, big ones go through the feeder thread;
    items from one process must still arrive in the order they were put."""
    q = fork_ctx.Queue()
    items = []
    for i in range(300):
        items.append(("small", i) if i % 7 else ("big", i, b"x" * 100_000))
    reader_out = []
    reader = threading.Thread(target=lambda: reader_out.extend(q.get(timeout=10) for _ in items), daemon=True)
    reader.start()
    for item in items:
        q.put(item)
    reader.join(30)
    assert reader_out == items


def test_close_join_thread_and_closed_errors(fork_ctx):
    q, lengths = fork_ctx.Queue(), fork_ctx.Queue()
    with pytest.raises(AssertionError):
        q.join_thread()  # only after close(), as in the stdlib
    reader = fork_ctx.Process(target=_report_length, args=(q, lengths))
    reader.start()
    q.put(b"x" * 200_000)  # more than the pipe holds: the feeder blocks until the child reads
    q.close()  # after flushing, the feeder closes this process's ends (as the stdlib's does)
    q.join_thread()  # returns once the feeder flushed everything
    assert lengths.get(timeout=30) == 200_000
    reader.join(30)
    with pytest.raises(ValueError, match="is closed"):
        q.put(1)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.close()  # twice is fine


def test_close_without_any_put_does_not_start_a_feeder(fork_ctx):
    q = fork_ctx.Queue()
    q.close()
    q.join_thread()
    assert q._thread is None


def test_cancel_join_thread_before_any_put(fork_ctx):
    q = fork_ctx.Queue()
    q.cancel_join_thread()
    q.put(b"y" * 200_000)
    assert q._jointhread is None
    assert q.get(timeout=10) == b"y" * 200_000


def test_simple_queue_api(fork_ctx):
    q = fork_ctx.SimpleQueue()
    assert q.empty()
    q.put({"a": 1})
    deadline = time.monotonic() + 10
    while q.empty() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not q.empty()
    assert q.get() == {"a": 1}
    q.close()
    with pytest.raises(OSError):
        q.get()
    with pytest.raises(OSError):
        q.put(1)
    with pytest.raises(OSError):
        q.empty()


def test_joinable_queue_task_done_and_join_in_one_process(fork_ctx):
    q = fork_ctx.JoinableQueue()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put(1)
    q.put(2)
    joined = threading.Event()
    threading.Thread(target=lambda: (q.join(), joined.set()), daemon=True).start()
    assert q.get(timeout=10) == 1
    q.task_done()
    assert not joined.wait(0.1)  # one task still open
    assert q.get(timeout=10) == 2
    q.task_done()
    assert joined.wait(10)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.join()  # nothing open: returns at once


def test_generic_alias():
    for cls in (Queue, JoinableQueue, SimpleQueue):
        assert cls[int].__origin__ is cls


def test_context_factories_make_nbproc_queues():
    ctx = nbproc.get_context("spawn")
    assert type(ctx.Queue()) is Queue
    assert type(ctx.JoinableQueue(5)) is JoinableQueue
    assert type(ctx.SimpleQueue()) is SimpleQueue
    assert type(nbproc.Queue()) is Queue
    assert ctx.JoinableQueue(5)._maxsize == 5


# == serialization happens in put()'s caller ====================================================


def test_unpicklable_item_raises_in_the_caller_and_takes_no_slot(fork_ctx):
    q = fork_ctx.Queue(1)
    lock = threading.Lock()

    def uses_lock():
        return lock

    with pytest.raises(SerializationError) as info:
        q.put(uses_lock)
    message = str(info.value)
    assert message.startswith("Queue item")
    assert "closure variable `lock`" in message and "_thread.lock" in message
    assert isinstance(info.value, TypeError) and isinstance(info.value, pickle.PicklingError)
    assert q.qsize() == 0
    q.put("still works", timeout=1)  # the slot was given back
    assert q.get(timeout=10) == "still works"


def test_unpicklable_item_in_joinable_and_simple_queues(fork_ctx):
    jq = fork_ctx.JoinableQueue()
    with pytest.raises(SerializationError, match="Queue item"):
        jq.put(threading.Lock())
    with pytest.raises(ValueError, match="too many times"):
        jq.task_done()  # the failed put was not counted as a task
    sq = fork_ctx.SimpleQueue()
    with pytest.raises(SerializationError, match="SimpleQueue item"):
        sq.put([1, threading.Lock()])
    sq.put("after")
    assert sq.get() == "after"


def test_subclass_overriding_the_error_hook_gets_serialization_errors(fork_ctx):
    """The stdlib's hook contract (concurrent.futures relies on it): a subclass overriding
    _on_queue_feeder_error is given the error and the item, and put() does not raise."""
    calls = []

    class SafeQueue(Queue):
        @staticmethod
        def _on_queue_feeder_error(exc, obj):
            calls.append((type(exc), obj))

    q = SafeQueue(1, ctx=fork_ctx)
    bad = threading.Lock()
    q.put(bad)
    q.put(True, timeout=1)  # the failed item freed its slot
    assert q.get(timeout=10) is True
    assert calls == [(TypeError, bad)]


def test_process_shared_objects_on_a_queue_say_inheritance(fork_ctx):
    q = fork_ctx.Queue()
    for shared in (fork_ctx.Lock(), fork_ctx.Queue()):
        with pytest.raises(SerializationError, match="through inheritance"):
            q.put(shared)


def test_queue_pickles_only_while_spawning(fork_ctx):
    for q in (fork_ctx.Queue(), fork_ctx.JoinableQueue(), fork_ctx.SimpleQueue()):
        with pytest.raises(RuntimeError, match="through inheritance"):
            pickle.dumps(q)


def test_item_state_is_the_one_at_put_time(fork_ctx):
    """The stdlib pickles later, in its feeder thread; nbproc pickles in put(), and copies large
    writable buffers, so changing an object after put() never changes what is received."""
    q = fork_ctx.Queue()
    arr = np.zeros(1_000_000)
    small = [1, 2, 3]
    q.put(arr)
    q.put(small)
    arr[:] = 7
    small.append(4)
    assert not q.get(timeout=10).any()
    assert q.get(timeout=10) == [1, 2, 3]


# == across processes, every start method =========================================================


def test_queue_between_processes(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=_put_example, args=(q,))
    p.start()
    assert q.get(timeout=30) == [42, None, "hello"]
    p.join(30)
    assert p.exitcode == 0


def test_cell_defined_objects_cross_to_children(ctx):
    """Lambdas, closures and classes defined in the test function (a notebook cell's situation):
    put in the parent, run in the child, results back through a second queue."""

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x**2 + self.y**2

    offset = 1000

    def add_offset(v):
        return v + offset

    tasks, results = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_apply_and_reply, args=(tasks, results))
    p.start()
    tasks.put((lambda v: v * 3, 14))
    tasks.put((add_offset, 1))
    tasks.put((Point.norm2, Point(3, 4)))
    tasks.put((lambda v: Point(v, -v), 2))
    tasks.put(None)
    assert results.get(timeout=30) == 42
    assert results.get(timeout=30) == 1001
    assert results.get(timeout=30) == 25
    back = results.get(timeout=30)
    assert (back.x, back.y) == (2, -2) and type(back).__qualname__.endswith("Point")
    p.join(30)
    assert p.exitcode == 0


def test_large_arrays_round_trip(ctx):
    inq, outq = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_echo_until_none, args=(inq, outq))
    p.start()
    arrays = [np.arange(2_000_000, dtype=np.float64), np.arange(10, dtype=np.int8), np.ones((300, 500))[:, ::2]]
    for a in arrays:
        inq.put({"payload": a, "tag": a.shape})
    inq.put(None)
    for a in arrays:
        got = outq.get(timeout=30)
        assert got["tag"] == a.shape
        np.testing.assert_array_equal(got["payload"], a)
    p.join(30)
    assert p.exitcode == 0


def test_simple_queue_between_processes(ctx):
    inq, outq = ctx.SimpleQueue(), ctx.SimpleQueue()
    p = ctx.Process(target=_echo_until_none, args=(inq, outq))
    p.start()
    for item in ("a", (1, 2), lambda: 5):
        inq.put(item)
    inq.put(None)
    assert outq.get() == "a"
    assert outq.get() == (1, 2)
    assert outq.get()() == 5
    p.join(30)
    assert p.exitcode == 0


def test_child_flushes_before_exiting(ctx):
    """A child's buffered items reach the pipe before it exits (the feeder is joined at exit):
    far more than a pipe holds, all read by the parent before joining, none lost."""
    q = ctx.Queue()
    p = ctx.Process(target=_put_range, args=(q, 0, 3000))
    p.start()
    got = [q.get(timeout=30) for _ in range(3000)]
    p.join(30)
    assert got == list(range(3000))
    assert p.exitcode == 0


def test_cancel_join_thread_lets_a_child_exit_without_flushing(ctx):
    q = ctx.Queue()
    p = ctx.Process(target=_put_big_then_leave, args=(q, True))
    p.start()
    p.join(30)
    assert p.exitcode == 0  # exited although nobody read its 10 MB item


def test_joinable_queue_join_waits_for_children_task_done(ctx):
    q = ctx.JoinableQueue()
    p = ctx.Process(target=_consume_and_mark_done, args=(q, 20))
    p.start()
    for i in range(20):
        q.put(i)
    joined = threading.Event()
    threading.Thread(target=lambda: (q.join(), joined.set()), daemon=True).start()
    assert joined.wait(30)
    p.join(30)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_queue_reset_in_a_grandchild_forked_from_a_spawned_child(method):
    """The child's feeder thread does not exist in a grandchild it forks: the grandchild must get
    its own (the stdlib re-arms this only for the creating process, and loses the items)."""
    ctx = nbproc.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=_fork_grandchild_then_put, args=(q, method))
    p.start()
    got = [q.get(timeout=30) for _ in range(5)]
    p.join(30)
    # order holds per process: the child's items, and the grandchild's
    assert [x for x in got if not isinstance(x, tuple)] == [b"c" * 100_000, f"child done ({method})"]
    assert [x for x in got if isinstance(x, tuple)] == [(i, b"b" * 100_000) for i in (100, 101, 102)]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # 3.12+: on purpose
def test_after_fork_child_gets_a_fresh_feeder():
    ctx = nbproc.get_context("fork")
    q = ctx.Queue()
    q.put(b"p" * 100_000)  # starts the parent's feeder
    assert q.get(timeout=10) == b"p" * 100_000
    p = ctx.Process(target=_put_big_range, args=(q, 0, 20))
    p.start()
    assert [q.get(timeout=30) for _ in range(20)] == [(i, b"b" * 100_000) for i in range(20)]
    p.join(30)
    assert p.exitcode == 0


def test_blocked_get_in_an_orphan_raises_eoferror(ctx):
    """nbproc addition: a get() whose parent died while the queue is empty raises EOFError
    instead of blocking for ever (the stdlib's child would hang until its 30 s timeout)."""
    blocked, report = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_orphan_reader, args=(ctx.get_start_method(), blocked, report))
    p.start()
    kind, grandchild_pid = report.get(timeout=30)
    assert kind == "grandchild"
    p.join(30)
    start = time.monotonic()
    outcome, message = report.get(timeout=30)
    assert outcome == "EOFError", outcome
    assert "parent process" in message and "exited" in message
    assert time.monotonic() - start < 25  # well before the grandchild's own 30 s timeout


def test_stdlib_process_can_use_an_nbproc_queue(start_method):
    """Interop: a stdlib Process (pickled by the stdlib's pickler) receives an nbproc queue."""
    q = nbproc.get_context(start_method).Queue()
    p = multiprocessing.get_context(start_method).Process(target=_put_example, args=(q,))
    p.start()
    assert q.get(timeout=30) == [42, None, "hello"]
    p.join(30)


# == differential: the same operations against the stdlib ===========================================


def _script(ctx):
    """A sequence of queue operations; records what each returned or raised."""
    log = []

    def step(name, fn):
        try:
            log.append((name, "ok", fn()))
        except Exception as exc:  # noqa: BLE001 - the exception type is the result
            log.append((name, "raised", type(exc).__name__))

    q = ctx.Queue(2)
    step("empty", q.empty)
    step("put a", lambda: q.put("a"))
    step("put b", lambda: q.put("b", True, 5))
    step("full", q.full)
    step("qsize", q.qsize)
    step("put_nowait c", lambda: q.put_nowait("c"))
    step("put c timeout", lambda: q.put("c", timeout=0.01))
    step("get", lambda: q.get(timeout=5))
    step("get", lambda: q.get(True, 5))
    step("get_nowait", q.get_nowait)
    step("get timeout", lambda: q.get(timeout=0.01))
    step("join_thread open", q.join_thread)
    step("close", q.close)
    step("put closed", lambda: q.put(1))
    step("get closed", q.get)
    step("join_thread", q.join_thread)
    step("empty closed", q.empty)  # a used queue's ends are closed after the flush
    unused = ctx.Queue()
    step("close unused", unused.close)
    step("empty unused closed", unused.empty)
    step("join_thread unused", unused.join_thread)
    jq = ctx.JoinableQueue()
    step("task_done empty", jq.task_done)
    step("jput", lambda: jq.put([1, 2]))
    step("jget", lambda: jq.get(timeout=5))
    step("task_done", jq.task_done)
    step("join", jq.join)
    step("task_done again", jq.task_done)
    sq = ctx.SimpleQueue()
    step("sempty", sq.empty)
    step("sput", lambda: sq.put({"k": (1.5, None)}))
    step("sget", sq.get)
    step("sclose", sq.close)
    step("sget closed", sq.get)
    step("pickle queue", lambda: pickle.dumps(q))
    return log


def test_differential_operations_against_stdlib():
    std = _script(multiprocessing.get_context("spawn"))
    nb = _script(nbproc.get_context("spawn"))
    assert nb == std


# == soak: many items, several producers ==============================================================

SOAK_PRODUCERS = 4
SOAK_ITEMS = 100_000


@pytest.mark.timeout(60)
def test_soak_queue_loses_and_duplicates_nothing(ctx):
    """4 producer processes, 100,000 items in total through one Queue: every item arrives exactly
    once, each producer's items in order (2-3 s per start method here)."""
    q = ctx.Queue()
    per = SOAK_ITEMS // SOAK_PRODUCERS
    procs = [ctx.Process(target=_produce, args=(q, k, per)) for k in range(SOAK_PRODUCERS)]
    for p in procs:
        p.start()
    last = [-1] * SOAK_PRODUCERS
    for _ in range(SOAK_ITEMS):
        producer, seq = q.get(timeout=30)
        assert seq == last[producer] + 1, (producer, seq, last[producer])
        last[producer] = seq
    assert last == [per - 1] * SOAK_PRODUCERS
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)  # nothing extra
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


@pytest.mark.timeout(60)
def test_soak_joinable_queue_with_consumer_processes(ctx):
    """4 producers and 2 consumer processes on one JoinableQueue, 100,000 items: join() returns
    once all are done; together the consumers got each item exactly once, each producer's
    items in order within every consumer."""
    q, results = ctx.JoinableQueue(), ctx.Queue()
    per = SOAK_ITEMS // SOAK_PRODUCERS
    consumers = [ctx.Process(target=_consume_joinable, args=(q, results)) for _ in range(2)]
    producers = [ctx.Process(target=_produce, args=(q, k, per)) for k in range(SOAK_PRODUCERS)]
    for p in consumers + producers:
        p.start()
    for p in producers:
        p.join(45)
        assert p.exitcode == 0
    q.join()
    for _ in consumers:
        q.put(None)
    received = [results.get(timeout=30) for _ in consumers]
    for p in consumers:
        p.join(30)
        assert p.exitcode == 0
    everything = sorted(item for got in received for item in got)
    assert everything == [(k, s) for k in range(SOAK_PRODUCERS) for s in range(per)]
    for got in received:
        for k in range(SOAK_PRODUCERS):
            seqs = [s for producer, s in got if producer == k]
            assert seqs == sorted(seqs)
