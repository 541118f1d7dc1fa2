"""How ctypes classes defined in a notebook cell or ``__main__`` (``Structure``, ``Union``, arrays) travel.

cloudpickle rebuilds a non-importable class from its ``__dict__``, but a ctypes structure's
dict holds one ``CField`` descriptor per field, which cannot be pickled (cloudpickle 3.1,
Python 3.10-3.13: ``TypeError: cannot pickle '_ctypes.CField' object``), and ctypes computes a
structure's layout from ``_fields_``/``_pack_``/``_anonymous_`` when the class is *created*.
The reference's sharedctypes example (``Array(Point, ...)`` handed to a child) therefore fails
under spawn/forkserver for a cell-defined ``Point`` unless the class is rebuilt like this:

1. create the class with its metaclass from the layout attributes only (fields re-derived);
2. then set everything else (methods, class attributes) — in a second step, so a method that
   refers back to the class pickles without infinite recursion (the pickler memoizes the class
   between the steps, as cloudpickle does for ordinary classes).

cloudpickle's class tracker makes the same class, sent twice to one process, arrive as one class
(``isinstance`` keeps working across queue items). Classes importable by the receiver keep
travelling by reference.
"""

from __future__ import annotations

import operator
import types
from typing import Any

from cloudpickle import cloudpickle as _cp

# Attributes ctypes reads while creating the class; everything else is set afterwards.
_LAYOUT_ATTRS = ("_fields_", "_pack_", "_align_", "_anonymous_", "_swappedbytes_", "_layout_", "__module__", "__doc__")
# Never copied: recreated by the metaclass (descriptors) or by Python itself.
_SKIPPED_ATTRS = ("__dict__", "__weakref__")


def is_ctypes_class(obj: Any) -> bool:
    """Whether ``obj`` is a ctypes type this module reduces (cheap for anything else)."""
    if type(obj).__module__ != "_ctypes" or not isinstance(obj, type):
        return False
    import ctypes  # already loaded if a ctypes class exists; not imported with nbproc

    derived = (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._Pointer)
    return issubclass(obj, derived) and obj not in derived


def reduce_ctypes_class(cls: type) -> Any:
    """Reduce ``cls``; ``NotImplemented`` for a structure the receiver can import by name.

    Array and pointer types (``c_double * 2``, ``POINTER(Point)``, fields of structures) are
    rebuilt from their item type — ctypes caches them, so they come back identical — since
    cloudpickle would try to send them by value, metaclass included, and fail to load them.
    """
    import ctypes

    if issubclass(cls, ctypes.Array):
        return operator.mul, (cls._type_, cls._length_)
    if issubclass(cls, ctypes._Pointer):
        return ctypes.POINTER, (cls._type_,)
    if _cp._should_pickle_by_reference(cls):
        return NotImplemented
    layout: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for name, value in vars(cls).items():
        if name in _SKIPPED_ATTRS or type(value).__name__ == "CField":
            continue
        (layout if name in _LAYOUT_ATTRS else rest)[name] = value
    layout["__qualname__"] = cls.__qualname__
    tracker_id = _cp._get_or_create_tracker_id(cls)
    # ctypes' own metaclasses cannot be pickled by name (``_ctypes.PyCStructType`` is not an
    # attribute of its module): let the bases imply them; only a user-defined metaclass travels.
    meta = type(cls)
    explicit_meta = None if meta in (type(ctypes.Structure), type(ctypes.Union)) else meta
    return (
        _rebuild_class,
        (explicit_meta, cls.__name__, cls.__bases__, layout, tracker_id),
        rest,
        None,
        None,
        _set_class_attributes,
    )


def _rebuild_class(
    meta: type | None, name: str, bases: tuple[type, ...], layout: dict[str, Any], tracker_id: str
) -> type:
    keywords = {} if meta is None else {"metaclass": meta}
    cls = types.new_class(name, bases, keywords, lambda namespace: namespace.update(layout))
    return _cp._lookup_class_or_track(tracker_id, cls)


def _set_class_attributes(cls: type, attributes: dict[str, Any]) -> type:
    for name, value in attributes.items():
        if name not in vars(cls):  # a class already known here (tracker hit) keeps its own
            setattr(cls, name, value)
    return cls
