"""Notebook renames: which kernel store a kernel's checkpoints went to after its notebook moved.

Runs in the single-user Jupyter server process (blocking I/O: call from a thread). Each kernel
checkpoints into ``<store>/kernels/<key of its notebook path>``. When a notebook is renamed (its
session PATCHed to another path, or the file renamed through the contents API), the kernel's
later checkpoints (background rounds, planned ones) go to the *new* path's store, while a server
manifest written before the rename still names the old path and the old store. A restore of that
manifest took the old store's newest checkpoint: an older state, silently, under a path that no
longer exists (and the new path's store may hold an older checkpoint of another notebook).

So the server records every such move, write-once, in ``<store>/moves`` (an engine store holding
one small signed record per move, like ``<store>/servers``), and a restore follows a kernel's
moves from the checkpoint its manifest pins to the newest state of that kernel, restored under
the notebook's current path (`resolve`).

Which checkpoints belong to the kernel: a store has one writer at a time (``store_keys``), so
the kernel's checkpoints are, in the store it was pinned in, those after the pinned one and before
the kernel moved away, then in each store it moved to, those after it moved in and before it
moved on. A move is followed only for the kernel it names (or one it was restored from: a move
record lists the kernel's ``lineage``), so another kernel's later rename of the same path is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import asdict, dataclass, field

from kernel_agent.server.pointer import join_url, new_checkpoint_id

log = logging.getLogger(__name__)

SCHEMA = "elastic-spawner/notebook-move"
SCHEMA_VERSION = 1
MAX_CHAIN = 64  # moves followed for one kernel (renamed back and forth: bounded, no cycles)


@dataclass
class Move:
    """One notebook rename of a kernel with checkpoints: from one kernel store to another."""

    id: str  # a server checkpoint id (time-sortable): when the move was recorded
    kernel_id: str
    lineage: list[str]  # this kernel's id and the ids of the kernels it was restored from
    from_path: str | None
    from_store_url: str
    to_path: str | None
    to_store_url: str
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def to_bytes(self, key: bytes | None) -> bytes:
        body = json.dumps(asdict(self), sort_keys=True).encode()
        if key is None:
            return body
        mac = hmac.new(key, body, hashlib.sha256).hexdigest()
        return json.dumps({"hmac_sha256": mac, "manifest": body.decode()}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, key: bytes | None) -> Move:
        doc = json.loads(data)
        if isinstance(doc, dict) and "hmac_sha256" in doc:
            body = str(doc.get("manifest", "")).encode()
            if key is None or not hmac.compare_digest(
                hmac.new(key, body, hashlib.sha256).hexdigest(), str(doc["hmac_sha256"])
            ):
                raise ValueError("move record failed authentication")
            doc = json.loads(body)
        elif key is not None:
            raise ValueError("move record is not signed")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError("not a notebook move record")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass
class Resolution:
    """What to restore for one server manifest entry: store, checkpoint, notebook path."""

    store_url: str
    checkpoint_id: str
    path: str | None
    notes: list[str] = field(default_factory=list)  # for the report and the log


def moves_store_url(store_url: str) -> str:
    """The store holding the move records of a server store: ``<store>/moves``."""
    return join_url(store_url, "moves")


def record_move(store_url: str, *, kernel_id: str, lineage: list[str], from_path: str | None,
                from_store_url: str, to_path: str | None, to_store_url: str) -> Move:
    """Commit one move record under `store_url` (write-once, signed like server manifests)."""
    from kernel_agent.server.manifest import signing_key
    from kernel_agent.store import open_store

    move = Move(id=new_checkpoint_id(), kernel_id=kernel_id, lineage=list(lineage),
                from_path=from_path, from_store_url=from_store_url, to_path=to_path,
                to_store_url=to_store_url)
    open_store(moves_store_url(store_url)).put_manifest(move.id, move.to_bytes(signing_key()))
    return move


def read_moves(store_url: str) -> list[Move]:
    """Every readable move record under `store_url`, oldest first; unreadable ones are skipped."""
    from kernel_agent.server.manifest import signing_key
    from kernel_agent.store import open_store

    store = open_store(moves_store_url(store_url))
    key = signing_key()
    moves = []
    for mid, _, _ in store._manifests():
        try:
            moves.append(Move.from_bytes(store.get_manifest(mid), key))
        except Exception as e:  # noqa: BLE001 - one bad record must not stop a restore
            log.warning("kernel_agent: ignoring move record %s in %s: %s", mid, store_url, e)
    return sorted(moves, key=lambda m: m.id)


def _when(checkpoint_id: str) -> str:
    """The UTC time a checkpoint or move id starts with (``YYYYmmddTHHMMSSffffffZ``), sortable."""
    return checkpoint_id[:22]


def resolve(store_url: str, *, kernel_ids: list[str], kernel_store_url: str, checkpoint_id: str,
            path: str | None) -> Resolution:
    """The newest state of the kernel a manifest entry pinned, and its notebook's current path.

    `kernel_ids`: the pinned kernel's lineage (its id, then those it was restored from).
    Follows the kernel's moves from `kernel_store_url` after `checkpoint_id`. The newest
    checkpoint of the kernel after the pinned one is restored when it is a background round (the
    kernel ran on, then the server died); a newer *planned* checkpoint means a newer server
    manifest exists and this older one was asked for on purpose: the pinned checkpoint is
    restored, under its own path. Otherwise the notebook's current path is where it comes back.
    """
    from kernel_agent.checkpointing import BACKGROUND_SUFFIX
    from kernel_agent.store import open_store

    moves = [m for m in read_moves(store_url) if set(kernel_ids) & {m.kernel_id, *m.lineage}]
    segments: list[tuple[str, str | None, str, str | None]] = []  # store, path, since, until
    store, where, since, used = kernel_store_url, path, _when(checkpoint_id), set()
    while True:
        nxt = next((m for m in moves if m.id not in used and m.from_store_url == store
                    and _when(m.id) > since), None)
        until = _when(nxt.id) if nxt is not None else None
        segments.append((store, where, since, until))
        if nxt is None or len(segments) > MAX_CHAIN:
            break
        used.add(nxt.id)
        store, where, since = nxt.to_store_url, nxt.to_path, until or since
    newest: tuple[str, str, str] | None = None  # (time, checkpoint id, store)
    for i, (seg_store, _, seg_since, seg_until) in enumerate(segments):
        for cid, _, _ in open_store(seg_store)._manifests():
            t = _when(cid)
            after = t > seg_since if i == 0 else t >= seg_since
            inside = cid != checkpoint_id and after and (seg_until is None or t < seg_until)
            if inside and (newest is None or (t, cid) > newest[:2]):
                newest = (t, cid, seg_store)
    moved = [s[1] for s in segments[1:]]
    final_path = segments[-1][1]
    if newest is not None and not newest[1].endswith(BACKGROUND_SUFFIX):
        return Resolution(kernel_store_url, checkpoint_id, path, [
            f"a newer planned checkpoint ({newest[1]}) exists: restoring the one this server "
            "checkpoint pins, as asked"])
    notes = []
    if moved:
        notes.append(f"renamed after the checkpoint ({' -> '.join(str(p) for p in [path, *moved])}): "
                     f"restored under {final_path}")
    if newest is None:
        return Resolution(kernel_store_url, checkpoint_id, final_path, notes)
    notes.append(f"restoring background checkpoint {newest[1]} (newer than {checkpoint_id})")
    return Resolution(newest[2], newest[1], final_path, notes)
