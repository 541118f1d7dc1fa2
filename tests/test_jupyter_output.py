"""Worker output in the cell that started the work, through a real ipykernel.

The kernel runs with its own fd capture OFF (as under nbval, or in older kernels): any child
output that reaches a cell then got there through nbproc's forwarding, not through the kernel
capturing inherited descriptors. One test uses a kernel with capture ON and checks that no line
arrives twice. The assertions read the iopub messages themselves (``parent_header.msg_id``), so
output that arrives after its cell finished is seen too (nbclient stops reading at idle).

Kernels are shared per module (about 1-2 s to start); each test leaves no child running.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from tests._kernel_session import KernelSession

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

# Cells that define the workers' functions (in the notebook's __main__, sent by value).
DEFINE = """
import os, subprocess, sys, time
import nbproc

def chatter(tag, partial=True):
    for i in range(3):
        print(f"{tag} out {i}")
        print(f"{tag} err {i}", file=sys.stderr)
    os.write(1, f"{tag} fd-out\\n".encode())
    os.write(2, f"{tag} fd-err\\n".encode())
    subprocess.run([sys.executable, "-c", f"print('{tag} subprocess')"], check=True)
    if partial:
        print(f"{tag} partial", end="")

def whole_lines(tag):
    chatter(tag, partial=False)

def unterminated(x):
    print(f"tail {x}", end="")
    return x

def task(x):
    print(f"task {x} from pid {os.getpid()}")
    return x * x

def late(delay, tag):
    time.sleep(delay)
    print(tag)  # no flush: forwarded children are line-buffered, as in a terminal
    time.sleep(delay)

def flood(n):
    for i in range(n):
        print(i)
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    session = KernelSession(str(tmp_path_factory.mktemp("kernel")), capture_fd_output=False)
    try:
        session.run(DEFINE)
        yield session
    finally:
        session.shutdown()


def lines(text: str) -> list[str]:
    return text.splitlines()


def expected_chatter(tag: str, partial: bool = True) -> tuple[list[str], list[str]]:
    out = [f"{tag} out {i}" for i in range(3)] + [f"{tag} fd-out", f"{tag} subprocess"] + [f"{tag} partial"] * partial
    err = [f"{tag} err {i}" for i in range(3)] + [f"{tag} fd-err"]
    return out, err


def test_process_output_reaches_its_cell(kernel, start_method):
    """print, stderr, os.write on fds 1/2, a subprocess and an unterminated line, all once, in order."""
    tag = f"proc-{start_method}"
    cell = kernel.run(
        f"p = nbproc.get_context({start_method!r}).Process(target=chatter, args=({tag!r},))\n"
        "p.start(); p.join(); print('exitcode', p.exitcode)"
    )
    out, err = expected_chatter(tag)
    assert lines(kernel.text(cell, "stdout")) == [*out[:-1], out[-1] + "exitcode 0"]
    assert lines(kernel.text(cell, "stderr")) == err


def test_pool_output_goes_to_the_submitting_cell(kernel, start_method):
    """A warm worker's output follows the task: the cell that mapped, not the one that made the pool."""
    made = kernel.run(f"pool = nbproc.get_context({start_method!r}).Pool(2)")
    first = kernel.run("print(pool.map(task, range(4), chunksize=1))")
    second = kernel.run("print(pool.apply(task, (10,)), pool.map(whole_lines, ['pool-' + str(i) for i in range(2)]))")
    third = kernel.run("print('result', pool.apply(unterminated, (7,)))")
    kernel.run("pool.close(); pool.join()")
    assert kernel.streams(made) == []
    out = lines(kernel.text(first, "stdout"))
    assert sorted(line.split(" from")[0] for line in out[:-1]) == [f"task {x}" for x in range(4)]
    assert out[-1] == "[0, 1, 4, 9]"
    out2, err2 = kernel.text(second, "stdout"), kernel.text(second, "stderr")
    assert "task 10 from pid" in out2 and "task 0" not in out2
    for tag in ("pool-0", "pool-1"):
        want_out, want_err = expected_chatter(tag, partial=False)
        # Per worker order: each tag's lines appear in order (the two tasks may interleave).
        assert [line for line in lines(out2) if line.startswith(tag)] == want_out, out2
        assert [line for line in lines(err2) if line.startswith(tag)] == want_err, err2
    assert "task" not in err2
    # A task's unterminated line is delivered before its result is returned.
    assert kernel.text(third, "stdout") == "tail 7result 7\n"


