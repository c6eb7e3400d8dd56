"""Fixtures for ElasticKubeSpawner tests: a real JupyterHub + the emulated cluster.

``kube_hub`` -- the standalone rig (``python -m tests.k8s.apiserver``: API server + process
kubelet, nodes node-a and node-b) and a real JupyterHub subprocess (``LocalHub``) whose spawner
is ``elastic-kube``. Pods are real ``jupyterhub-singleuser`` processes with the
``kernel_agent.server`` extension, each on its own free port (a ``pre_spawn_hook``), sharing one
notebook directory (as a PVC would), with a file store. ``kube_hub.cluster`` has the rig's
kubectl-like helpers (``cordon``, ``drain``, ``pod``, ``pods_on``, ``events_for``) over REST, and
``kube_hub.kube_client`` is a kubernetes_asyncio ``ApiClient`` for the drain watcher and resize.

The in-process ``k8s_cluster`` / ``kube_client`` fixtures of tests/k8s are re-exported for tests
that need no hub.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import HubSettings, LocalHub, find_chp
from tests.k8s.conftest import k8s_cluster, kube_client  # noqa: F401 - fixtures
from tests.k8s.rig import Cluster, Standalone, run_standalone

try:
    find_chp()
    HAVE_CHP = True
except Exception:  # noqa: BLE001
    HAVE_CHP = False

GRACE = 30  # terminationGracePeriodSeconds of the test pods


def kube_hub_config(home: Path, extra: str = "") -> str:
    args = ["--allow-root"] if os.geteuid() == 0 else []
    args.append(f"--ServerApp.root_dir={home}")
    args.append("--KernelManager.transport=ipc")
    return f"""
c.JupyterHub.spawner_class = 'elastic-kube'
c.KubeSpawner.namespace = 'default'
c.KubeSpawner.image = 'rig/none:latest'
c.KubeSpawner.cmd = ['jupyterhub-singleuser']
c.KubeSpawner.args = {args!r}
c.KubeSpawner.ip = '127.0.0.1'
c.KubeSpawner.http_timeout = 90
c.KubeSpawner.poll_interval = 2
c.ElasticKubeSpawner.termination_grace_period = {GRACE}
c.ElasticKubeSpawner.checkpoint_timeout = 20
# every rig pod shares 127.0.0.1: one free port per server, chosen at each spawn
# (below the ephemeral range, where kernels' ZMQ ports and outgoing connections are taken),
# and kernels on Unix sockets in a short runtime directory of each pod's own (TCP kernel ports
# are picked free and bound later: another pod's kernel could take one, which real pods, each in
# its own network namespace, never see)
def _isolate(spawner):
    import tempfile
    from elastic_spawner.localhub import free_port
    spawner.port = free_port()
    spawner.environment = {{**spawner.environment,
                           "JUPYTER_RUNTIME_DIR": tempfile.mkdtemp(prefix="rig-rt-")}}
c.KubeSpawner.pre_spawn_hook = _isolate
{extra}
"""


@dataclass
class KubeHub:
    """A real hub on the emulated cluster (see module docstring)."""

    hub: LocalHub
    rig: Standalone
    cluster: Cluster
    kube_client: k8s_client.ApiClient
    home: Path

    @property
    def core(self) -> k8s_client.CoreV1Api:
        return k8s_client.CoreV1Api(self.kube_client)

    async def server(self, user: str, options: dict[str, Any] | None = None,
                     timeout: float = 120) -> ServerClient:
        """Create `user`, start their server through the hub, return a client with their token."""
        await self.hub.create_user(user)
        model = await self.hub.start_server(user, options=options, timeout=timeout)
        token = await self.hub.user_token(user)
        return ServerClient(self.hub.url + model["url"], token)

    async def reconnect(self, user: str, token: str) -> ServerClient:
        model = await self.hub.server_model(user)
        assert model and model["ready"], model
        return ServerClient(self.hub.url + model["url"], token)

    async def user_pod(self, user: str) -> dict[str, Any] | None:
        listing = await self.cluster.rest.get(
            "/api/v1/namespaces/default/pods",
            labelSelector=f"component=singleuser-server,hub.jupyter.org/username={user}")
        live = [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    async def pdbs(self) -> list[dict[str, Any]]:
        listing = await self.cluster.rest.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets")
        return listing["items"]


@pytest.fixture
async def make_kube_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> AsyncIterator[Callable[..., Awaitable[KubeHub]]]:
    """Factory: ``await make_kube_hub(extra_config="...")`` -> a started `KubeHub`."""
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    made: list[tuple[LocalHub, Any, Cluster, k8s_client.ApiClient]] = []

    async def make(extra_config: str = "", nodes: tuple[str, ...] = ("node-a", "node-b")) -> KubeHub:
        rig_cm = run_standalone(tmp_path / "rig", nodes=nodes)
        rig = rig_cm.__enter__()
        monkeypatch.setenv("KUBECONFIG", str(rig.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        hub = LocalHub(HubSettings(workdir=tmp_path / "hub", log_level="DEBUG", cleanup_servers=False,
                                   extra_config=kube_hub_config(home, extra_config)))
        # the rig's kubectl-like helpers only need its REST API (no in-process kubelet)
        cluster = Cluster(api=None, url=rig.url, kubeconfig=rig.kubeconfig, kubelet=None,  # type: ignore[arg-type]
                          namespace="default", workdir=rig.workdir, nodes=list(nodes))
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(config_file=str(rig.kubeconfig),
                                          client_configuration=configuration)
        api_client = k8s_client.ApiClient(configuration)
        made.append((hub, rig_cm, cluster, api_client))
        await hub.start()
        return KubeHub(hub, rig, cluster, api_client, home)

    yield make
    for hub, rig_cm, cluster, api_client in made:
        await hub.stop()
        await api_client.close()
        await cluster.close()
        rig_cm.__exit__(None, None, None)


async def spawn_on(kh: KubeHub, node: str, users: list[str]) -> dict[str, ServerClient]:
    """Start `users`' servers, all on `node` (the other nodes are cordoned meanwhile)."""
    others = [n for n in kh.cluster.nodes if n != node]
    for n in others:
        await kh.cluster.cordon(n)
    try:
        clients = await asyncio.gather(*(kh.server(u) for u in users))
        servers = dict(zip(users, clients, strict=True))
    finally:
        for n in others:
            await kh.cluster.uncordon(n)
    for u in users:
        pod = await kh.user_pod(u)
        assert pod and pod["spec"]["nodeName"] == node, pod
    return servers
