"""The server-level checkpoint manifest: which kernels, which notebooks, which kernel checkpoints.

Runs in the single-user Jupyter server process. One manifest per server checkpoint, committed
*after* every kernel's own checkpoint, through the engine's store at
``<store>/servers/checkpoints/<id>/manifest.json`` (atomic, never overwritten; see ``pointer.py``).
It never holds variable data: each kernel entry points at a kernel checkpoint (the engine's
manifest) by store URL and checkpoint id. With ``ELASTIC_CHECKPOINT_KEY`` set, the manifest is
signed like the engine's (HMAC-SHA256) and an unsigned or altered one is refused, since it decides
which notebooks get kernels and which kernel specs are launched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from kernel_agent.server.pointer import Pointer, servers_store_url

SCHEMA = "elastic-spawner/server-checkpoint"
# 2: per kernel `lost` (variable -> reason) and `lineage`, and `complete` also requires that no
# variable is lost. Version 1 manifests are still read: their kernels' `lost` is unknown (empty here), so
# their `complete` says only that every kernel was checkpointed.
SCHEMA_VERSION = 2
KEY_ENV = "ELASTIC_CHECKPOINT_KEY"  # same key as the engine's kernel manifests


class ServerManifestError(Exception):
    """The server manifest cannot be read or trusted; the message says why."""


@dataclass
class KernelEntry:
    """One kernel of the server at checkpoint time."""

    kernel_id: str
    kernel_name: str
    status: str  # "ok" | "busy" | "failed"
    path: str | None = None  # notebook path from the sessions API; None: kernel without session
    session_name: str = ""
    session_type: str = ""
    store_url: str | None = None  # the kernel's own store (``<store>/kernels/<key>``)
    checkpoint_id: str | None = None  # the kernel checkpoint, when status == "ok"
    error: str | None = None
    # the kernel's other sessions ({path, name, type}): consoles opened on a notebook's kernel
    other_sessions: list[dict[str, str]] = field(default_factory=list)
    # variables this kernel checkpoint cannot bring back (name -> reason), from its summary;
    # a kernel can be "ok" (checkpointed) and still lose some (schema v2)
    lost: dict[str, str] = field(default_factory=dict)
    # this kernel's id and the ids of the kernels it was restored from (newest first): a
    # restore follows the notebook renames of any of them (`moves.py`) (schema v2)
    lineage: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelEntry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ServerManifest:
    """A server checkpoint: committed last, so its existence means every listed checkpoint exists."""

    checkpoint_id: str
    store_url: str
    created: str
    kernels: list[KernelEntry] = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    @property
    def saved(self) -> bool:
        """Every kernel was checkpointed (none busy or failed)."""
        return all(k.status == "ok" for k in self.kernels)

    @property
    def lost_variables(self) -> int:
        return sum(len(k.lost) for k in self.kernels)

    @property
    def complete(self) -> bool:
        """Every variable of every kernel is restorable: all kernels saved, nothing lost."""
        return self.saved and not self.lost_variables

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "schema_version": self.schema_version,
            "checkpoint_id": self.checkpoint_id,
            "store_url": self.store_url,
            "created": self.created,
            "complete": self.complete,
            "saved": self.saved,
            "lost_variables": self.lost_variables,
            "kernels": [k.to_dict() for k in self.kernels],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerManifest:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ServerManifestError("not a server checkpoint manifest (wrong schema)")
        if int(d.get("schema_version", 0)) > SCHEMA_VERSION:
            raise ServerManifestError(
                f"server manifest schema version {d.get('schema_version')} is newer than this "
                f"agent understands ({SCHEMA_VERSION}): upgrade elastic-spawner in the image"
            )
        return cls(
            checkpoint_id=d["checkpoint_id"],
            store_url=d["store_url"],
            created=d.get("created", ""),
            kernels=[KernelEntry.from_dict(k) for k in d.get("kernels", [])],
            schema_version=int(d.get("schema_version", 1)),
        )

    def to_bytes(self, key: bytes | None) -> bytes:
        body = json.dumps(self.to_dict(), sort_keys=True, indent=1).encode()
        if key is None:
            return body
        mac = hmac.new(key, body, hashlib.sha256).hexdigest()
        return json.dumps({"hmac_sha256": mac, "manifest": body.decode()}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes | None) -> ServerManifest:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise ServerManifestError(f"the server manifest is not valid JSON: {e}") from e
        if isinstance(doc, dict) and "hmac_sha256" in doc:
            body = str(doc.get("manifest", "")).encode()
            if key is None:
                raise ServerManifestError(
                    f"the server checkpoint is signed but no key is configured: set {KEY_ENV}"
                )
            expected = hmac.new(key, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, str(doc["hmac_sha256"])):
                raise ServerManifestError(
                    "the server manifest failed authentication (HMAC mismatch): refusing it"
                )
            doc = json.loads(body)
        elif key is not None:
            raise ServerManifestError(
                f"the server manifest is not signed but {KEY_ENV} is set: refusing it"
            )
        return cls.from_dict(doc)


def lost_variables(summary: dict[str, Any] | None) -> dict[str, str]:
    """The variables a kernel checkpoint's summary names lost, one by one: name -> reason.

    The engine groups them by co-variable (``summary["lost"]``: ``"a, b"`` -> reason, names
    sharing objects are lost together) and marks each in ``summary["variables"]`` (action
    ``"lost"``). Plain data, no Jupyter import: the hub reads checkpoint answers with it too.
    """
    summary = summary if isinstance(summary, dict) else {}
    out: dict[str, str] = {}
    groups, variables = summary.get("lost"), summary.get("variables")
    for group, reason in (groups.items() if isinstance(groups, dict) else ()):
        for name in str(group).split(", "):
            if name:
                out[name] = str(reason)
    for name, action in (variables.items() if isinstance(variables, dict) else ()):
        if action == "lost":
            out.setdefault(str(name), "lost (the checkpoint gave no reason)")
    return dict(sorted(out.items()))


def signing_key() -> bytes | None:
    """The checkpoint authentication key from the server's environment, if any."""
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


def write_manifest(manifest: ServerManifest) -> None:
    """Commit `manifest` atomically, never over an existing one (blocking I/O: use a thread).

    Written through the engine's store (``kernel_agent.store``), rooted at ``<store>/servers``,
    so file:// and s3:// get the same atomic, write-once commit as kernel manifests.
    """
    from kernel_agent.store import open_store

    store = open_store(servers_store_url(manifest.store_url))
    store.put_manifest(manifest.checkpoint_id, manifest.to_bytes(signing_key()))


def read_manifest(pointer: Pointer) -> ServerManifest:
    """Load and check the manifest `pointer` names (blocking I/O: use a thread)."""
    from kernel_agent.store import StoreError, open_store

    try:
        store = open_store(servers_store_url(pointer.store_url))
        data = store.get_manifest(pointer.checkpoint_id)
    except StoreError as e:
        raise ServerManifestError(
            f"no readable server checkpoint {pointer.checkpoint_id} in {pointer.store_url} ({e}); "
            "check the pointer (ELASTIC_RESTORE_FROM) and the store URL"
        ) from e
    manifest = ServerManifest.from_bytes(data, signing_key())
    if manifest.checkpoint_id != pointer.checkpoint_id:
        raise ServerManifestError(
            f"server manifest {pointer} claims id {manifest.checkpoint_id}: refusing it"
        )
    return manifest
