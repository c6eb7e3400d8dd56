"""Fault injection against real kernels and real stores: one failure scenario per test.

Each test breaks something at a precise point (kill -9 between upload and commit, the S3
server stopped mid-upload, a corrupted blob, a full disk, two checkpoints at once, a library
upgrade) and then checks what a user relies on: a clear error, the previous checkpoint intact
and restorable, nothing half-written visible, and the next checkpoint working again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults import (
    PauseHook,
    assert_verified,
    checkpoint,
    kernel_env,
    kill9,
    manifest_doc,
    reply,
    restore,
    send,
    start_kernel,
    store_ids,
    wait_for,
)

# A value no cell can recreate (the cell reads the OS entropy pool): it must be shipped.
UNIQUE = "import os, numpy as np\nsecret = np.frombuffer(os.urandom({n}), dtype=np.uint8).copy()"


@pytest.fixture
def kernels():
    made = []
    yield made
    for k in made:
        try:
            k.shutdown()
        except Exception:  # noqa: BLE001 - a killed kernel may already be gone
            pass


def blob_count(root: Path) -> int:
    return sum(1 for p in (root / "blobs").rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.parametrize("backend", ["file", "moto"])
def test_kill_9_between_upload_and_commit_keeps_the_previous_checkpoint(
    backend, tmp_path, kernels, request
):
    hook = PauseHook(tmp_path / "pause")
    hook.disarm()
    env = kernel_env(**hook.env())
    if backend == "moto":
        moto = request.getfixturevalue("private_moto")
        env.update(moto.env())
        url, opts = moto.info.url(), moto.options()
    else:
        url, opts = (tmp_path / "store").as_uri(), {}
    a = start_kernel(tmp_path, env)
    kernels.append(a)
    a.ok("x = [1, 2, 3]")
    first = checkpoint(a, url)
    a.ok(UNIQUE.format(n=4_000_000))
    a.ok("x.append(4)")

    hook.arm()
    send(a, f"import kernel_agent as _ka; _ka.checkpoint({url!r})")
    hook.wait_reached()
    if backend == "file":  # the new blobs are written, the manifest is not
        assert blob_count(tmp_path / "store") > len(manifest_doc(url, first["checkpoint_id"])["blobs"])
    kill9(a)

    assert store_ids(url, **opts) == [first["checkpoint_id"]]  # nothing half-written visible
    b = start_kernel(tmp_path, env)
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert r["checkpoint_id"] == first["checkpoint_id"]
    assert b.value("[x, 'secret' in globals()]") == [[1, 2, 3], False]


def test_s3_server_stopped_mid_upload_then_back(private_moto, tmp_path, kernels):
    env = kernel_env(**private_moto.env())
    url = private_moto.info.url()
    a = start_kernel(tmp_path, env)
    kernels.append(a)
    a.ok("x = {'k': 1}")
    first = checkpoint(a, url)
    a.ok(UNIQUE.format(n=400_000_000))  # 400 MB in 5 MiB parts: the upload takes a while

    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://{private_moto.info.endpoint}",
                      aws_access_key_id="testing", aws_secret_access_key="testing-secret",
                      region_name="us-east-1")
    opts = "{'part_size': 5 * 2**20, 'retries': 1, 'connect_timeout': 2, 'read_timeout': 10}"
    msg = send(a, f"import kernel_agent as _ka; _ka.checkpoint({url!r}, store_options={opts})")

    def uploading() -> bool:
        return bool(s3.list_multipart_uploads(Bucket=private_moto.info.bucket).get("Uploads"))

    wait_for(uploading, 120, "the multipart upload to start")
    private_moto.stop()
    content = reply(a, msg, timeout=180)
    assert content["status"] == "error"
    assert "StoreError" in content["ename"]
    assert "unreachable" in content["evalue"] or "S3" in content["evalue"], content["evalue"]
    assert a.value("[x, int(secret.nbytes)]") == [{"k": 1}, 400_000_000]  # the kernel is untouched

    private_moto.start()  # the server is back, with the same data
    assert store_ids(url, **private_moto.options()) == [first["checkpoint_id"]]
    second = checkpoint(a, url)
    assert second["variables"]["secret"] == "ship"
    b = start_kernel(tmp_path, env)
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert r["checkpoint_id"] == second["checkpoint_id"]
    assert b.value("int(secret.nbytes)") == 400_000_000


def test_brief_s3_outage_is_ridden_out_by_retries(private_moto, tmp_path, kernels):
    """Connection refused for a moment: the store's retries (bounded backoff) carry the upload."""
    import threading

    env = kernel_env(**private_moto.env())
    url = private_moto.info.url()
    a = start_kernel(tmp_path, env)
    kernels.append(a)
    a.ok(UNIQUE.format(n=2_000_000))
    # stop the server while the kernel serializes; bring it back while it retries
    private_moto.stop()
    t = threading.Timer(0.5, private_moto.start)
    t.start()
    try:
        c = checkpoint(a, url, store_options={"retries": 8, "connect_timeout": 2})
    finally:
        t.join()
    assert c["variables"]["secret"] == "ship"
    assert store_ids(url, **private_moto.options()) == [c["checkpoint_id"]]


