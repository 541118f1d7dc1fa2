"""The framing layer of :mod:`nbproc.connection` on its own: headers, writes, reads, buffers.

Connections, queues and the pool's worker pipes all go through these functions; here they are
tested directly on OS pipes (no processes), against the stdlib's own framing where it has one.
"""

from __future__ import annotations

import multiprocessing.connection as std_connection
import os
import pickle
import threading

import numpy as np
import pytest

from nbproc import connection
from nbproc.connection import (
    MAX_SHORT_FRAME,
    OOB_THRESHOLD,
    SMALL_FRAME,
    FrameReader,
    OutOfBand,
    TruncatedFrameError,
    dump_frames,
    dumps_with_buffers,
    frame_header,
    load_frames,
    oob_count,
    pack_frames,
    parse_header,
    write_frames,
)

# Sizes around every boundary the layer has: empty, the joined-write limit, the own-buffer limit.
SIZES = [0, 1, 7, SMALL_FRAME - 1, SMALL_FRAME, SMALL_FRAME + 1, OOB_THRESHOLD - 1, OOB_THRESHOLD, 200_000]


def _frames() -> list[bytes]:
    return [bytes((i * 7 + n) % 251 for i in range(n)) if n < 100 else os.urandom(n) for n in SIZES]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _write_in_thread(fd: int, data: bytes, close: bool = True) -> threading.Thread:
    """Write ``data`` from a thread (a pipe holds 64 KiB; the reader must run meanwhile)."""

    def run() -> None:
        connection.write_all(fd, data)
        if close:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wire(frames: list) -> bytes:
    return b"".join(bytes(part) for part in pack_frames(frames))


# -- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16384, MAX_SHORT_FRAME])
def test_short_header_round_trip(size):
    header = frame_header(size)
    assert len(header) == 4
    assert parse_header(header) == (size, 4)


@pytest.mark.parametrize("size", [MAX_SHORT_FRAME + 1, 2**32, 5 * 2**30, 2**40])
def test_frames_over_2_gib_use_the_long_header(size):
    # The > 2 GiB path is the header's: -1, then the size in 8 bytes (no 2 GiB buffer needed).
    header = frame_header(size)
    assert header[:4] == b"\xff\xff\xff\xff" and len(header) == 12
    assert parse_header(header) == (size, 12)
    assert parse_header(b"junk" + header, 4) == (size, 12)


def test_incomplete_or_invalid_headers():
    assert parse_header(b"") is None
    assert parse_header(frame_header(5)[:3]) is None
    assert parse_header(frame_header(2**33)[:11]) is None  # the long part not there yet
    with pytest.raises(OSError, match="bad message length"):
        parse_header(b"\xff\xff\xff\xfe")  # -2: not a frame of this protocol


def test_header_matches_the_stdlib_encoding(pipe):
    # What the stdlib's send_bytes writes for a frame is exactly header + body.
    r, w = pipe
    std = std_connection.Connection(w, readable=False)
    for frame in _frames()[:6]:
        std.send_bytes(frame)
        assert os.read(r, len(frame) + 4) == frame_header(len(frame)) + frame
    std.close()


# -- writing ------------------------------------------------------------------------------------


def test_small_frames_are_joined_into_one_write():
    frames = [b"a", b"", b"b" * SMALL_FRAME]
    parts = pack_frames(frames)
    assert len(parts) == 1
    assert parts[0] == b"".join(frame_header(len(f)) + f for f in frames)


def test_a_large_frame_is_written_from_a_view_not_copied():
    big = bytearray(SMALL_FRAME + 1)
    parts = pack_frames([b"x", big, b"y"])
    assert bytes(parts[0]) == frame_header(1) + b"x" + frame_header(len(big))
    assert isinstance(parts[1], memoryview) and parts[1].obj is big  # the caller's memory itself
    assert bytes(parts[2]) == frame_header(1) + b"y"


def test_written_frames_are_read_by_the_stdlib(pipe):
    r, w = pipe
    frames = _frames()
    thread = threading.Thread(target=write_frames, args=(w, frames))
    thread.start()
    std = std_connection.Connection(r, writable=False)
    try:
        assert [std.recv_bytes() for _ in frames] == frames
    finally:
        thread.join()
        std._handle = None  # the fixture closes the descriptor


# -- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("read_ahead", [True, False])
def test_reader_reads_every_size(pipe, read_ahead):
    r, w = pipe
    frames = _frames()
    thread = _write_in_thread(w, _wire(frames))
    reader = FrameReader(r, read_ahead=read_ahead)
    got = [bytes(reader.read()) for _ in frames]
    thread.join()
    assert got == frames
    with pytest.raises(EOFError) as info:
        reader.read()
    assert not isinstance(info.value, TruncatedFrameError)  # a clean end between frames


@pytest.mark.parametrize("read_ahead", [True, False])
def test_reader_survives_short_reads(pipe, read_ahead, monkeypatch):
    # The kernel may return fewer bytes than asked for at any point: force 1-3 bytes per call.
    r, w = pipe
    frames = _frames()
    real_read, real_readv = os.read, os.readv
    calls = {"n": 0}

    def short_read(fd, n):
        calls["n"] += 1
        return real_read(fd, min(n, 1 + calls["n"] % 3))

    def short_readv(fd, buffers):
        calls["n"] += 1
        return real_readv(fd, [buffers[0][: 1 + calls["n"] % 3]])

    thread = _write_in_thread(w, _wire(frames))
    reader = FrameReader(r, read_ahead=read_ahead)
    monkeypatch.setattr(connection.os, "read", short_read)
    monkeypatch.setattr(connection.os, "readv", short_readv)
    try:
        got = [bytes(reader.read()) for _ in frames]
    finally:
        monkeypatch.undo()
        thread.join()
    assert got == frames


