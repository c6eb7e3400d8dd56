"""Fixtures for the emulated Kubernetes cluster (see tests/k8s/rig.py and apiserver.py).

``k8s_cluster`` -- a :class:`tests.k8s.rig.Cluster`: API server on a free loopback port, process
kubelet with nodes node-a and node-b, namespace ``default``, kubeconfig at
``<tmp>/kubeconfig`` and made the default for kubernetes_asyncio and KubeSpawner in this test.
``kube_client`` -- a ``kubernetes_asyncio.client.ApiClient`` for it.
``cordon`` / ``drain`` -- ``await cordon("node-a")``, ``await drain("node-a", timeout=30)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import kubernetes_asyncio.config.kube_config as kube_config_module
import pytest
import pytest_asyncio
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from tests.k8s.rig import Cluster, start_cluster


async def _stop_kubespawner_reflectors() -> None:
    """KubeSpawner keeps class-level reflectors; left running they hang teardown ~60 s and
    would point the next test at this test's (closed) server."""
    try:
        from kubespawner import KubeSpawner
    except ImportError:  # pragma: no cover - kubespawner is a dependency
        return
    for reflector in list(KubeSpawner.reflectors.values()):
        await reflector.stop()
    KubeSpawner.reflectors.clear()


@pytest_asyncio.fixture
async def k8s_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """A fresh two-node emulated cluster for one test (see module docstring)."""
    from kubespawner import clients as kubespawner_clients

    previous_default = k8s_client.Configuration._default
    async with start_cluster(tmp_path / "k8s") as cluster:
        # kubernetes_asyncio reads KUBECONFIG at import, so patch the module constant too (§A.6);
        # KubeSpawner caches load_config() per process: clear it so it loads *this* cluster.
        monkeypatch.setattr(kube_config_module, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        kubespawner_clients.load_config.cache_clear()
        await k8s_config.load_kube_config(config_file=str(cluster.kubeconfig))
        try:
            yield cluster
        finally:
            await _stop_kubespawner_reflectors()
            kubespawner_clients.load_config.cache_clear()
            k8s_client.Configuration._default = previous_default


@pytest_asyncio.fixture
async def kube_client(k8s_cluster: Cluster) -> AsyncIterator[k8s_client.ApiClient]:
    """A kubernetes_asyncio ApiClient bound to ``k8s_cluster`` (closed at teardown)."""
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=str(k8s_cluster.kubeconfig),
                                      client_configuration=configuration)
    async with k8s_client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def cordon(k8s_cluster: Cluster) -> Callable[[str], Awaitable[None]]:
    """``await cordon(node)``: set ``spec.unschedulable`` like ``kubectl cordon``."""
    return k8s_cluster.cordon


@pytest.fixture
def drain(k8s_cluster: Cluster) -> Callable[..., Awaitable[None]]:
    """``await drain(node, timeout=30.0, ...)``: cordon + evictions retried on 429, bounded."""
    return k8s_cluster.drain
