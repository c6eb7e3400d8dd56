"""Conformance of the real S3 server started by scripts/ceph-rgw.sh (Ceph RADOS Gateway).

Runs only when ELASTIC_TEST_S3_ENDPOINT is set, as after
`eval "$(bash scripts/ceph-rgw.sh start)"` (scripts/test.sh does that). Checks what moto cannot:
that the server verifies SigV4 signatures, plus bucket ops, multipart upload, range get, listing,
copy, bulk delete and presigned GET/PUT over plain urllib.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import uuid
from datetime import timedelta

import pytest

ENDPOINT = os.environ.get("ELASTIC_TEST_S3_ENDPOINT")

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(
        not ENDPOINT,
        reason="ELASTIC_TEST_S3_ENDPOINT not set: start Ceph RGW with "
        '`eval "$(bash scripts/ceph-rgw.sh start)"`',
    ),
]

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def client():
    from minio import Minio

    return Minio(
        ENDPOINT,
        access_key=os.environ["ELASTIC_TEST_S3_ACCESS_KEY"],
        secret_key=os.environ["ELASTIC_TEST_S3_SECRET_KEY"],
        secure=False,
    )


@pytest.fixture(scope="module")
def bucket():
    return os.environ.get("ELASTIC_TEST_S3_BUCKET", "elastic-test")


@pytest.fixture
def prefix(client, bucket):
    """A unique key prefix in the test bucket, emptied afterwards."""
    from minio.deleteobjects import DeleteObject

    p = f"conformance-{uuid.uuid4().hex[:12]}/"
    yield p
    objs = [DeleteObject(o.object_name) for o in client.list_objects(bucket, p, recursive=True)]
    if objs:
        assert not list(client.remove_objects(bucket, objs))


def _get(client, bucket, key, **kw) -> bytes:
    r = client.get_object(bucket, key, **kw)
    try:
        return r.read()
    finally:
        r.close()
        r.release_conn()


def test_precreated_bucket_exists(client, bucket):
    assert client.bucket_exists(bucket)


def test_bucket_lifecycle(client):
    name = f"elastic-conf-{uuid.uuid4().hex[:10]}"
    assert not client.bucket_exists(name)
    client.make_bucket(name)
    try:
        assert client.bucket_exists(name)
        assert name in {b.name for b in client.list_buckets()}
        client.put_object(name, "k", io.BytesIO(b"v"), 1)
        client.remove_object(name, "k")
    finally:
        client.remove_bucket(name)
    assert not client.bucket_exists(name)


def test_put_get_stat_range(client, bucket, prefix):
    key = prefix + "small.bin"
    data = b"0123456789" * 100
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type="application/x-test")
    st = client.stat_object(bucket, key)
    assert st.size == len(data)
    assert st.content_type == "application/x-test"
    assert _get(client, bucket, key) == data
    assert _get(client, bucket, key, offset=10, length=5) == data[10:15]


def test_multipart_20mib(client, bucket, prefix, tmp_path):
    key = prefix + "big.bin"
    data = os.urandom(20 * MiB)
    # Unknown length + part_size forces a multipart upload (4 parts of 5 MiB).
    client.put_object(bucket, key, io.BytesIO(data), -1, part_size=5 * MiB)
    st = client.stat_object(bucket, key)
    assert st.size == len(data)
    assert st.etag.endswith("-4"), st.etag  # multipart ETag: md5 of the part md5s, "-<parts>"
    assert hashlib.sha256(_get(client, bucket, key)).digest() == hashlib.sha256(data).digest()
    assert _get(client, bucket, key, offset=7 * MiB, length=100) == data[7 * MiB : 7 * MiB + 100]
    # fput/fget of the same size through files
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    client.fput_object(bucket, prefix + "big2.bin", str(src), part_size=5 * MiB)
    client.fget_object(bucket, prefix + "big2.bin", str(dst))
    assert dst.read_bytes() == data


def test_listing_copy_bulk_delete(client, bucket, prefix):
    from minio.commonconfig import CopySource
    from minio.deleteobjects import DeleteObject

    keys = [prefix + k for k in ("a.txt", "dir/b.txt", "dir/c.txt", "dir/sub/d.txt")]
    for k in keys:
        client.put_object(bucket, k, io.BytesIO(k.encode()), len(k))
    assert (
        sorted(o.object_name for o in client.list_objects(bucket, prefix, recursive=True)) == keys
    )
    top = {o.object_name: o.is_dir for o in client.list_objects(bucket, prefix)}
    assert top == {prefix + "a.txt": False, prefix + "dir/": True}
    client.copy_object(bucket, prefix + "copy.txt", CopySource(bucket, keys[0]))
    assert _get(client, bucket, prefix + "copy.txt") == keys[0].encode()
    errors = list(client.remove_objects(bucket, [DeleteObject(k) for k in keys[1:]]))
    assert errors == []
    left = sorted(o.object_name for o in client.list_objects(bucket, prefix, recursive=True))
    assert left == [prefix + "a.txt", prefix + "copy.txt"]


def test_presigned_get_and_put(client, bucket, prefix):
    key = prefix + "presigned.bin"
    data = os.urandom(4096)
    put_url = client.presigned_put_object(bucket, key, expires=timedelta(minutes=5))
    # urllib's default Content-Type would be application/x-www-form-urlencoded.
    req = urllib.request.Request(
        put_url, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    get_url = client.presigned_get_object(bucket, key, expires=timedelta(minutes=5))
    with urllib.request.urlopen(get_url, timeout=30) as r:
        assert r.read() == data
    # Tampering with the signed URL must be refused.
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(get_url.replace("presigned.bin", "presigned.bix"), timeout=30)
    assert ei.value.code == 403


def test_wrong_secret_rejected(client, bucket):
    from minio import Minio
    from minio.error import S3Error

    bad = Minio(
        ENDPOINT,
        access_key=os.environ["ELASTIC_TEST_S3_ACCESS_KEY"],
        secret_key=os.environ["ELASTIC_TEST_S3_SECRET_KEY"] + "x",
        secure=False,
        region="us-east-1",  # skip the region lookup, so the first request is a signed one
    )
    with pytest.raises(S3Error) as ei:
        bad.put_object(bucket, "must-not-exist", io.BytesIO(b"x"), 1)
    assert ei.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as ei:
        list(bad.list_objects(bucket))
    assert ei.value.code == "SignatureDoesNotMatch"
    assert not any(o.object_name == "must-not-exist" for o in client.list_objects(bucket))


def test_unknown_access_key_rejected(bucket):
    from minio import Minio
    from minio.error import S3Error

    bad = Minio(
        ENDPOINT,
        access_key="NOSUCHKEY0000000000",
        secret_key="x" * 40,
        secure=False,
        region="us-east-1",
    )
    with pytest.raises(S3Error) as ei:
        list(bad.list_objects(bucket))  # a GET: a HEAD's error has no body, hence no code
    assert ei.value.code == "InvalidAccessKeyId"
