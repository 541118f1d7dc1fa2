"""Connections, Listener/Client, authentication and ``wait`` — nbproc against the reference and the stdlib.

Security tests prove that nothing an unauthenticated peer sends is unpickled: the attacker's
payload is a pickle whose loading creates a marker file (a control test shows it does), and
each test asserts that the file never appears while the listener keeps serving honest clients.
"""

from __future__ import annotations

import array
import multiprocessing
import multiprocessing.connection as std_connection
import os
import pickle
import random
import socket
import struct
import sys
import threading
import time
from multiprocessing import resource_sharer
from pathlib import Path

import pytest
from _connection_semantics import connection_semantics

import nbproc
from nbproc import connection
from nbproc.connection import (
    AuthenticationError,
    BufferTooShort,
    Client,
    HandshakeEOFError,
    HandshakeMessageError,
    HandshakeTimeoutError,
    Listener,
    wait,
)

KEY = b"secret password"
# Short enough to keep the suite fast, long enough for a loaded 2-core machine to answer.
SHORT_HANDSHAKE = 0.5
LOCALHOST = ("localhost", 0)


# -- helpers ------------------------------------------------------------------------------


class _ThreadResult:
    """Run ``fn`` in a thread; ``get()`` returns its result or re-raises its exception."""

    def __init__(self, fn, *args):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn, *args):
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error = exc

    def get(self, timeout: float = 10.0):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "helper thread still running"
        if self._error is not None:
            raise self._error
        return self._value


def _honest_client_roundtrip(listener: Listener, authkey: bytes | None = KEY) -> None:
    """Prove the listener still works: an honest client connects, objects flow both ways."""
    client = _ThreadResult(lambda: _echo_client(listener.address, authkey))
    with listener.accept() as conn:
        conn.send({"hello": [1, 2, 3]})
        assert conn.recv() == ("echo", {"hello": [1, 2, 3]})
    client.get()


def _echo_client(address, authkey) -> None:
    with Client(address, authkey=authkey) as conn:
        conn.send(("echo", conn.recv()))


def _frame(payload: bytes, claimed: int | None = None) -> bytes:
    return struct.pack("!i", len(payload) if claimed is None else claimed) + payload


def _tripwire_payload(marker: Path, pad: int = 0) -> bytes:
    """A pickle that creates ``marker`` when (and only when) it is unpickled."""

    class Tripwire:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps((Tripwire(), "x" * pad), protocol=5)


# -- the reference's Listener/Client example ---------------------------------------------------


def _reference_server(report) -> None:
    """The reference's server example (port 0 instead of 6000, so tests never collide)."""
    from array import array

    from nbproc.connection import Listener

    address = ("localhost", 0)  # family is deduced to be 'AF_INET'
    with Listener(address, authkey=b"secret password") as listener:
        report.send(listener.address)
        with listener.accept() as conn:
            report.send(("connection accepted from", listener.last_accepted))
            conn.send([2.25, None, "junk", float])
            conn.send_bytes(b"hello")
            conn.send_bytes(array("i", [42, 1729]))


def test_reference_listener_client_example(ctx):
    report, child_end = ctx.Pipe()
    server = ctx.Process(target=_reference_server, args=(child_end,))
    server.start()
    child_end.close()
    assert report.poll(30), "server did not report its address"
    address = report.recv()
    assert address[0] == "127.0.0.1" and address[1] > 0
    with Client(address, authkey=b"secret password") as conn:
        assert conn.recv() == [2.25, None, "junk", float]
        assert conn.recv_bytes() == b"hello"
        arr = array.array("i", [0, 0, 0, 0, 0])
        assert conn.recv_bytes_into(arr) == 8
        assert arr == array.array("i", [42, 1729, 0, 0, 0])
        my_address = socket.socket(fileno=os.dup(conn.fileno())).getsockname()
    assert report.recv() == ("connection accepted from", my_address)
    server.join(30)
    assert server.exitcode == 0


# -- Listener and Client -----------------------------------------------------------------------


