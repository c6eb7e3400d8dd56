"""A real JupyterHub subprocess with the real KubeSpawner against the standalone rig:
spawn through the hub REST API until ready, reach the server through the proxy, stop."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.k8s.rig import REPO_ROOT, Standalone, free_port, run_standalone

pytestmark = [pytest.mark.hub, pytest.mark.slow]

CHP_DIR = REPO_ROOT / ".venv" / "node" / "node_modules" / ".bin"


def poll(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Bounded polling; the hub test's only synchronisation."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def hub_config(tmp: Path, ports: dict[str, int], token: str, rig: Standalone) -> str:
    extra_args = ["--allow-root"] if os.geteuid() == 0 else []
    return f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {ports['proxy']}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports['hub']}
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{ports['hub']}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports['proxy_api']}"
c.JupyterHub.db_url = "sqlite:///{tmp / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{tmp / 'cookie_secret'}"
c.JupyterHub.pid_file = "{tmp / 'hub.pid'}"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "tester", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["tester"]}}]
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = "default"
c.KubeSpawner.image = "rig/none:latest"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.args = {json.dumps(extra_args)}
c.KubeSpawner.ip = "127.0.0.1"
# every rig pod shares 127.0.0.1: one free port per server (a hook keeps it per spawn)
def _port(spawner):
    from elastic_spawner.localhub import free_port
    spawner.port = free_port()
c.KubeSpawner.pre_spawn_hook = _port
c.KubeSpawner.start_timeout = 90
c.KubeSpawner.http_timeout = 60
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not (CHP_DIR / "configurable-http-proxy").exists():
        pytest.skip("configurable-http-proxy not installed (npm install configurable-http-proxy)")
    with run_standalone(tmp_path / "rig") as rig:
        ports = {"proxy": free_port(), "hub": free_port(), "proxy_api": free_port()}
        token = secrets.token_hex(16)
        cfg = tmp_path / "jupyterhub_config.py"
        cfg.write_text(hub_config(tmp_path, ports, token, rig))
        env = {**os.environ, "KUBECONFIG": str(rig.kubeconfig),
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), str(CHP_DIR), os.environ["PATH"]])}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log_path = tmp_path / "hub.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(cfg)], cwd=tmp_path,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{ports['proxy']}"
        session = requests.Session()
        session.headers["Authorization"] = f"token {token}"
        try:
            # CHP answers 404 until the hub has added its route: wait for 200, not an open port
            poll(lambda: _status(session, f"{base}/hub/api/") == 200 or proc.poll() is not None,
                 timeout=60, what="the hub API")
            assert proc.poll() is None, log_path.read_text()
            yield {"base": base, "session": session, "rig": rig, "log": log_path}
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _status(session: requests.Session, url: str) -> int:
    try:
        return session.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def _rig_pods(rig: Standalone) -> list[dict[str, Any]]:
    return requests.get(f"{rig.url}/api/v1/namespaces/default/pods",
                        params={"labelSelector": "component=singleuser-server"}, timeout=5).json()["items"]


def test_real_hub_spawns_and_stops_through_kubespawner(hub: dict[str, Any]) -> None:
    base, session, rig = hub["base"], hub["session"], hub["rig"]
    assert session.post(f"{base}/hub/api/users/alice", timeout=10).status_code == 201
    started = session.post(f"{base}/hub/api/users/alice/server", timeout=30)
    assert started.status_code in (201, 202), started.text

    def ready() -> dict[str, Any] | None:
        user = session.get(f"{base}/hub/api/users/alice", timeout=10).json()
        server = user.get("servers", {}).get("")
        return server if server and server.get("ready") else None

    try:
        server = poll(ready, timeout=90, what="alice's server to be ready")
    except TimeoutError:
        pytest.fail(f"spawn failed.\nhub log:\n{hub['log'].read_text()[-6000:]}\nrig log:\n{rig.log()[-3000:]}")
    pods = _rig_pods(rig)
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] in ("node-a", "node-b")
    assert pod["metadata"]["labels"]["hub.jupyter.org/username"] == "alice"
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert server["url"] == "/user/alice/"

    # the single-user server answers through the proxy (the service token has access:servers)
    api = session.get(f"{base}/user/alice/api/status", timeout=10)
    assert api.status_code == 200, api.text
    # ... and it really is the process the kubelet runs on the pod's port
    assert requests.get(f"http://127.0.0.1:{port}/user/alice/api", timeout=5).status_code == 200

    stopped = session.delete(f"{base}/hub/api/users/alice/server", timeout=30)
    assert stopped.status_code in (202, 204), stopped.text
    poll(lambda: not session.get(f"{base}/hub/api/users/alice", timeout=10).json()["servers"],
         timeout=60, what="the hub to forget the server")
    poll(lambda: not _rig_pods(rig), timeout=30, what="the pod to be removed from the API")
