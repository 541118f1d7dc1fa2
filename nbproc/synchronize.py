"""Locks, semaphores, conditions, events and barriers shared between processes — the stdlib's.

Decision: re-export ``multiprocessing.synchronize`` instead of subclassing it. These classes
are thin wrappers around ``_multiprocessing.SemLock`` (a named POSIX semaphore) whose
behaviour — ``block``/``timeout`` arguments, ``ValueError`` on releasing an unlocked ``Lock``,
``RLock`` ownership, ``SIGINT`` interrupting a wait — is exactly what nbproc must reproduce, and
none of it depends on how objects are serialized. What nbproc needs from them already works
through their public hooks:

* ``nbproc.Lock()``, ``nbproc.get_context(m).Event()`` ... are the stdlib context methods run
  with an nbproc context as ``ctx``, so the start method that decides whether a semaphore is
  named and registered with the resource tracker is nbproc's.
* They pickle only while a child is being spawned (``context.assert_spawning``); nbproc's
  launcher registers itself as the stdlib's spawning popen while it serializes a ``Process``,
  so they travel as ``Process`` arguments under fork, spawn and forkserver, and anywhere else
  they raise the stdlib's ``RuntimeError`` ("... should only be shared between processes
  through inheritance") — e.g. put on a queue, where nbproc reports it in put()'s caller.
* Everything *inside* them that is user code travels through nbproc's serializer: a
  ``Barrier``'s ``action`` may be a lambda or a notebook-defined function under spawn.

``isinstance(nbproc.Lock(), nbproc.synchronize.Lock)`` holds, as does the same check against
``multiprocessing.synchronize.Lock``. As in the stdlib, the classes take a keyword-only ``ctx``;
use the factories (``nbproc.Lock()``) or pass ``ctx=nbproc.get_context(...)``.
"""

from __future__ import annotations

from multiprocessing.synchronize import (
    SEM_VALUE_MAX,
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
    SemLock,
)

__all__ = [
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "SemLock",
    "SEM_VALUE_MAX",
]