def test_address_formats_match_stdlib():
    for address in [("localhost", 6000), "/tmp/some.sock", "\0abstract", r"\\.\pipe\PipeName", r"\\Server\pipe\P"]:
        assert connection.address_type(address) == std_connection.address_type(address)
    assert connection.address_type(("h", 1)) == "AF_INET"
    assert connection.address_type("/tmp/x") == "AF_UNIX"
    assert connection.address_type(r"\\.\pipe\x") == "AF_PIPE"
    assert connection.default_family == std_connection.default_family
    if sys.platform != "win32":
        for mod in (std_connection, connection):
            with pytest.raises(ValueError, match="AF_PIPE"):
                mod.Listener(r"\\.\pipe\nbproc-test")
            with pytest.raises(ValueError, match="AF_PIPE"):
                mod.Client(r"\\.\pipe\nbproc-test")


def test_unix_listener_default_address_and_cleanup():
    with Listener() as listener:  # address None: AF_UNIX in a private temporary directory
        address = listener.address
        assert isinstance(address, str) and os.path.exists(address)
        assert connection.address_type(address) == "AF_UNIX"
        assert listener.last_accepted is None
        client = _ThreadResult(lambda: Client(address))
        with listener.accept() as server_end, client.get() as client_end:
            client_end.send(("via", "AF_UNIX"))
            assert server_end.recv() == ("via", "AF_UNIX")
    assert not os.path.exists(address), "the socket file is removed on close"
    with pytest.raises(OSError, match="listener is closed"):
        listener.accept()


def test_unix_listener_explicit_path_family_and_abstract(tmp_path):
    path = str(tmp_path / "explicit.sock")
    with Listener(path, family="AF_UNIX", authkey=KEY) as listener:
        assert listener.address == path
        _honest_client_roundtrip(listener)
    assert not os.path.exists(path)
    if sys.platform == "linux":
        name = f"\0nbproc-test-{os.getpid()}"
        with Listener(name, authkey=KEY) as listener:
            _honest_client_roundtrip(listener)


def test_inet_listener_address_last_accepted_and_backlog():
    with Listener(("127.0.0.1", 0), family="AF_INET", backlog=4) as listener:
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        # With a backlog, several clients connect before the server accepts any of them.
        clients = [Client(listener.address) for _ in range(3)]
        locals_ = [socket.socket(fileno=os.dup(c.fileno())).getsockname() for c in clients]
        accepted = []
        for _ in clients:
            accepted.append(listener.accept())
            assert listener.last_accepted in locals_
        for i, (c, s) in enumerate(zip(clients, accepted)):
            c.send(i)
        assert sorted(s.recv() for s in accepted) == [0, 1, 2]
        for c in clients + accepted:
            c.close()


def test_listener_is_a_context_manager_and_stdlib_subclass():
    listener = Listener(LOCALHOST)
    assert isinstance(listener, std_connection.Listener)
    with listener as entered:
        assert entered is listener
    with pytest.raises(OSError, match="listener is closed"):
        listener.accept()
    listener.close()  # idempotent


def test_authkey_must_be_bytes_and_nothing_is_bound(tmp_path):
    path = tmp_path / "never.sock"
    with pytest.raises(TypeError, match="authkey should be a byte string"):
        Listener(str(path), authkey="not bytes")
    assert not path.exists(), "a rejected argument leaves no socket file behind"
    with pytest.raises(TypeError, match="authkey should be a byte string"):
        std_connection.Listener(LOCALHOST, authkey="not bytes")
    with Listener(LOCALHOST) as listener:
        with pytest.raises(TypeError, match="authkey should be a byte string"):
            Client(listener.address, authkey="not bytes")
        assert not wait([listener._listener._socket], 0.2), "Client checked its arguments before connecting"
    with pytest.raises(ValueError, match="handshake timeout"):
        Listener(LOCALHOST, handshake_timeout=-1)


