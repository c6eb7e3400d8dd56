"""Fixtures for fault-injection tests: a private, restartable moto server; a tiny tmpfs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from elastic_spawner.localhub import free_port
from tests.s3 import S3Server, moto_s3, rgw_s3, s3_server, s3_url  # noqa: F401


class RestartableMoto:
    """moto's threaded server on a fixed loopback port, which a test can stop and start again.

    moto keeps its buckets and objects in process-global backends, so a restarted server serves
    the same data: from a client's point of view the S3 server was down and came back.
    """

    def __init__(self) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # below the ephemeral range: the port is bound again at each restart, and a port from
        # bind(0) could meanwhile go to another process's kernel or outgoing connection
        self.port = free_port()
        self._server = None
        self.start()
        self.info = S3Server(
            name="moto-private",
            endpoint=f"127.0.0.1:{self.port}",
            access_key="testing",
            secret_key="testing-secret",
            bucket="elastic-crash",
            checks_signatures=False,
        )
        client = self.info.client()
        if not client.bucket_exists(self.info.bucket):
            client.make_bucket(self.info.bucket)

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def env(self) -> dict[str, str]:
        return {
            "ELASTIC_S3_ENDPOINT": f"http://{self.info.endpoint}",
            "ELASTIC_S3_ACCESS_KEY": self.info.access_key,
            "ELASTIC_S3_SECRET_KEY": self.info.secret_key,
            "ELASTIC_S3_REGION": self.info.region,
        }

    def options(self) -> dict:
        return self.info.options()


@pytest.fixture
def private_moto() -> Iterator[RestartableMoto]:
    m = RestartableMoto()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (a full disk on demand); unmounted at teardown. Needs root."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
