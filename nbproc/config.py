"""nbproc's user-facing switches, read at the moment they matter (never copied at import).

Set them as attributes (``nbproc.config.forward_output = False``) or, checked, with
:func:`set` / :func:`settings`. Each module that obeys a switch reads ``config.<name>`` when it
acts, so a change — by the user, or by ``%load_ext nbproc`` — applies to what starts
afterwards. Other layers add their settings here (one place to look); keep each one a plain,
documented module attribute with its default.

``progress`` is what a Pool call does when its ``progress=`` argument is left out:

- ``"off"`` (the default in a plain script: nbproc stays a silent drop-in for the stdlib);
- ``"auto"`` (what ``%load_ext nbproc`` switches on): a bar appears for work still running
  after :data:`progress_after` seconds — a widget in a notebook, a text line on stderr elsewhere;
- ``"on"``: a bar for every call, at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["forward_output", "progress", "progress_after", "progress_interval", "set", "settings", "PROGRESS_MODES"]

#: In a Jupyter kernel, send what nbproc children write to stdout/stderr (``print``,
#: ``os.write(1, ...)``, C extensions, subprocesses) to the notebook cell that started the
#: work (see :mod:`nbproc.jupyter.output`). Read when a child starts: turning it off leaves
#: children started afterwards writing to the inherited file descriptors, as the stdlib's do.
#: Has no effect outside a kernel.
forward_output: bool = True

#: The values :data:`progress` may take.
PROGRESS_MODES = ("off", "auto", "on")

#: The default of ``progress=`` (see the module docstring).
progress: str = "off"
#: In ``"auto"`` mode, how long a call must run before its bar appears. Shorter shows bars
#: for work the user would not wait for (and fills the notebook); longer leaves a user
#: wondering whether a call is stuck. About one second is where people start to wonder.
progress_after: float = 1.0
#: Shortest time between two updates of one bar. A widget update costs a message to the
#: browser; ten per second looks continuous and costs nothing measurable beside the work.
progress_interval: float = 0.1

_UNSET = object()


def set(
    *,
    forward_output: object = _UNSET,
    progress: object = _UNSET,
    progress_after: object = _UNSET,
    progress_interval: object = _UNSET,
) -> None:
    """Change settings; a bad value raises ``ValueError`` and changes nothing."""
    changes: dict[str, object] = {}
    if forward_output is not _UNSET:
        if not isinstance(forward_output, bool):
            raise ValueError(f"nbproc.config.forward_output must be True or False, not {forward_output!r}")
        changes["forward_output"] = forward_output
    if progress is not _UNSET:
        if progress not in PROGRESS_MODES:
            raise ValueError(f"nbproc.config.progress must be one of {PROGRESS_MODES}, not {progress!r}")
        changes["progress"] = progress
    for name, value in (("progress_after", progress_after), ("progress_interval", progress_interval)):
        if value is _UNSET:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"nbproc.config.{name} must be a number >= 0, not {value!r}")
        changes[name] = float(value)
    globals().update(changes)


@contextmanager
def settings(**changes: object) -> Iterator[None]:
    """Change settings for the duration of a ``with`` block (restored even on error)."""
    before = {name: globals()[name] for name in changes}
    set(**changes)
    try:
        yield
    finally:
        globals().update(before)
