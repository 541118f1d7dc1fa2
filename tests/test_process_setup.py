"""The child set-up path (nbproc.process.register_setup_hook) under every start method."""

from __future__ import annotations

import os

import _setup_hooks as hooks
import pytest

from nbproc import process


@pytest.fixture
def registry():
    saved = dict(process._hooks)
    yield process.register_setup_hook
    process._hooks.clear()
    process._hooks.update(saved)


def _applied_in_child(ctx) -> list[str]:
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=hooks.report, args=(writer,))
    child.start()
    assert "_nbproc_setup" not in vars(child)  # the parent's object stays clean
    writer.close()
    try:
        return reader.recv()
    finally:
        child.join(10)
        reader.close()


def test_hooks_apply_in_order_before_run(ctx, start_method, registry):
    registry("test.one", hooks.capture_method, hooks.apply_record)
    registry("test.skipped", hooks.capture_nothing, hooks.apply_fail)  # None: never applied
    registry("test.two", hooks.capture_method, hooks.apply_record_second)
    applied = _applied_in_child(ctx)
    expected = f"captured for {start_method} in {os.getpid()}"
    assert applied == [expected, "second: " + expected]


def test_failing_capture_raises_from_start_before_any_child(ctx, registry):
    registry("test.broken", hooks.capture_fail, hooks.apply_record)
    child = ctx.Process(target=hooks.touch, args=("/nonexistent/never",))
    with pytest.raises(LookupError, match="on purpose"):
        child.start()
    assert child._popen is None and "_nbproc_setup" not in vars(child)


def test_registering_again_replaces_in_place(ctx, registry):
    registry("test.one", hooks.capture_method, hooks.apply_fail)
    registry("test.two", hooks.capture_method, hooks.apply_record_second)
    registry("test.one", hooks.capture_method, hooks.apply_record)
    applied = _applied_in_child(ctx)
    assert [a.startswith("second: ") for a in applied] == [False, True]


def test_failing_apply_names_the_hook_and_exits_1(ctx, registry, tmp_path, capfd):
    registry("test.broken", hooks.capture_method, hooks.apply_fail)
    marker = tmp_path / "ran"
    child = ctx.Process(target=hooks.touch, args=(str(marker),))
    child.start()
    child.join(10)
    assert child.exitcode == 1
    assert not marker.exists()  # run() never started
    err = capfd.readouterr().err
    assert "nbproc: child set-up hook 'test.broken' failed" in err
    assert "hook apply broke on purpose" in err


def test_pool_workers_run_the_hooks(ctx, start_method, registry):
    registry("test.one", hooks.capture_method, hooks.apply_record)
    with ctx.Pool(1) as pool:
        assert pool.map(hooks.pool_task, [0]) == [[f"captured for {start_method} in {os.getpid()}"]]


def test_hooks_must_be_importable(registry):
    with pytest.raises(ValueError, match="module-level"):
        registry("test.lambda", lambda method: None, hooks.apply_record)

    def local_apply(state):
        pass

    with pytest.raises(ValueError, match="module-level"):
        registry("test.local", hooks.capture_method, local_apply)


def test_nbproc_config_is_the_first_hook():
    assert next(iter(process._hooks)) == "nbproc.config"
