"""Worker output in the notebook cell that started the work (runs in the kernel process only).

Data flow — who writes what where, on which thread::

    kernel: thread calling start() / creating a Pool job     child (fork | spawn | forkserver)
    ---------------------------------------------------      ----------------------------------
    capture_route(): route key -> kernel.get_parent()        nbproc._output.apply(state), before run():
      (the cell executing now); state -> child      ------->   makes pipes OUT, ERR; sends their read
    note_job(job): job -> kernel.get_parent()                  ends + route key over the datagram
                                                               socket; fds 1, 2 := write ends
                                                             pool worker at each new job: MARK(job)
                         datagram socket (SCM_RIGHTS) <------  print / os.write / C / subprocesses
                                  |                                   | bytes on fds 1 and 2
                                  v                                   v
    kernel: thread "nbproc-output" (Router._run) ----- reads pipes OUT, ERR as soon as readable
      registers the pipes under the route of their cell      (a full pipe would block the worker)
      splits the bytes at MARK(job): later bytes go to the cell that submitted job
      decodes UTF-8, appends whole lines to the pending batch of (cell, stream); a worker's
        unfinished line waits (at most BATCH_INTERVAL) so that two workers' lines never mix
      every BATCH_INTERVAL (or BATCH_BYTES): flushes the kernel's own sys.stdout/stderr (so a
      cell's earlier prints stay first), then session.send(iopub, "stream", parent=cell)
    kernel: thread in a blocking call (get/map/next/join) -> sync(), under the same lock:
      one poll; reads the pipes that have data, sends the batches, returns. If new children
      are waiting on the socket, the reader thread registers them and drains every pipe while
      the caller waits (at most DRAIN_WAIT).

``iopub_socket`` hands each send to the kernel's IOPub thread, so sending from the reader thread
or from a waiting thread is safe, and a message sent before ``execute_reply`` precedes the
cell's ``idle`` status: headless runners (nbclient, nbval, papermill) record it. Output that
arrives after the cell finished still carries that cell's ``parent_header``: JupyterLab,
Notebook 7 and VS Code show it under the old cell; nbclient (nbval, papermill) has stopped
listening by then, so a saved notebook has it only if a blocking call waited for the work.

Routes: a Process (and a manager's server) writes to the cell that started it; a pool
worker to the cell that submitted the job of its current task (before its first task: the
cell that created the pool). A manager method's output goes to the manager's cell, since a
proxy call carries no cell of its own.

The route is captured when work is *submitted* (``Process.start()``, a Pool job's creation),
on the submitting thread, which is the way that works across ipykernel versions (the
thread-parent APIs differ between 6.29, 7.0, 7.1 and 7.3+). For Pool tasks the worker writes a
marker (a random per-kernel token + the job id) into both streams whenever it starts a task of
another job, so a warm worker's output goes to the cell that submitted the task, not the one
that created the pool.

Not in scope here: the kernel's own output (ipykernel's OutStream) and its fd capture, which
the children no longer write into, so nothing is shown twice.
"""

from __future__ import annotations

import atexit
import codecs
import itertools
import os
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from time import monotonic
from typing import Any

from .. import _output

__all__ = ["Router", "router", "capture_route", "running_kernel", "current_parent", "send_stream", "sync"]

# Output is sent at most this long after it was read: often enough to feel live, rarely enough
# that a chatty worker costs a few iopub messages per second, not one per line.
BATCH_INTERVAL = 0.05
# ... or as soon as this much text is pending, so one message stays small for the front end.
BATCH_BYTES = 256 * 1024
# One read from a pipe: a Linux pipe holds 64 KiB, so one read usually empties it.
READ_SIZE = 64 * 1024
# After reading output the reader waits this long before looking again, so that a chatty
# worker's writes land in a pipe nobody sleeps on (waking a sleeping reader costs the writer
# several times its write) and one read takes many lines. Costs 2 ms of latency; a 64 KiB
# pipe only fills during it at over 30 MB/s.
COALESCE = 0.002
# A sync() reads a pipe at most this much: more than any pipe buffers, so everything written
# before the call is taken, while a worker that keeps writing cannot hold the caller forever.
SYNC_READ_LIMIT = 4 * 1024 * 1024
# Routes (cells of started children, of Pool jobs) remembered. Older keys fall back to the most
# recent cell: bounded memory for kernels that submit millions of jobs, at the price of
# misrouting output of a job whose tasks start after this many newer jobs were created.
MAX_ROUTES = 16384
# How long sync() waits for the reader thread to drain (it may wait on the kernel's IOPub
# thread): long enough for a loaded machine, short enough that a stuck kernel cannot hang a
# blocking call — the output then arrives later, to the same cell.
DRAIN_WAIT = 5.0
# After an unexpected error the reader pauses this long before going on: no busy loop on a
# persistent fault, short enough that writing children barely notice.
ERROR_PAUSE = 0.1
# Datagram receive buffer: one registration is REGISTRATION.size bytes.
_DGRAM_SIZE = 64

