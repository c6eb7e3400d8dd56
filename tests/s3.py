"""S3 protocol servers for tests: moto's threaded server (in-process, fast) and Ceph RGW.

Import the fixtures into a conftest (``from tests.s3 import *  # noqa``) or use the helpers:

* ``moto_s3`` (session): a ``ThreadedMotoServer`` on a free loopback port, one bucket.
  moto does not verify SigV4 signatures: wrong credentials are accepted.
* ``rgw_s3`` (session): the Ceph RADOS Gateway started by ``scripts/ceph-rgw.sh`` (it exports
  ELASTIC_TEST_S3_ENDPOINT, ELASTIC_TEST_S3_ACCESS_KEY, ELASTIC_TEST_S3_SECRET_KEY and
  ELASTIC_TEST_S3_BUCKET); skipped with the reason when those are not set. Checks signatures.
* ``s3_server``: parametrized over both (``[moto]`` and ``[rgw]`` test ids).
* ``s3_url``: a fresh ``s3://bucket/<unique prefix>`` on ``s3_server``, with
  ``s3_server.options()`` the matching ``open_store`` keyword arguments.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["S3Server", "moto_s3", "rgw_s3", "s3_server", "s3_url", "start_moto"]


@dataclass
class S3Server:
    name: str
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str
    checks_signatures: bool
    region: str = "us-east-1"
    _stop: Any = field(default=None, repr=False)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """``open_store`` keyword arguments for this server (plain HTTP on loopback)."""
        opts: dict[str, Any] = {
            "endpoint": f"http://{self.endpoint}",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "retries": 1,
            "connect_timeout": 5,
        }
        opts.update(overrides)
        return opts

    def client(self) -> Any:
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
        )

    def url(self) -> str:
        """A fresh, empty store URL (unique prefix in the server's bucket)."""
        return f"s3://{self.bucket}/t-{secrets.token_hex(6)}"


def start_moto() -> S3Server:
    """Start moto's S3 server on 127.0.0.1:<free port> with one bucket; ``._stop()`` stops it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(
        name="moto",
        endpoint=f"{host}:{port}",
        access_key="testing",
        secret_key="testing-secret",
        bucket="elastic-test",
        checks_signatures=False,
        _stop=server.stop,
    )
    s3.client().make_bucket(s3.bucket)
    return s3


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    s3 = start_moto()
    try:
        yield s3
    finally:
        s3._stop()


@pytest.fixture(scope="session")
def rgw_s3() -> S3Server:
    endpoint = os.environ.get("ELASTIC_TEST_S3_ENDPOINT")
    if not endpoint:
        pytest.skip(
            "no Ceph RGW: ELASTIC_TEST_S3_ENDPOINT is not set "
            '(start one with: eval "$(bash scripts/ceph-rgw.sh start)")'
        )
    endpoint = endpoint.split("://", 1)[-1].rstrip("/")
    s3 = S3Server(
        name="rgw",
        endpoint=endpoint,
        access_key=os.environ.get("ELASTIC_TEST_S3_ACCESS_KEY", ""),
        secret_key=os.environ.get("ELASTIC_TEST_S3_SECRET_KEY", ""),
        bucket=os.environ.get("ELASTIC_TEST_S3_BUCKET", "elastic-test"),
        checks_signatures=True,
    )
    client = s3.client()
    if not client.bucket_exists(s3.bucket):
        client.make_bucket(s3.bucket)
    return s3


@pytest.fixture(params=["moto", "rgw"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(f"{request.param}_s3")


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    return s3_server.url()
