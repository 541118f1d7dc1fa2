"""Output forwarding outside a kernel (nothing changes) and the router's stream splitting.

The behaviour in a notebook is tested through a real kernel in ``test_jupyter_output.py``.
Here: outside a kernel a child writes to the inherited descriptors exactly as the stdlib's
children do, and the router's parsing of a child's byte stream (job markers split across
reads at any byte, unfinished lines, UTF-8 split across reads) is checked piece by piece with
a recording stand-in for the kernel's session.
"""

from __future__ import annotations

import os
import sys

import pytest

import nbproc
from nbproc import _output
from nbproc.jupyter import output


def write_everything(tag):
    print(f"{tag} print")
    print(f"{tag} stderr", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, f"{tag} fd1\n".encode())
    os.write(2, f"{tag} fd2\n".encode())


def test_outside_a_kernel_children_write_to_inherited_fds(ctx, capfd):
    assert _output.capture(ctx.get_start_method()) is None
    p = ctx.Process(target=write_everything, args=("plain",))
    p.start()
    p.join()
    assert p.exitcode == 0
    out, err = capfd.readouterr()
    assert "plain print\n" in out and "plain fd1\n" in out
    assert "plain stderr\n" in err and "plain fd2\n" in err


def test_pool_task_hooks_do_nothing_outside_a_kernel(ctx, capfd):
    with ctx.Pool(1) as pool:
        assert pool.map(len, ["ab", "c"]) == [2, 1]
        pool.apply(write_everything, ("pooled",))
    out, err = capfd.readouterr()
    assert "\x00" not in out + err  # no job marker leaked into a real stdout
    assert "pooled fd1\n" in out and "pooled fd2\n" in err


class RecordingSession:
    def __init__(self):
        self.sent = []

    def send(self, socket, msg_type, content, parent, ident):
        self.sent.append((parent["header"]["msg_id"], content["name"], content["text"]))


class FakeKernel:
    """Just what the router uses: the current parent, a session and an iopub socket."""

    def __init__(self):
        self.session = RecordingSession()
        self.iopub_socket = object()
        self.parent = {"header": {"msg_id": "cell-0"}}

    def get_parent(self, channel=None):
        return self.parent


@pytest.fixture
def router():
    kernel = FakeKernel()
    r = output.Router(kernel)
    yield r, kernel
    r.close()


def cell(msg_id):
    return {"header": {"msg_id": msg_id}}


def test_markers_split_anywhere_route_the_bytes_after_them(router):
    r, kernel = router
    kernel.parent = cell("cell-a")
    r.note_job(41)
    kernel.parent = cell("cell-b")
    r.note_job(42)
    mark = lambda job: r.token + _output.MARK_JOB.pack(job)  # noqa: E731
    data = "é before\n".encode() + mark(41) + b"job 41 line\n" + mark(42) + "job 42 ü\nno end".encode()
    for cut in range(1, len(data)):
        kernel.session.sent.clear()
        stream = output._Stream(-1, "stdout", 1, cell("start"))
        with r._lock:
            r._feed(stream, data[:cut])
            r._feed(stream, data[cut:])
            r._release_partial(stream)
            r._send_pending()
        assert kernel.session.sent == [
            ("start", "stdout", "é before\n"),
            ("cell-a", "stdout", "job 41 line\n"),
            ("cell-b", "stdout", "job 42 ü\nno end"),
        ], cut


def test_unfinished_lines_of_two_workers_do_not_mix(router):
    r, kernel = router
    one = output._Stream(-1, "stdout", 1, cell("c"))
    two = output._Stream(-2, "stdout", 2, cell("c"))
    with r._lock:
        r._feed(one, b"worker one ")
        r._feed(two, b"worker two\n")
        r._feed(one, b"done\n")
        r._send_pending()
    assert "".join(text for _, _, text in kernel.session.sent) == "worker two\nworker one done\n"


