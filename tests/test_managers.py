"""Managers and proxies: the reference's examples, differential checks against the stdlib, faults.

Layout:
- the reference's Managers / Proxy Objects examples run as scripts (tests/_examples.py) under
  every start method, their output compared with the stdlib's;
- in-process behaviour of every SyncManager type, compared with a stdlib manager;
- nbproc-only capabilities: cell-defined (function-local) classes registered with a manager
  and built in a spawn/forkserver server, proxies sent to children that call proxy-returning
  methods;
- faults: wrong authkey, a client killed mid-call, a truncated frame, a stopped server at
  shutdown, a dying initializer, object counts after many create/drop cycles.

The nbproc managers of the in-process tests are module-scoped (one per start method) to keep
the file fast; each test that needs a pristine server starts its own.
"""

from __future__ import annotations

import copy
import multiprocessing
import multiprocessing.managers as std_managers
import os
import pickle
import queue
import re
import signal
import socket
import threading
import time
from contextlib import contextmanager

import psutil
import pytest
from _examples import run_example, start_example
from conftest import START_METHODS

import nbproc
from nbproc import managers
from nbproc.managers import BaseManager, BaseProxy, RemoteError

# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=START_METHODS)
def manager(request):
    """A started nbproc SyncManager per start method, shared by the tests of this module."""
    m = nbproc.get_context(request.param).Manager()
    yield m
    m.shutdown()


@pytest.fixture(scope="module")
def std_manager():
    """The stdlib's SyncManager (fork: the quickest to start), the reference for differential tests."""
    m = multiprocessing.get_context("fork").Manager()
    yield m
    m.shutdown()


def _outcome(fn):
    """('ok', value) or ('raises', exception type name): what a differential test compares."""
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("raises", type(exc).__name__)


_ADDRESS = re.compile(r"0x[0-9a-f]+")


def _normalized(text: str) -> str:
    return _ADDRESS.sub("0x...", text)


@contextmanager
def _stdlib_start_method_kept():
    """Starting a stdlib spawn/forkserver child pins the stdlib's default start method; undo it."""
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        if before is None:
            multiprocessing.set_start_method(None, force=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"server did not listen on port {port} within {timeout} s")


# module-level targets (importable by spawned children)


def _fill(d, lst) -> None:
    d[1] = "1"
    d["2"] = 2
    lst.reverse()


def _iterate_into(d, out) -> None:
    out.extend(sorted(iter(d)))  # __iter__ returns an Iterator proxy: needs the registry in the child


def _use_lock(lock, counter, n) -> None:
    for _ in range(n):
        with lock:
            counter.value += 1


def _block_in_server(blocker) -> None:
    blocker.block()  # never answered before this process is killed


# --------------------------------------------------------------------------------------------
# The reference's examples, as scripts, under every start method
# --------------------------------------------------------------------------------------------

SHARING_STATE_EXAMPLE = """
from multiprocessing import Process, Manager

def f(d, l):
    d[1] = '1'
    d['2'] = 2
    d[0.25] = None
    l.reverse()

if __name__ == '__main__':
    with Manager() as manager:
        d = manager.dict()
        l = manager.list(range(10))

        p = Process(target=f, args=(d, l))
        p.start()
        p.join()

        print(d)
        print(l)
"""

MATHS_EXAMPLE = """
from multiprocessing.managers import BaseManager

class MathsClass:
    def add(self, x, y):
        return x + y
    def mul(self, x, y):
        return x * y

class MyManager(BaseManager):
    pass

MyManager.register('Maths', MathsClass)

if __name__ == '__main__':
    with MyManager() as manager:
        maths = manager.Maths()
        print(maths.add(4, 3))         # prints 7
        print(maths.mul(7, 8))         # prints 56
"""