def test_corrupted_blob_is_caught_before_unpickling_and_named(private_moto, tmp_path, kernels):
    """A blob replaced by a hostile pickle: the checksum refuses it, so its code never runs."""
    from kernel_agent.serialize import dumps
    from kernel_agent.store import open_store

    env = kernel_env(**private_moto.env())
    url = private_moto.info.url()
    a = start_kernel(tmp_path, env)
    kernels.append(a)
    a.ok(UNIQUE.format(n=1000))
    c = checkpoint(a, url)
    assert c["variables"]["secret"] == "ship"
    doc = manifest_doc(url, c["checkpoint_id"], **private_moto.options())
    (blob,) = [e["blob"] for e in doc["covariables"] if "secret" in e["names"]]

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    hostile = b"".join(bytes(p) for p in dumps({"secret": Evil()}, namespace={}).parts)
    store = open_store(url, **private_moto.options())
    client = store.client
    import io

    client.put_object(store.bucket, store._blob_name(blob), io.BytesIO(hostile), len(hostile))

    b = start_kernel(tmp_path, env)
    kernels.append(b)
    r = restore(b, url)
    v = r["variables"]["secret"]
    assert v["action"] == "lost" and "corrupted" in v["detail"], v
    assert not r["verified"]
    assert not marker.exists(), "the hostile pickle was loaded"
    assert b.value("'secret' in globals()") is False


def test_truncated_blob_of_a_recomputable_value_is_recomputed(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path)
    kernels.append(a)
    a.ok("def slow():\n    t = 0\n    for i in range(3_000_000):\n        t += i % 7\n    return t")
    a.ok("value = [slow()]")
    c = checkpoint(a, url)
    assert c["variables"]["value"] == "ship"
    for p in (tmp_path / "store" / "blobs").rglob("*"):
        if p.is_file():
            p.write_bytes(p.read_bytes()[:-7])
    b = start_kernel(tmp_path)
    kernels.append(b)
    r = restore(b, url)
    assert r["variables"]["value"] == {"action": "recomputed", "verified": True}
    assert any("corrupted" in w for w in r["warnings"]), r["warnings"]


def test_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays(tiny_tmpfs, tmp_path, kernels):
    url = (tiny_tmpfs / "store").as_uri()
    a = start_kernel(tmp_path)
    kernels.append(a)
    a.ok(UNIQUE.format(n=2000))
    first = checkpoint(a, url)
    a.ok("import os\nbig = np.frombuffer(os.urandom(3_000_000), dtype=np.uint8).copy()")
    res = a.run(f"import kernel_agent as _ka; _ka.checkpoint({url!r})")
    assert not res.ok
    assert "full" in res.error["evalue"].lower() or "space" in res.error["evalue"].lower(), res.error
    assert store_ids(url) == [first["checkpoint_id"]]
    leftovers = [p.name for p in tiny_tmpfs.rglob(".tmp-*")]
    assert leftovers == [], leftovers
    b = start_kernel(tmp_path)
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert b.value("['big' in globals(), int(secret.nbytes)]") == [False, 2000]
    a.ok("del big")  # room again: the next checkpoint succeeds
    assert checkpoint(a, url)["checkpoint_id"] in store_ids(url)


