"""What changes in a child started from a Jupyter kernel: cell tracebacks and quiet interrupts.

A child set-up hook (:func:`nbproc.process.register_setup_hook`, name ``"nbproc.notebook"``).
Outside a kernel ``capture`` returns ``None`` and nothing here runs: a script's children behave
exactly as the stdlib's. From a kernel (detected from ``sys.modules``; IPython is never
imported)::

    kernel, thread calling start()                 child, before run()
    ------------------------------                 -------------------
    capture(): the kernel's cell "files"   ---->   apply(): cells into linecache, labels into
      (linecache lines) and their labels             nbproc.remote_error; run() wrapped:
      ("Cell In[N]") from the shell's compiler       - an exception from run() is printed as
                                                       "Process Name:" + the traceback rendered
                                                       with cell labels and source (the stdlib
                                                       prints it flattened, without cell lines);
                                                       exit code 1 as in the stdlib
                                                     - KeyboardInterrupt (the kernel interrupt
                                                       reaches the whole process group) ends
                                                       the child with exit code 1 and no
                                                       traceback; later SIGINTs are ignored so
                                                       the exit's clean-up is not interrupted

The cells shipped are those the kernel has run when the child starts: a Process's target is
defined by then. Pool workers live longer, but their errors are rendered by the kernel itself
(:mod:`nbproc.remote_error`), which always knows every cell. Known gap: a spawn child
interrupted during its first ~50 ms (interpreter start, before ``apply``) still prints the
stdlib's KeyboardInterrupt traceback.
"""

from __future__ import annotations

import signal
import sys
from collections import namedtuple
from collections.abc import Callable
from multiprocessing.process import current_process

#: True in a child started from a kernel (after ``apply``).
in_notebook_child = False


# A named tuple, not a dataclass: ``import nbproc`` loads this module (dataclasses: ~4 ms).
# Fields:
# labels: dict[str, str]  # cell filename -> "Cell In[N]"
# sources: dict[str, list[str]]  # cell filename -> its lines, as in the kernel's linecache
_NotebookState = namedtuple("_NotebookState", "labels sources")


def capture(start_method: str) -> _NotebookState | None:
    import linecache

    from . import remote_error  # loaded when used: it imports dataclasses, multiprocessing.pool

    labels = remote_error._cell_labels() if remote_error._kernel_shell() is not None else {}
    if not labels:
        return None
    sources = {}
    for name in labels:
        entry = linecache.cache.get(name)
        if entry is not None:
            sources[name] = list(entry[2])
    return _NotebookState(labels, sources)


def apply(state: _NotebookState) -> None:
    import linecache

    from . import remote_error  # loaded when used: it imports dataclasses, multiprocessing.pool

    global in_notebook_child
    in_notebook_child = True
    for name, lines in state.sources.items():
        # mtime None: linecache.checkcache() keeps entries that have no file on disk
        linecache.cache.setdefault(name, (sum(map(len, lines)), None, lines, name))
    remote_error._shipped_labels.update(state.labels)
    process = current_process()
    process.run = _reporting_run(process.run, process.name)  # type: ignore[method-assign]


def _reporting_run(run: Callable[[], None], name: str) -> Callable[[], None]:
    from . import remote_error  # loaded when used: it imports dataclasses, multiprocessing.pool

    def run_in_notebook_child() -> None:
        try:
            run()
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise SystemExit(1) from None
        except Exception as exc:
            sys.stderr.write(f"Process {name}:\n{remote_error.capture(exc).render()}")
            sys.stderr.flush()
            raise SystemExit(1) from None

    return run_in_notebook_child
