"""Retention: keep the newest N checkpoints of each server, then collect unreferenced blobs.

Runs in the service process, in a worker thread (blocking store calls), periodically and for
one server on request. The two levels of the layout are pruned together, so that no kept
checkpoint ever loses a piece:

1. Server manifests (`<store>/servers`): keep the newest `keep_last`, plus any `protected` id
   (the pointer the spawner restores next); delete the others.
2. Kernel checkpoints (`<store>/kernels/<key>`): delete one only if no remaining server manifest
   points at it *and* it is older than `grace_s`: a server checkpoint being written right now
   has committed its kernels' checkpoints but not yet its own manifest. Background rounds newer
   than every referenced checkpoint of their store are kept: after a crash, the restore takes
   them (newer state than the planned checkpoint; also in the store of a renamed notebook).
3. Blobs: the store's own `collect_garbage(grace_s)`, per kernel store: blobs no remaining kernel
   manifest lists, older than the grace period (a kernel checkpoint being written has uploaded
   blobs but no manifest yet; reused blobs are touched on reuse).

Why not `Store.prune(keep_last)` on each kernel store: it counts a kernel store's own
checkpoints, which need not be the ones the kept server manifests point at (a server checkpoint
whose manifest failed to commit leaves newer kernel checkpoints behind). Selecting by reference
is what keeps every kept server checkpoint restorable; blob collection is the store's.

If any remaining server manifest cannot be read, nothing below it is touched for that server.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from elastic_spawner.service.checkpoints import ManifestUnreadable, read_refs, servers_store
from kernel_agent.server.pointer import join_url
from kernel_agent.store import GC_GRACE_S, Store, StoreError, open_store

log = logging.getLogger(__name__)

# kernel_agent.checkpointing.BACKGROUND_SUFFIX (not imported: it pulls numpy into the service)
BACKGROUND_SUFFIX = ".bg"


@dataclass
class RetentionResult:
    """What one pass over one server's store did."""

    store_url: str
    deleted_servers: list[str] = field(default_factory=list)
    deleted_kernels: list[str] = field(default_factory=list)
    deleted_blobs: int = 0
    error: str | None = None


def _kernel_stores_on_disk(base_url: str) -> set[str]:
    """Kernel store URLs found by listing `<store>/kernels/` (file:// only)."""
    parts = urlsplit(base_url)
    if parts.scheme != "file":
        return set()
    root = Path(unquote(parts.path)) / "kernels"
    try:
        return {join_url(base_url, "kernels", e.name) for e in os.scandir(root) if e.is_dir()}
    except OSError:
        return set()


def _norm(url: str, stores: dict[str, Store]) -> str:
    """The store's own normalized URL (so `file:///a//b/` and `file:///a/b` are one store)."""
    store = open_store(url)
    stores.setdefault(store.url, store)
    return store.url


def prune_server(base_url: str, keep_last: int, *, grace_s: float = GC_GRACE_S,
                 protected: set[str] | frozenset[str] = frozenset()) -> RetentionResult:
    """One retention pass over one server's store (see module doc). Blocking."""
    res = RetentionResult(base_url)
    if keep_last < 1:
        raise ValueError(f"keep_last = {keep_last}: keep at least one checkpoint per server")
    stores: dict[str, Store] = {}  # normalized URL -> store: one spelling per kernel store
    try:
        sstore = servers_store(base_url)
        entries = sstore.list_checkpoints()  # oldest first
        all_refs: dict[str, list] = {}
        for info in entries:
            try:
                all_refs[info.id] = read_refs(sstore.get_manifest(info.id))
            except StoreError:
                all_refs[info.id] = []  # deleted meanwhile
        kept = {c.id for c in entries[-keep_last:]} | (set(protected) & set(all_refs))
        for info in entries:
            if info.id not in kept:
                sstore.delete_checkpoint(info.id)
                res.deleted_servers.append(info.id)
        # What remains now, re-read: a server checkpoint committed during this pass counts too.
        used: dict[str, set[str]] = {}
        for info in sstore.list_checkpoints():
            try:
                refs = read_refs(sstore.get_manifest(info.id))
            except StoreError:
                continue
            for r in refs:
                if r.store_url and r.checkpoint_id:
                    used.setdefault(_norm(r.store_url, stores), set()).add(r.checkpoint_id)
        for refs in all_refs.values():
            for r in refs:
                if r.store_url:
                    _norm(r.store_url, stores)
        for url in _kernel_stores_on_disk(base_url):
            _norm(url, stores)
        # Only this server's own kernel stores: a manifest naming a store elsewhere (another
        # user's prefix) must never make this pass delete anything there.
        own = open_store(base_url).url.rstrip("/") + "/kernels/"
        now = time.time()
        for url, kstore in sorted(stores.items()):
            if not url.startswith(own):
                log.warning("Retention of %s: a manifest names kernel store %s outside %s; "
                            "not touching it", base_url, url, own)
                continue
            # ids start with their UTC time: a background round newer than every checkpoint a
            # server manifest names is what a restore after a crash brings back (the kernel ran on
            # after the planned checkpoint; `kernel_agent.server.moves.resolve`); deleting it made
            # that restore fall back to the older planned state, silently. The engine keeps only
            # its newest few rounds per store, so these stay few.
            newest_used = max((cid[:22] for cid in used.get(url, ())), default="")
            for c in kstore.list_checkpoints():
                if c.id in used.get(url, ()) or now - c.created.timestamp() < grace_s:
                    continue
                if c.id.endswith(BACKGROUND_SUFFIX) and c.id[:22] > newest_used:
                    continue
                kstore.delete_checkpoint(c.id)
                res.deleted_kernels.append(c.id)
            res.deleted_blobs += len(kstore.collect_garbage(grace_s=grace_s))
    except ManifestUnreadable as e:
        res.error = f"a server manifest is unreadable ({e}): nothing deleted below it"
    except StoreError as e:
        res.error = str(e)
    if res.error:
        log.warning("Retention of %s stopped: %s", base_url, res.error)
    elif res.deleted_servers or res.deleted_kernels or res.deleted_blobs:
        log.info("Retention of %s: deleted %d server checkpoint(s), %d kernel checkpoint(s), "
                 "%d blob(s)", base_url, len(res.deleted_servers), len(res.deleted_kernels),
                 res.deleted_blobs)
    return res
