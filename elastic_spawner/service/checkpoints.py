"""A server's checkpoints as the store holds them: list, describe, delete.

Runs in the service process, in a worker thread (the store API is blocking). The layout is the
server extension's (`kernel_agent.server.pointer`): under a server's store URL,
`servers/checkpoints/<id>/manifest.json` (one server manifest per checkpoint, naming one kernel
checkpoint per notebook) and `kernels/<key>/` (each notebook's own engine store). The store URL
comes from the same template as the spawner's (`ElasticSpawnerMixin.store_url`), so the service
needs no help from the hub to find the data, even for servers that are stopped.

Manifests are read for their references only; a signed manifest (`ELASTIC_CHECKPOINT_KEY`) is
read without checking its signature: listing and retention only need to know what it points at,
and the restore itself still checks signatures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from elastic_spawner.storeurl import expand_store_url
from kernel_agent.server.pointer import format_pointer, servers_store_url
from kernel_agent.store import Store, StoreError, open_store


class ManifestUnreadable(Exception):
    """A server manifest whose references cannot be read: retention must not touch that server."""


def server_store_url(template: str, user: str, server: str) -> str:
    """The store URL of one server, expanded exactly as `ElasticSpawnerMixin.expanded_store_url`."""
    return expand_store_url(template, user, server or "").rstrip("/")


@dataclass
class KernelRef:
    """One kernel entry of a server manifest: where its own checkpoint lives."""

    path: str | None
    status: str
    store_url: str | None
    checkpoint_id: str | None
    error: str | None = None
    lost: dict[str, str] = field(default_factory=dict)  # variables it cannot restore (manifest v2)


@dataclass
class ServerCheckpoint:
    """One server checkpoint, for people: id, pointer, time, completeness, kernels, size."""

    id: str
    pointer: str
    created: str
    complete: bool
    kernels: list[KernelRef] = field(default_factory=list)
    size: int = 0  # bytes: kernel manifests + the distinct blobs they reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "pointer": self.pointer, "created": self.created,
            "complete": self.complete, "size": self.size,
            "kernels": [
                {"path": k.path, "status": k.status, "checkpoint_id": k.checkpoint_id,
                 **({"error": k.error} if k.error else {}),
                 **({"lost": dict(k.lost)} if k.lost else {})}
                for k in self.kernels
            ],
        }


def read_refs(data: bytes) -> list[KernelRef]:
    """The kernel references of a server manifest (signed or not); ManifestUnreadable if not one."""
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and "hmac_sha256" in doc:
            doc = json.loads(doc["manifest"])
        if not isinstance(doc, dict) or doc.get("schema") != "elastic-spawner/server-checkpoint":
            raise ValueError("not a server checkpoint manifest")
        return [KernelRef(path=k.get("path"), status=str(k.get("status") or ""),
                          store_url=k.get("store_url"), checkpoint_id=k.get("checkpoint_id"),
                          error=k.get("error"), lost=dict(k.get("lost") or {}))
                for k in doc.get("kernels") or []]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ManifestUnreadable(str(e)) from e


def servers_store(base_url: str) -> Store:
    return open_store(servers_store_url(base_url))


def list_checkpoints(base_url: str) -> list[ServerCheckpoint]:
    """The server's checkpoints, newest first. Blocking: call from a thread."""
    store = servers_store(base_url)
    kernel_sizes: dict[str, dict[str, int]] = {}
    out = []
    for info in reversed(store.list_checkpoints()):
        try:
            refs = read_refs(store.get_manifest(info.id))
        except (StoreError, ManifestUnreadable):
            refs = []
        size = 0
        for ref in refs:
            if ref.store_url and ref.checkpoint_id:
                if ref.store_url not in kernel_sizes:
                    try:
                        kernel_sizes[ref.store_url] = {
                            c.id: c.size for c in open_store(ref.store_url).list_checkpoints()}
                    except StoreError:
                        kernel_sizes[ref.store_url] = {}
                size += kernel_sizes[ref.store_url].get(ref.checkpoint_id, 0)
        out.append(ServerCheckpoint(
            id=info.id, pointer=format_pointer(base_url, info.id),
            created=info.created.isoformat(timespec="seconds"),
            # a version 1 manifest has no `lost`: complete there means every kernel was saved
            complete=bool(refs) and all(r.status == "ok" and not r.lost for r in refs),
            kernels=refs, size=size))
    return out


def delete_checkpoint(base_url: str, checkpoint_id: str) -> list[str]:
    """Delete one server checkpoint and the kernel checkpoints no other server checkpoint uses.

    The server manifest goes first (the checkpoint stops existing at once); kernel checkpoints
    it pointed at are deleted unless a remaining server manifest points at them too. Blobs are
    left to garbage collection (`retention`), which honours the grace period. Returns the
    kernel checkpoint ids deleted. Raises KeyError when there is no such checkpoint.
    """
    store = servers_store(base_url)
    ids = {c.id for c in store.list_checkpoints()}
    if checkpoint_id not in ids:
        raise KeyError(checkpoint_id)
    try:
        refs = read_refs(store.get_manifest(checkpoint_id))
    except ManifestUnreadable:
        refs = []
    store.delete_checkpoint(checkpoint_id)
    still_used: set[tuple[str, str]] = set()
    for other in ids - {checkpoint_id}:
        try:
            still_used |= {(r.store_url, r.checkpoint_id)
                           for r in read_refs(store.get_manifest(other))
                           if r.store_url and r.checkpoint_id}
        except (StoreError, ManifestUnreadable):
            return []  # cannot tell what the others use: keep every kernel checkpoint
    deleted = []
    for r in refs:
        if r.store_url and r.checkpoint_id and (r.store_url, r.checkpoint_id) not in still_used:
            try:
                open_store(r.store_url).delete_checkpoint(r.checkpoint_id)
                deleted.append(r.checkpoint_id)
            except StoreError:
                continue
    return deleted