_Parent = dict


def running_kernel() -> Any:
    """The ipykernel kernel running in *this* process, or ``None``.

    Found through ``sys.modules`` (never imported here): a plain ``python`` or a worker has no
    ipykernel loaded, and a process forked from a kernel has the app object but not its threads,
    which the pid stored by the kernel's session reveals.
    """
    app_module = sys.modules.get("ipykernel.kernelapp")
    if app_module is None:
        return None
    app_class = getattr(app_module, "IPKernelApp", None)
    if app_class is None or not app_class.initialized():
        return None
    kernel = getattr(app_class.instance(), "kernel", None)
    session = getattr(kernel, "session", None)
    if session is None or getattr(kernel, "iopub_socket", None) is None:
        return None
    if getattr(session, "pid", os.getpid()) != os.getpid():
        return None
    io_thread = getattr(getattr(kernel, "iopub_thread", None), "thread", None)
    if io_thread is not None and not io_thread.is_alive():  # a forked copy: no IOPub thread here
        return None
    return kernel


def _parent_of(kernel: Any) -> _Parent:
    """The shell request being handled (ipykernel >= 6; 7.x falls back to the latest on threads)."""
    return kernel.get_parent("shell") or {}


class _Stream:
    """One pipe of one child: where its bytes currently go, and what is held back for the next read."""

    __slots__ = ("fd", "name", "pid", "route", "decoder", "held", "partial", "partial_since", "eof", "registered")

    def __init__(self, fd: int, name: str, pid: int, route: _Parent) -> None:
        self.fd = fd
        self.name = name  # "stdout" | "stderr": the stream message's name
        self.pid = pid
        self.route = route
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = b""  # the start of a marker split across reads
        self.partial = ""  # text after the last newline, kept back so lines of workers do not mix
        self.partial_since = 0.0
        self.eof = False
        self.registered = False