def test_client_to_nowhere_raises_like_a_socket(tmp_path):
    with pytest.raises(FileNotFoundError):
        Client(str(tmp_path / "nobody.sock"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused = probe.getsockname()
    with pytest.raises(ConnectionRefusedError):
        Client(unused)


def test_authenticate_flag_uses_the_process_authkey():
    own_key = bytes(nbproc.current_process().authkey)
    with Listener(LOCALHOST, authenticate=True) as listener:
        _honest_client_roundtrip(listener, authkey=own_key)
        client = _ThreadResult(lambda: Client(listener.address, authenticate=True))
        with listener.accept() as conn, client.get() as client_end:
            client_end.send("ok")
            assert conn.recv() == "ok"
        _honest_client_roundtrip_expecting_failure(listener, b"another key")


def _honest_client_roundtrip_expecting_failure(listener: Listener, wrong_key: bytes) -> None:
    client = _ThreadResult(lambda: Client(listener.address, authkey=wrong_key))
    with pytest.raises(AuthenticationError, match="digest received was wrong"):
        listener.accept()
    with pytest.raises(AuthenticationError, match="digest sent was rejected"):
        client.get()


def test_wrong_authkey_is_rejected_and_listener_keeps_serving():
    with Listener(LOCALHOST, authkey=KEY) as listener:
        _honest_client_roundtrip_expecting_failure(listener, b"wrong password")
        _honest_client_roundtrip(listener)
        _honest_client_roundtrip_expecting_failure(listener, b"")
        _honest_client_roundtrip(listener)


def test_empty_authkey_still_authenticates():
    """Deliberate difference: CPython's Listener skips authentication for b''; nbproc follows the reference."""
    with Listener(LOCALHOST, authkey=b"") as listener:
        _honest_client_roundtrip(listener, authkey=b"")
        _honest_client_roundtrip_expecting_failure(listener, b"not empty")


@pytest.mark.parametrize("direction", ["nbproc listener, stdlib client", "stdlib listener, nbproc client"])
def test_interop_with_stdlib_peer(direction):
    import numpy as np

    big = np.arange(50_000, dtype=np.float64)  # above the out-of-band threshold
    if direction.startswith("nbproc"):
        listener_cls, client_fn = Listener, std_connection.Client
    else:
        listener_cls, client_fn = std_connection.Listener, Client

    def client_side(address):
        with client_fn(address, authkey=KEY) as conn:
            got = conn.recv()
            conn.send(("client got", got[0], float(got[1].sum())))
            conn.send_bytes(b"raw bytes", 4)
            conn.send(big * 2)

    with listener_cls(LOCALHOST, authkey=KEY) as listener:
        client = _ThreadResult(client_side, listener.address)
        with listener.accept() as conn:
            conn.send(("payload", big))
            assert conn.recv() == ("client got", "payload", float(big.sum()))
            assert conn.recv_bytes() == b"bytes"
            assert (conn.recv() == big * 2).all()
        client.get()
        bad = _ThreadResult(lambda: client_fn(listener.address, authkey=b"wrong"))
        with pytest.raises(AuthenticationError):
            listener.accept()
        with pytest.raises(AuthenticationError):
            bad.get()


def test_out_of_band_between_nbproc_peers():
    import numpy as np

    big = np.ones(100_000)
    with Listener(LOCALHOST, authkey=KEY, out_of_band=True) as listener:
        client = _ThreadResult(lambda: Client(listener.address, authkey=KEY, out_of_band=True))
        with listener.accept() as conn, client.get() as client_end:
            conn.send(big)
            frames = client_end._recv_frames()
            assert len(frames) == 3, "header, pickle stream and one buffer frame"
            client_end.send(big)
            assert conn.recv().sum() == big.sum()


# -- handshake robustness: silence, truncation, garbage -------------------------------------


def _connect_raw(address) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def test_silent_client_times_out_and_listener_keeps_serving():
    with Listener(LOCALHOST, authkey=KEY, handshake_timeout=SHORT_HANDSHAKE) as listener:
        with _connect_raw(listener.address):
            started = time.monotonic()
            with pytest.raises(HandshakeTimeoutError) as info:
                listener.accept()
            assert time.monotonic() - started < 10
        assert isinstance(info.value, AuthenticationError) and isinstance(info.value, TimeoutError)
        _honest_client_roundtrip(listener)


@pytest.mark.parametrize(
    "sent, then",
    [
        (b"\x00\x00", "stay silent"),  # half a header
        (_frame(b"x" * 10, claimed=100), "stay silent"),  # a body cut short
        (struct.pack("!i", -1) + b"\x00\x00", "stay silent"),  # half of a 64-bit length
    ],
    ids=["half header", "short body", "half long header"],
)
def test_truncated_frame_times_out(sent, then):
    with Listener(LOCALHOST, authkey=KEY, handshake_timeout=SHORT_HANDSHAKE) as listener:
        with _connect_raw(listener.address) as sock:
            sock.sendall(sent)
            with pytest.raises(HandshakeTimeoutError):
                listener.accept()
        _honest_client_roundtrip(listener)


def test_truncated_frame_then_hang_up_is_a_message_error():
    with Listener(LOCALHOST, authkey=KEY) as listener:
        with _connect_raw(listener.address) as sock:
            sock.sendall(_frame(b"x" * 10, claimed=100))
            sock.shutdown(socket.SHUT_WR)
            with pytest.raises(HandshakeMessageError, match="end of file during message") as info:
                listener.accept()
        assert isinstance(info.value, OSError)
        _honest_client_roundtrip(listener)


def test_client_hanging_up_is_an_eof_error():
    with Listener(LOCALHOST, authkey=KEY) as listener:
        _connect_raw(listener.address).close()
        with pytest.raises(HandshakeEOFError) as info:
            listener.accept()
        assert isinstance(info.value, EOFError) and isinstance(info.value, AuthenticationError)
        _honest_client_roundtrip(listener)


@pytest.mark.parametrize(
    "header",
    [struct.pack("!i", 257), struct.pack("!i", 2**31 - 1), struct.pack("!i", -1) + struct.pack("!Q", 2**40)],
    ids=["257 bytes", "2 GiB", "1 TiB long header"],
)
def test_frame_above_handshake_maxlength_is_rejected_from_its_header(header):
    """The body is never read: the listener answers at once though the client sends no body."""
    with Listener(LOCALHOST, authkey=KEY, handshake_timeout=30) as listener:
        with _connect_raw(listener.address) as sock:
            sock.sendall(header)
            started = time.monotonic()
            with pytest.raises(HandshakeMessageError, match="bad message length"):
                listener.accept()
            assert time.monotonic() - started < 10, "rejected without waiting for a body"
        _honest_client_roundtrip(listener)


def test_negative_frame_length_is_rejected():
    with Listener(LOCALHOST, authkey=KEY) as listener:
        with _connect_raw(listener.address) as sock:
            sock.sendall(struct.pack("!i", -7))
            with pytest.raises(HandshakeMessageError, match="bad message length"):
                listener.accept()
        _honest_client_roundtrip(listener)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_rejected(seed):
    rng = random.Random(seed)
    garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
    with Listener(LOCALHOST, authkey=KEY, handshake_timeout=SHORT_HANDSHAKE) as listener:
        with _connect_raw(listener.address) as sock:
            sock.sendall(garbage)
            with pytest.raises(AuthenticationError):
                listener.accept()
        _honest_client_roundtrip(listener)


# -- nothing is unpickled before authentication -------------------------------------------------


def test_tripwire_payload_fires_when_unpickled(tmp_path):
    """Control: the payload used below really does create its marker when unpickled."""
    marker = tmp_path / "unpickled"
    pickle.loads(_tripwire_payload(marker))
    assert marker.exists()


def _read_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("!i", sock.recv(4, socket.MSG_WAITALL))
    return sock.recv(size, socket.MSG_WAITALL)


def _attack(address, marker: Path, how: str) -> None:
    with _connect_raw(address) as sock:
        try:
            _send_attack(sock, marker, how)
        except OSError:
            pass  # the listener may hang up before everything is sent
        sock.settimeout(10)
        try:
            while sock.recv(4096):  # until the listener hangs up on us
                pass
        except OSError:
            pass


def _send_attack(sock: socket.socket, marker: Path, how: str) -> None:
    payload = _tripwire_payload(marker)
    if how == "blast":
        sock.sendall(_frame(payload) * 3)
    elif how == "answer challenge with payload":
        assert _read_frame(sock).startswith(b"#CHALLENGE#")
        sock.sendall(_frame(payload))
    elif how == "oversized payload":
        sock.sendall(_frame(_tripwire_payload(marker, pad=1000)))
    elif how == "truncated payload":
        sock.sendall(_frame(payload, claimed=len(payload) + 50))
    elif how == "wrong key, then payload":
        fake = std_connection.Connection(os.dup(sock.fileno()))
        try:
            std_connection.answer_challenge(fake, b"wrong key")
        except AuthenticationError:
            pass
        finally:
            fake.close()
        sock.sendall(_frame(payload) * 2)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    ["blast", "answer challenge with payload", "oversized payload", "truncated payload", "wrong key, then payload"],
)
def test_nothing_is_unpickled_before_authentication(tmp_path, how):
    marker = tmp_path / "unpickled"
    with Listener(LOCALHOST, authkey=KEY, handshake_timeout=SHORT_HANDSHAKE) as listener:
        attacker = _ThreadResult(_attack, listener.address, marker, how)
        with pytest.raises(AuthenticationError):
            listener.accept()
        attacker.get()
        _honest_client_roundtrip(listener)
    assert not marker.exists(), "an unauthenticated peer's bytes were unpickled"


@pytest.mark.parametrize("how", ["payload instead of challenge", "oversized frame", "silence"])
def test_client_never_unpickles_a_rogue_server(tmp_path, how):
    marker = tmp_path / "unpickled"
    with socket.create_server(("127.0.0.1", 0)) as server:

        def rogue():
            conn, _ = server.accept()
            with conn:
                if how == "payload instead of challenge":
                    conn.sendall(_frame(_tripwire_payload(marker)))
                elif how == "oversized frame":
                    conn.sendall(_frame(_tripwire_payload(marker, pad=1000)))
                conn.settimeout(10)
                try:
                    conn.recv(1)
                except OSError:
                    pass

        thread = _ThreadResult(rogue)
        expected = HandshakeTimeoutError if how == "silence" else AuthenticationError
        with pytest.raises(expected):
            Client(server.getsockname(), authkey=KEY, handshake_timeout=SHORT_HANDSHAKE)
        thread.get()
    assert not marker.exists()


# -- deliver_challenge / answer_challenge ----------------------------------------------------


def test_challenge_functions_on_a_pipe():
    a, b = nbproc.Pipe()
    answering = _ThreadResult(connection.answer_challenge, b, KEY)
    connection.deliver_challenge(a, KEY)
    answering.get()
    # Interoperable with the stdlib's functions in either role.
    answering = _ThreadResult(std_connection.answer_challenge, b, KEY)
    connection.deliver_challenge(a, KEY, timeout=10)
    answering.get()
    delivering = _ThreadResult(std_connection.deliver_challenge, a, KEY)
    connection.answer_challenge(b, KEY, timeout=10)
    delivering.get()
    # Wrong key: both sides learn it.
    answering = _ThreadResult(connection.answer_challenge, b, b"other")
    with pytest.raises(AuthenticationError):
        connection.deliver_challenge(a, KEY)
    with pytest.raises(AuthenticationError):
        answering.get()
    # A silent peer: the timeout is honoured.
    with pytest.raises(HandshakeTimeoutError):
        connection.deliver_challenge(a, KEY, timeout=0.2)
    with pytest.raises(HandshakeTimeoutError):
        connection.answer_challenge(a, KEY, timeout=0.2)
    with pytest.raises(ValueError):
        connection.deliver_challenge(a, "not bytes")
    a.close()
    b.close()


# -- Connection semantics, differential against the stdlib ---------------------------------------


def test_connection_semantics_match_stdlib():
    assert connection_semantics(nbproc.Pipe) == connection_semantics(multiprocessing.Pipe)


def test_reference_connection_example():
    a, b = nbproc.Pipe()
    a.send([1, "hello", None])
    assert b.recv() == [1, "hello", None]
    b.send_bytes(b"thank you")
    assert a.recv_bytes() == b"thank you"
    arr1 = array.array("i", range(5))
    arr2 = array.array("i", [0] * 10)
    a.send_bytes(arr1)
    count = b.recv_bytes_into(arr2)
    assert count == len(arr1) * arr1.itemsize
    assert arr2 == array.array("i", [0, 1, 2, 3, 4, 0, 0, 0, 0, 0])
    a.close()
    b.close()


def test_buffer_too_short_holds_whole_message():
    a, b = nbproc.Pipe()
    a.send_bytes(b"0123456789")
    with pytest.raises(BufferTooShort) as info:
        b.recv_bytes_into(bytearray(4))
    assert info.value.args[0] == b"0123456789"
    assert BufferTooShort is multiprocessing.BufferTooShort is nbproc.BufferTooShort


def test_fileno_and_objects_nbproc_sends():
    a, b = nbproc.Pipe()
    assert isinstance(a.fileno(), int) and a.fileno() != b.fileno()
    factor = 3
    a.send(lambda x: x * factor)  # by value: a stdlib Connection could not send this
    assert b.recv()(14) == 42
    a.close()
    b.close()


# -- connections crossing process boundaries -----------------------------------------------------


def _child_uses_connections(duplex_end, write_end) -> None:
    request = duplex_end.recv()
    duplex_end.send(("reply", request))
    write_end.send_bytes(b"one-way bytes")
    duplex_end.close()
    write_end.close()


def test_connections_as_process_args(ctx):
    parent_end, child_end = ctx.Pipe()
    read_end, write_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_uses_connections, args=(child_end, write_end))
    proc.start()
    child_end.close()
    write_end.close()
    parent_end.send("ping")
    assert parent_end.recv() == ("reply", "ping")
    assert read_end.recv_bytes() == b"one-way bytes"
    with pytest.raises(EOFError):  # the child's copies are its only writers left
        read_end.recv_bytes()
    proc.join(30)
    assert proc.exitcode == 0


