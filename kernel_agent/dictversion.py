"""A dict's version tag (PEP 509): a number CPython changes on every change of the dict.

The monitor reads it to tell, in a microsecond, that a dict is as it was (the namespace
between cells, library option dicts) instead of reading every entry again. Storing the very
object a key already holds is no change. Where the layout is not known (another interpreter
or version, a debug build) there is no tag: callers compare the contents.
"""

from __future__ import annotations

import ctypes
import operator
import sys
from collections.abc import Callable, Iterable
from typing import Any

#: where the tag sits in a PyDictObject: after the reference count, the type and ma_used
_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p) + ctypes.sizeof(ctypes.c_ssize_t)


def _version_reader() -> Callable[[dict], int] | None:
    """A reader of the tag, or None. Checked on a probe dict before use."""
    if (sys.implementation.name != "cpython" or sys.version_info[:2] not in ((3, 11), (3, 12))
            or hasattr(sys, "gettotalrefcount")):
        return None

    def read(d: dict) -> int:
        return ctypes.c_uint64.from_address(id(d) + _OFFSET).value

    try:
        probe: dict[str, int] = {"a": 1}
        seen = {read(probe)}
        for change in (lambda: probe.__setitem__("a", 2), lambda: probe.__setitem__("b", 1),
                       lambda: probe.pop("a"), lambda: probe.__setitem__("b", 3)):
            change()
            v = read(probe)
            if v in seen:
                return None
            seen.add(v)
        return read if read(probe) == read(probe) else None
    except Exception:  # noqa: BLE001
        return None


_read = _version_reader()


class VersionWatch:
    """Some dicts and their tags now: `unchanged()` tells whether none has changed since.

    Each dict gets one ctypes view of its tag, made once: reading a view is a tenth of making
    one, which is what a watch of two dozen dicts per cell is for. The dicts are held, so the
    memory the views read stays theirs. Without tags (see `dict_version`) nothing is ever
    unchanged."""

    __slots__ = ("_dicts", "_views", "_tags")

    def __init__(self, dicts: Iterable[dict], tags: Iterable[int | None] | None = None):
        """`tags`: the dicts' tags when their entries were read (`dict_version`), if that was
        before now: a change made since then is then not taken as the starting point."""
        self._dicts = tuple(dicts)
        ok = _read is not None and all(type(d) is dict for d in self._dicts)
        self._views = tuple(ctypes.c_uint64.from_address(id(d) + _OFFSET)
                            for d in self._dicts) if ok else None
        self._tags = self._read_tags() if tags is None else list(tags)
        if None in (self._tags or [None]):
            self._tags = None

    def _read_tags(self) -> list[int] | None:
        return None if self._views is None else list(map(_VALUE, self._views))

    def unchanged(self) -> bool:
        return self._tags is not None and self._read_tags() == self._tags


_VALUE = operator.attrgetter("value")


def dict_version(d: Any, *, subclasses: bool = False) -> int | None:
    """Version tag of `d` (None: unknown, never equal to another; not an exact dict).
    `subclasses`: an instance of a dict subclass too (a Counter, a defaultdict: their storage
    is a dict's, whose tag every change through any method moves)."""
    if _read is None or (not isinstance(d, dict) if subclasses else type(d) is not dict):
        return None
    return _read(d)