CUSTOM_PROXIES_EXAMPLE = """
from multiprocessing import freeze_support
from multiprocessing.managers import BaseManager, BaseProxy
import operator

##

class Foo:
    def f(self):
        print('you called Foo.f()')
    def g(self):
        print('you called Foo.g()')
    def _h(self):
        print('you called Foo._h()')

# A simple generator function
def baz():
    for i in range(10):
        yield i*i

# Proxy type for generator objects
class GeneratorProxy(BaseProxy):
    _exposed_ = ['__next__']
    def __iter__(self):
        return self
    def __next__(self):
        return self._callmethod('__next__')

# Function to return the operator module
def get_operator_module():
    return operator

##

class MyManager(BaseManager):
    pass

# register the Foo class; make `f()` and `g()` accessible via proxy
MyManager.register('Foo1', Foo)

# register the Foo class; make `g()` and `_h()` accessible via proxy
MyManager.register('Foo2', Foo, exposed=('g', '_h'))

# register the generator function baz; use `GeneratorProxy` to make proxies
MyManager.register('baz', baz, proxytype=GeneratorProxy)

# register get_operator_module(); make public functions accessible via proxy
MyManager.register('operator', get_operator_module)

##

def test():
    manager = MyManager()
    manager.start()

    print('-' * 20)

    f1 = manager.Foo1()
    f1.f()
    f1.g()
    assert not hasattr(f1, '_h')
    assert sorted(f1._exposed_) == sorted(['f', 'g'])

    print('-' * 20)

    f2 = manager.Foo2()
    f2.g()
    f2._h()
    assert not hasattr(f2, 'f')
    assert sorted(f2._exposed_) == sorted(['g', '_h'])

    print('-' * 20)

    it = manager.baz()
    for i in it:
        print('<%d>' % i, end=' ')
    print()

    print('-' * 20)

    op = manager.operator()
    print('op.add(23, 45) =', op.add(23, 45))
    print('op.pow(2, 94) =', op.pow(2, 94))
    print('op._exposed_ =', op._exposed_)

##

if __name__ == '__main__':
    freeze_support()
    test()
"""

# The Proxy Objects section and the SyncManager/Namespace notes are interactive sessions; this
# is the same sequence of statements, each printed as the session shows it.
PROXY_OBJECTS_EXAMPLE = """
from multiprocessing import Manager

if __name__ == '__main__':
    manager = Manager()
    l = manager.list([i*i for i in range(10)])
    print(l)
    print(repr(l))
    print(l[4])
    print(l[2:5])

    a = manager.list()
    b = manager.list()
    a.append(b)         # referent of a now contains referent of b
    print(a, b)
    b.append('hello')
    print(a, b)
    print(a[0])         # the nested proxy, fetched back: the documented view of it

    print(manager.list([1,2,3]) == [1,2,3])

    l = manager.list(range(10))
    print(l._callmethod('__len__'))
    print(l._callmethod('__getitem__', (slice(2, 7),))) # equivalent to l[2:7]
    try:
        l._callmethod('__getitem__', (20,))              # equivalent to l[20]
    except IndexError as exc:
        print('IndexError:', exc)

    Global = manager.Namespace()
    Global.x = 10
    Global.y = 'hello'
    Global._z = 12.3    # this is an attribute of the proxy
    print(Global)

    # create a list proxy and append a mutable object (a dictionary)
    lproxy = manager.list()
    lproxy.append({})
    # now mutate the dictionary
    d = lproxy[0]
    d['a'] = 1
    d['b'] = 2
    print(lproxy)
    # at this point, the changes to d are not yet synced, but by
    # reassigning the dictionary, the proxy is notified of the change
    lproxy[0] = d
    print(lproxy)
    manager.shutdown()
"""

_STDLIB_OUTPUT: dict[str, str] = {}


def _stdlib_output(source: str) -> str:
    """The stdlib's output for an example (fork: the stdlib runs all of these under fork)."""
    if source not in _STDLIB_OUTPUT:
        result = run_example(source, "fork", "multiprocessing")
        assert result.returncode == 0, result.stderr
        _STDLIB_OUTPUT[source] = _normalized(result.stdout)
    return _STDLIB_OUTPUT[source]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "source, expected_lines",
    [
        (SHARING_STATE_EXAMPLE, ["{1: '1', '2': 2, 0.25: None}", "[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]"]),
        (MATHS_EXAMPLE, ["7", "56"]),
        (
            CUSTOM_PROXIES_EXAMPLE,
            [
                "you called Foo.f()",
                "you called Foo.g()",
                "you called Foo._h()",
                "<0> <1> <4> <9> <16> <25> <36> <49> <64> <81> ",
                "op.add(23, 45) = 68",
                f"op.pow(2, 94) = {2**94}",
            ],
        ),
        (
            PROXY_OBJECTS_EXAMPLE,
            [
                "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
                "<ListProxy object, typeid 'list' at 0x...>",
                "[4, 9, 16]",
                "False",
                "[2, 3, 4, 5, 6]",
                "IndexError: list index out of range",
                "Namespace(x=10, y='hello')",
                "[{}]",
                "[{'a': 1, 'b': 2}]",
            ],
        ),
    ],
    ids=["sharing-state-dict-list", "MathsClass", "Foo-baz-operator", "proxy-objects-callmethod-namespace"],
)
def test_reference_example(source, expected_lines, start_method):
    result = run_example(source, start_method)
    assert result.returncode == 0, result.stderr
    out = _normalized(result.stdout)
    for line in expected_lines:
        assert line in out.splitlines(), f"{line!r} missing from:\n{out}"
    assert out == _stdlib_output(source)


