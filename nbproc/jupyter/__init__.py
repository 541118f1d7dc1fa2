"""nbproc's Jupyter layer and ``%load_ext nbproc``.

What works without the extension — and must, since users rarely load one: worker output in the
cell that started the work (:mod:`nbproc.jupyter.output`, found lazily when a child starts in a
running ipykernel). The extension adds what needs IPython's registration APIs (magics, widgets,
configuration), each as one *part*: a pair of functions that install it into an IPython shell
and remove it again. A feature registers its part here when its module is imported::

    register_extension_part("nbproc.magics", load=_register_magics, unload=_unregister_magics)

``load_ipython_extension`` installs the parts in registration order, ``unload_ipython_extension``
removes them in reverse. Importing this package imports neither IPython, ipykernel nor
ipywidgets; a part imports them when it is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension", "register_extension_part"]

_Installer = Callable[[Any], None]

# name -> (load, unload), in registration order; re-registering a name replaces its part.
_parts: dict[str, tuple[_Installer, _Installer]] = {}
# Modules whose import registers a part (imported at load time, so the package stays light).
_PART_MODULES = ("nbproc.jupyter._output_part", "nbproc.jupyter._parallel_part")


def register_extension_part(name: str, load: _Installer, unload: _Installer) -> None:
    """Install ``load(ipython)`` at ``%load_ext nbproc`` and ``unload(ipython)`` at ``%unload_ext``."""
    _parts[name] = (load, unload)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbproc``: install every registered part into ``ipython``."""
    for module in _PART_MODULES:
        importlib.import_module(module)
    for load, _ in list(_parts.values()):
        load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbproc``: remove the parts, last installed first."""
    for _, unload in reversed(list(_parts.values())):
        unload(ipython)
