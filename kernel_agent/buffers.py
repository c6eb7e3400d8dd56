"""`BlobBuffer`: the memory of a fetched checkpoint blob (kernel process).

Restored arrays are zero-copy views into the blob they were loaded from, so the blob is
reachable from them. Its own type tells change detection that this bytearray is the agent's
buffer, not one of the user's that an array writes through (which is part of the value).
"""

from __future__ import annotations


class BlobBuffer(bytearray):
    """A bytearray holding one fetched blob."""

    __slots__ = ()