def test_exact_reader_never_reads_past_its_frame(pipe):
    # A Connection's reader shares the descriptor (poll(), other processes): the bytes after
    # the frame must stay in the pipe.
    r, w = pipe
    os.write(w, _wire([b"first", b"second"]))
    assert FrameReader(r, read_ahead=False).read() == b"first"
    assert os.read(r, 100) == frame_header(6) + b"second"


def test_read_ahead_reader_takes_waiting_frames_in_one_read(pipe):
    r, w = pipe
    os.write(w, _wire([b"one", b"", b"three"]))
    reader = FrameReader(r, read_ahead=True)
    assert bytes(reader.read()) == b"one"
    assert reader.has_frame()
    assert bytes(reader.read()) == b""  # a zero-length frame
    assert bytes(reader.read()) == b"three"
    assert not reader.has_frame()


@pytest.mark.parametrize("read_ahead", [True, False])
def test_read_buffer_is_always_writable(pipe, read_ahead):
    r, w = pipe
    frames = [b"tiny", os.urandom(OOB_THRESHOLD + 5)]
    thread = _write_in_thread(w, _wire(frames))
    reader = FrameReader(r, read_ahead=read_ahead)
    got = [reader.read_buffer() for _ in frames]
    thread.join()
    for buf, frame in zip(got, frames):
        view = memoryview(buf)
        assert not view.readonly and bytes(view) == frame


@pytest.mark.parametrize("read_ahead", [True, False])
@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(frame_header(10) + b"abc", id="body"),
        pytest.param(frame_header(10)[:2], id="header"),
        pytest.param(frame_header(2**33)[:7], id="long-header"),
        pytest.param(frame_header(OOB_THRESHOLD * 2) + b"x" * 100, id="large-body"),
    ],
)
def test_truncated_stream_is_a_clear_error(pipe, read_ahead, wire):
    r, w = pipe
    os.write(w, wire)
    os.close(w)
    with pytest.raises(TruncatedFrameError, match="end of file during message") as info:
        FrameReader(r, read_ahead=read_ahead).read()
    assert isinstance(info.value, EOFError) and isinstance(info.value, OSError)


# -- out-of-band buffers ------------------------------------------------------------------------


def test_small_buffers_stay_in_band():
    data, buffers = dumps_with_buffers(np.arange(10), what="test")
    assert buffers == []
    assert (pickle.loads(data) == np.arange(10)).all()


def test_large_contiguous_buffers_go_out_of_band_without_a_copy():
    array = np.arange(OOB_THRESHOLD, dtype=np.uint8)
    data, buffers = dumps_with_buffers(array, what="test")
    assert len(buffers) == 1 and np.shares_memory(np.asarray(buffers[0]), array)
    assert (pickle.loads(data, buffers=buffers) == array).all()


def test_non_contiguous_buffers_are_copied_in_band():
    array = np.arange(4 * OOB_THRESHOLD, dtype=np.uint8)[::2]  # raw() raises BufferError
    data, buffers = dumps_with_buffers(array, what="test")
    assert buffers == []
    assert (pickle.loads(data) == array).all()


def test_snapshot_copies_writable_buffers_only():
    writable = np.zeros(OOB_THRESHOLD, dtype=np.uint8)
    readonly = np.zeros(OOB_THRESHOLD, dtype=np.uint8)
    readonly.flags.writeable = False
    _, buffers = dumps_with_buffers([writable, readonly], what="test", snapshot=True)
    writable[:] = 1  # after the call: the message keeps the state at call time
    assert bytes(buffers[0]) == bytes(OOB_THRESHOLD)
    assert isinstance(buffers[0], bytes)  # copied
    assert np.shares_memory(np.asarray(buffers[1]), readonly)  # not copied: it cannot change


def test_out_of_band_is_a_seam_for_other_transports():
    # A transport that keeps large buffers elsewhere overrides take(); nothing else changes.
    class Elsewhere(OutOfBand):
        def take(self, raw):
            self.buffers.append(("stored", raw.nbytes))
            return False

    collector = Elsewhere()
    pickle.dumps(np.zeros(OOB_THRESHOLD, dtype=np.uint8), protocol=5, buffer_callback=collector)
    pickle.dumps(np.zeros(10, dtype=np.uint8), protocol=5, buffer_callback=collector)
    assert collector.buffers == [("stored", OOB_THRESHOLD)]


def test_message_frames_round_trip():
    big = np.arange(OOB_THRESHOLD, dtype=np.int64)
    frames = dump_frames({"a": big, "b": [1, 2]}, what="test")
    assert oob_count(frames[0]) == len(frames) - 1 == 2
    out = load_frames([frames[0], frames[1], bytearray(frames[2])])
    assert (out["a"] == big).all() and out["b"] == [1, 2]
    single = dump_frames({"a": big}, what="test", out_of_band=False)
    assert len(single) == 1 and oob_count(single[0]) is None
    assert (pickle.loads(single[0])["a"] == big).all()  # what a stdlib peer reads


def test_message_frames_through_a_pipe(pipe):
    r, w = pipe
    big = np.arange(3 * OOB_THRESHOLD, dtype=np.uint8)
    frames = dump_frames([big, "small", big[:10]], what="test")
    thread = threading.Thread(target=write_frames, args=(w, frames))
    thread.start()
    reader = FrameReader(r, read_ahead=True)
    first = reader.read()
    got = [first, *(reader.read_buffer() for _ in range(oob_count(first)))]
    thread.join()
    out = load_frames(got)
    assert (out[0] == big).all() and out[1] == "small" and (out[2] == big[:10]).all()
    assert out[0].flags.writeable  # rebuilt on a writable buffer, as the stdlib's arrays are
