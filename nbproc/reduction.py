"""The stdlib's ``multiprocessing.reduction`` API, backed by nbproc's serializer.

``ForkingPickler.dumps``/``loads`` and ``dump`` go through :mod:`nbproc.serialization`, so
code written against ``multiprocessing.reduction`` serializes notebook-defined objects too.
Handle passing (``DupFd``, ``send_handle``/``recv_handle``, ``sendfds``/``recvfds``) is the
stdlib's: it is about file descriptors, not about pickling.
"""

from __future__ import annotations

import io
from multiprocessing.reduction import (
    ACKNOWLEDGE,
    HAVE_SEND_HANDLE,
    AbstractReducer,
    DupFd,
    recv_handle,
    recvfds,
    send_handle,
    sendfds,
)

from . import serialization

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "send_handle",
    "recv_handle",
    "ForkingPickler",
    "register",
    "dump",
    "DupFd",
    "sendfds",
    "recvfds",
    "HAVE_SEND_HANDLE",
    "ACKNOWLEDGE",
    "AbstractReducer",
]


class ForkingPickler(serialization.CloudPickler):
    """Pickler class with the stdlib's classmethod API (``dumps``/``loads``/``register``)."""

    @classmethod
    def register(cls, type_: type, reduce: Any) -> None:
        serialization.register(type_, reduce)

    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> memoryview:
        return memoryview(serialization.dumps(obj))

    loads = staticmethod(serialization.loads)


register = ForkingPickler.register


def dump(obj: Any, file: io.IOBase, protocol: int | None = None) -> None:
    """Serialize ``obj`` into ``file`` with nbproc's serializer."""
    serialization.dump(obj, file)
