"""The progress seam (``nbproc.progress``), ``nbproc.config`` and how ``progress=`` picks a bar.

Pure-Python parts (Throttled, Batch, deliver) are driven with hand-made events; the Pool parts
run a real pool under every start method: ``progress=`` counts items for every chunksize
(and for ``imap`` over an unsized iterable, whose total is known only at the end), a label
or a callable is honoured, a listener that raises is reported once and removed, and the
text bar reaches stderr when no kernel runs. Lean: a handful of tiny maps per start method.
"""

from __future__ import annotations

import io
import threading
import time

import pytest

import nbproc
from nbproc import config
from nbproc._progress_display import in_kernel, listener_for
from nbproc.progress import Batch, ProgressEvent, TextProgress, Throttled, deliver


def square(x):
    return x * x


def fail_on_two(x):
    if x == 2:
        raise ValueError(x)
    return x


def event(job=1, kind="done", done=0, total=10, finished=False, failed=0, items=1, reason=""):
    return ProgressEvent(kind, job, "f", items, total, total or 0, done, failed, finished, reason=reason)


# -- the seam, without a pool ---------------------------------------------------------------


def test_throttled_passes_first_last_and_the_latest_skipped_one():
    seen = []
    throttled = Throttled(seen.append, interval=0.2)
    for done in range(1, 6):  # a burst: only the first passes at once
        throttled(event(done=done))
    assert [e.done for e in seen] == [1]
    time.sleep(0.4)  # the latest skipped one (5) is delivered when the interval ends
    assert [e.done for e in seen] == [1, 5]
    time.sleep(0.25)
    throttled(event(done=6))  # the interval has passed since 5: passes at once
    throttled(event(done=7))  # too soon: held...
    throttled(event(done=10, finished=True))  # ...and superseded by the final event, which always passes
    time.sleep(0.3)
    throttled(event(done=8))  # a straggler after the end is dropped
    assert [e.done for e in seen] == [1, 5, 6, 10]
    assert seen[-1].finished


def test_throttled_limits_the_rate_whatever_the_event_rate():
    seen = []
    throttled = Throttled(seen.append, interval=0.1)
    start = time.monotonic()
    done = 0
    while time.monotonic() - start < 0.5:
        done += 1
        throttled(event(done=done, total=None))
    throttled(event(done=done, total=done, finished=True))
    assert 3 <= len(seen) <= 8, len(seen)  # ~0.5 s at 10/s, plus first and final
    assert seen[-1].finished and seen[-1].done == done


def test_a_failing_listener_is_reported_once_and_removed(capsys):
    calls = []

    def broken(e):
        calls.append(e)
        raise RuntimeError("drawing failed")

    listeners = [broken]
    for i in range(5):
        deliver(listeners, event(done=i))
    assert len(calls) == 1 and listeners == []
    err = capsys.readouterr().err
    assert err.count("RuntimeError: drawing failed") == 1 and "was removed" in err


def test_batch_draws_one_bar_over_several_jobs():
    seen = []
    batch = Batch("three", seen.append, total=3)
    for job in (1, 2, 3):
        batch(ProgressEvent("submitted", job, "apply_async(f)", 1, 1, 1, 0, 0, False))
    batch(ProgressEvent("done", 1, "apply_async(f)", 1, 1, 1, 1, 0, True))
    batch(ProgressEvent("failed", 2, "apply_async(f)", 1, 1, 1, 0, 1, True))
    assert not seen[-1].finished and seen[-1].label == "three" and seen[-1].total == 3
    batch(ProgressEvent("done", 3, "apply_async(f)", 1, 1, 1, 1, 0, True))
    last = seen[-1]
    assert last.finished and (last.done, last.failed, last.total) == (2, 1, 3)
    assert len({e.job for e in seen}) == 1 and seen[0].job < 0


def test_text_progress_says_why_a_job_ended():
    text = TextProgress(io.StringIO()).format(event(kind="cancelled", done=3, finished=True, reason="stopped"))
    assert text.endswith("stopped")


def test_config_validates_and_restores():
    assert config.progress == "off"  # a plain script stays a silent drop-in
    with pytest.raises(ValueError, match="one of"):
        config.set(progress="sometimes")
    with pytest.raises(ValueError, match=">= 0"):
        config.set(progress_after=-1)
    with config.settings(progress="on", progress_after=0.5):
        assert (config.progress, config.progress_after) == ("on", 0.5)
    assert (config.progress, config.progress_after) == ("off", 1.0)


def test_progress_argument_choices():
    assert not in_kernel()
    assert listener_for(None, "map(f)") is None  # config "off"
    assert listener_for(False, "map(f)") is None
    assert isinstance(listener_for(True, "map(f)"), Throttled)
    with config.settings(progress="auto"):
        assert isinstance(listener_for(None, "map(f)"), Throttled)
    assert listener_for(print, "map(f)") is print
    with pytest.raises(TypeError, match="progress must be"):
        listener_for(3, "map(f)")


# -- through a pool --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["fork", "spawn", "forkserver"])
def pool(request):
    with nbproc.get_context(request.param).Pool(2) as p:
        yield p