class Router:
    """Reads every forwarded child's pipes and sends their text to the right cell on iopub."""

    def __init__(self, kernel: Any) -> None:
        self.pid = os.getpid()
        self._kernel = kernel
        self._topics = {name: f"stream.{name}".encode() for name in ("stdout", "stderr")}
        self.token = b"\x00\x1bnbproc-mark:" + os.urandom(8)
        self._mark_size = len(self.token) + _output.MARK_JOB.size
        # A private directory (mode 0700) keeps other users from sending us descriptors.
        self._dir = tempfile.mkdtemp(prefix="nbproc-out-")
        self.address = os.path.join(self._dir, "router")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()  # streams, pending batches; held by the reader or a sync()
        self._drained = threading.Condition(self._lock)  # the reader finished a drain a sync() asked for
        self._drain_requested = False
        self._coalesce = False  # the last step read output: let more gather before the next read
        self._routes_lock = threading.Lock()  # the route tables, written by submitting threads
        self._route_keys = itertools.count(1)
        self._process_routes: OrderedDict[int, _Parent] = OrderedDict()
        self._job_routes: OrderedDict[int, _Parent] = OrderedDict()
        self._latest: _Parent = {}
        self._streams: dict[int, _Stream] = {}
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._pending_parents: dict[str, _Parent] = {}
        self._pending_bytes = 0
        self._deadline = 0.0
        self._closed = False
        self._send_failed = False  # reported once
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # sync()'s view of the same descriptors (a selector is not shared between threads).
        self._probe = selectors.DefaultSelector()
        self._probe.register(self._sock, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="nbproc-output", daemon=True)
        self._thread.start()

    # -- submitting threads ----------------------------------------------------------------
    def current_parent(self) -> _Parent:
        """The request (cell) executing now; the latest one seen if the kernel reports none."""
        parent = _parent_of(self._kernel)
        if parent.get("header"):
            self._latest = parent
            return parent
        return self._latest

    def _remember(self, table: OrderedDict[int, _Parent], key: int, parent: _Parent) -> None:
        with self._routes_lock:
            table[key] = parent
            if len(table) > MAX_ROUTES:
                table.popitem(last=False)

    def capture_route(self) -> _output.ForwardState:
        key = next(self._route_keys)
        self._remember(self._process_routes, key, self.current_parent())
        return _output.ForwardState(self.address, key, self.token)

    def note_job(self, job: int) -> None:
        self._remember(self._job_routes, job, self.current_parent())

    def send_stream(self, name: str, text: str, parent: _Parent | None) -> None:
        """Queue ``text`` for a cell's stream ``name``, in order with the workers' output."""
        stream = _Stream(-1, name, os.getpid(), parent if parent is not None else self.current_parent())
        with self._lock:
            self._add(stream, text)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # already awake

    def sync(self) -> None:
        """Send everything the children have written so far; returns when it is on iopub.

        Runs on the caller's thread while only known pipes have data (one poll, then reads:
        cheap enough for every ``imap`` result). When children have registered meanwhile, the
        reader thread takes them in and drains everything while the caller waits: it is never
        interrupted, so a KeyboardInterrupt in the caller cannot lose a child's pipe (whose
        writer would then block forever on a full pipe); at worst it loses some text. The wait
        is bounded by ``DRAIN_WAIT``.
        """
        if self._closed or self.pid != os.getpid():
            return
        ended = False
        with self._lock:
            ready = self._probe.select(0)
            if any(key.data is None for key, _ in ready):
                self._drain_by_reader()
                return
            for key, _ in ready:
                if not key.data.eof:
                    self._read(key.data, SYNC_READ_LIMIT)
                    ended = ended or key.data.eof
            for stream in self._streams.values():
                self._release_partial(stream)
            self._send_pending()
        if ended:  # the reader thread owns its selector: it closes ended pipes
            self._wake()

    def _drain_by_reader(self) -> None:
        """Lock held: have the reader thread register new children and drain every pipe."""
        self._drain_requested = True
        self._wake()
        deadline = monotonic() + DRAIN_WAIT
        while self._drain_requested and self._thread.is_alive():
            left = deadline - monotonic()
            if left <= 0:
                return  # a stuck kernel (IOPub thread): the output comes later rather than never
            self._drained.wait(left)

    def _drain_all(self) -> None:
        """Reader thread, lock held: everything written so far goes out now."""
        self._take_registrations()
        for stream in self._streams.values():
            if not stream.eof:
                self._read(stream, SYNC_READ_LIMIT)
            self._release_partial(stream)
        self._send_pending()
        self._drain_requested = False
        self._drained.notify_all()

    # -- reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        partial_due: float | None = None
        failed = False
        while not self._closed:
            try:
                partial_due = self._step(partial_due)
            except Exception:  # noqa: BLE001 - keep draining: a router that stops would block every child
                if not failed:  # said once; a persistent fault must not flood the terminal
                    failed = True
                    import traceback

                    print("nbproc: error in the output router (output may be lost):", file=sys.__stderr__)
                    traceback.print_exc(file=sys.__stderr__)
                time.sleep(ERROR_PAUSE)

    def _step(self, partial_due: float | None) -> float | None:
        """Wait for data or a deadline, read what is ready, send what is due; the next partial-line deadline."""
        if self._coalesce:
            time.sleep(COALESCE)
        due = [t for t in (self._deadline if self._pending else None, partial_due) if t is not None]
        ready = self._selector.select(max(min(due) - monotonic(), 0.0) if due else None)
        self._coalesce = False
        with self._lock:
            for key, _ in ready:
                if key.fileobj is self._sock:
                    self._take_registrations()
                elif key.fd == self._wake_r:
                    self._drain_wake()
                else:
                    stream = key.data
                    if not stream.eof:
                        self._read(stream, READ_SIZE)
                        self._coalesce = True
            if self._drain_requested:
                self._drain_all()
            self._maintain_selector()
            partial_due = self._release_old_partials(monotonic())
            if self._pending and (monotonic() >= self._deadline or self._pending_bytes >= BATCH_BYTES):
                self._send_pending()
        return partial_due

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _maintain_selector(self) -> None:
        """Register new pipes, forget ended ones (reader thread only: the selector is not shared)."""
        for stream in list(self._streams.values()):
            if stream.eof:
                if stream.registered:
                    self._selector.unregister(stream.fd)
                self._probe.unregister(stream.fd)
                os.close(stream.fd)
                del self._streams[stream.fd]
            elif not stream.registered:
                self._selector.register(stream.fd, selectors.EVENT_READ, stream)
                stream.registered = True

    # -- both (lock held) --------------------------------------------------------------------
    def _take_registrations(self) -> bool:
        """Receive every child's pipes waiting on the socket; True if there were any."""
        got = False
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(self._sock, _DGRAM_SIZE, 2)
            except (BlockingIOError, InterruptedError):
                return got
            if len(fds) != 2 or len(message) != _output.REGISTRATION.size:
                for fd in fds:
                    os.close(fd)
                continue
            route_key, pid = _output.REGISTRATION.unpack(message)
            with self._routes_lock:
                route = self._process_routes.pop(route_key, None) or self._latest
            for fd, name in zip(fds, ("stdout", "stderr"), strict=True):
                os.set_blocking(fd, False)
                stream = self._streams[fd] = _Stream(fd, name, pid, route)
                self._probe.register(fd, selectors.EVENT_READ, stream)
            got = True

    def _read(self, stream: _Stream, limit: int) -> None:
        taken = 0
        while taken < limit:
            try:
                data = os.read(stream.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:  # EIO, EBADF...: nothing more will come from this pipe
                data = b""
            if not data:
                self._end(stream)
                return
            taken += len(data)
            self._feed(stream, data)
            if len(data) < READ_SIZE:
                return  # the pipe is (most likely) empty: the selector says when there is more

    def _feed(self, stream: _Stream, data: bytes) -> None:
        """Split ``data`` at job markers; each piece goes to the route in force where it was written."""
        if stream.held:
            data, stream.held = stream.held + data, b""
        token, size = self.token, self._mark_size
        while True:
            at = data.find(token)
            if at < 0:
                break
            if len(data) - at < size:  # the job id has not arrived yet
                stream.held = data[at:]
                data = data[:at]
                break
            self._emit(stream, data[:at])
            self._release_partial(stream)  # the worker flushed before the marker: it was the old job's
            (job,) = _output.MARK_JOB.unpack_from(data, at + len(token))
            with self._routes_lock:
                stream.route = self._job_routes.get(job) or stream.route
            data = data[at + size :]
        if not stream.held:  # the tail may be the beginning of a marker split across two reads
            at = data.find(token[:1], max(len(data) - len(token) + 1, 0))
            while at >= 0:
                if token.startswith(data[at:]):
                    stream.held, data = data[at:], data[:at]
                    break
                at = data.find(token[:1], at + 1)
        self._emit(stream, data)

    def _emit(self, stream: _Stream, data: bytes, final: bool = False) -> None:
        """Decode; whole lines join the pending batch, an unfinished line waits for its end.

        Several workers usually print into one cell: batching whole lines keeps their lines
        intact. An unfinished line is released anyway after ``BATCH_INTERVAL`` (a progress
        line written piecewise), at a job marker, at end of file and by :meth:`sync`.
        """
        text = stream.decoder.decode(data, final)
        if not text:
            return
        cut = text.rfind("\n") + 1
        if not cut:
            if not stream.partial:
                stream.partial_since = monotonic()
            stream.partial += text
            return
        whole, rest = stream.partial + text[:cut], text[cut:]
        stream.partial = rest
        if rest:
            stream.partial_since = monotonic()
        self._add(stream, whole)

    def _release_partial(self, stream: _Stream) -> None:
        if stream.partial:
            text, stream.partial = stream.partial, ""
            self._add(stream, text)

    def _release_old_partials(self, now: float) -> float | None:
        """Release unfinished lines older than BATCH_INTERVAL; when the next one falls due."""
        due = None
        for stream in self._streams.values():
            if stream.partial:
                at = stream.partial_since + BATCH_INTERVAL
                if at <= now:
                    self._release_partial(stream)
                elif due is None or at < due:
                    due = at
        return due

    def _add(self, stream: _Stream, text: str) -> None:
        parent = stream.route
        msg_id = parent.get("header", {}).get("msg_id", "")
        key = (msg_id, stream.name)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = []
            self._pending_parents[msg_id] = parent
        if not self._pending_bytes:
            self._deadline = monotonic() + BATCH_INTERVAL
        batch.append(text)
        self._pending_bytes += len(text)

    def _end(self, stream: _Stream) -> None:
        """End of file: every process holding this pipe's write end has exited (or closed it)."""
        held, stream.held = stream.held, b""
        self._emit(stream, held, final=True)
        self._release_partial(stream)
        stream.eof = True

    def _send_pending(self) -> None:
        if not self._pending:
            return
        pending, parents = self._pending, self._pending_parents
        self._pending, self._pending_parents, self._pending_bytes = {}, {}, 0
        # The cell's own earlier prints sit in ipykernel's buffer (flushed every 0.2 s): send
        # them first, so a cell's output reads in the order it happened.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a broken sys.stdout must not stop forwarding
                pass
        session, iopub = self._kernel.session, self._kernel.iopub_socket
        for (msg_id, name), texts in pending.items():
            try:
                session.send(
                    iopub,
                    "stream",
                    {"name": name, "text": "".join(texts)},
                    parent=parents[msg_id],
                    ident=self._topics[name],
                )
            except Exception as exc:  # noqa: BLE001 - e.g. the kernel is shutting down: drop, keep draining
                if not self._send_failed:
                    self._send_failed = True
                    print(f"nbproc: worker output could not be sent to the notebook: {exc!r}", file=sys.__stderr__)

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading (at interpreter exit); children still running keep writing into pipes
        nobody reads, as they would into a closed terminal."""
        if self._closed:
            return
        self._closed = True
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)
        shutil.rmtree(self._dir, ignore_errors=True)
        if not self._thread.is_alive():
            with self._lock:
                for stream in self._streams.values():
                    os.close(stream.fd)
                self._streams.clear()
                self._selector.close()
                self._probe.close()
                self._sock.close()
                os.close(self._wake_r)
                os.close(self._wake_w)


_router: Router | None = None
_router_lock = threading.Lock()
_router_failed_pid: int | None = None


def router() -> Router | None:
    """This kernel's router, started on first use; ``None`` outside a running kernel.

    If it cannot start (no writable temporary directory, no Unix sockets), that is said once
    as a warning and children keep the inherited descriptors: ``start()`` never fails for it.
    """
    global _router, _router_failed_pid
    current = _router
    if current is not None and current.pid == os.getpid():
        return current
    with _router_lock:
        if _router is None or _router.pid != os.getpid():
            if _router_failed_pid == os.getpid():
                return None
            kernel = running_kernel()
            if kernel is None:
                return None
            try:
                _router = Router(kernel)
            except OSError as exc:
                import warnings

                _router_failed_pid = os.getpid()
                warnings.warn(f"nbproc: worker output will not be forwarded to the notebook: {exc}", stacklevel=2)
                return None
            _output.set_router(_router)
            atexit.register(_router.close)
        return _router


def capture_route() -> _output.ForwardState | None:
    """The set-up hook's parent half: route the child being started to the current cell."""
    current = router()
    return None if current is None else current.capture_route()


def current_parent() -> _Parent | None:
    """The parent message of the cell executing now (for callers that route their own output)."""
    current = router()
    return None if current is None else current.current_parent()


def send_stream(name: str, text: str, parent: _Parent | None = None) -> bool:
    """Show ``text`` on stream ``name`` ("stdout"/"stderr") of a cell (default: the current one),
    in order with worker output (e.g. a header before a worker's lines). False outside a kernel."""
    current = router()
    if current is None:
        return False
    current.send_stream(name, text, parent)
    return True


def sync() -> None:
    """Deliver all output the children have written so far (see :meth:`Router.sync`)."""
    _output.sync()
