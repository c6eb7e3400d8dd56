"""Shared fixtures: real kernels (see tests/kernels.py)."""

from __future__ import annotations

import os

import pytest

from elastic_spawner.localhub import PORT_RANGE, PORT_RANGE_ENV
from tests.kernels import Kernel
from tests.s3 import moto_s3, rgw_s3  # noqa: F401 - fixtures


def _worker_port_range() -> None:
    """Each pytest-xdist worker picks server ports from its own part of the range (hubs,
    services and servers it starts inherit it): two workers picked the same free port, and
    the second to bind it failed with "Address already in use"."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2 or os.environ.get(PORT_RANGE_ENV):
        return
    index = int(worker[2:])
    low, high = PORT_RANGE
    step = (high - low + 1) // count
    os.environ[PORT_RANGE_ENV] = f"{low + index * step}-{low + (index + 1) * step - 1}"


_worker_port_range()


@pytest.fixture
def kernel(tmp_path):
    """A fresh real ipykernel with the agent loaded, working directory tmp_path."""
    k = Kernel(cwd=str(tmp_path))
    try:
        k.ok("%load_ext kernel_agent")
        yield k
    finally:
        k.shutdown()


@pytest.fixture
def make_kernel(tmp_path):
    """Factory for more kernels (checkpoint in A, restore in B); all shut down at teardown."""
    kernels: list[Kernel] = []

    def make(load_agent: bool = True, cwd=None, env: dict | None = None) -> Kernel:
        k = Kernel(cwd=str(cwd or tmp_path), env=env)
        kernels.append(k)
        if load_agent:
            k.ok("%load_ext kernel_agent")
        return k

    yield make
    for k in kernels:
        k.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding `slow` tests (hubs, servers, migrations) run first, the others after them.

    Only the order of whole files changes; a file's tests keep their order. With pytest-xdist
    (scripts/test.sh: --dist loadfile --no-loadscope-reorder) the workers take files in this
    order, so the many short files fill the end of the run instead of one long file keeping a
    worker busy after the other has finished.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable sort


ALL_STORES = ["file", "moto", "rgw"]


@pytest.fixture
def store_url(request, tmp_path, monkeypatch) -> str:
    """A fresh, empty checkpoint store URL; file by default.

    Parametrize indirectly with "moto" or "rgw" (Ceph RGW, when scripts/ceph-rgw.sh runs) to use
    an S3 protocol server; kernels started afterwards get its settings through the environment,
    as a spawned single-user server would.
    """
    kind = getattr(request, "param", "file")
    if kind == "file":
        return (tmp_path / "store").as_uri()
    server = request.getfixturevalue(f"{kind}_s3")
    monkeypatch.setenv("ELASTIC_S3_ENDPOINT", f"http://{server.endpoint}")
    monkeypatch.setenv("ELASTIC_S3_ACCESS_KEY", server.access_key)
    monkeypatch.setenv("ELASTIC_S3_SECRET_KEY", server.secret_key)
    monkeypatch.setenv("ELASTIC_S3_REGION", server.region)
    return server.url()
