"""Managers and proxies: shared objects that live in a server process, reached through proxies.

Data flow (who sends what to whom, on which thread)::

    client process (any thread)                      manager server process
    ───────────────────────────                      ──────────────────────
                                                      accepter thread: Listener.accept() in a loop,
                                                        one handler thread per new connection
    control requests — one short connection each:
    manager.dict()  ─ Client ─ (None,'create',…) ───>  handler thread: authenticate (bytes only,
    proxy dropped   ─ Client ─ (None,'decref',…) ───>    under a deadline), recv one request, run
    manager.shutdown ─ Client ─ (None,'shutdown') ──>    Server.create/incref/decref/…, reply, close
                    <──────── ('#RETURN', result) ──
    method calls — one long-lived connection per client thread:
    proxy[k] = v                                      handler thread turned serving thread by
      _callmethod ─ (ident,'__setitem__',args,kwds) ─>  'accept_connection': Server.serve_client
                  <── ('#RETURN', value)               looks ident up in id_to_obj, checks the
                  <── ('#PROXY', (exposed, token))     method is exposed, calls it on the referent,
                  <── ('#ERROR', exception)            answers; ends at EOF or when a send fails
                  <── ('#TRACEBACK', text) -> RemoteError

Every message is one :class:`nbproc.connection.Connection` frame written by nbproc's
serializer, so a class or function defined in a notebook cell (or in a script's ``__main__``)
travels by value: a custom manager can register a cell-defined class, and the manager's server
— started under spawn or forkserver, which cannot import ``__main__`` — receives the registry by
value and builds the objects there. The stdlib cannot do that.

What is reused from :mod:`multiprocessing.managers` by subclassing: the server's bookkeeping
(``create``, ``incref``/``decref``, ``get_methods``, ``shutdown``, ``serve_forever`` and its
accepter), ``Token``, ``RemoteError``, ``dispatch``, the server-side ``Namespace``/``Value``/
``Array`` types and the SyncManager proxies' methods (nbproc's proxy classes inherit from
nbproc's :class:`BaseProxy` *and* the stdlib's proxy class, so ``isinstance`` against the
stdlib's proxy types holds). What nbproc owns: the transport (``_Listener``/``_Client`` are
nbproc's, never the stdlib's ``listener_client`` table, which is left untouched), the server
process launch (an nbproc context, so the registry travels by value), the serving loop,
authentication with a deadline, proxy construction and rebuilding.

Wire format: requests are ``(ident, methodname, args, kwds)`` and replies ``(kind, result)``
tuples — the stdlib's own format, kept on purpose: the reused server methods and ``dispatch``
speak it, a stdlib peer can talk to an nbproc manager for by-reference objects, and plain
tuples are the cheapest thing the pickler writes on the hottest path in this module.

Deliberate differences from the stdlib (all in the direction of "works where it failed"):

- a proxy unpickled in another process can call methods that return proxies (``iter()`` on a
  dict proxy sent to a child); the stdlib fails there with ``'NoneType' object has no
  attribute '_registry'``;
- an exception raised by a referent's method carries the server-side traceback as
  ``__cause__`` (a :class:`RemoteTraceback`);
- ``start()`` raises :class:`ProcessError` naming the exit code if the server process dies
  before reporting its address (the stdlib raises a bare ``EOFError``);
- creating a shared object costs one connection instead of three (the new proxy adopts the
  reference ``create`` already counted instead of taking one more and returning the first);
- a client that connects and never authenticates is dropped after
  :data:`HANDSHAKE_TIMEOUT` seconds instead of holding a server thread forever;
- ``SyncManager().Pool()`` is nbproc's Pool, so cell-defined functions run in it.
"""

from __future__ import annotations

import io
import multiprocessing.connection as _std_connection
import multiprocessing.managers as _std
import multiprocessing.pool as _std_pool
import threading
import traceback
from multiprocessing import util
from multiprocessing.context import get_spawning_popen
from multiprocessing.process import AuthenticationString, current_process
from typing import Any, NamedTuple

from . import connection, context, remote_error, serialization
from .context import ProcessError
from .remote_error import RemoteTraceback  # noqa: F401 - re-exported: the one RemoteTraceback class

