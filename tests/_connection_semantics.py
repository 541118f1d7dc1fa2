"""One script of Connection behaviour, run against several ``Pipe`` implementations and compared.

``connection_semantics(Pipe)`` exercises what the reference documents for Connection objects
(byte messages with offset/size, ``maxlength``, ``recv_bytes_into`` and ``BufferTooShort``,
``poll`` timeouts, end of file, closed handles, one-way pipes, context managers) and returns
a list of ``(step, outcome)`` pairs, where an outcome is ``("ok", value)`` or ``("raises",
exception type name, message)``. Tests compare the stdlib's list with nbproc's (processes)
and nbproc.dummy's (threads).
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Any

__all__ = ["connection_semantics", "outcome"]


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome under comparison
        return ("raises", type(exc).__name__, str(exc))
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    return ("ok", value)


def _into(conn: Any, buf: Any, *args: int) -> tuple[Any, ...]:
    """recv_bytes_into's result plus what the buffer holds afterwards, or the exception and its args[0]."""
    try:
        n = conn.recv_bytes_into(buf, *args)
    except Exception as exc:  # noqa: BLE001
        return ("raises", type(exc).__name__, exc.args[0] if exc.args else None, bytes(memoryview(buf).cast("B")))
    return ("ok", n, bytes(memoryview(buf).cast("B")))


def connection_semantics(Pipe: Callable[..., tuple[Any, Any]], *, closing: bool = True) -> list[tuple[str, Any]]:  # noqa: N803
    """``closing=False`` leaves out what ``close()`` does to the peer (end of file, broken pipe,
    closed handles): thread connections keep the stdlib dummy's no-op ``close()``."""
    steps: list[tuple[str, Any]] = []

    def step(name: str, fn: Callable[[], Any]) -> None:
        steps.append((name, outcome(fn)))

    a, b = Pipe()
    step("flags", lambda: (a.readable, a.writable, a.closed))
    step("send obj", lambda: a.send([1, "hello", None]))
    step("recv obj", b.recv)
    for args in [(2,), (1, 3), (0, 0), (6,), (-1,), (7,), (1, 6), (2, -1)]:
        step(f"send_bytes{args}", lambda args=args: a.send_bytes(b"abcdef", *args))
        step(f"  poll after send_bytes{args}", b.poll)
        step(f"  recv_bytes after send_bytes{args}", lambda: b.recv_bytes() if b.poll() else "nothing sent")
    items = array.array("i", [10, 20, 30, 40])
    step("send_bytes array offset/size in bytes", lambda: a.send_bytes(items, 4, 8))
    step("  recv", b.recv_bytes)
    step("poll empty", b.poll)
    step("poll 0.05", lambda: b.poll(0.05))
    step("poll negative", lambda: b.poll(-1))
    a.send_bytes(b"xyz")
    step("poll None with data", lambda: b.poll(None))
    step("recv_bytes_into offset 3", lambda: _into(b, bytearray(8), 3))
    a.send_bytes(b"0123456789")
    step("recv_bytes_into too short", lambda: _into(b, bytearray(8)))
    a.send_bytes(array.array("i", [7, 8]))
    step("recv_bytes_into array offset 4", lambda: _into(b, array.array("i", [0, 0, 0, 0]), 4))
    a.send_bytes(array.array("i", [7, 8]))
    step("recv_bytes_into array too short", lambda: _into(b, array.array("i", [0, 0]), 4))
    step("recv_bytes_into negative offset", lambda: _into(b, bytearray(4), -1))
    step("recv_bytes_into offset too large", lambda: _into(b, bytearray(4), 5))
    step("recv_bytes negative maxlength", lambda: b.recv_bytes(-1))
    a.send_bytes(b"x" * 10)
    step("recv_bytes maxlength=10 exact", lambda: b.recv_bytes(10))
    a.send_bytes(b"x" * 11)
    step("recv_bytes maxlength exceeded", lambda: b.recv_bytes(10))
    step("  flags after", lambda: (b.readable, b.writable, b.closed))
    step("  recv after", b.recv)
    step("  can still send", lambda: b.send("still writable"))
    step("  peer receives", a.recv)
    a.close()
    b.close()

    if closing:
        a, b = Pipe()
        a.send("last words")
        a.close()
        step("poll after peer closed", lambda: b.poll(1.0))
        step("recv queued before close", b.recv)
        step("poll at EOF", lambda: b.poll(1.0))
        step("recv at EOF", b.recv)
        step("recv_bytes at EOF", b.recv_bytes)
        step("closed send", lambda: a.send(1))
        step("closed recv", a.recv)
        step("closed poll", a.poll)
        step("closed send_bytes", lambda: a.send_bytes(b"x"))
        step("close twice", a.close)
        step("flags closed", lambda: a.closed)
        b.close()

    reader, writer = Pipe(duplex=False)
    step("one-way flags", lambda: (reader.readable, reader.writable, writer.readable, writer.writable))
    step("reader send", lambda: reader.send(1))
    step("reader send_bytes", lambda: reader.send_bytes(b"x"))
    step("writer recv", writer.recv)
    step("writer recv_bytes", writer.recv_bytes)
    step("writer poll", writer.poll)
    writer.send_bytes(b"x" * 5)
    step("one-way maxlength exceeded", lambda: reader.recv_bytes(4))
    step("  reader closed after", lambda: reader.closed)
    writer.close()

    a, b = Pipe()
    with a as entered:
        step("enter returns self", lambda: entered is a)
    if closing:
        step("exit closes", lambda: a.closed)
    b.close()
    return steps
