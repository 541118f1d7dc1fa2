"""Contexts and start methods, compared with the stdlib's documented behaviour."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap

import pytest

import nbproc
from nbproc import context


def test_every_public_name_is_reachable_from_a_context():
    for method in nbproc.get_all_start_methods():
        ctx = nbproc.get_context(method)
        for name in multiprocessing.context.BaseContext.__dict__:
            if not name.startswith("_"):
                assert hasattr(ctx, name), name
        assert ctx.get_start_method() == method
        assert ctx.get_context() is ctx


def test_module_level_api_is_a_superset_of_the_stdlib():
    missing = [name for name in multiprocessing.__all__ if not hasattr(nbproc, name)]
    assert missing == []


def test_concrete_context_refuses_set_start_method():
    with pytest.raises(ValueError):
        nbproc.get_context("spawn").set_start_method("fork")


def test_unknown_method_is_a_value_error():
    with pytest.raises(ValueError):
        nbproc.get_context("threads")
    with pytest.raises(ValueError):
        multiprocessing.get_context("threads")


def test_all_start_methods_default_first():
    methods = nbproc.get_all_start_methods()
    assert set(methods) == {"fork", "spawn", "forkserver"}
    assert methods[0] == context._default_context._default_context._name


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_set_start_method_once_then_force():
    code = """
        import nbproc
        print(nbproc.get_start_method(allow_none=True))
        nbproc.set_start_method('spawn')
        try:
            nbproc.set_start_method('fork')
        except RuntimeError as e:
            print('RuntimeError', e)
        nbproc.set_start_method('fork', force=True)
        print(nbproc.get_start_method())
        nbproc.set_start_method(None, force=True)
        print(nbproc.get_start_method(allow_none=True))
    """
    assert _run(code).splitlines() == ["None", "RuntimeError context has already been set", "fork", "None"]


def test_nbproc_leaves_the_stdlib_start_method_alone():
    code = """
        import multiprocessing, nbproc
        ctx = nbproc.get_context('forkserver')
        p = ctx.Process(target=print, args=('child',)); p.start(); p.join()
        p = nbproc.get_context('spawn').Process(target=print, args=('child',)); p.start(); p.join()
        print(multiprocessing.get_start_method(allow_none=True))
        multiprocessing.set_start_method('spawn')
        print(multiprocessing.get_start_method())
    """
    assert _run(code).splitlines()[-2:] == ["None", "spawn"]


def test_reference_start_method_examples_run_unchanged():
    # The reference's set_start_method / get_context examples, with the module swapped.
    code = """
        import nbproc as mp

        def foo(q):
            q.put('hello')

        if __name__ == '__main__':
            mp.set_start_method('spawn')
            q = mp.SimpleQueue() if False else None
            a, b = mp.Pipe()
            p = mp.Process(target=lambda c: c.send('hello'), args=(b,))
            p.start()
            print(a.recv())
            p.join()
            ctx = mp.get_context('forkserver')
            a, b = ctx.Pipe()
            p = ctx.Process(target=lambda c: c.send('hello'), args=(b,))
            p.start()
            print(a.recv())
            p.join()
    """
    assert _run(code).splitlines() == ["hello", "hello"]


def test_set_forkserver_preload_validates():
    with pytest.raises(TypeError):
        nbproc.set_forkserver_preload([1])
    nbproc.set_forkserver_preload(["__main__"])
    from nbproc import popen

    assert "nbproc" in popen.forkserver_instance()._preload_modules


def test_star_import_exports_the_stdlibs_names_plus_nbprocs_additions():
    ours, theirs = {}, {}
    exec("from nbproc import *", ours)
    exec("from multiprocessing import *", theirs)
    additions = {
        *("SerializationError", "WorkerLostError", "InitializerError", "TaskCancelledError", "TaskTimeoutError"),
        *("set_serializer", "get_serializer", "load_ipython_extension", "unload_ipython_extension"),
    }
    assert set(ours) == set(theirs) | additions
    assert ours["Pool"].__func__ is nbproc.context.BaseContext.Pool  # nbproc's, bound to its default context
