"""The emulated cluster as one object: API server + process kubelet + kubectl-like helpers.

Kept apart from conftest.py so tests of other modules (the ElasticKubeSpawner's, the drain
watcher's) can import the helpers (``free_port``, ``wait_until``, ``Cluster``) and build
clusters with other shapes (``start_cluster(nodes=[...])``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kmock

from tests.k8s.apiserver import FakeApiServer, write_kubeconfig
from tests.k8s.kubelet import Kubelet, RestClient, RestError

__all__ = ["Cluster", "DrainTimeout", "Standalone", "free_port", "run_standalone", "start_cluster", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (every rig pod needs its own).

    Picked below the ephemeral range (elastic_spawner.localhub.free_port): a port the kernel
    handed out for bind(0) can be taken by another process's kernel or client before it is used.
    """
    from elastic_spawner.localhub import free_port as localhub_free_port

    return localhub_free_port()


async def wait_until(check: Callable[[], Awaitable[T] | T], timeout: float = 15.0,
                     interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds.

    Bounded polling with a deadline is the only synchronisation the rig tests use.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last) or isinstance(last, asyncio.Future):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


class DrainTimeout(TimeoutError):
    """``drain`` gave up: some evictions kept being refused (the pods are listed)."""

    def __init__(self, node: str, pods: list[str], last_error: Any) -> None:
        super().__init__(f"drain of {node} timed out; still there: {pods}; last refusal: {last_error}")
        self.node, self.pods, self.last_error = node, pods, last_error