def test_two_checkpoints_at_once_are_serialized_and_both_consistent(tmp_path, kernels):
    hook = PauseHook(tmp_path / "pause")
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env(**hook.env()))
    kernels.append(a)
    hook.disarm()
    a.ok("x = [1]\ny = {'v': 1}")
    base = checkpoint(a, url)["checkpoint_id"]
    hook.arm()
    a.ok(
        "import threading, kernel_agent\n_out = {}\n"
        "def _run(tag):\n"
        "    try:\n"
        f"        _out[tag] = kernel_agent.checkpoint({url!r})['checkpoint_id']\n"
        "    except Exception as e:\n"
        "        _out[tag] = repr(e)\n"
        "_t1 = threading.Thread(target=_run, args=('first',)); _t1.start()"
    )
    hook.wait_reached()  # the first holds the checkpoint lock, paused before its commit
    a.ok("_t2 = threading.Thread(target=_run, args=('second',)); _t2.start()")
    assert a.value("[_t1.is_alive(), _t2.is_alive()]") == [True, True]
    assert store_ids(url) == [base]  # neither committed: the second waits for the lock
    hook.release()
    a.ok("_t1.join(60); _t2.join(60)")
    out = a.value("_out")
    first, second = out["first"], out["second"]
    assert store_ids(url) == [base, first, second], out
    assert manifest_doc(url, second)["parent"] == first
    assert manifest_doc(url, first)["parent"] == base
    for cid in (first, second):
        b = start_kernel(tmp_path)
        kernels.append(b)
        r = restore(b, url, checkpoint_id=cid)
        assert_verified(r)
        assert b.value("[x, y]") == [[1], {"v": 1}]


def test_background_round_and_explicit_checkpoint_at_once(tmp_path, kernels):
    """A background commit paused inside the checkpoint lock; an explicit checkpoint waits for
    it, then commits after it, so the explicit one is the latest, and both restore."""
    hook = PauseHook(tmp_path / "pause")
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env(**hook.env()))
    kernels.append(a)
    hook.arm()
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.1)")
    a.ok("x = [1, 2]\nz = 3")
    assert "background-commit" in hook.wait_reached()
    msg = send(a, f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r})")
    with pytest.raises(Exception):  # noqa: B017 - queue.Empty: the explicit one is blocked
        a.kc.get_shell_msg(timeout=1.0)
    hook.release()
    assert reply(a, msg)["status"] == "ok"
    explicit = a.value("_c['checkpoint_id']")
    ids = store_ids(url)
    assert len(ids) == 2 and ids[-1] == explicit and ids[0].endswith(".bg"), ids
    for cid in ids:
        b = start_kernel(tmp_path)
        kernels.append(b)
        r = restore(b, url, checkpoint_id=cid)
        assert_verified(r)
        assert b.value("[x, z]") == [[1, 2], 3]


@pytest.mark.parametrize("signed", [False, True])
def test_library_version_drift_recomputes_or_names(tmp_path, kernels, signed):
    from kernel_agent.manifest import Manifest
    from kernel_agent.store import open_store

    key = "k" * 32 if signed else None
    env = kernel_env(**({"ELASTIC_CHECKPOINT_KEY": key} if key else {}))
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, env)
    kernels.append(a)
    a.ok("import numpy as np")
    a.ok("def slow():\n    t = 0\n    for i in range(3_000_000):\n        t += i % 7\n    return t")
    a.ok("arr = np.array([slow(), 1.0])")  # slow to recompute: shipped, but it can be re-run
    a.ok(UNIQUE.format(n=64))  # only the checkpoint has it
    c = checkpoint(a, url)
    assert c["variables"]["arr"] == "ship" and c["variables"]["secret"] == "ship"

    store = open_store(url)
    cid = c["checkpoint_id"]
    path = tmp_path / "store" / "checkpoints" / cid / "manifest.json"
    m = Manifest.from_bytes(store.get_manifest(cid), key.encode() if key else None)
    assert "numpy" in m.environment["packages"]
    m.environment["packages"]["numpy"] = "0.0.1"  # as if written by another numpy
    path.write_bytes(m.to_bytes(key.encode() if key else None))

    b = start_kernel(tmp_path, env)
    kernels.append(b)
    r = restore(b, url)
    assert any("numpy was 0.0.1" in w for w in r["warnings"]), r["warnings"]
    assert r["variables"]["arr"]["action"] == "recomputed" and r["variables"]["arr"]["verified"]
    sec = r["variables"]["secret"]
    assert sec["action"] == "loaded" and sec["library_drift"] == ["numpy"], sec
    assert any(w.startswith("secret: loaded") and "numpy" in w for w in r["warnings"]), r["warnings"]
    assert json.loads(json.dumps(r))  # JSON-able report
