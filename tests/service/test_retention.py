"""Retention keeps the newest N checkpoints of a server whole, and collects only true garbage.

Store-level tests, no hub: server checkpoints are written exactly as the server extension writes
them (kernel blobs, then each kernel's manifest, then the server manifest, through the engine's
store), with the real `ServerManifest`. What must hold: every kept server checkpoint can still
be read completely (its kernel manifests and every blob they list), also while other threads
are writing checkpoints, and a checkpoint in flight (blobs uploaded, no manifest yet) keeps its
blobs through the grace period.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

from elastic_spawner.service.checkpoints import delete_checkpoint, list_checkpoints
from elastic_spawner.service.retention import prune_server
from kernel_agent.server.manifest import KernelEntry, ServerManifest, write_manifest
from kernel_agent.server.pointer import kernel_key, kernel_store_url, new_checkpoint_id
from kernel_agent.store import new_checkpoint_id as new_kernel_id
from kernel_agent.store import open_store

NOTEBOOKS = ["a.ipynb", "b.ipynb"]


def write_kernel(base: str, path: str, payloads: list[bytes], pause: float = 0) -> tuple[str, str]:
    """One kernel checkpoint: blobs, (pause: "being written"), then its manifest. -> (url, id)."""
    url = kernel_store_url(base, kernel_key(path, "k"))
    store = open_store(url, fsync=False)
    keys = [store.put_blob([p]).key for p in payloads]
    if pause:
        time.sleep(pause)  # the checkpoint is in flight: blobs stored, no manifest yet
    cid = new_kernel_id()
    store.put_manifest(cid, json.dumps({"blobs": keys}).encode())
    return url, cid


def write_server(base: str, payloads: dict[str, list[bytes]], pause: float = 0) -> str:
    """One server checkpoint: every kernel's checkpoint first, the server manifest last."""
    entries = []
    for path, blobs in payloads.items():
        url, cid = write_kernel(base, path, blobs, pause)
        entries.append(KernelEntry(kernel_id="k", kernel_name="python3", status="ok", path=path,
                                   store_url=url, checkpoint_id=cid))
    sid = new_checkpoint_id()
    write_manifest(ServerManifest(checkpoint_id=sid, store_url=base, created="now",
                                  kernels=entries))
    return sid


def assert_restorable(base: str, server_ids: list[str] | None = None) -> int:
    """Every (or the given) server checkpoint: kernel manifests present, every blob intact."""
    n = 0
    for c in list_checkpoints(base):
        if server_ids is not None and c.id not in server_ids:
            continue
        for k in c.kernels:
            store = open_store(k.store_url)
            manifest = json.loads(store.get_manifest(k.checkpoint_id))
            for key in manifest["blobs"]:
                store.get_blob(key)  # raises if missing or corrupted
                n += 1
    return n


def age_everything(root: Path, seconds: float) -> None:
    """Make every file look `seconds` old (instead of sleeping through a grace period)."""
    t = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))


def blob_count(root: Path) -> int:
    return sum(len(files) for d, _, files in os.walk(root) if "/blobs/" in d + "/")


@pytest.fixture
def base(tmp_path: Path) -> str:
    return (tmp_path / "store" / "alice" / "default").as_uri()


def test_keeps_the_newest_n_with_everything_they_reference(base: str, tmp_path: Path) -> None:
    shared = b"shared between all checkpoints"
    ids = [write_server(base, {nb: [shared, f"{nb} v{i}".encode()] for nb in NOTEBOOKS})
           for i in range(6)]
    age_everything(tmp_path / "store", 7200)
    res = prune_server(base, keep_last=2, grace_s=3600)
    assert res.error is None
    assert sorted(res.deleted_servers) == sorted(ids[:4])
    assert len(res.deleted_kernels) == 8  # two notebooks x four old checkpoints
    assert res.deleted_blobs == 8  # their own blobs; the shared blob stays
    assert [c.id for c in list_checkpoints(base)] == ids[:1:-1][:2]
    assert assert_restorable(base) == 8  # 2 checkpoints x 2 notebooks x 2 blobs


def test_the_checkpoint_the_server_restores_next_is_kept(base: str, tmp_path: Path) -> None:
    ids = [write_server(base, {"a.ipynb": [f"v{i}".encode()]}) for i in range(4)]
    age_everything(tmp_path / "store", 7200)
    res = prune_server(base, keep_last=1, grace_s=3600, protected={ids[0]})
    assert sorted(res.deleted_servers) == sorted(ids[1:3])
    assert {c.id for c in list_checkpoints(base)} == {ids[0], ids[3]}
    assert assert_restorable(base) == 2