@dataclass
class Cluster:
    """A running emulated cluster. ``api`` is the in-process :class:`FakeApiServer`."""

    api: FakeApiServer
    url: str
    kubeconfig: Path
    kubelet: Kubelet
    namespace: str
    workdir: Path
    nodes: list[str]
    rest: RestClient = field(init=False)

    def __post_init__(self) -> None:
        self.rest = RestClient(self.url)

    # ---------------------------------------------------------------- reads

    async def pod(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The pod as the API has it now, or None."""
        try:
            return await self.rest.get(f"/api/v1/namespaces/{namespace or self.namespace}/pods/{name}")
        except RestError as e:
            if e.status == 404:
                return None
            raise

    async def pods_on(self, node: str) -> list[dict[str, Any]]:
        listing = await self.rest.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node}")
        return listing["items"]

    async def events_for(self, pod_name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        listing = await self.rest.get(f"/api/v1/namespaces/{namespace or self.namespace}/events",
                                      fieldSelector=f"involvedObject.name={pod_name}")
        return listing["items"]

    def pod_dir(self, name: str, namespace: str | None = None) -> Path:
        """Working directory the kubelet gave the latest pod of that name."""
        return self.kubelet.pod_dirs[(namespace or self.namespace, name)]

    # ---------------------------------------------------------------- kubectl-like writes

    async def cordon(self, node: str) -> None:
        """``kubectl cordon``: strategic-merge ``spec.unschedulable: true``."""
        await self.rest.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": True}})

    async def uncordon(self, node: str) -> None:
        await self.rest.patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": None}})

    async def evict(self, name: str, namespace: str | None = None,
                    grace_period_seconds: int | None = None) -> dict[str, Any]:
        """POST a policy/v1 Eviction; raises :class:`RestError` (429 when a PDB refuses)."""
        ns = namespace or self.namespace
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": ns}}
        if grace_period_seconds is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period_seconds}
        return await self.rest.post(f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body)

    async def drain(self, node: str, timeout: float = 30.0, retry_interval: float = 0.2,
                    grace_period_seconds: int | None = None, wait_for_deletion: bool = True) -> None:
        """``kubectl drain --force``: cordon, evict every pod on the node, retrying 429s
        (PDB refusals) until ``timeout``, then wait until the pods are gone.

        Raises :class:`DrainTimeout` if a PDB still refuses at the deadline -- like
        ``kubectl drain --timeout``, never an endless loop.
        """
        await self.cordon(node)
        deadline = time.monotonic() + timeout
        pending = {p["metadata"]["namespace"] + "/" + p["metadata"]["name"] for p in await self.pods_on(node)
                   if not p["metadata"].get("deletionTimestamp")}
        last_error: Any = None
        while pending:
            for key in sorted(pending):
                ns, name = key.split("/", 1)
                try:
                    await self.evict(name, ns, grace_period_seconds)
                    pending.discard(key)
                except RestError as e:
                    if e.status == 404:
                        pending.discard(key)
                    elif e.status == 429:
                        last_error = e.body
                    else:
                        raise
            if pending:
                if time.monotonic() > deadline:
                    raise DrainTimeout(node, sorted(pending), last_error)
                await asyncio.sleep(retry_interval)
        if wait_for_deletion:
            remaining = max(deadline - time.monotonic(), 1.0)
            await wait_until(lambda: self._node_empty(node), timeout=remaining, what=f"{node} to be empty")

    async def _node_empty(self, node: str) -> bool:
        return not await self.pods_on(node)

    async def close(self) -> None:
        await self.rest.close()


@contextlib.asynccontextmanager
async def start_cluster(workdir: Path, nodes: tuple[str, ...] = ("node-a", "node-b"),
                        namespace: str = "default", port: int | None = None) -> AsyncIterator[Cluster]:
    """Run the API server (in this event loop) and the kubelet; write ``workdir/kubeconfig``.

    Teardown order matters: the kubelet kills its processes, then watches are ended (aiohttp would
    otherwise wait for the open watch handlers), then the server stops.
    """
    async with FakeApiServer() as api, kmock.Server(api, port=port) as server:
        url = f"http://127.0.0.1:{server.port}"
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", url, namespace)
        if namespace not in ("default", "kube-system"):
            from tests.k8s.apiserver import RESOURCES
            ns_spec = next(r for r in RESOURCES if r.plural == "namespaces")
            api.seed(ns_spec, None, {"metadata": {"name": namespace}})
        kubelet = Kubelet(url, list(nodes), workdir / "nodes")
        cluster = Cluster(api=api, url=url, kubeconfig=kubeconfig, kubelet=kubelet, namespace=namespace,
                          workdir=workdir, nodes=list(nodes))
        try:
            await kubelet.start()
            await wait_until(lambda: _nodes_ready(cluster), timeout=10, what="nodes to register")
            yield cluster
        finally:
            await kubelet.stop()
            await cluster.close()
            await api.close_watches()


async def _nodes_ready(cluster: Cluster) -> bool:
    listing = await cluster.rest.get("/api/v1/nodes")
    return {n["metadata"]["name"] for n in listing["items"]} >= set(cluster.nodes)


@dataclass
class Standalone:
    """The rig as a separate process (for a JupyterHub subprocess to reach over loopback)."""

    url: str
    kubeconfig: Path
    workdir: Path
    process: subprocess.Popen[str]
    output: list[str]

    def log(self) -> str:
        return "".join(self.output)


@contextlib.contextmanager
def run_standalone(workdir: Path, nodes: tuple[str, ...] = ("node-a", "node-b"),
                   namespace: str = "default", timeout: float = 30.0) -> Iterator[Standalone]:
    """``python -m tests.k8s.apiserver`` (API server + kubelet in one process) until READY.

    Stopped with SIGTERM at exit: the kubelet kills every pod process it started.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    cmd = [sys.executable, "-m", "tests.k8s.apiserver", "--port", "0", "--kubeconfig", str(kubeconfig),
           "--namespace", namespace, "--nodes", ",".join(nodes), "--workdir", str(workdir / "nodes")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    output: list[str] = []
    ready = threading.Event()
    url_box: list[str] = []

    def pump() -> None:  # keep draining the pipe so the child never blocks on a full buffer
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith("READY ") and not ready.is_set():
                url_box.append(line.split()[1])
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None:
            raise RuntimeError(f"standalone rig did not become ready in {timeout}s:\n{''.join(output)}")
        yield Standalone(url_box[0], kubeconfig, workdir, proc, output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
