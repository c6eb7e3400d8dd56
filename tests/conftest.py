"""Shared fixtures: real kernels (see tests/kernels.py)."""

from __future__ import annotations

import pytest

from tests.kernels import Kernel


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

    def make(load_agent: bool = True, cwd=None) -> Kernel:
        k = Kernel(cwd=str(cwd or tmp_path))
        kernels.append(k)
        if load_agent:
            k.ok("%load_ext kernel_agent")
        return k

    yield make
    for k in kernels:
        k.shutdown()


@pytest.fixture(params=["file"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty checkpoint store URL for each backend under test."""
    return (tmp_path / "store").as_uri()
