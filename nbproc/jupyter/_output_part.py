"""The output-forwarding part of ``%load_ext nbproc``.

Forwarding does not need the extension (it starts with the first child in a running kernel);
loading it only starts the router at once, so the first child does not pay for that. Unloading
leaves forwarding on: switch it off with ``nbproc.config.forward_output = False``.
"""

from __future__ import annotations

from typing import Any

from . import output, register_extension_part


def _load(ipython: Any) -> None:
    output.router()


def _unload(ipython: Any) -> None:
    """Nothing to remove: forwarding belongs to nbproc, not to the extension."""


register_extension_part("nbproc.output", _load, _unload)
