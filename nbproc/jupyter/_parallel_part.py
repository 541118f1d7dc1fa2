"""The ``%load_ext nbproc`` part of this issue: the ``%%parallel`` magic and automatic progress bars.

A *part* is a pair of installers, ``load(ipython)`` and ``unload(ipython)``. Where the package
keeps a registry of parts (``nbproc.jupyter.register_extension_part``), importing this module
registers the pair there; otherwise ``nbproc.jupyter`` calls them itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load", "unload"]

_switched_on = False  # whether load() turned automatic progress on (unload only undoes its own change)


def load(ipython: Any) -> None:
    """Register ``%parallel``/``%%parallel``; turn automatic progress bars on unless the user chose."""
    global _switched_on
    from .. import config
    from .parallel import register

    if config.progress == "off":
        config.set(progress="auto")
        _switched_on = True
    register(ipython)


def unload(ipython: Any) -> None:
    """Stop the warm pool, remove the magic, and undo the progress mode this part set."""
    global _switched_on
    from .. import config
    from .parallel import shutdown_warm_pool

    shutdown_warm_pool()
    magics = getattr(getattr(ipython, "magics_manager", None), "magics", {})
    for kind in ("line", "cell"):
        magics.get(kind, {}).pop("parallel", None)
    if _switched_on and config.progress == "auto":
        config.set(progress="off")
    _switched_on = False


try:
    from . import register_extension_part  # type: ignore[attr-defined]
except ImportError:  # no registry of parts in this package: nbproc.jupyter calls load/unload
    pass
else:
    register_extension_part("nbproc.parallel", load, unload)