def test_late_output_lands_in_the_cell_that_started_it(kernel):
    """A Process printing 2 s after its cell finished, while another cell runs: the old cell gets it
    (at once: the child is still running, and its print() was not flushed by hand)."""
    early = kernel.run("p = nbproc.Process(target=late, args=(2, 'late line')); p.start()")
    running = kernel.start("time.sleep(3.5); print('second cell')")
    kernel.wait_idle(running, 60)
    # Arrived while the second cell ran, from a child still alive (sleeping): not an exit flush.
    assert kernel.text(early, "stdout") == "late line\n"
    kernel.run("p.join()")
    assert kernel.text(early, "stdout") == "late line\n"
    assert kernel.text(running, "stdout") == "second cell\n"
    late_msgs = [m for m in kernel.streams() if "late line" in m["content"]["text"]]
    assert [m["parent_header"]["msg_id"] for m in late_msgs] == [early]


def test_flood_arrives_once_in_order_and_kernel_stays_responsive(kernel):
    """100,000 lines as fast as a worker can print them: every line once, in order, in few messages."""
    n = 100_000
    started = kernel.run(f"p = nbproc.Process(target=flood, args=({n},)); p.start(); t0 = time.monotonic()")
    # The kernel answers another cell while the worker floods its pipe.
    t = time.monotonic()
    kernel.run("print('responsive')", timeout=30)
    responsive_after = time.monotonic() - t
    kernel.run("p.join(); print('flood took', round(time.monotonic() - t0, 2))")
    text = kernel.text(started, "stdout")
    assert text == "".join(f"{i}\n" for i in range(n))
    messages = [m for m in kernel.streams(started) if m["content"]["name"] == "stdout"]
    assert len(messages) < n / 100, len(messages)  # batched, not one message per line
    assert responsive_after < 10, responsive_after


def test_manager_server_output_goes_to_the_cell_that_started_it(kernel):
    """A manager's server process is an nbproc child: what its methods print reaches the notebook
    (routed to the cell that started the manager; a method call carries no cell of its own)."""
    started = kernel.run(
        "from nbproc.managers import BaseManager\n"
        "class Talker:\n"
        "    def say(self, text):\n"
        "        print('server says', text)\n"
        "        return len(text)\n"
        "class TalkManager(BaseManager): pass\n"
        "TalkManager.register('Talker', Talker)\n"
        "manager = TalkManager(ctx=nbproc.get_context('spawn')); manager.start()"
    )
    kernel.run("print(manager.Talker().say('hello'))")
    kernel.wait_for(lambda: "server says hello" in kernel.text(started, "stdout"), 10, "the server's output")
    kernel.run("manager.shutdown()")
    assert kernel.text(started, "stdout") == "server says hello\n"


def test_forwarding_switch(kernel):
    """nbproc.config.forward_output = False: children keep the kernel's descriptors (stdlib behaviour)."""
    cell = kernel.run(
        "nbproc.config.forward_output = False\n"
        "try:\n"
        "    p = nbproc.get_context('spawn').Process(target=chatter, args=('switched-off',)); p.start(); p.join()\n"
        "finally:\n"
        "    nbproc.config.forward_output = True\n"
    )
    # With the kernel's own capture off, nothing of it reaches the notebook: it went to the
    # kernel's terminal, as with the stdlib.
    assert "switched-off" not in kernel.text(cell, "stdout") + kernel.text(cell, "stderr")
    back_on = kernel.run("p = nbproc.get_context('spawn').Process(target=late, args=(0, 'on'))\np.start(); p.join()")
    assert kernel.text(back_on, "stdout") == "on\n"


def test_load_ext(kernel):
    """%load_ext nbproc installs its parts (output: the router, started at once); %unload_ext works."""
    cell = kernel.run(
        textwrap.dedent(
            """
            %load_ext nbproc
            import nbproc.jupyter
            from nbproc.jupyter import output
            print("nbproc.output" in nbproc.jupyter._parts, output.router() is not None)
            %unload_ext nbproc
            """
        )
    )
    assert kernel.text(cell, "stdout") == "True True\n"


def test_no_line_twice_with_kernel_fd_capture_on(tmp_path):
    """The kernel's own fd capture is on (ipykernel's default): each line still arrives exactly once."""
    session = KernelSession(str(tmp_path), capture_fd_output=True)
    try:
        session.run(DEFINE)
        cells = {}
        for method in ("fork", "spawn", "forkserver"):
            cells[method] = session.run(
                f"ctx = nbproc.get_context({method!r})\n"
                f"p = ctx.Process(target=whole_lines, args=('direct-{method}',)); p.start(); p.join()\n"
                "with ctx.Pool(1) as pool:\n"
                f"    pool.map(whole_lines, ['pooled-{method}'])\n"
            )
        time.sleep(0.5)  # ipykernel's capture flushes every 0.2 s: a doubled line would be here by now
        everything = session.text(None, "stdout") + session.text(None, "stderr")
        for method, cell in cells.items():
            for tag in (f"direct-{method}", f"pooled-{method}"):
                want_out, want_err = expected_chatter(tag, partial=False)
                for line in want_out + want_err:
                    assert everything.count(line) == 1, (line, everything)
                got = lines(session.text(cell, "stdout"))
                assert [line for line in got if line.startswith(tag + " ")] == want_out, got
    finally:
        session.shutdown()
