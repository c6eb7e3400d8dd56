"""Restore pointers and the store layout of server checkpoints.

Runs in the single-user Jupyter server process (and is importable by the hub: plain strings, no
Jupyter imports). A *pointer* names one server-level checkpoint; it is the only thing a spawner
keeps between a stop and the next start (in spawner state, in ``ELASTIC_RESTORE_FROM``).

Pointer format::

    <store-url>#<server-checkpoint-id>
    file:///var/checkpoints/alice#20250102T030405123456Z-a1b2c3
    s3://bucket/users/alice#20250102T030405123456Z-a1b2c3

The store URL is everything before the *last* ``#``; the id is a timestamp (UTC, sortable) plus a
random suffix and never contains ``#`` or ``/``. Under the store root:

- ``servers/``: a store (the engine's ``kernel_agent.store`` layout) holding only server
  manifests, ``servers/checkpoints/<server-checkpoint-id>/manifest.json`` (``manifest.py``),
  each written last, atomically, never overwritten;
- ``kernels/<kernel-key>/...``: each kernel's own store (the engine's layout), one per notebook
  path, so successive checkpoints of the same notebook share blobs (incremental uploads).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("file", "s3")
_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{6}$")


class PointerError(ValueError):
    """A pointer or store URL that cannot be used; the message says what a valid one looks like."""


@dataclass(frozen=True)
class Pointer:
    """A parsed pointer: the store holding the checkpoint and the server checkpoint's id."""

    store_url: str
    checkpoint_id: str

    def __str__(self) -> str:
        return format_pointer(self.store_url, self.checkpoint_id)


def check_store_url(url: str) -> str:
    """Return `url` without a trailing slash if it is a store URL we can use, else raise.

    Checked up front so that a bad URL is a 400 naming the URL, not a failure deep in a kernel.
    """
    if not isinstance(url, str) or not url:
        raise PointerError("the store URL is empty: use file:///absolute/dir or s3://bucket/prefix")
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise PointerError(
            f"unsupported store URL {url!r}: use file:///absolute/dir or s3://bucket/prefix"
        )
    if parts.fragment:
        raise PointerError(f"store URL {url!r} must not contain '#' (it separates pointer parts)")
    if parts.query or url.endswith("?"):
        # the engine's open_store ignores a query string: `?endpoint=...` silently went to the
        # default endpoint (ELASTIC_S3_ENDPOINT, else AWS) instead of the one the URL names
        raise PointerError(
            f"store URL {url!r} has a query string, which the store does not read: drop "
            f"'?{parts.query}' and set S3 options in the environment (ELASTIC_S3_ENDPOINT, "
            "ELASTIC_S3_ACCESS_KEY, ...)"
        )
    if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise PointerError(f"file store URL {url!r} must be absolute: file:///absolute/dir")
    if parts.scheme == "s3" and not parts.netloc:
        raise PointerError(f"s3 store URL {url!r} needs a bucket: s3://bucket/prefix")
    return url.rstrip("/") if parts.path not in ("", "/") else url


def new_checkpoint_id(now: datetime | None = None) -> str:
    """A fresh server checkpoint id: sortable by time, unique across servers sharing a store."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def format_pointer(store_url: str, checkpoint_id: str) -> str:
    """The pointer string for checkpoint `checkpoint_id` in `store_url`."""
    if not _ID_RE.match(checkpoint_id):
        raise PointerError(f"invalid server checkpoint id {checkpoint_id!r}")
    return f"{check_store_url(store_url)}#{checkpoint_id}"


def parse_pointer(pointer: str) -> Pointer:
    """Split and check a pointer; raises `PointerError` saying what a valid pointer looks like."""
    if not isinstance(pointer, str) or "#" not in pointer:
        raise PointerError(
            f"invalid checkpoint pointer {pointer!r}: expected '<store-url>#<checkpoint-id>', "
            "as returned by POST api/elastic/checkpoint"
        )
    store_url, _, checkpoint_id = pointer.rpartition("#")
    if not _ID_RE.match(checkpoint_id):
        raise PointerError(
            f"invalid checkpoint id {checkpoint_id!r} in pointer {pointer!r}: expected "
            "'<store-url>#<YYYYmmddTHHMMSSffffffZ-xxxxxx>', as returned by POST api/elastic/checkpoint"
        )
    return Pointer(check_store_url(store_url), checkpoint_id)


def join_url(store_url: str, *segments: str) -> str:
    """`store_url` with path segments appended, keeping any query string (store options)."""
    parts = urlsplit(store_url)
    path = parts.path.rstrip("/") + "".join("/" + s.strip("/") for s in segments)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def kernel_key(path: str | None, kernel_id: str) -> str:
    """A stable store key per notebook path (so checkpoints of a notebook stay incremental).

    Readable prefix for people browsing the bucket, hash suffix for uniqueness. A kernel with no
    session (started through api/kernels) has no path; it is keyed by its kernel id.
    """
    if not path:
        return f"kernel-{kernel_id}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path).strip("-.")[:48] or "notebook"
    return f"{slug}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"


def kernel_store_url(store_url: str, key: str) -> str:
    """The store URL a kernel checkpoints into: ``<store>/kernels/<key>``."""
    return join_url(store_url, "kernels", key)


def servers_store_url(store_url: str) -> str:
    """The store URL holding the server manifests: ``<store>/servers``."""
    return join_url(store_url, "servers")
