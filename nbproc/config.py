"""nbproc's user-facing switches, read at the moment they matter (never copied at import).

Set them as attributes: ``nbproc.config.forward_output = False``. Each module that obeys a
switch reads ``config.<name>`` when it acts, so a change applies to what starts afterwards.
Other layers add their settings here (one place to look); keep each one a plain, documented
module attribute with its default.
"""

from __future__ import annotations

__all__ = ["forward_output"]

#: In a Jupyter kernel, send what nbproc children write to stdout/stderr (``print``,
#: ``os.write(1, ...)``, C extensions, subprocesses) to the notebook cell that started the
#: work (see :mod:`nbproc.jupyter.output`). Read when a child starts: turning it off leaves
#: children started afterwards writing to the inherited file descriptors, as the stdlib's do.
#: Has no effect outside a kernel.
forward_output: bool = True