def _child_receives_a_connection(via) -> None:
    passed = via.recv()  # a Connection sent through a Connection
    passed.send("through the passed connection")
    passed.close()


def test_connection_sent_through_a_connection(ctx):
    via_parent, via_child = ctx.Pipe()
    keep, give = ctx.Pipe()
    proc = ctx.Process(target=_child_receives_a_connection, args=(via_child,))
    proc.start()
    via_parent.send(give)
    give.close()
    assert keep.poll(30)
    assert keep.recv() == "through the passed connection"
    proc.join(30)
    assert proc.exitcode == 0
    # Sending a connection outside process start-up started the stdlib's resource-sharer
    # thread; stop it so that later fork tests do not fork a multi-threaded process.
    resource_sharer.stop(timeout=10)


def _child_connects(address) -> None:
    with Client(address, authkey=KEY) as conn:
        conn.send(("child", nbproc.current_process().name))


def test_child_process_client(ctx):
    with Listener(LOCALHOST, authkey=KEY) as listener:
        proc = ctx.Process(target=_child_connects, args=(listener.address,))
        proc.start()
        with listener.accept() as conn:
            assert conn.recv() == ("child", proc.name)
        proc.join(30)
        assert proc.exitcode == 0


# -- wait() ------------------------------------------------------------------------------------


