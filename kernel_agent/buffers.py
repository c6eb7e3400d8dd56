"""`BlobBuffer`: the memory of a fetched checkpoint blob (kernel process), and how to see
through the array-interface holders numpy's stride tricks leave in a ``.base`` chain.

Restored arrays are zero-copy views into the blob they were loaded from, so the blob is
reachable from them. Its own type tells change detection that this bytearray is the agent's
buffer, not one of the user's that an array writes through (which is part of the value).
"""

from __future__ import annotations

import sys
from typing import Any


class BlobBuffer(bytearray):
    """A bytearray holding one fetched blob."""

    __slots__ = ()


def array_interface_base(b: Any) -> Any:
    """The numpy array behind a non-array ``.base`` that only relays its ``__array_interface__``.

    numpy's stride tricks (``as_strided``, ``sliding_window_view``, ``broadcast_to``) put such a
    DummyArray between their result and the array it views: for aliasing, the result is a view
    of that array. None for any other object (numpy is not imported here).
    """
    if b is None or type(b).__name__ != "DummyArray":
        return None
    np = sys.modules.get("numpy")
    inner = getattr(b, "base", None)
    return inner if np is not None and isinstance(inner, np.ndarray) else None