def test_unknown_job_keeps_the_current_route(router):
    r, kernel = router
    stream = output._Stream(-1, "stderr", 1, cell("mine"))
    with r._lock:
        r._feed(stream, r.token + _output.MARK_JOB.pack(10**9) + b"still mine\n")
        r._send_pending()
    assert kernel.session.sent == [("mine", "stderr", "still mine\n")]


def test_capture_obeys_the_switch(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or type(sys)("ipykernel"))
    calls = []
    monkeypatch.setattr(output, "capture_route", lambda: calls.append(1) or "state")
    monkeypatch.setattr(nbproc.config, "forward_output", False)
    assert _output.capture("spawn") is None
    monkeypatch.setattr(nbproc.config, "forward_output", True)
    assert _output.capture("spawn") == "state"
    assert calls == [1]


def test_send_stream_is_ordered_with_worker_output(router):
    r, kernel = router
    stream = output._Stream(-1, "stdout", 1, cell("c"))
    with r._lock:
        r._feed(stream, b"worker line\n")
    r.send_stream("stdout", "header\n", cell("c"))
    r.sync()
    assert kernel.session.sent == [("c", "stdout", "worker line\nheader\n")]


def test_the_jupyter_layer_imports_nothing_heavy():
    """nbproc.jupyter and its output router import neither IPython, ipykernel nor ipywidgets."""
    import subprocess

    probe = (
        "import sys, nbproc, nbproc.jupyter, nbproc.jupyter.output; "
        "print([m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel', 'ipywidgets')])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def forwarding(monkeypatch, router):
    """This test process acts as a kernel: children register with a router on a recording session."""
    r, kernel = router
    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or type(sys)("ipykernel"))
    monkeypatch.setattr(output, "capture_route", r.capture_route)
    monkeypatch.setattr(_output, "_router", r)
    return r, kernel


def shout(text):
    print(text)
    return text


def point_stdout_at(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.stdout.flush()
    os.dup2(fd, 1)
    os.close(fd)


def received(kernel, name="stdout"):
    return [(msg_id, text) for msg_id, stream, text in kernel.session.sent if stream == name]


# The router's thread runs in this process, as it does in a kernel (where fork warns the same way).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_pool_routes_follow_jobs_and_markers_stay_out_of_files(ctx, forwarding, tmp_path):
    """End to end without a kernel, under each start method: the pool is made in cell A, tasks
    are submitted from B and C; a task that points fd 1 at a file gets no marker in it."""
    r, kernel = forwarding
    kernel.parent = cell("A")
    pool = ctx.Pool(1)
    try:
        kernel.parent = cell("B")
        assert pool.map(shout, ["b1", "b2"], chunksize=1) == ["b1", "b2"]
        kernel.parent = cell("C")
        pool.apply(shout, ("c1",))
        pool.apply(point_stdout_at, (str(tmp_path / "out"),))
        kernel.parent = cell("D")
        pool.apply(shout, ("into the file",))
    finally:
        pool.terminate()
    assert received(kernel) == [("B", "b1\nb2\n"), ("C", "c1\n")]
    assert (tmp_path / "out").read_bytes() == b"into the file\n"


def register_fake_child(r, route_key):
    """What nbproc._output.apply does in a child, done here: the write ends of two new pipes."""
    import socket

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(r.address)
        socket.send_fds(sock, [_output.REGISTRATION.pack(route_key, os.getpid())], [out_r, err_r])
    os.close(out_r)
    os.close(err_r)
    return out_w, err_w


def test_sync_delivers_output_of_children_that_just_registered(router):
    """Whether the reader thread or sync() sees a new child first, sync() returns after its output went out."""
    r, kernel = router
    for i in range(20):
        kernel.parent = cell(f"cell-{i}")
        state = r.capture_route()
        out_w, err_w = register_fake_child(r, state.route)
        os.write(out_w, f"child {i}\n".encode())
        os.write(err_w, b"partial")
        os.close(out_w)
        r.sync()
        assert (f"cell-{i}", "stdout", f"child {i}\n") in kernel.session.sent, i
        assert (f"cell-{i}", "stderr", "partial") in kernel.session.sent, i
        os.close(err_w)