__all__ = [
    "BaseManager",
    "SyncManager",
    "BaseProxy",
    "Token",
    "Server",
    "RemoteError",
    "Namespace",
    "SharedMemoryManager",  # noqa: F822 - provided lazily by __getattr__ below
]


def __getattr__(name: str) -> Any:
    """``SharedMemoryManager`` lives in :mod:`nbproc.shared_memory`; found here too, as in the stdlib."""
    if name == "SharedMemoryManager":
        from .shared_memory import SharedMemoryManager

        return SharedMemoryManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Token = _std.Token
RemoteError = _std.RemoteError
State = _std.State
Namespace = _std.Namespace
Value = _std.Value
Array = _std.Array
dispatch = _std.dispatch
convert_to_error = _std.convert_to_error
public_methods = _std.public_methods
all_methods = _std.all_methods

#: Seconds a new connection to the server gets to finish the challenge/response exchange. An
#: honest client needs two round trips of a few hundred bytes; a longer budget only keeps a
#: silent or hostile client's handler thread alive longer, a shorter one would refuse clients
#: on a machine paused by swapping. Same budget as nbproc's Listener.
HANDSHAKE_TIMEOUT: float = float(getattr(connection, "DEFAULT_HANDSHAKE_TIMEOUT", connection.CONNECTION_TIMEOUT))

#: listen() backlog of a manager's server. Every control request (create, decref...) is a new
#: connection, so a burst of proxies being dropped arrives as a burst of connects; 128 (what
#: CPython 3.13 uses) absorbs it where 16 (3.10-3.12) left clients waiting in connect().
_BACKLOG = 128


class _Transport(NamedTuple):
    listener: Any
    client: Any


def _transport(serializer: str) -> _Transport:
    """Listener/Client pair for a manager ``serializer`` name.

    ``'pickle'`` (the default and the stdlib's name) means nbproc's serializer through nbproc's
    connections; ``'xmlrpclib'`` keeps the stdlib's XML-RPC connections for by-value plain data.
    """
    if serializer == "pickle":
        return _Transport(connection.Listener, connection.Client)
    if serializer == "xmlrpclib":
        return _Transport(_std_connection.XmlListener, _std_connection.XmlClient)
    raise ValueError(f"unknown manager serializer {serializer!r}; use 'pickle' (nbproc's serializer) or 'xmlrpclib'")


def _call_server(client: Any, address: Any, authkey: bytes, funcname: str, args: tuple = ()) -> Any:
    """Run one control request (``incref``, ``decref``, ``get_methods``...) on its own connection."""
    conn = client(address, authkey=authkey)
    try:
        return dispatch(conn, None, funcname, args)
    finally:
        conn.close()


def _request_shutdown(client: Any, address: Any, authkey: bytes, timeout: float) -> None:
    """Send the ``shutdown`` request, waiting at most ``timeout`` for each step of the exchange.

    A server that cannot answer (stopped, wedged) still accepts the TCP/Unix connection in the
    kernel's backlog, so an unbounded handshake or reply would hang ``shutdown()`` forever.
    """
    kwargs = {"handshake_timeout": timeout} if client is connection.Client else {}
    conn = client(address, authkey=authkey, **kwargs)
    try:
        conn.send((None, "shutdown", (), {}))
        if conn.poll(timeout):
            conn.recv()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Errors raised by a referent keep their server-side traceback
# --------------------------------------------------------------------------------------------