def test_a_checkpoint_in_flight_keeps_its_blobs_and_kernel_manifests(base: str,
                                                                     tmp_path: Path) -> None:
    old = write_server(base, {"a.ipynb": [b"old"]})
    age_everything(tmp_path / "store", 7200)
    # a server checkpoint being written: its kernel checkpoint is committed, its blobs are new,
    # the server manifest not yet written
    url, kcid = write_kernel(base, "a.ipynb", [b"in flight"])
    res = prune_server(base, keep_last=1, grace_s=3600)
    assert res.deleted_servers == [] and res.deleted_kernels == [], res
    sid = new_checkpoint_id()
    write_manifest(ServerManifest(checkpoint_id=sid, store_url=base, created="now", kernels=[
        KernelEntry(kernel_id="k", kernel_name="python3", status="ok", path="a.ipynb",
                    store_url=url, checkpoint_id=kcid)]))
    res = prune_server(base, keep_last=1, grace_s=3600)
    assert res.deleted_servers == [old]
    assert assert_restorable(base, [sid]) == 1


def test_gc_while_checkpoints_are_written_never_breaks_a_kept_checkpoint(
        base: str, tmp_path: Path) -> None:
    """Writers (threads) commit checkpoints that reuse old blobs while retention runs in a loop.

    The grace period must exceed how long a writer takes from touching a blob to committing its
    manifest (0.2 s paused here, plus scheduling): 1 s broke on a machine loaded to 10 runnable
    processes per core; 2 s still lets blobs age past it inside the 4 s race.
    """
    grace = 2.0
    pool = [f"value {i}".encode() * 50 for i in range(6)]  # reused across checkpoints
    committed: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                payloads = {nb: [rng.choice(pool), f"fresh {seed} {time.time()}".encode()]
                            for nb in NOTEBOOKS}
                # some checkpoints stay "in flight" for a while (well inside the grace period)
                committed.append(write_server(base, payloads, pause=rng.choice([0, 0, 0.2])))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def collector() -> None:
        try:
            while not stop.is_set():
                res = prune_server(base, keep_last=2, grace_s=grace)
                assert res.error is None, res.error
                assert_restorable(base)  # whatever is committed now is whole
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=collector))
    for t in threads:
        t.start()
    time.sleep(4)  # let writers and the collector race for a while (duration, not a sync)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(committed) > 10
    assert assert_restorable(base) > 0
    # and collection works: once everything is old, only the newest two remain, with their blobs
    age_everything(tmp_path / "store", 10)
    # (listed after aging: commit times are then equal and ids order them; two writers'
    # checkpoints can commit in the other order than their ids were made)
    kept = [c.id for c in list_checkpoints(base)]
    res = prune_server(base, keep_last=2, grace_s=grace)
    assert res.error is None
    assert [c.id for c in list_checkpoints(base)] == kept[:2]
    assert blob_count(tmp_path / "store") == assert_restorable(base) - _duplicates(base)


def _duplicates(base: str) -> int:
    """Blob references that name a blob already counted (same store, same key)."""
    seen: set[tuple[str, str]] = set()
    dup = 0
    for c in list_checkpoints(base):
        for k in c.kernels:
            for key in json.loads(open_store(k.store_url).get_manifest(k.checkpoint_id))["blobs"]:
                if (k.store_url, key) in seen:
                    dup += 1
                seen.add((k.store_url, key))
    return dup


def test_an_unreadable_server_manifest_stops_retention(base: str, tmp_path: Path) -> None:
    ids = [write_server(base, {"a.ipynb": [f"v{i}".encode()]}) for i in range(3)]
    bad = tmp_path / "store/alice/default/servers/checkpoints" / ids[2] / "manifest.json"
    bad.write_text("{truncated")
    age_everything(tmp_path / "store", 7200)
    res = prune_server(base, keep_last=1, grace_s=3600)
    assert res.error and "unreadable" in res.error
    assert res.deleted_servers == [] and res.deleted_kernels == [] and res.deleted_blobs == 0