def test_wait_on_connections_and_sockets():
    a, b = nbproc.Pipe()
    s1, s2 = socket.socketpair()
    with s1, s2:
        assert wait([b, s2], 0) == []
        started = time.monotonic()
        assert wait([b, s2], -5) == [], "a negative timeout is a zero timeout"
        assert wait([b, s2], 0.1) == []
        assert time.monotonic() - started < 10
        a.send("x")
        assert wait([b, s2], 10) == [b]
        s1.sendall(b"y")
        assert set(map(id, wait([b, s2], -1))) == {id(b), id(s2)}, "ready objects are returned even at timeout <= 0"
        b.recv()
        s2.recv(1)
        a.close()
        assert wait([b], None) == [b], "a peer that closed makes the connection ready"
    b.close()


def _wait_for_go(go) -> None:
    go.recv()


def test_wait_on_process_sentinels(ctx):
    go, child_go = ctx.Pipe()
    proc = ctx.Process(target=_wait_for_go, args=(child_go,))
    proc.start()
    assert wait([proc.sentinel], 0.1) == []
    go.send("go")
    assert wait([proc.sentinel], 30) == [proc.sentinel]
    proc.join(30)
    assert proc.exitcode == 0


def _foo(w) -> None:
    for i in range(10):
        w.send((i, nbproc.current_process().name))
    w.close()


def test_reference_wait_example(ctx):
    """The reference's wait() example over four processes."""
    readers = []
    procs = []
    for _ in range(4):
        r, w = ctx.Pipe(duplex=False)
        readers.append(r)
        p = ctx.Process(target=_foo, args=(w,))
        p.start()
        procs.append(p)
        w.close()
    received = []
    while readers:
        for r in wait(readers, 30) or pytest.fail("no reader became ready"):
            try:
                received.append(r.recv())
            except EOFError:
                readers.remove(r)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(received) == sorted((i, p.name) for p in procs for i in range(10))
