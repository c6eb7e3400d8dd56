"""Fixtures of the e2e suite: a real cluster with z2jh + elastic-spawner installed (e2e/run.sh).

Runs in the test driver on a developer machine or CI runner, never in the cluster. Every test is
skipped, with the reason, when there is no cluster to talk to: no kubectl, no kubeconfig, an API
server that does not answer within a few seconds, or a cluster without the e2e installation.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMESPACE = os.environ.get("E2E_NAMESPACE", "elastic-e2e")
DRIVER_SERVICE = "e2e-driver"  # hub.services entry in e2e/values-z2jh.yaml
PROBE_TIMEOUT = 5  # seconds the API server gets to answer before the suite is skipped


def kubectl(*args: str, timeout: float = 60, check: bool = True) -> str:
    """Run kubectl in the e2e namespace; return stdout."""
    proc = subprocess.run(
        ["kubectl", "--namespace", NAMESPACE, *args],
        capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def cluster_unavailable_reason() -> str | None:
    """Why there is no usable e2e cluster, or None when there is one."""
    if shutil.which("kubectl") is None:
        return "kubectl is not on PATH"
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not in_cluster and not any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        return f"no kubeconfig ({kubeconfig}) and not running inside a cluster"
    try:
        proc = subprocess.run(
            ["kubectl", "version", f"--request-timeout={PROBE_TIMEOUT}s", "-o", "json"],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT + 5,
        )
    except subprocess.TimeoutExpired:
        return f"the Kubernetes API server did not answer within {PROBE_TIMEOUT}s"
    if proc.returncode != 0 or "serverVersion" not in proc.stdout:
        msg = (proc.stderr.strip().splitlines() or ["no server version"])[-1]
        return f"the Kubernetes API server is not reachable: {msg[:200]}"
    try:
        kubectl("get", "deployment", "hub", "elastic-spawner-migrator", timeout=PROBE_TIMEOUT + 5)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return (f"the cluster answers but namespace {NAMESPACE!r} has no e2e installation "
                f"(run e2e/run.sh first): {str(e)[:200]}")
    return None


@pytest.fixture(scope="session")
def cluster() -> None:
    reason = cluster_unavailable_reason()
    if reason:
        pytest.skip(f"e2e: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    """The hub as the test driver sees it: the proxy through a port-forward, a service token."""

    url: str  # http://127.0.0.1:<port>  (proxy-public)
    token: str

    @property
    def api(self) -> str:
        return self.url + "/hub/api/"


@pytest.fixture(scope="session")
def hub(cluster: None) -> Iterator[Hub]:
    raw = kubectl("get", "secret", "hub", "-o",
                  "jsonpath={.data.hub\\.services\\." + DRIVER_SERVICE + "\\.apiToken}")
    if not raw:
        pytest.skip(f"e2e: the hub Secret has no token for service {DRIVER_SERVICE!r} "
                    "(install z2jh with e2e/values-z2jh.yaml)")
    token = base64.b64decode(raw).decode()
    port = _free_port()
    pf = subprocess.Popen(
        ["kubectl", "--namespace", NAMESPACE, "port-forward", "service/proxy-public",
         f"{port}:80"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError as e:
                if time.monotonic() > deadline or pf.poll() is not None:
                    raise RuntimeError("kubectl port-forward to proxy-public did not come up") from e
                time.sleep(0.5)
        yield Hub(url=f"http://127.0.0.1:{port}", token=token)
    finally:
        pf.terminate()
        try:
            pf.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pf.kill()


def pod_of(user: str) -> dict:
    """The single-user pod of `user`'s default server (not terminating), or {}."""
    out = kubectl("get", "pods", "-l", f"component=singleuser-server,hub.jupyter.org/username={user}",
                  "-o", "json")
    for pod in json.loads(out).get("items", []):
        if not pod["metadata"].get("deletionTimestamp"):
            return pod
    return {}