def test_a_manifest_naming_another_users_store_never_deletes_there(tmp_path: Path) -> None:
    alice = (tmp_path / "store" / "alice" / "default").as_uri()
    mallory = (tmp_path / "store" / "mallory" / "default").as_uri()
    a_url, a_cid = write_kernel(alice, "a.ipynb", [b"alice's data"])
    write_kernel(alice, "a.ipynb", [b"alice's newer data"])
    write_manifest(ServerManifest(checkpoint_id=new_checkpoint_id(), store_url=mallory,
                                  created="now", kernels=[KernelEntry(
                                      kernel_id="k", kernel_name="python3", status="ok",
                                      path="a.ipynb", store_url=a_url, checkpoint_id=a_cid)]))
    age_everything(tmp_path / "store", 7200)
    res = prune_server(mallory, keep_last=1, grace_s=3600)
    assert res.deleted_kernels == [] and res.deleted_blobs == 0
    assert len(open_store(a_url).list_checkpoints()) == 2


def test_deleting_a_checkpoint_keeps_kernel_checkpoints_others_use(base: str) -> None:
    sid1 = write_server(base, {"a.ipynb": [b"v1"]})
    listing = list_checkpoints(base)
    ref = listing[0].kernels[0]
    sid2 = new_checkpoint_id()  # a second server checkpoint reusing the same kernel checkpoint
    write_manifest(ServerManifest(checkpoint_id=sid2, store_url=base, created="now", kernels=[
        KernelEntry(kernel_id="k", kernel_name="python3", status="ok", path="a.ipynb",
                    store_url=ref.store_url, checkpoint_id=ref.checkpoint_id)]))
    assert delete_checkpoint(base, sid1) == []
    assert assert_restorable(base, [sid2]) == 1
    assert delete_checkpoint(base, sid2) == [ref.checkpoint_id]
    with pytest.raises(KeyError):
        delete_checkpoint(base, sid2)


def test_background_rounds_newer_than_the_kept_checkpoints_survive(base: str, tmp_path: Path) -> None:
    """After a crash the restore takes the newest background round: deleting it restored older state.

    Rounds are never named by a server manifest, so once past the grace period they were deleted
    like garbage; a round older than a kept planned checkpoint is garbage indeed.
    """
    def background(path: str) -> str:
        url = kernel_store_url(base, kernel_key(path, "k"))
        cid = new_kernel_id() + ".bg"
        open_store(url, fsync=False).put_manifest(cid, json.dumps({"blobs": []}).encode())
        return cid

    before = background("a.ipynb")
    write_server(base, {"a.ipynb": [b"planned"]})
    after = background("a.ipynb")
    renamed = background("renamed.ipynb")  # the kernel's rounds after its notebook was renamed
    age_everything(tmp_path / "store", 7200)

    res = prune_server(base, keep_last=1, grace_s=3600)

    assert res.error is None and res.deleted_kernels == [before]
    kept = {c.id for p in ("a.ipynb", "renamed.ipynb")
            for c in open_store(kernel_store_url(base, kernel_key(p, "k"))).list_checkpoints()}
    assert {after, renamed} <= kept


def test_a_servers_retention_keeps_another_servers_pointer_in_its_prefix(tmp_path: Path) -> None:
    """A pointer of one server that lies in another server's prefix survives that one's pass.

    A named server "default" checkpointed before it got its own prefix ("~default") has its
    pointer in the default server's prefix until its next stop; so has every server of a user
    when the store template has no {servername}. The service protected only the pointer of the
    server it pruned, and deleted the other's: its next start restored nothing.
    """
    import asyncio
    from types import SimpleNamespace

    from elastic_spawner.service.app import ElasticService
    from elastic_spawner.service.metrics import ServiceMetrics

    template = f"file://{tmp_path}/{{username}}/{{servername}}"
    base = f"file://{tmp_path}/alice/default"
    named = write_server(base, {"a.ipynb": [b"named server"]})  # older: the named server's
    own = [write_server(base, {"a.ipynb": [f"default {i}".encode()]}) for i in range(2)]
    users = [{"name": "alice", "servers": {
        "": {"state": {"elastic": {"checkpoint": f"{base}#{own[-1]}"}}},
        "default": {"state": {"elastic": {"checkpoint": f"{base}#{named}"}}}}}]

    async def list_users() -> list:
        return users

    svc = ElasticService(store_url=template, keep_checkpoints=1, gc_grace_period=0)
    svc.hub = SimpleNamespace(users=list_users)
    svc.metrics = ServiceMetrics()
    results = asyncio.run(svc.run_retention())
    assert [r.error for r in results] == [None, None]
    deleted = {d for r in results for d in r.deleted_servers}
    assert deleted == {own[0]}, deleted  # only the default server's older checkpoint
    assert assert_restorable(base, [named, own[-1]]) == 2
