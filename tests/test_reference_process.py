"""The reference's Process, Pipe and start-method examples, run unchanged through nbproc.

Each runs as a script (``tests/_examples.py``) under fork, spawn and forkserver and must print
what the stdlib prints for the same program (pids aside).
"""

from __future__ import annotations

import re

import pytest
from _examples import run_example

pytestmark = pytest.mark.timeout(120)

METHODS = ["fork", "spawn", "forkserver"]

HELLO_BOB = """
from multiprocessing import Process

def f(name):
    print('hello', name)

if __name__ == '__main__':
    p = Process(target=f, args=('bob',))
    p.start()
    p.join()
"""

INFO = """
from multiprocessing import Process
import os

def info(title):
    print(title)
    print('module name:', __name__)
    print('parent process:', os.getppid())
    print('process id:', os.getpid())

def f(name):
    info('function f')
    print('hello', name)

if __name__ == '__main__':
    info('main line')
    p = Process(target=f, args=('bob',))
    p.start()
    p.join()
"""

PIPE = """
from multiprocessing import Process, Pipe

def f(conn):
    conn.send([42, None, 'hello'])
    conn.close()

if __name__ == '__main__':
    parent_conn, child_conn = Pipe()
    p = Process(target=f, args=(child_conn,))
    p.start()
    print(parent_conn.recv())   # prints "[42, None, 'hello']"
    p.join()
"""

FREEZE_SUPPORT = """
from multiprocessing import Process, freeze_support

def f():
    print('hello world!')

if __name__ == '__main__':
    freeze_support()
    Process(target=f).start()
"""

# These two choose their own start method, so they run as they are (start_method=None).
SET_START_METHOD = """
import multiprocessing as mp

def foo(q):
    q.put('hello')

if __name__ == '__main__':
    mp.set_start_method('spawn')
    q = mp.Queue()
    p = mp.Process(target=foo, args=(q,))
    p.start()
    print(q.get())
    p.join()
"""

GET_CONTEXT = """
import multiprocessing as mp

def foo(q):
    q.put('hello')

if __name__ == '__main__':
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    p = ctx.Process(target=foo, args=(q,))
    p.start()
    print(q.get())
    p.join()
"""

GUIDELINES_SPAWN = """
from multiprocessing import Process, freeze_support, set_start_method

def foo():
    print('hello')

if __name__ == '__main__':
    freeze_support()
    set_start_method('spawn')
    p = Process(target=foo)
    p.start()
"""


def _without_pids(text: str) -> str:
    return re.sub(r"\d+", "<N>", text)


def _same_as_stdlib(source: str, method: str | None) -> str:
    nb = run_example(source, method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    std = run_example(source, method, "multiprocessing")
    assert std.returncode == 0, std.stderr
    assert _without_pids(nb.stdout) == _without_pids(std.stdout)
    return nb.stdout


@pytest.mark.parametrize("method", METHODS)
# The reference's basic Queue example runs in tests/test_queues.py::test_queue_example.
@pytest.mark.parametrize("source", [HELLO_BOB, PIPE, FREEZE_SUPPORT], ids=["hello", "pipe", "freeze"])
def test_simple_examples(source, method):
    out = _same_as_stdlib(source, method)
    assert out.strip() in ("hello bob", "[42, None, 'hello']", "hello world!")


@pytest.mark.parametrize("method", METHODS)
def test_info_example_shows_the_parent_pid(method):
    out = _same_as_stdlib(INFO, method).splitlines()
    main_pid = out[3].split(": ")[1]
    assert out[0] == "main line" and out[4] == "function f"
    if method != "forkserver":  # a forkserver child's OS parent is the fork server, as in the stdlib
        assert out[6].split(": ")[1] == main_pid
    # a spawned child re-imports the script as __mp_main__, as in the stdlib
    assert out[5] == ("module name: __main__" if method == "fork" else "module name: __mp_main__")


@pytest.mark.parametrize("source", [SET_START_METHOD, GET_CONTEXT, GUIDELINES_SPAWN], ids=["set", "ctx", "guide"])
def test_start_method_examples(source):
    assert _same_as_stdlib(source, None).strip() == "hello"