REMOTE_SERVER = """
from multiprocessing.managers import BaseManager
import queue
import sys
queue = queue.Queue()
class QueueManager(BaseManager): pass
QueueManager.register('get_queue', callable=lambda:queue)
m = QueueManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'abracadabra')
s = m.get_server()
s.serve_forever()
"""

REMOTE_CLIENT_PUT = """
from multiprocessing.managers import BaseManager
import sys
class QueueManager(BaseManager): pass
QueueManager.register('get_queue')
m = QueueManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'abracadabra')
m.connect()
queue = m.get_queue()
queue.put('hello')
"""

REMOTE_CLIENT_GET = """
from multiprocessing.managers import BaseManager
import sys
class QueueManager(BaseManager): pass
QueueManager.register('get_queue')
m = QueueManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'abracadabra')
m.connect()
queue = m.get_queue()
print(queue.get())
"""

# "Local processes can also access that queue": a Worker process puts into an nbproc Queue
# served by the manager. Under a main guard, as the programming guidelines require for spawn.
REMOTE_SERVER_LOCAL_WORKER = """
from multiprocessing import Process, Queue
from multiprocessing.managers import BaseManager
import sys
class Worker(Process):
    def __init__(self, q):
        self.q = q
        super(Worker, self).__init__()
    def run(self):
        self.q.put('local hello')

if __name__ == '__main__':
    queue = Queue()
    w = Worker(queue)
    w.start()
    class QueueManager(BaseManager): pass

    QueueManager.register('get_queue', callable=lambda: queue)
    m = QueueManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'abracadabra')
    s = m.get_server()
    s.serve_forever()
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("server_source", [REMOTE_SERVER, REMOTE_SERVER_LOCAL_WORKER], ids=["queue", "local-worker"])
def test_reference_remote_queue_manager(server_source, start_method):
    """The QueueManager server on 127.0.0.1 with an authkey, and clients in other processes."""
    port = _free_port()
    server = start_example(server_source, start_method, args=[str(port)])
    try:
        _wait_for_port(port, server)
        if server_source is REMOTE_SERVER:
            put = run_example(REMOTE_CLIENT_PUT, start_method, args=[str(port)])
            assert put.returncode == 0, put.stderr
            expected = "hello"
        else:
            expected = "local hello"
        got = run_example(REMOTE_CLIENT_GET, start_method, args=[str(port)])
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == expected
        assert server.proc.poll() is None, "the server must keep serving after its clients left"
    finally:
        server.kill()
        server.finish(timeout=30)


# --------------------------------------------------------------------------------------------
# SyncManager types: every one the running CPython offers, compared with the stdlib
# --------------------------------------------------------------------------------------------


def test_syncmanager_offers_what_the_stdlib_offers():
    assert list(managers.SyncManager._registry) == list(std_managers.SyncManager._registry)
    for typeid in std_managers.SyncManager._registry:
        assert callable(getattr(std_managers.SyncManager, typeid, None)) == callable(
            getattr(managers.SyncManager, typeid, None)
        ), typeid
    for typeid, entry in managers.SyncManager._registry.items():
        proxytype = entry[-1]
        assert proxytype is managers.AutoProxy or issubclass(proxytype, BaseProxy), typeid


def test_proxies_are_also_stdlib_proxies(manager):
    d = manager.dict()
    assert isinstance(d, managers.DictProxy)
    assert isinstance(d, std_managers.DictProxy)
    assert isinstance(d, std_managers.BaseProxy)
    assert isinstance(manager.Condition(), managers.AcquirerProxy)


def _dict_script(m):
    d = m.dict({"a": 1, "b": 2})
    out = [
        _outcome(lambda: d["a"]),
        _outcome(lambda: d["missing"]),
        _outcome(lambda: len(d)),
        _outcome(lambda: "a" in d),
        _outcome(lambda: d.get("zz", 9)),
        _outcome(lambda: d.setdefault("c", 3)),
        _outcome(lambda: d.update({"d": 4}, e=5)),
        _outcome(lambda: sorted(d.keys())),
        _outcome(lambda: sorted(d.values())),
        _outcome(lambda: sorted(d.items())),
        _outcome(lambda: type(d.keys()).__name__),
        _outcome(lambda: d.pop("e")),
        _outcome(lambda: d.pop("e")),
        _outcome(lambda: sorted(iter(d))),
        _outcome(lambda: d.copy()),
        _outcome(lambda: d._getvalue()),
        _outcome(lambda: str(d)),
        _outcome(lambda: d == {"a": 1}),
        _outcome(lambda: copy.deepcopy(d)),
    ]
    del d["a"]
    out.append(_outcome(lambda: d.popitem()))
    d.clear()
    out.append(_outcome(lambda: len(d)))
    return out


def _list_script(m):
    lst = m.list([3, 1, 2])
    out = [_outcome(lambda: lst[0]), _outcome(lambda: lst[10]), _outcome(lambda: lst[0:2])]
    lst.append(4)
    lst.extend([5, 6])
    lst += [7]
    lst *= 2
    lst.insert(0, 0)
    out += [
        _outcome(lambda: lst._getvalue()),
        _outcome(lambda: lst.count(3)),
        _outcome(lambda: lst.index(4)),
        _outcome(lambda: lst.index(99)),
        _outcome(lambda: lst.pop()),
        _outcome(lambda: lst.remove(99)),
        _outcome(lambda: lst + [1]),
        _outcome(lambda: lst * 2 == lst._getvalue() * 2),
        _outcome(lambda: list(reversed(lst))),
        _outcome(lambda: 3 in lst),
    ]
    lst.sort(reverse=True)
    out.append(_outcome(lambda: lst[:]))
    lst.reverse()
    del lst[0]
    lst[0] = "x"
    out.append(_outcome(lambda: str(lst)))
    return out


def _value_array_namespace_script(m):
    v = m.Value("i", 7)
    v.value += 1
    a = m.Array("d", [1.0, 2.0, 3.0])
    a[1] = 5.0
    ns = m.Namespace(x=1)
    ns.y = 2
    ns._local = 3  # an attribute of the proxy, never sent
    del ns.x
    return [
        _outcome(lambda: v.value),
        _outcome(lambda: v.get()),
        _outcome(lambda: len(a)),
        _outcome(lambda: a[1]),
        _outcome(lambda: a[9]),
        _outcome(lambda: str(ns)),
        _outcome(lambda: ns.x),
        _outcome(lambda: ns._local),
        _outcome(lambda: "_local" in str(ns)),
    ]


def _sync_script(m):
    out = []
    for factory in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        lock = getattr(m, factory)()
        out.append((factory, _outcome(lambda: lock.acquire()), _outcome(lambda: lock.acquire(False))))
        out.append(_outcome(lambda: lock.release()))
        with lock:
            pass
    bounded = m.BoundedSemaphore(1)
    out.append(_outcome(lambda: bounded.release()))
    ev = m.Event()
    out += [_outcome(lambda: ev.is_set()), _outcome(lambda: ev.wait(0.01))]
    ev.set()
    out += [_outcome(lambda: ev.is_set()), _outcome(lambda: ev.wait())]
    ev.clear()
    cond = m.Condition()
    with cond:
        out.append(_outcome(lambda: cond.wait(0.01)))
        out.append(_outcome(lambda: cond.wait_for(lambda: True, 0.01)))
        cond.notify()
        cond.notify_all()
    out.append(_outcome(lambda: cond.wait(0.01)))  # not holding the lock
    barrier = m.Barrier(1)
    out += [
        _outcome(lambda: barrier.parties),
        _outcome(lambda: barrier.n_waiting),
        _outcome(lambda: barrier.broken),
        _outcome(lambda: barrier.wait()),
    ]
    barrier.abort()
    out.append(_outcome(lambda: barrier.broken))
    barrier.reset()
    q = m.Queue(2)
    q.put(1)
    q.put(2)
    out += [
        _outcome(lambda: q.full()),
        _outcome(lambda: q.put(3, timeout=0.01)),
        _outcome(lambda: q.qsize()),
        _outcome(lambda: q.get()),
        _outcome(lambda: q.get_nowait()),
        _outcome(lambda: q.get_nowait()),
        _outcome(lambda: q.empty()),
    ]
    jq = m.JoinableQueue()
    jq.put("job")
    out.append(_outcome(lambda: jq.get()))
    jq.task_done()
    out.append(_outcome(lambda: jq.join()))
    return out


@pytest.mark.parametrize("script", [_dict_script, _list_script, _value_array_namespace_script, _sync_script])
def test_proxy_behaviour_matches_stdlib(script, manager, std_manager):
    assert script(manager) == script(std_manager)


def test_repr_str_and_errors_match_stdlib(manager, std_manager):
    def view(m):
        lst = m.list([1, 2])
        d = m.dict()
        return [
            _normalized(repr(lst)),
            str(lst),
            _normalized(repr(d)),
            _normalized(repr(m.Queue())),
            _normalized(repr(m.Namespace(a=1))),
            str(m.Namespace(a=1)),
            _outcome(lambda: lst._callmethod("no_such_method")),
            _outcome(lambda: lst._callmethod("__len__")),
        ]

    assert view(manager) == view(std_manager)


def test_not_exposed_method_raises_remote_error(manager):
    lst = manager.list()
    with pytest.raises(RemoteError, match="is not in exposed") as info:
        lst._callmethod("__class__")
    assert isinstance(info.value, std_managers.RemoteError)
    assert "AttributeError" in str(info.value)
    # the server and this proxy's connection are still fine
    lst.append(1)
    assert lst._getvalue() == [1]


def test_referent_exception_carries_remote_traceback(manager):
    d = manager.dict()
    with pytest.raises(KeyError) as info:
        d["nope"]
    cause = info.value.__cause__
    assert isinstance(cause, managers.RemoteTraceback)
    assert "KeyError: 'nope'" in str(cause)


def test_unserializable_result_is_a_remote_error(manager):
    lock = manager.Lock()
    with pytest.raises(RemoteError, match="Unserializable message"):
        lock._getvalue()  # a threading.Lock cannot be pickled
    assert lock.acquire() is True
    lock.release()


def test_proxies_used_from_several_threads(manager):
    counter = manager.Value("i", 0)
    lock = manager.Lock()
    threads = [threading.Thread(target=_use_lock, args=(lock, counter, 50)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.value == 200


# --------------------------------------------------------------------------------------------
# Proxies crossing processes; nested proxies; cleanup
# --------------------------------------------------------------------------------------------


def test_proxies_pickle_into_children(manager, ctx):
    d = manager.dict()
    lst = manager.list(range(3))
    p = ctx.Process(target=_fill, args=(d, lst))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert d.copy() == {1: "1", "2": 2}
    assert lst[:] == [2, 1, 0]


def test_child_can_call_proxy_returning_methods(manager, ctx):
    """iter() on a dict proxy sent to a child: the stdlib fails here (no manager registry)."""
    d = manager.dict({"x": 1, "y": 2})
    out = manager.list()
    p = ctx.Process(target=_iterate_into, args=(d, out))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert out[:] == ["x", "y"]


def test_unpickled_proxy_iterates_where_stdlib_fails(manager, std_manager):
    for m, works in ((manager, True), (std_manager, False)):
        d = m.dict({"k": 1})
        copy_ = pickle.loads(pickle.dumps(d))
        copy_._manager = None  # what a proxy rebuilt in another process has
        if works:
            assert list(iter(copy_)) == ["k"]
        else:
            with pytest.raises(AttributeError, match="_registry"):
                list(iter(copy_))


def test_proxy_through_connection_to_child(manager, ctx):
    parent, child = nbproc.Pipe()
    lst = manager.list()
    p = ctx.Process(target=_receive_and_append, args=(child,))
    p.start()
    parent.send(lst)
    assert parent.recv() == "done"
    p.join(30)
    assert lst[:] == ["from child"]


def _receive_and_append(conn) -> None:
    proxy = conn.recv()
    proxy.append("from child")
    conn.send("done")


def test_nested_proxies(manager):
    outer = manager.list()
    inner = manager.list()
    outer.append(inner)
    inner.append("hello")
    fetched = outer[0]
    assert isinstance(fetched, managers.ListProxy)
    assert fetched[:] == ["hello"]
    before = manager._number_of_objects()
    del inner, fetched
    # the inner list lives on inside the outer one
    assert outer[0][:] == ["hello"]
    assert manager._number_of_objects() <= before


def test_referent_freed_when_last_proxy_gone(manager):
    base = manager._number_of_objects()
    d = manager.dict({"a": 1})
    twin = pickle.loads(pickle.dumps(d))  # a second proxy for the same referent
    assert manager._number_of_objects() == base + 1
    del d
    assert manager._number_of_objects() == base + 1
    assert twin["a"] == 1
    del twin
    assert manager._number_of_objects() == base


def test_method_to_typeid_returns_proxies(ctx):
    class Store:
        def __init__(self):
            self.items = {}

        def child(self, name):
            return self.items.setdefault(name, Store())

        def put(self, key, value):
            self.items[key] = value

        def get(self, key):
            return self.items[key]

    class StoreManager(BaseManager):
        pass

    StoreManager.register("Store", Store, method_to_typeid={"child": "SubStore"})
    StoreManager.register("SubStore", exposed=("put", "get", "child"), create_method=False)
    assert not hasattr(StoreManager, "SubStore")
    with StoreManager(ctx=ctx) as m:
        root = m.Store()
        sub = root.child("a")
        assert type(sub).__name__ == "AutoProxy[SubStore]"
        sub.put("k", 42)
        assert root.child("a").get("k") == 42
        count = m._number_of_objects()
        del sub
        assert m._number_of_objects() == count - 1


def test_generator_proxy_send_throw_close(ctx):
    def echo():
        received = None
        while True:
            received = yield received

    class GenManager(BaseManager):
        pass

    GenManager.register("echo", echo, proxytype=managers.IteratorProxy)
    with GenManager(ctx=ctx) as m:
        gen = m.echo()
        assert next(gen) is None
        assert gen.send("ping") == "ping"
        with pytest.raises(ValueError):
            gen.throw(ValueError("stop"))
        gen.close()


def test_exposed_rules(manager):
    class Thing:
        def public(self):
            return "public"

        def _private(self):
            return "private"

        attribute = 5

    class ExposedProxy(BaseProxy):
        _exposed_ = ("public", "_private")

        def private(self):
            return self._callmethod("_private")

    class ThingManager(BaseManager):
        pass

    ThingManager.register("auto", Thing)
    ThingManager.register("explicit", Thing, exposed=("_private",))
    ThingManager.register("by_proxy", Thing, proxytype=ExposedProxy)
    with ThingManager(ctx=nbproc.get_context("fork")) as m:
        auto = m.auto()
        assert auto._exposed_ == ("public",)
        assert auto.public() == "public"
        with pytest.raises(RemoteError, match="not in exposed"):
            auto._callmethod("_private")
        explicit = m.explicit()
        assert explicit._callmethod("_private") == "private"
        with pytest.raises(RemoteError, match="not in exposed"):
            explicit._callmethod("public")
        assert m.by_proxy().private() == "private"


def test_stdlib_baseproxy_subclass_is_accepted():
    class StdStyleProxy(std_managers.BaseProxy):
        _exposed_ = ("upper",)

        def upper(self):
            return self._callmethod("upper")

    class StrManager(BaseManager):
        pass

    StrManager.register("text", str, proxytype=StdStyleProxy)
    with StrManager(ctx=nbproc.get_context("fork")) as m:
        proxy = m.text("abc")
        assert isinstance(proxy, BaseProxy)
        assert proxy.upper() == "ABC"


# --------------------------------------------------------------------------------------------
# Cell-defined types: what the stdlib cannot do under spawn and forkserver
# --------------------------------------------------------------------------------------------


def test_cell_defined_class_lives_in_server(ctx, start_method):
    class Snapshot:
        def __init__(self, n):
            self.n = n

    class CellError(Exception):
        pass

    class Counter:
        def __init__(self, start=0):
            self.n = start

        def incr(self, k=1):
            self.n += k
            return self.n

        def snapshot(self):
            return Snapshot(self.n)

        def fail(self):
            raise CellError("bad")

        def pid(self):
            return os.getpid()

    class CellManager(BaseManager):
        pass

    CellManager.register("Counter", Counter)
    with CellManager(ctx=ctx) as m:
        counter = m.Counter(5)
        assert counter.incr() == 6
        assert counter.pid() == m._process.pid != os.getpid()
        snap = counter.snapshot()
        assert type(snap) is Snapshot and snap.n == 6
        with pytest.raises(CellError) as info:
            counter.fail()
        assert "in fail" in str(info.value.__cause__)

    if start_method != "fork":

        class StdCellManager(std_managers.BaseManager):
            pass

        StdCellManager.register("Counter", Counter)
        std = StdCellManager(ctx=multiprocessing.get_context(start_method))
        with _stdlib_start_method_kept(), pytest.raises((AttributeError, pickle.PicklingError, TypeError)):
            std.start()


def test_initializer_runs_in_server(ctx):
    state = {}

    def read_state():
        return dict(state)

    def init(value):
        state["value"] = value

    class InitManager(BaseManager):
        pass

    InitManager.register("read", read_state)
    m = InitManager(ctx=ctx)
    with pytest.raises(TypeError):
        m.start(initializer=42)
    m.start(init, ("set by initializer",))
    try:
        assert m.read()._getvalue() == {"value": "set by initializer"}
    finally:
        m.shutdown()


def test_initializer_failure_raises_instead_of_hanging(ctx):
    def broken():
        raise RuntimeError("initializer failed")

    m = BaseManager(ctx=ctx)
    with pytest.raises(nbproc.ProcessError, match="exited with code 1"):
        m.start(broken)


# --------------------------------------------------------------------------------------------
# Manager lifecycle: start, get_server, connect, context manager, shutdown
# --------------------------------------------------------------------------------------------


def test_lifecycle_and_shutdown_leaves_no_process(ctx):
    m = managers.SyncManager(ctx=ctx)
    assert m.address is None
    with m:
        assert m._state.value == managers.State.STARTED
        pid = m._process.pid
        assert psutil.pid_exists(pid)
        with pytest.raises(nbproc.ProcessError, match="Already started"):
            m.start()
        with pytest.raises(nbproc.ProcessError, match="Already started"):
            m.get_server()
        lst = m.list([1])
    assert not m._process.is_alive()
    assert m._process.exitcode == 0  # the polite shutdown worked
    m.shutdown()  # idempotent
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(nbproc.ProcessError, match="shut down"):
        m.start()
    with pytest.raises(nbproc.ProcessError, match="shut down"):
        m.__enter__()
    with pytest.raises((EOFError, OSError)):
        lst.append(2)  # the server is gone


def test_shutdown_of_a_stopped_server_still_ends_it(ctx):
    """A server that cannot answer (SIGSTOP) is terminated/killed within the shutdown timeouts."""
    m = managers.SyncManager(ctx=ctx, shutdown_timeout=0.5)
    m.start()
    os.kill(m._process.pid, signal.SIGSTOP)
    started = time.monotonic()
    m.shutdown()
    assert time.monotonic() - started < 10
    assert not m._process.is_alive()


def test_connect_get_server_and_address(ctx):
    class KeyedManager(BaseManager):
        pass

    KeyedManager.register("dict", dict, managers.DictProxy)
    server_side = KeyedManager(address=("127.0.0.1", 0), authkey=b"secret", ctx=ctx)
    server_side.start()
    try:
        host, port = server_side.address
        assert host == "127.0.0.1" and port > 0
        client = KeyedManager(address=server_side.address, authkey=b"secret")
        client.connect()
        d = client.dict(a=1)
        assert d.copy() == {"a": 1}
        assert server_side._number_of_objects() == 1
    finally:
        server_side.shutdown()

    unstarted = KeyedManager(address=("127.0.0.1", 0), authkey=b"k")
    server = unstarted.get_server()
    try:
        assert isinstance(server, managers.Server)
        assert server.address[1] > 0
    finally:
        server.listener.close()


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


class _Blocker:
    """Server-side object whose block() waits until released: lets a test kill a client mid-call."""

    def __init__(self):
        self.entered = threading.Event()
        self.release_event = threading.Event()

    def block(self):
        self.entered.set()
        self.release_event.wait(30)
        return "released"

    def is_blocked(self):
        return self.entered.is_set()

    def release(self):
        self.release_event.set()


class _BlockerManager(BaseManager):
    pass


_BlockerManager.register("Blocker", _Blocker)
_BlockerManager.register("dict", dict, managers.DictProxy)


def test_wrong_authkey_refused_and_server_keeps_serving(ctx):
    with _BlockerManager(address=("127.0.0.1", 0), authkey=b"right", ctx=ctx) as m:
        d = m.dict(a=1)
        intruder = _BlockerManager(address=m.address, authkey=b"wrong")
        with pytest.raises(nbproc.AuthenticationError):
            intruder.connect()
        with pytest.raises(nbproc.AuthenticationError):
            nbproc.connection.Client(m.address, authkey=b"wrong")
        assert d["a"] == 1
        friend = _BlockerManager(address=m.address, authkey=b"right")
        friend.connect()
        assert friend.dict(b=2).copy() == {"b": 2}
        assert m._process.is_alive()


def test_client_killed_mid_call_does_not_take_server_down(ctx):
    with _BlockerManager(ctx=ctx) as m:
        blocker = m.Blocker()
        d = m.dict()
        p = ctx.Process(target=_block_in_server, args=(blocker,))
        p.start()
        deadline = time.monotonic() + 30
        while not blocker.is_blocked():
            assert time.monotonic() < deadline, "the child never reached the server"
            time.sleep(0.01)
        p.kill()
        p.join(10)
        blocker.release()  # the server thread now answers a dead client
        d["after"] = "kill"
        assert d.copy() == {"after": "kill"}
        assert m._process.is_alive()


def test_truncated_and_garbage_frames_do_not_take_server_down(ctx):
    with _BlockerManager(ctx=ctx) as m:
        d = m.dict()
        # a client that sends half a frame and hangs up
        conn = nbproc.connection.Client(m.address, authkey=bytes(m._authkey))
        conn.send((None, "accept_connection", ("half-frame client",), {}))
        assert conn.recv() == ("#RETURN", None)
        os.write(conn.fileno(), (100).to_bytes(4, "big") + b"only ten..")
        conn.close()
        # a client that sends bytes that are not a pickle: answered with an error, still served
        conn = nbproc.connection.Client(m.address, authkey=bytes(m._authkey))
        conn.send((None, "accept_connection", ("garbage client",), {}))
        conn.recv()
        conn.send_bytes(b"\x80\x05 this is not a pickle")
        kind, text = conn.recv()
        assert kind == "#TRACEBACK"
        conn.send((d._id, "__len__", (), {}))
        assert conn.recv() == ("#RETURN", 0)
        conn.close()
        d["still"] = "serving"
        assert d.copy() == {"still": "serving"}


@pytest.mark.timeout(180)
def test_many_create_drop_cycles_leave_object_count_unchanged(start_method):
    """10,000 proxy create/drop cycles under forkserver (the server code is the same whichever
    way it started; ~0.7 ms each); 1,000 cycles of full manager.list() objects for every method."""
    m = nbproc.get_context(start_method).Manager()
    try:
        start = m._number_of_objects()
        for _ in range(1000):
            lst = m.list()
            del lst
        assert m._number_of_objects() == start
        if start_method == "forkserver":
            d = m.dict({"k": 1})
            for _ in range(10_000):
                it = iter(d)  # an Iterator proxy: created in the server, dropped here
                del it
            del d
            assert m._number_of_objects() == start
    finally:
        m.shutdown()


def test_queue_empty_is_queue_module_exception(manager):
    q = manager.Queue()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)


def test_manager_pool_runs_cell_defined_functions(manager):
    """SyncManager.Pool is nbproc's Pool: a lambda crosses to its workers under every method."""
    square = lambda x: x * x  # noqa: E731 - the point is an unimportable function
    with manager.Pool(2) as pool:
        assert isinstance(pool, managers.PoolProxy)
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        assert pool.apply_async(square, (7,)).get(timeout=30) == 49
        assert list(pool.imap(square, range(3))) == [0, 1, 4]


def test_xmlrpclib_serializer_and_unknown_serializer():
    class XmlManager(BaseManager):
        pass

    XmlManager.register("dict", dict, managers.DictProxy)
    with XmlManager(serializer="xmlrpclib", ctx=nbproc.get_context("fork")) as m:
        d = m.dict(a=(1, 2))
        assert d["a"] == [1, 2]  # XML-RPC turns tuples into lists, as with the stdlib
        with pytest.raises(Exception):  # noqa: B017 - XML-RPC cannot marshal a function
            d["f"] = time.sleep
    with pytest.raises(ValueError, match="unknown manager serializer"):
        BaseManager(serializer="json")


def test_shared_memory_manager_is_reachable_from_managers():
    from nbproc.shared_memory import SharedMemoryManager

    assert managers.SharedMemoryManager is SharedMemoryManager
    assert "SharedMemoryManager" in managers.__all__
