"""kernel_agent.store: file:// and s3:// (moto, and Ceph RGW when available) through one API."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest

from kernel_agent.serialize import dumps, loads
from kernel_agent.store import (
    Bandwidth,
    FileStore,
    S3Store,
    Store,
    StoreError,
    blob_key,
    new_checkpoint_id,
    open_store,
)
from tests.s3 import S3Server

MiB = 1 << 20


@dataclass
class Backend:
    name: str
    url: str
    options: dict[str, Any]
    store: Store
    s3: S3Server | None = None
    root: Path | None = None

    def reopen(self, **overrides: Any) -> Store:
        return open_store(self.url, **{**self.options, **overrides})

    def overwrite_blob(self, key: str, data: bytes) -> None:
        """Replace a stored blob's bytes behind the store's back (corruption)."""
        if self.root is not None:
            path = self.root / "blobs" / key[:2] / key
            os.chmod(path, 0o644)
            path.write_bytes(data)
        else:
            import io

            assert isinstance(self.store, S3Store) and self.s3 is not None
            self.s3.client().put_object(
                self.store.bucket, self.store._blob_name(key), io.BytesIO(data), len(data)
            )

    def read_blob_raw(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / "blobs" / key[:2] / key).read_bytes()
        assert isinstance(self.store, S3Store) and self.s3 is not None
        resp = self.s3.client().get_object(self.store.bucket, self.store._blob_name(key))
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()


@pytest.fixture(params=["file", "moto", "rgw"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        root = tmp_path / "store"
        url = f"file://{root}"
        return Backend("file", url, {}, open_store(url), root=root)
    s3: S3Server = request.getfixturevalue(f"{request.param}_s3")
    url = s3.url()
    opts = s3.options()
    return Backend(request.param, url, opts, open_store(url, **opts), s3=s3)


def manifest(*keys: str, **extra: Any) -> bytes:
    return json.dumps({"blobs": list(keys), **extra}).encode()


def put_bytes(store: Store, data: bytes) -> str:
    return store.put_blob([data]).key


# ---------------------------------------------------------------------------------- blobs


def test_put_get_roundtrip_of_a_serialized_covariable(backend: Backend):
    a = np.random.default_rng(1).random((300, 200))
    s = dumps({"a": a, "v": a[10:20], "meta": {"k": [1, 2]}})
    ref = backend.store.put_blob(s.parts)
    assert ref.uploaded and ref.size == s.nbytes
    assert ref.key == blake3.blake3(b"".join(s.parts)).hexdigest() == blob_key(s.parts)
    blob = backend.store.get_blob(ref.key, ref.size)
    assert isinstance(blob, bytearray) and len(blob) == s.nbytes
    out = loads(blob)
    np.testing.assert_array_equal(out["a"], a)
    assert np.shares_memory(out["v"], out["a"]) and out["meta"] == {"k": [1, 2]}


def test_second_put_of_the_same_bytes_is_not_uploaded(backend: Backend):
    parts = [b"header", memoryview(bytes(range(256)) * 1000), b"tail"]
    first = backend.store.put_blob(parts)
    assert backend.store.has_blob(first.key)
    second = backend.store.put_blob([b"".join(bytes(p) for p in parts)])  # same bytes, one part
    assert second.key == first.key and second.size == first.size
    assert first.uploaded and not second.uploaded


def test_has_blob_false_for_unknown_key(backend: Backend):
    assert not backend.store.has_blob("0" * 64)


def test_empty_blob(backend: Backend):
    ref = backend.store.put_blob([])
    assert ref.size == 0 and backend.store.get_blob(ref.key, 0) == bytearray()


def test_corrupted_blob_is_refused(backend: Backend):
    data = os.urandom(100_000)
    key = put_bytes(backend.store, data)
    bad = bytearray(data)
    bad[5000] ^= 0x01  # one flipped bit, same size
    backend.overwrite_blob(key, bytes(bad))
    with pytest.raises(StoreError, match=f"blob {key} is corrupted"):
        backend.store.get_blob(key, len(data))
    with pytest.raises(StoreError, match="corrupted"):
        backend.store.get_blob(key)


def test_truncated_blob_is_refused(backend: Backend):
    data = os.urandom(50_000)
    key = put_bytes(backend.store, data)
    backend.overwrite_blob(key, data[:-1])
    with pytest.raises(StoreError, match=f"blob {key} is corrupted"):
        backend.store.get_blob(key, len(data))


def test_missing_blob_is_a_clear_error(backend: Backend):
    with pytest.raises(StoreError, match="missing"):
        backend.store.get_blob("ab" * 32, 10)


def test_invalid_blob_key_rejected(backend: Backend):
    with pytest.raises(StoreError, match="invalid blob key"):
        backend.store.get_blob("../../etc/passwd")


def test_40_mib_blob_goes_through_multipart(backend: Backend):
    a = np.random.default_rng(2).integers(0, 255, size=40 * MiB, dtype=np.uint8)
    s = dumps({"a": a})
    ref = backend.store.put_blob(s.parts)
    assert ref.size == s.nbytes > 40 * MiB
    if backend.s3 is not None:
        st = backend.s3.client().stat_object(
            backend.store.bucket, backend.store._blob_name(ref.key)
        )
        assert st.size == ref.size
        assert "-" in st.etag.strip('"'), f"not a multipart upload: etag {st.etag}"
    out = loads(backend.store.get_blob(ref.key, ref.size))
    np.testing.assert_array_equal(out["a"], a)


def test_concurrent_puts_from_threads(backend: Backend):
    payloads = [os.urandom(3 * MiB) for _ in range(4)] * 2  # each twice, concurrently
    refs: list[Any] = [None] * len(payloads)
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            refs[i] = backend.store.put_blob([payloads[i]])
        except BaseException as exc:  # a thread's exception would otherwise only be printed
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, data in enumerate(payloads):
        assert bytes(backend.store.get_blob(refs[i].key, len(data))) == data
    if backend.s3 is not None:  # one upload per blob: the second put waited and found it there
        for i in range(4):
            assert sorted([refs[i].uploaded, refs[i + 4].uploaded]) == [False, True]


# ----------------------------------------------------------------------------- manifests


def test_manifest_roundtrip_and_never_overwritten(backend: Backend):
    cid = new_checkpoint_id()
    backend.store.put_manifest(cid, manifest(x=1))
    with pytest.raises(StoreError, match=f"checkpoint {cid} already exists"):
        backend.store.put_manifest(cid, manifest(x=2))
    assert json.loads(backend.store.get_manifest(cid))["x"] == 1


def test_unknown_checkpoint_is_a_clear_error(backend: Backend):
    with pytest.raises(StoreError, match="does not exist"):
        backend.store.get_manifest("20260101T000000000000Z-nothere")


def test_invalid_checkpoint_id_rejected(backend: Backend):
    for bad in ("../evil", "a/b", "", ".hidden"):
        with pytest.raises(StoreError, match="invalid checkpoint id"):
            backend.store.put_manifest(bad, b"{}")


def test_checkpoint_without_manifest_does_not_exist(backend: Backend):
    key = put_bytes(backend.store, b"orphan")
    if backend.root is not None:
        (backend.root / "checkpoints" / "20260101T000000000000Z-half").mkdir()
    assert backend.store.list_checkpoints() == []
    assert backend.store.latest() is None
    assert backend.store.has_blob(key)


def test_list_and_latest_oldest_to_newest(backend: Backend):
    k1 = put_bytes(backend.store, b"one" * 1000)
    k2 = put_bytes(backend.store, b"two" * 2000)
    ids = [new_checkpoint_id() for _ in range(3)]
    backend.store.put_manifest(ids[0], manifest(k1))
    backend.store.put_manifest(ids[1], manifest(k1, k2))
    backend.store.put_manifest(ids[2], manifest(k2))
    infos = backend.store.list_checkpoints()
    assert [i.id for i in infos] == ids
    assert backend.store.latest() == ids[2]
    assert infos[1].size == len(manifest(k1, k2)) + 3000 + 6000
    assert infos[0].created <= infos[1].created <= infos[2].created
    assert infos[0].created.tzinfo is not None


def test_prune_keeps_every_blob_of_kept_checkpoints(backend: Backend):
    shared = put_bytes(backend.store, b"shared" * 100)
    only_old = put_bytes(backend.store, b"old" * 100)
    only_new = put_bytes(backend.store, b"new" * 100)
    ids = [new_checkpoint_id() for _ in range(4)]
    backend.store.put_manifest(ids[0], manifest(shared, only_old))
    backend.store.put_manifest(ids[1], manifest(only_old))
    backend.store.put_manifest(ids[2], manifest(shared))
    backend.store.put_manifest(ids[3], manifest(shared, only_new))
    deleted = backend.store.prune(keep_last=2, grace_s=0)
    assert deleted == ids[:2]
    assert [i.id for i in backend.store.list_checkpoints()] == ids[2:]
    assert backend.store.has_blob(shared) and backend.store.has_blob(only_new)
    assert not backend.store.has_blob(only_old)
    with pytest.raises(StoreError, match="does not exist"):
        backend.store.get_manifest(ids[0])


def test_prune_spares_young_unreferenced_blobs(backend: Backend):
    """A checkpoint being written by another kernel has blobs but no manifest yet."""
    in_flight = put_bytes(backend.store, b"in flight")
    cid = new_checkpoint_id()
    backend.store.put_manifest(cid, manifest())
    assert backend.store.prune(keep_last=1) == []
    assert backend.store.has_blob(in_flight)
    backend.store.prune(keep_last=1, grace_s=0)
    assert not backend.store.has_blob(in_flight)


def test_prune_reads_signed_manifests(backend: Backend):
    key = put_bytes(backend.store, b"signed")
    body = manifest(key).decode()
    backend.store.put_manifest(
        new_checkpoint_id(), json.dumps({"hmac_sha256": "x", "manifest": body}).encode()
    )
    backend.store.prune(keep_last=1, grace_s=0)
    assert backend.store.has_blob(key)


def test_prune_with_an_unreadable_manifest_deletes_no_blob(backend: Backend):
    key = put_bytes(backend.store, b"keep me")
    backend.store.put_manifest(new_checkpoint_id(), b"not json at all")
    backend.store.prune(keep_last=1, grace_s=0)
    assert backend.store.has_blob(key)


def test_prune_rejects_keep_last_zero(backend: Backend):
    with pytest.raises(StoreError, match="keep at least 1"):
        backend.store.prune(keep_last=0)


def test_delete_checkpoint(backend: Backend):
    a, b = new_checkpoint_id(), new_checkpoint_id()
    backend.store.put_manifest(a, manifest())
    backend.store.put_manifest(b, manifest())
    backend.store.delete_checkpoint(b)
    assert backend.store.latest() == a
    backend.store.delete_checkpoint(b)  # deleting twice is harmless


def test_measure_is_sane_and_cached(backend: Backend):
    bw = backend.store.measure()
    assert isinstance(bw, Bandwidth)
    assert bw.write_Bps > 0 and bw.read_Bps > 0 and bw.latency_s > 0
    assert backend.reopen().measure() is bw  # cached per store root for the process
    assert backend.store.list_checkpoints() == []  # the probe leaves nothing behind
    if backend.root is not None:
        assert [p.name for p in backend.root.iterdir()] == ["blobs", "checkpoints"] or sorted(
            p.name for p in backend.root.iterdir()
        ) == ["blobs", "checkpoints"]


# ------------------------------------------------------------------------ URLs and errors


@pytest.mark.parametrize(
    "url, match",
    [
        ("ftp://host/dir", r"unknown store scheme 'ftp://'.*file://, s3://"),
        ("gs://bucket/x", r"unknown store scheme 'gs://'"),
        ("/abs/dir", r"invalid store URL.*file:///absolute/dir or s3://bucket/prefix"),
        ("file:relative/dir", r"path must be absolute"),
        ("file://relative/dir", r"path must be absolute, with three slashes"),
        ("s3://", r"no bucket"),
        ("s3://Bad_Bucket/x", r"invalid bucket name"),
        ("s3://b/../x", r"invalid bucket name"),
        ("s3://bucket/p?endpoint=http://127.0.0.1:9000", r"no query.*ELASTIC_S3_ENDPOINT"),
    ],
)
def test_bad_urls(url: str, match: str):
    with pytest.raises(StoreError, match=match):
        open_store(url)


def test_file_url_forms(tmp_path: Path):
    s = open_store(f"file://localhost{tmp_path}/a/../b")
    assert isinstance(s, FileStore) and s.url == f"file://{tmp_path}/b"
    assert (tmp_path / "b" / "blobs").is_dir()


def test_file_store_unknown_option(tmp_path: Path):
    with pytest.raises(StoreError, match="unknown file store option"):
        open_store(f"file://{tmp_path}", endpoint="x")


def test_file_store_not_writable(tmp_path: Path):
    target = tmp_path / "ro"
    (target / "blobs").mkdir(parents=True)
    (target / "checkpoints").mkdir()
    for d in (target, target / "blobs", target / "checkpoints"):
        os.chmod(d, 0o500)
    try:
        if os.access(target, os.W_OK):  # root ignores modes
            pytest.skip("running as root: directory permissions are not enforced")
        store = open_store(f"file://{target}")  # reading a read-only store is fine
        assert store.latest() is None
        with pytest.raises(StoreError, match="permission denied"):
            store.put_blob([b"x"])
    finally:
        for d in (target, target / "blobs", target / "checkpoints"):
            os.chmod(d, 0o700)


def test_file_store_read_only_filesystem(tmp_path: Path):
    """A real read-only bind mount (needs root; skipped otherwise)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    writer = open_store(f"file://{src}")
    key = put_bytes(writer, b"ro data")
    writer.put_manifest("c1", manifest(key))
    ro.mkdir()
    r = subprocess.run(
        ["mount", "--bind", "-o", "ro", str(src), str(ro)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here ({r.stderr.strip() or 'not root'})")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=False)
        store = open_store(f"file://{ro}")
        assert store.latest() == "c1" and store.get_blob(key) == bytearray(b"ro data")
        with pytest.raises(StoreError, match="read-only filesystem"):
            store.put_blob([b"new"])
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_s3_missing_bucket(s3_server: S3Server):
    with pytest.raises(
        StoreError, match=r"bucket 'no-such-bucket-[0-9a-f]+' does not exist.*create it"
    ):
        open_store(f"s3://no-such-bucket-{os.urandom(4).hex()}/x", **s3_server.options())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_unreachable_endpoint():
    port = _closed_port()
    with pytest.raises(StoreError, match=rf"endpoint 127.0.0.1:{port} is unreachable.*server runs"):
        open_store(
            "s3://bucket/x",
            endpoint=f"http://127.0.0.1:{port}",
            access_key="a",
            secret_key="b",
            region="us-east-1",
            retries=0,
        )


def test_s3_not_an_s3_server():
    """An HTTP server that is not S3 (here: a plain socket answering garbage HTML)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b"<html>hello</html>"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(StoreError, match=r"did not answer like an S3 server|S3 failure"):
            open_store(
                "s3://bucket/x",
                endpoint=f"http://127.0.0.1:{port}",
                access_key="a",
                secret_key="b",
                region="us-east-1",
                retries=0,
            )
    finally:
        srv.close()


def test_s3_wrong_credentials(s3_server: S3Server):
    if not s3_server.checks_signatures:
        pytest.skip(f"{s3_server.name} does not verify SigV4 signatures: wrong keys are accepted")
    with pytest.raises(StoreError, match=r"credentials rejected|access denied"):
        open_store(s3_server.url(), **s3_server.options(secret_key="definitely-wrong"))
    with pytest.raises(StoreError, match=r"credentials rejected|access denied"):
        open_store(s3_server.url(), **s3_server.options(access_key="NOSUCHKEY"))


def test_s3_bad_options(moto_s3: S3Server):
    with pytest.raises(StoreError, match="unknown S3 store option"):
        open_store(moto_s3.url(), **moto_s3.options(colour="blue"))
    with pytest.raises(StoreError, match="credentials incomplete"):
        open_store(moto_s3.url(), **{**moto_s3.options(), "secret_key": None, "access_key": "x"})
    with pytest.raises(StoreError, match="below the S3 minimum"):
        open_store(moto_s3.url(), **moto_s3.options(part_size=1024))
    with pytest.raises(StoreError, match="invalid S3 endpoint"):
        open_store(moto_s3.url(), **moto_s3.options(endpoint="http://h:1/path"))


def test_s3_options_from_environment(moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ELASTIC_S3_ENDPOINT", moto_s3.endpoint)
    monkeypatch.setenv("ELASTIC_S3_SECURE", "false")
    monkeypatch.setenv("ELASTIC_S3_ACCESS_KEY", moto_s3.access_key)
    monkeypatch.setenv("ELASTIC_S3_SECRET_KEY", moto_s3.secret_key)
    monkeypatch.setenv("ELASTIC_S3_REGION", "us-east-1")
    store = open_store(moto_s3.url())
    assert isinstance(store, S3Store) and not store.secure
    key = put_bytes(store, b"via env")
    assert store.get_blob(key) == bytearray(b"via env")


def test_s3_tls_to_a_plain_http_server_names_the_fix(moto_s3: S3Server):
    with pytest.raises(StoreError, match=r"TLS failure.*secure=False"):
        open_store(
            moto_s3.url(), **moto_s3.options(endpoint=moto_s3.endpoint, secure=True, retries=0)
        )


def test_s3_keys_live_under_the_prefix(moto_s3: S3Server):
    url = moto_s3.url()
    store = open_store(url + "/", **moto_s3.options())
    assert store.url == url
    key = put_bytes(store, b"x")
    store.put_manifest("c1", manifest(key))
    prefix = url.split("/", 3)[3]
    names = sorted(
        o.object_name
        for o in moto_s3.client().list_objects(moto_s3.bucket, prefix=prefix, recursive=True)
    )
    assert names == [f"{prefix}/blobs/{key[:2]}/{key}", f"{prefix}/checkpoints/c1/manifest.json"]


# ------------------------------------------------------------------------------ disk full


def test_disk_full_on_blob_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = open_store(f"file://{tmp_path / 'store'}")
    real_write = os.write
    written = [0]

    def full_write(fd: int, data: Any) -> int:
        if written[0] > 3 * MiB:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, data)
        written[0] += n
        return n

    monkeypatch.setattr(os, "write", full_write)
    with pytest.raises(StoreError, match=r"no space left.*blobs"):
        store.put_blob([os.urandom(40 * MiB)])
    monkeypatch.undo()
    assert [p for p in (tmp_path / "store" / "blobs").rglob("*")] == []


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A real 2 MiB tmpfs (needs root; skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_a_real_tiny_filesystem(tiny_fs: Path):
    store = open_store(f"file://{tiny_fs}")
    ok = store.put_blob([os.urandom(512 * 1024)])
    with pytest.raises(StoreError, match=rf"no space left.*{tiny_fs}"):
        store.put_blob([os.urandom(4 * MiB)])
    blob_files = [p for p in (tiny_fs / "blobs").rglob("*") if p.is_file()]
    assert blob_files == [tiny_fs / "blobs" / ok.key[:2] / ok.key]
    # fill the rest, then a manifest cannot be written either: no checkpoint appears
    filler = tiny_fs / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    with pytest.raises(StoreError, match="no space left"):
        store.put_manifest("c1", manifest(ok.key, pad="x" * 200_000))
    assert store.list_checkpoints() == [] and store.latest() is None
    assert list((tiny_fs / "checkpoints").rglob("manifest.json")) == []
    filler.unlink()
    store.put_manifest("c1", manifest(ok.key))
    assert store.latest() == "c1"


def test_s3_transient_errors_are_retried_a_bounded_number_of_times():
    """A server that keeps answering 503: a bounded number of retries, then a clear error."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    requests = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                requests[0] += 1
                conn.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(StoreError, match=r"HTTP 503|ServiceUnavailable|SlowDown|server error"):
            open_store(
                "s3://bucket/x",
                endpoint=f"http://127.0.0.1:{port}",
                access_key="a",
                secret_key="b",
                region="us-east-1",
                retries=2,
            )
    finally:
        srv.close()
    assert requests[0] == 3  # the first try + 2 retries


def test_garbage_collection_spares_a_blob_reused_after_its_listing(tmp_path):
    import os

    from kernel_agent.store import open_store

    store = open_store((tmp_path / "s").as_uri())
    ref = store.put_blob([b"old unreferenced data"])
    old = store._blob_path(ref.key)
    os.utime(old, (1, 1))  # long past the grace period
    listing = store._blobs

    def listed_then_reused():
        out = listing()
        again = store.put_blob([b"old unreferenced data"])  # a checkpoint reuses it meanwhile
        assert not again.uploaded
        return out

    store._blobs = listed_then_reused
    assert store.collect_garbage(grace_s=60) == []
    assert store.has_blob(ref.key)