@pytest.mark.parametrize("chunksize", [1, 3, 7, 100])
def test_progress_counts_items_for_every_chunksize(pool, chunksize):
    events = []
    assert pool.map(square, range(20), chunksize=chunksize, progress=events.append) == [x * x for x in range(20)]
    last = events[-1]
    assert last.finished and last.done == last.total == 20 and last.failed == 0
    assert sum(e.items for e in events if e.kind == "done") == 20


def test_progress_on_every_call_kind(pool):
    calls = {
        "map_async": lambda p: pool.map_async(square, range(5), progress=p).get(),
        "starmap": lambda p: pool.starmap(pow, [(2, 3), (3, 2)], progress=p),
        "starmap_async": lambda p: pool.starmap_async(pow, [(2, 3)], progress=p).get(),
        "imap": lambda p: list(pool.imap(square, iter(range(6)), progress=p)),
        "imap_unordered": lambda p: sorted(pool.imap_unordered(square, range(6), chunksize=4, progress=p)),
        "apply_async": lambda p: pool.apply_async(square, (3,), progress=p).get(),
    }
    for name, call in calls.items():
        events = []
        call(events.append)
        last = events[-1]
        assert last.finished and last.done == last.total and last.total > 0, (name, last)
        assert last.label.startswith(name), (name, last.label)


def test_unsized_imap_total_is_unknown_until_the_end(pool):
    events = []
    assert list(pool.imap(square, iter(range(5)), progress=events.append)) == [0, 1, 4, 9, 16]
    assert events[0].total is None
    assert events[-1].total == 5 and events[-1].finished


def test_failures_are_counted_and_the_pool_listener_errors_do_not_break_the_work(pool, capsys):
    events = []
    with pytest.raises(ValueError):
        pool.map(fail_on_two, range(5), chunksize=1, progress=events.append)
    assert events[-1].finished and (events[-1].done, events[-1].failed) == (4, 1)

    def broken(e):
        raise RuntimeError("listener bug")

    pool.add_listener(broken)
    assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
    assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
    assert capsys.readouterr().err.count("RuntimeError: listener bug") == 1
    assert broken not in pool._core.listeners


def test_text_bar_on_stderr_with_a_label(pool, capsys):
    pool.map(square, range(10), progress="squaring")
    err = capsys.readouterr().err
    assert "squaring [" in err and "10/10 done" in err


def test_config_on_draws_without_an_argument(pool, capsys):
    with config.settings(progress="on"):
        pool.map(square, range(4))
    assert "map(square)" in capsys.readouterr().err
    pool.map(square, range(4))
    assert capsys.readouterr().err == ""


def test_auto_mode_shows_nothing_for_quick_work(pool, capsys):
    with config.settings(progress="auto", progress_after=5):
        pool.map(square, range(50))
    assert capsys.readouterr().err == ""


def test_a_dropped_imap_ends_as_stopped(pool):
    events = []
    it = pool.imap(time.sleep, iter([0.01] * 50), buffersize=2, progress=events.append)
    next(it)
    del it
    deadline = time.monotonic() + 10
    while not (events and events[-1].finished) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events[-1].finished and events[-1].reason == "stopped", events[-1]


def test_statistics_and_views(pool):
    pool.map(square, range(8), chunksize=1)
    stats = pool.statistics()
    assert stats.processes == 2 and stats.state == "RUN" and stats.start_method == pool._ctx.get_start_method()
    assert stats.done >= 8 and stats.queued == 0 and stats.running == 0
    assert sorted(w.pid for w in stats.workers) == sorted(p.pid for p in pool._pool)
    assert all(w.alive and w.state == "idle" for w in stats.workers)
    with pytest.raises(AttributeError):
        stats.done = 0  # frozen
    html = pool._repr_html_()
    assert stats.start_method in html and all(str(w.pid) in html for w in stats.workers)

    class Printer:
        def text(self, value):
            self.value = value

    printer = Printer()
    pool._repr_pretty_(printer, False)
    assert printer.value.startswith(stats.name) and "queued" in printer.value


def test_statistics_see_running_and_queued_tasks(pool):
    result = pool.map_async(time.sleep, [0.3] * 4, chunksize=1)
    deadline = time.monotonic() + 10
    while pool.statistics().running < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = pool.statistics()
    assert stats.running == 2 and stats.queued == 2 and stats.jobs >= 1
    assert sorted(w.state for w in stats.workers) == ["busy", "busy"]
    result.get(timeout=30)


def test_thread_pool_statistics_and_progress():
    with nbproc.pool.ThreadPool(2) as pool:
        events = []
        assert pool.map(square, range(9), chunksize=2, progress=events.append) == [x * x for x in range(9)]
        assert events[-1].done == 9
        stats = pool.statistics()
        assert stats.start_method == "thread" and stats.done == 5 and len(stats.workers) == 2


def test_concurrent_bars_do_not_interfere(pool):
    events: dict[str, list] = {"a": [], "b": []}
    results = {}

    def run(name):
        results[name] = pool.map(square, range(30), chunksize=2, progress=events[name].append)

    threads = [threading.Thread(target=run, args=(name,)) for name in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for name, seen in events.items():
        assert len({e.job for e in seen}) == 1
        assert seen[-1].finished and seen[-1].done == 30
    assert results["a"] == results["b"]
