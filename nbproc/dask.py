"""``nbproc.dask.Pool``: nbproc's Pool API on a Dask distributed cluster.

When a notebook outgrows one machine, the code stays the same; only the constructor changes::

    import nbproc.dask

    with nbproc.dask.Pool(address="tcp://scheduler:8786") as pool:   # an existing cluster
        results = pool.map(f, items)                                   # f may be defined in a cell

    nbproc.dask.Pool(client=client)   # a distributed.Client you already have (left open)
    nbproc.dask.Pool(4)               # no cluster: a LocalCluster of 4 one-thread worker
                                      # processes is started, owned and closed by the pool

Everything else is :class:`nbproc.pool.Pool`: ``map``, ``map_async``, ``imap``,
``imap_unordered``, ``starmap(_async)``, ``apply(_async)``, callbacks (on the pool's collector
thread), ``AsyncResult``, ``close``/``terminate``/``join``, the context manager and progress
listeners — the same facade over a different engine (:mod:`nbproc._dask_core`, whose
docstring draws the data flow and lists what happens when things fail).

Differences from a local Pool, because a cluster is not a set of our own processes:

- ``processes`` is the number of parallel task slots used for chunking and for how many
  tasks are in flight; with a cluster given it defaults to the cluster's worker threads.
- ``maxtasksperchild`` and ``context`` do not exist: Dask owns its workers' lifetimes; nor
  does ``task_timeout`` (a call given one raises ``ValueError``): Dask cannot stop a task
  that is running in a worker thread.
- ``initializer(*initargs)`` runs once in each worker process that runs a task of the pool,
  before its first task (workers joining later run it too).
- ``terminate()`` and KeyboardInterrupt cancel the futures; a task already running in a Dask
  worker thread cannot be interrupted and runs to its end, its result dropped.
- A dead worker's tasks are re-run by Dask; after Dask's ``allowed-failures`` a task fails
  with :class:`nbproc.WorkerLostError` (``__cause__``: Dask's ``KilledWorker``).
- ``imap``/``imap_unordered`` over an iterable without ``len()`` default to a bounded
  ``buffersize`` (:data:`IMAP_BUFFER_PER_SLOT` per slot): a generator is read as results are
  consumed, so memory stays bounded; pass ``buffersize`` to choose another bound.
- Worker output: ``print``/``sys.stdout``/``sys.stderr`` of a task reach the cell (or the
  caller's stdout) when the task's result arrives; writes to file descriptors 1/2 from C
  code or subprocesses stay in the Dask worker's log.

The workers need nbproc (and the libraries the tasks use) installed; the functions themselves
travel by value through :mod:`nbproc.serialization`. Importing :mod:`nbproc` never imports
Dask; importing this module does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import pool as _pool
from ._dask_core import DaskCore
from ._pool_engine import PoolEngine

__all__ = ["Pool", "IMAP_BUFFER_PER_SLOT"]

#: Unconsumed ``imap`` tasks per slot over an unsized iterable: enough to keep every worker
#: thread busy while the consumer catches up, few enough that an endless generator stays small.
IMAP_BUFFER_PER_SLOT = 8


def _connect(client: Any, address: str | None, processes: int | None, cluster_options: dict) -> tuple[Any, list]:
    """The Client to use and what of it we own (and must close)."""
    from distributed import Client, LocalCluster

    if client is not None:
        if address is not None:
            raise ValueError("give either client= or address=, not both")
        return client, []
    if address is not None:
        own_client = Client(address, set_as_default=False)
        return own_client, [own_client]
    # The dashboard on any free port: Dask's default (8787, else a warning printed into the
    # user's cell) collides with any other cluster on the machine.
    options = {"processes": True, "dashboard_address": ":0", "threads_per_worker": 1, **cluster_options}
    options.setdefault("n_workers", processes or _pool._cpu_count())
    cluster = LocalCluster(**options)
    try:
        own_client = Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    return own_client, [own_client, cluster]


class Pool(_pool.Pool):
    """nbproc's Pool on a Dask cluster: ``Pool(processes=None, initializer=None, initargs=(), *,
    client=None, address=None, cluster_options=None)`` — see the module docstring.

    ``cluster_options`` are passed to ``distributed.LocalCluster`` when the pool starts its own
    (``n_workers`` defaults to ``processes``, ``threads_per_worker`` to 1, no dashboard).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        *,
        client: Any = None,
        address: str | None = None,
        cluster_options: dict[str, Any] | None = None,
    ) -> None:
        self._core = None
        _pool._check_pool_arguments(1 if processes is None else processes, initializer, None)  # before connecting
        self._client, self._owned = _connect(client, address, processes, dict(cluster_options or {}))
        try:
            if processes is None:
                processes = sum(self._client.nthreads().values()) or 1
            super().__init__(processes, initializer, initargs)
        except BaseException:
            for resource in self._owned:
                resource.close()
            raise

    def _make_core(
        self, processes: int, initializer: Any, initargs: tuple, maxtasks: int | None, context: Any
    ) -> PoolEngine:
        return DaskCore(self._client, self._owned, processes, initializer, initargs, self._name)

    def _timeout_for(self, task_timeout: Any) -> None:
        """``task_timeout=`` of a call: refused here, because Dask cannot stop a task that runs.

        (A local pool kills the worker running a late task; a Dask worker thread cannot be
        stopped, so a "timed out" task would go on occupying it unseen.)
        """
        if task_timeout is not None and task_timeout is not getattr(_pool, "POOL_DEFAULT", None):
            raise ValueError("task_timeout is not available on a Dask cluster: Dask cannot stop a running task")

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the pool submits through."""
        return self._client

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1, **options: Any) -> Any:
        """:meth:`nbproc.pool.Pool.imap`; a bounded ``buffersize`` by default over an unsized iterable."""
        return super().imap(func, iterable, chunksize, **self._bounded(iterable, options))

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any], chunksize: int = 1, **options: Any
    ) -> Any:
        """:meth:`nbproc.pool.Pool.imap_unordered`; bounded as :meth:`imap`."""
        return super().imap_unordered(func, iterable, chunksize, **self._bounded(iterable, options))

    def _bounded(self, iterable: Any, options: dict[str, Any]) -> dict[str, Any]:
        if options.get("buffersize") is None and not hasattr(iterable, "__len__"):
            options["buffersize"] = self._processes * IMAP_BUFFER_PER_SLOT
        return options