class _ExceptionWithTraceback:
    """Carrier for a referent's exception: unpickles as the exception itself, with the
    server-side traceback as its ``__cause__`` (a :class:`RemoteTraceback`, rendered by the
    client — see :mod:`nbproc.remote_error`)."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.tb = remote_error.capture(exc)

    def __reduce__(self) -> tuple[Any, tuple[BaseException, Any]]:
        return remote_error.attach, (self.exc, self.tb)


def _traceback_of(exc: BaseException) -> tuple[str, str]:
    """A ``('#TRACEBACK', text)`` reply for an error raised by the server itself."""
    return "#TRACEBACK", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class Server(_std.Server):
    """The object server that runs in a manager's process (or under ``get_server()``).

    Attributes follow the stdlib (``registry``, ``address``, ``authkey``, ``id_to_obj``,
    ``id_to_refcount``, ``id_to_local_proxy_obj``, ``mutex``) because the inherited bookkeeping
    methods use them. ``address`` is the listener's actual address (the port is filled in when
    ``('127.0.0.1', 0)`` was asked for).
    """

    def __init__(self, registry: dict[str, tuple], address: Any, authkey: bytes, serializer: str) -> None:
        if not isinstance(authkey, bytes):
            raise TypeError(f"Authkey {authkey!r} is type {type(authkey)!s}, not bytes")
        self.registry = registry
        self.authkey = AuthenticationString(authkey)
        # No authkey on the listener: authentication runs in each connection's own thread
        # (_handle_request), so one slow client never holds up the accept loop.
        self.listener = _transport(serializer).listener(address=address, backlog=_BACKLOG)
        self.address = self.listener.address
        self.id_to_obj: dict[str, tuple] = {}
        self.id_to_refcount: dict[str, int] = {}
        self.id_to_local_proxy_obj: dict[str, tuple] = {}
        self.mutex = threading.Lock()

    def _handle_request(self, conn: Any) -> None:
        """Authenticate a new connection, then run the single control request it carries.

        Runs on the connection's own handler thread. A client with the wrong key, or one that
        stays silent for :data:`HANDSHAKE_TIMEOUT` seconds, is refused: nothing it sent is
        unpickled and nothing is sent back but the handshake's own failure message. The
        ``accept_connection`` request does not return until its client goes away: it turns this
        thread into that connection's serving thread (:meth:`serve_client`).
        """
        # The deadline needs a file descriptor; the xmlrpclib transport's wrapper has none.
        timeout = HANDSHAKE_TIMEOUT if isinstance(conn, _std_connection.Connection) else None
        try:
            connection.deliver_challenge(conn, self.authkey, timeout=timeout)
            connection.answer_challenge(conn, self.authkey, timeout=timeout)
        except (connection.AuthenticationError, OSError, EOFError) as exc:
            util.info("manager refused a connection: %s", exc)
            return
        try:
            _ident, funcname, args, kwds = conn.recv()
            if funcname not in self.public:
                raise AttributeError(f"{funcname!r} unrecognized")
            reply: tuple[str, Any] = ("#RETURN", getattr(self, funcname)(conn, *args, **kwds))
        except EOFError:
            return
        except Exception as exc:
            reply = _traceback_of(exc)
        self._send_reply(conn, reply)

    def handle_request(self, conn: Any) -> None:
        """Serve one accepted connection on the calling (handler) thread, then close it."""
        try:
            self._handle_request(conn)
        finally:
            conn.close()

    def serve_client(self, conn: Any) -> None:
        """Answer method calls from one client thread's proxies until it hangs up.

        Blocking: runs until the client closes the connection (EOF), the connection breaks (the
        client process was killed mid-call: the reply cannot be sent), or the server stops. A
        failure here only ends this thread; the server keeps serving everyone else.
        """
        util.debug("starting server thread to service %r", threading.current_thread().name)
        recv = conn.recv
        stop_event = self.stop_event
        while not stop_event.is_set():
            try:
                request = recv()
            except (EOFError, OSError):
                util.debug("client of %r went away", threading.current_thread().name)
                return
            except Exception as exc:  # an undecodable request: tell the client, keep serving
                reply: tuple[str, Any] = _traceback_of(exc)
            else:
                reply = self._answer(conn, request)
            if not self._send_reply(conn, reply):
                return

    def _answer(self, conn: Any, request: Any) -> tuple[str, Any]:
        """Run one method call on its referent and build the reply (never raises)."""
        try:
            ident, methodname, args, kwds = request
            try:
                obj, exposed, gettypeid = self.id_to_obj[ident]
            except KeyError:
                obj, exposed, gettypeid = self.id_to_local_proxy_obj[ident]
            function = getattr(obj, methodname) if methodname in exposed else None
        except AttributeError:
            function = None
        except Exception as exc:
            return _traceback_of(exc)
        if function is None:
            return self._fallback(conn, ident, obj, exposed, methodname, args, kwds)
        try:
            result = function(*args, **kwds)
        except Exception as exc:
            return "#ERROR", _ExceptionWithTraceback(exc)
        typeid = gettypeid.get(methodname) if gettypeid else None
        if not typeid:
            return "#RETURN", result
        try:
            rident, rexposed = self.create(conn, typeid, result)
        except Exception as exc:
            return _traceback_of(exc)
        return "#PROXY", (rexposed, Token(typeid, self.address, rident))

    def _fallback(
        self, conn: Any, ident: str, obj: Any, exposed: Any, methodname: str, args: tuple, kwds: dict
    ) -> tuple[str, Any]:
        """Calls that need no exposure (``__str__``, ``__repr__``, ``#GETVALUE``), else the documented error."""
        handler = self.fallback_mapping.get(methodname)
        try:
            if handler is None:
                raise AttributeError(f"method {methodname!r} of {type(obj)!r} object is not in exposed={exposed!r}")
            return "#RETURN", handler(self, conn, ident, obj, *args, **kwds)
        except Exception as exc:
            return _traceback_of(exc)

    @staticmethod
    def _send_reply(conn: Any, reply: tuple[str, Any]) -> bool:
        """Send ``reply``; an unpicklable result becomes ``#UNSERIALIZABLE``. False if the peer is gone."""
        try:
            conn.send(reply)
            return True
        except OSError:
            return False
        except Exception:
            unserializable = traceback.format_exc()
        try:
            conn.send(("#UNSERIALIZABLE", unserializable))
            return True
        except Exception:
            return False


# --------------------------------------------------------------------------------------------
# Proxies
# --------------------------------------------------------------------------------------------


class BaseProxy(_std.BaseProxy):
    """Base of nbproc's proxies: a handle on a referent living in a manager's server.

    Same constructor, attributes and behaviour as the stdlib's ``BaseProxy``; what differs is
    the connection (nbproc's, so arguments and results use nbproc's serializer) and how a proxy
    rebuilds after pickling (as an nbproc proxy). ``repr()`` describes the proxy, ``str()``
    returns the referent's ``repr`` (one round trip), ``_getvalue()`` a copy of the referent.
    A proxy is not thread-safe beyond what the stdlib promises: each thread gets its own
    connection to the server.
    """

    # Per manager address: (this thread's connection, ids this process holds references to).
    # nbproc's own table, so stdlib proxies and nbproc proxies never share a connection.
    _address_to_local: dict[Any, tuple[Any, Any]] = {}
    _mutex = util.ForkAwareThreadLock()

    def __init__(
        self,
        token: Any,
        serializer: str,
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Any = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        # The attribute names are the stdlib's: code written for its proxies reads them.
        self._tls, self._idset = BaseProxy._per_address(token.address)
        self._token, self._id = token, token.id
        self._manager, self._serializer = manager, serializer
        self._Client = _transport(serializer).client
        # True for a proxy rebuilt inside its own manager's server (a proxy stored in a shared
        # object): the server keeps the referent alive, so such a proxy holds no reference.
        self._owned_by_manager = manager_owned
        # The key to authenticate with: the one given, else the manager's, else this process's.
        if authkey is None:
            self._authkey = manager._authkey if manager is not None else current_process().authkey
        else:
            self._authkey = AuthenticationString(authkey)
        if incref:
            self._incref()
        util.register_after_fork(self, BaseProxy._after_fork)

    @staticmethod
    def _per_address(address: Any) -> tuple[Any, Any]:
        """What all proxies of one manager share in this process, made by the first of them.

        ``(thread-local holding each thread's connection, set of the ids this process holds
        references to)``; both are reset in a forked child, which owns neither.
        """
        with BaseProxy._mutex:
            if address not in BaseProxy._address_to_local:
                BaseProxy._address_to_local[address] = (util.ForkAwareLocal(), _std.ProcessLocalSet())
            return BaseProxy._address_to_local[address]

    def _incref(self) -> None:
        """Take a reference on the referent in the server (one control connection)."""
        if self._owned_by_manager:
            return
        _call_server(self._Client, self._token.address, self._authkey, "incref", (self._id,))
        self._own_reference()

    def _own_reference(self) -> None:
        """Become the owner of one server-side reference: it is returned when this proxy dies."""
        self._idset.add(self._id)
        state = self._manager and self._manager._state
        self._close = util.Finalize(
            self,
            BaseProxy._decref,
            args=(self._token, self._authkey, state, self._tls, self._idset, self._Client),
            exitpriority=10,
        )

    def _callmethod(self, methodname: str, args: tuple = (), kwds: dict | None = None) -> Any:
        """Call ``methodname`` on the referent in the server and return a copy of the result.

        Or a proxy, when the method is listed in ``method_to_typeid``. An exception raised by
        the method is re-raised here (with the server-side traceback as ``__cause__``); any other
        failure in the server (method not exposed, unknown object) raises :class:`RemoteError`.
        Blocking: waits until the method returns, with no timeout of its own — a method that
        takes a timeout (``Queue.get(timeout=...)``, ``Event.wait(timeout)``) bounds the call. If
        the server dies meanwhile, raises ``EOFError``/``ConnectionError``.
        """
        try:
            conn = self._tls.connection
        except AttributeError:
            util.debug("thread %r does not own a connection", threading.current_thread().name)
            self._connect()
            conn = self._tls.connection
        conn.send((self._id, methodname, args, {} if kwds is None else kwds))
        kind, result = conn.recv()
        if kind == "#RETURN":
            return result
        if kind == "#PROXY":
            exposed, token = result
            return self._proxy_for(token, exposed)
        try:
            raise convert_to_error(kind, result)
        finally:
            del result  # the exception's traceback would otherwise keep this frame alive

    def _proxy_for(self, token: Any, exposed: Any) -> Any:
        """Proxy for an object the server just created for us (``method_to_typeid``).

        The proxy type comes from our manager's registry; a proxy that was unpickled in another
        process has no manager, and then SyncManager's registry (iterators, async results...) is
        consulted, and an auto-proxy is the last resort.
        """
        token.address = self._token.address
        registry = self._manager._registry if self._manager is not None else SyncManager._registry
        entry = registry.get(token.typeid)
        proxytype = entry[-1] if entry is not None else AutoProxy
        return _adopting_proxy(proxytype, token, self._serializer, self._manager, self._authkey, exposed)

    def __reduce__(self) -> tuple[Any, tuple]:
        kwds: dict[str, Any] = {}
        if get_spawning_popen() is not None:
            kwds["authkey"] = self._authkey  # only while starting a child, as the stdlib allows
        if getattr(self, "_isauto", False):
            kwds["exposed"] = self._exposed_
            return RebuildProxy, (AutoProxy, self._token, self._serializer, kwds)
        return RebuildProxy, (type(self), self._token, self._serializer, kwds)


def _adopting_proxy(proxytype: Any, token: Any, serializer: str, manager: Any, authkey: bytes, exposed: Any) -> Any:
    """A proxy that takes over the reference the server counted when it created the object.

    The stdlib builds the proxy with a fresh ``incref`` and then returns the creation
    reference with a ``decref`` — two extra connections per object for the same result.
    """
    proxy = proxytype(token, serializer, manager=manager, authkey=authkey, exposed=exposed, incref=False)
    proxy._own_reference()
    return proxy


def RebuildProxy(func: Any, token: Any, serializer: str, kwds: dict[str, Any]) -> Any:
    """Unpickle a proxy: ``func`` is its class (or :func:`AutoProxy`).

    Inside the proxy's own manager server, the rebuilt proxy is *manager-owned* (a shared
    object stored inside another one): the server keeps its referent alive in
    ``id_to_local_proxy_obj`` and the proxy takes no reference. While a child is being
    started, references are taken after bootstrap by the after-fork hook, as in the stdlib.
    """
    server = getattr(current_process(), "_manager_server", None)
    if server is not None and server.address == token.address:
        kwds["manager_owned"] = True
        server.id_to_local_proxy_obj.setdefault(token.id, server.id_to_obj[token.id])
    incref = kwds.pop("incref", True) and not getattr(current_process(), "_inheriting", False)
    return func(token, serializer, incref=incref, **kwds)


def _forwarder(name: str) -> Any:
    def method(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(name, args, kwds)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Call ``{name}`` on the referent (see BaseProxy._callmethod)."
    return method


_proxy_type_cache: dict[tuple[str, tuple[str, ...]], type] = {}


def MakeProxyType(name: str, exposed: Any) -> type:
    """A :class:`BaseProxy` subclass with one forwarding method per name in ``exposed``."""
    exposed = tuple(exposed)
    key = (name, exposed)
    proxytype = _proxy_type_cache.get(key)
    if proxytype is None:
        namespace: dict[str, Any] = {name_: _forwarder(name_) for name_ in exposed}
        namespace.update(_exposed_=exposed, __module__=__name__)
        proxytype = _proxy_type_cache[key] = type(name, (BaseProxy,), namespace)
    return proxytype


def AutoProxy(
    token: Any,
    serializer: str,
    manager: Any = None,
    authkey: bytes | None = None,
    exposed: Any = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy for a type registered without a proxy type: its methods are the exposed ones.

    When ``exposed`` is not known (a proxy rebuilt without it), the server is asked.
    """
    if authkey is None:
        authkey = manager._authkey if manager is not None else current_process().authkey
    if exposed is None:
        exposed = _call_server(_transport(serializer).client, token.address, authkey, "get_methods", (token,))
    proxytype = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed)
    proxy = proxytype(token, serializer, manager=manager, authkey=authkey, incref=incref, manager_owned=manager_owned)
    proxy._isauto = True
    return proxy


def _as_nbproc_proxytype(proxytype: Any) -> Any:
    """Accept a proxy class written against the stdlib's ``BaseProxy`` by mixing nbproc's in."""
    if isinstance(proxytype, type) and issubclass(proxytype, _std.BaseProxy) and not issubclass(proxytype, BaseProxy):
        return type(proxytype.__name__, (BaseProxy, proxytype), {"__module__": proxytype.__module__})
    return proxytype


# --------------------------------------------------------------------------------------------
# Managers
# --------------------------------------------------------------------------------------------


def _creator(owner: type, typeid: str, proxytype: Any) -> Any:
    """The ``manager.<typeid>(*args, **kwds)`` method made by ``register``."""

    def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
        util.debug("requesting creation of a shared %r object", typeid)
        token, exposed = self._create(typeid, *args, **kwds)
        return _adopting_proxy(proxytype, token, self._serializer, self, self._authkey, exposed)

    create.__name__ = typeid
    create.__qualname__ = f"{owner.__qualname__}.{typeid}"
    create.__module__ = owner.__module__
    create.__doc__ = f"Create a shared {typeid!r} object in the manager's server and return a proxy for it."
    return create


class BaseManager(_std.BaseManager):
    """A manager: a server process holding shared objects, and the factory of their proxies.

    ``BaseManager(address=None, authkey=None, serializer='pickle', ctx=None, *,
    shutdown_timeout=1.0)`` as in the stdlib. ``address=None`` picks a private Unix socket;
    ``authkey=None`` uses ``current_process().authkey``. ``ctx`` is an nbproc context (default:
    nbproc's default context, resolved when ``start()`` runs), so the server process is
    started by nbproc and receives the registry — cell-defined classes included — by value.
    """

    _registry: dict[str, tuple] = {}
    _Server = Server

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None:
        transport = _transport(serializer)  # first: an unknown name is a clear ValueError
        # The stdlib's __init__ sets the address, the key (current_process().authkey by default)
        # and the INITIAL state. What it would take from its own module is replaced: a ctx of
        # None would fix the *stdlib's* default start method, and its transports are its own.
        super().__init__(address, authkey, serializer, ctx or context._default_context)
        self._Listener, self._Client = transport
        self._shutdown_timeout = shutdown_timeout  # the stdlib's __init__ has it from 3.11 only
        self._process: Any = None

    def _check_initial(self) -> None:
        if self._state.value == State.STARTED:
            raise ProcessError("Already started server")
        if self._state.value == State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        if self._state.value != State.INITIAL:
            raise ProcessError(f"Unknown state {self._state.value!r}")

    def get_server(self) -> Server:
        """A :class:`Server` for this manager's registry, to run with ``serve_forever()`` here."""
        self._check_initial()
        return self._Server(self._registry, self._address, self._authkey, self._serializer)

    def connect(self) -> None:
        """Connect to a running manager server at ``address`` (raises if it refuses our authkey)."""
        _call_server(self._Client, self._address, self._authkey, "dummy")
        self._state.value = State.STARTED

    def start(self, initializer: Any = None, initargs: tuple = ()) -> None:
        """Start the server process; it calls ``initializer(*initargs)`` first if given.

        Blocking: returns once the server reports its address. If the server process dies
        first (an initializer that raises, a registry that cannot be rebuilt), raises
        :class:`ProcessError` with its exit code instead of waiting.
        """
        self._check_initial()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        reader, writer = connection.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=type(self)._run_server,
            args=(self._registry, self._address, self._authkey, self._serializer, writer, initializer, initargs),
        )
        self._process.name = f"{type(self).__name__}-{':'.join(str(i) for i in self._process._identity)}"
        if (self._process._start_method or self._ctx.get_start_method()) == "fork":
            _record_class_identities(self._registry, initializer, initargs)
        try:
            self._process.start()
        finally:
            writer.close()
        try:
            self._address = self._await_address(reader)
        finally:
            reader.close()
        self._state.value = State.STARTED
        self.shutdown = util.Finalize(
            self,
            type(self)._finalize_manager,
            args=(self._process, self._address, self._authkey, self._state, self._Client, self._shutdown_timeout),
            exitpriority=0,
        )

    def _await_address(self, reader: Any) -> Any:
        """The server's first message is its address; its death before that is an error."""
        connection.wait([reader, self._process.sentinel])
        try:
            return reader.recv()
        except EOFError:
            self._process.join()
            raise ProcessError(
                f"manager process {self._process.name} exited with code {self._process.exitcode} "
                "before reporting its address"
            ) from None

    @staticmethod
    def _finalize_manager(
        process: Any, address: Any, authkey: bytes, state: Any, _Client: Any, shutdown_timeout: float = 1.0
    ) -> None:
        """Stop the server: ask it to shut down, then terminate, then kill; always join it.

        Registered as ``manager.shutdown`` (a finalizer: idempotent, also run when the manager
        is garbage collected or the program exits). Waits at most ``shutdown_timeout`` seconds
        for each of the polite steps before the next, harder one.
        """

        def ask() -> None:
            util.info("sending shutdown message to manager")
            try:
                _request_shutdown(_Client, address, authkey, shutdown_timeout)
            except Exception:  # noqa: BLE001 - already stopping, or unreachable: the next step takes over
                pass

        # Each step is harder than the one before and runs only if the server outlived that
        # one's grace period; nothing outlives SIGKILL, so its join has no limit.
        for step, grace in ((ask, shutdown_timeout), (process.terminate, shutdown_timeout), (process.kill, None)):
            if not process.is_alive():
                break
            if step is not ask:
                util.info(f"manager still alive; calling {step.__name__}()")
            step()
            process.join(timeout=grace)
        state.value = State.SHUTDOWN
        BaseProxy._address_to_local.pop(address, None)

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Any = None,
        proxytype: Any = None,
        exposed: Any = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Register ``typeid`` with this manager class (see the reference for each argument).

        ``exposed`` falls back to ``proxytype._exposed_``, ``method_to_typeid`` to
        ``proxytype._method_to_typeid_``; with neither, every public method is exposed. A
        proxy class written against the stdlib's ``BaseProxy`` is accepted (nbproc's is mixed in).
        """
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)
        proxytype = AutoProxy if proxytype is None else _as_nbproc_proxytype(proxytype)
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        for key, value in (method_to_typeid or {}).items():
            if type(key) is not str or type(value) is not str:
                raise TypeError(f"method_to_typeid must map method names to typeids (strings), not {key!r}: {value!r}")
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        if create_method:
            setattr(cls, typeid, _creator(cls, typeid, proxytype))


def _record_class_identities(*objs: Any) -> None:
    """Before forking a server, let cloudpickle record the classes it would send by value.

    cloudpickle remembers each class it pickled by value (a tracker id), and an object of that
    class coming back is rebuilt as the original class. Under spawn and forkserver the registry
    is pickled on its way to the server, which records those ids in this process. Under fork
    nothing is pickled: the server would mint new ids, and an instance of a cell-defined class
    returned by value would arrive as an equal-looking copy of its class (``isinstance`` fails).
    Pickling the registry once here, and dropping the bytes, records the ids before the fork.
    """
    if serialization.get_serializer() != "cloudpickle":
        return
    try:
        serialization.CloudPickler(io.BytesIO(), serialization.PROTOCOL).dump(objs)
    except Exception:
        pass  # fork shares what cannot be pickled; classes met before the failure are recorded


# --------------------------------------------------------------------------------------------
# SyncManager and its proxies: nbproc's BaseProxy first, the stdlib's methods behind it
# --------------------------------------------------------------------------------------------


class IteratorProxy(BaseProxy, _std.IteratorProxy):
    """Proxy for an iterator or generator living in the server."""


class AcquirerProxy(BaseProxy, _std.AcquirerProxy):
    """Proxy for Lock, RLock, Semaphore, BoundedSemaphore (also a context manager)."""


class ConditionProxy(AcquirerProxy, _std.ConditionProxy):
    """Proxy for ``threading.Condition`` (``wait_for`` evaluates its predicate in the caller)."""


class EventProxy(BaseProxy, _std.EventProxy):
    """Proxy for ``threading.Event``."""


class BarrierProxy(BaseProxy, _std.BarrierProxy):
    """Proxy for ``threading.Barrier``."""


class NamespaceProxy(BaseProxy, _std.NamespaceProxy):
    """Proxy for :class:`Namespace`: names starting with ``_`` are attributes of the proxy itself."""


class ValueProxy(BaseProxy, _std.ValueProxy):
    """Proxy for a managed ``Value`` (``.value`` reads and writes through the server)."""


class BaseListProxy(BaseProxy, _std.BaseListProxy):
    """List methods forwarded to the referent."""


class ListProxy(BaseListProxy, _std.ListProxy):
    """Proxy for a shared ``list``."""


class DictProxy(BaseProxy, _std.DictProxy):
    """Proxy for a shared ``dict`` (``iter()`` yields an iterator proxy)."""


class ArrayProxy(BaseProxy, _std.ArrayProxy):
    """Proxy for a managed ``array.array``."""


class PoolProxy(BaseProxy, _std.PoolProxy):
    """Proxy for a Pool living in the server (``with`` terminates it, as in the stdlib)."""


def _server_pool(*args: Any, **kwds: Any) -> Any:
    """``SyncManager.Pool``: nbproc's Pool, built inside the manager's server process."""
    return context._default_context.Pool(*args, **kwds)


class SyncManager(BaseManager):
    """A manager with the synchronization types of ``threading``, ``queue.Queue``, ``dict``,
    ``list``, :class:`Namespace`, ``Value``, ``Array`` and ``Pool``.

    ``nbproc.Manager()`` returns a started one. The registered types are exactly those of the
    running CPython's ``multiprocessing.managers.SyncManager``, with nbproc's proxies.
    """


_NBPROC_PROXIES: dict[Any, Any] = {
    _std.AutoProxy: AutoProxy,
    _std.IteratorProxy: IteratorProxy,
    _std.AcquirerProxy: AcquirerProxy,
    _std.ConditionProxy: ConditionProxy,
    _std.EventProxy: EventProxy,
    _std.BarrierProxy: BarrierProxy,
    _std.NamespaceProxy: NamespaceProxy,
    _std.ValueProxy: ValueProxy,
    _std.ListProxy: ListProxy,
    _std.DictProxy: DictProxy,
    _std.ArrayProxy: ArrayProxy,
    _std.PoolProxy: PoolProxy,
}


def _nbproc_proxytype(std_proxytype: Any) -> Any:
    """nbproc's counterpart of a stdlib proxy type; one is made for types newer Pythons add."""
    found = _NBPROC_PROXIES.get(std_proxytype)
    if found is None:
        found = type(std_proxytype.__name__, (BaseProxy, std_proxytype), {"__module__": __name__})
        globals().setdefault(std_proxytype.__name__, found)
        _NBPROC_PROXIES[std_proxytype] = found
    return found


def _register_sync_types() -> None:
    """Mirror the stdlib SyncManager's registry, typeid by typeid, in its order."""
    for typeid, (callable_, exposed, method_to_typeid, std_proxytype) in _std.SyncManager._registry.items():
        if callable_ is _std_pool.Pool:
            callable_ = _server_pool
        SyncManager.register(
            typeid,
            callable_,
            _nbproc_proxytype(std_proxytype),
            exposed,
            method_to_typeid,
            create_method=callable(getattr(_std.SyncManager, typeid, None)),
        )


_register_sync_types()
