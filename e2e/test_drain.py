"""A drained node takes no notebook state with it (real cluster, z2jh + elastic-spawner).

Runs in the test driver against the installation made by e2e/run.sh; skipped with the reason
when no cluster is reachable (see conftest.py). Scenario: spawn a user, run cells in a notebook
session, `kubectl drain` the node of the user's pod, then check that the server came back on
another node with the same variables in the kernel of the same notebook.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from conftest import Hub, kubectl, pod_of

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import http_json

NOTEBOOK = "e2e-drain.ipynb"
CELLS = [
    "import numpy as np",
    "a = np.arange(12, dtype='float64').reshape(3, 4)",
    "view = a[1]            # a view: aliasing must survive",
    "words = {'x': [1, 2, 3], 'y': ('t', None)}",
    "total = float(a.sum()) + len(words)",
    "import random\nrandom.seed(7)\nr = [random.random() for _ in range(3)]",
]
CHECK = ("[a.tolist(), view.tolist(), bool(view.base is a), words['x'], words['y'], total, r, "
         "bool(np.shares_memory(a, view))]")


async def wait_ready(hub: Hub, user: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, model = await http_json("GET", hub.api + f"users/{user}", token=hub.token)
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return
        await asyncio.sleep(2)
    raise TimeoutError(f"server of {user} not ready within {timeout}s")


async def wait_restored(server: ServerClient, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        code, status = await server.api("GET", "api/elastic/status", check=False)
        state = ((status or {}).get("restore") or {}).get("state")
        if code == 200 and state in ("done", "failed"):
            return status
        await asyncio.sleep(2)
    raise TimeoutError(f"restore did not finish within {timeout}s: {status}")


@pytest.mark.timeout(1800)
async def test_drained_node_keeps_the_variables(hub: Hub) -> None:
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    await http_json("POST", hub.api + f"users/{user}", token=hub.token)
    node = ""
    try:
        await http_json("POST", hub.api + f"users/{user}/server", {}, token=hub.token)
        await wait_ready(hub, user)
        node = pod_of(user)["spec"]["nodeName"]

        server = ServerClient(hub.url + f"/user/{user}/", hub.token)
        kernel = await server.open_notebook(NOTEBOOK)
        for cell in CELLS:
            await kernel.ok(cell)
        before = await kernel.eval_json(CHECK)
        await kernel.close()

        # drain: the PDB holds the eviction until the drain watcher has migrated the server
        kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force",
                "--timeout=900s", timeout=960)

        deadline = time.monotonic() + 600
        while not (pod_of(user) and pod_of(user)["spec"].get("nodeName")):
            assert time.monotonic() < deadline, f"no new pod for {user} after the drain"
            await asyncio.sleep(2)
        new_node = pod_of(user)["spec"]["nodeName"]
        assert new_node != node, f"server of {user} still on the drained node {node}"
        await wait_ready(hub, user)

        status = await wait_restored(server)
        assert status["restore"]["state"] == "done", status
        kernel_id = await server.kernel_for(NOTEBOOK)
        assert kernel_id, f"no kernel for {NOTEBOOK} after the restore: {await server.sessions()}"
        kernel = await server.attach(kernel_id)
        after = await kernel.eval_json(CHECK)
        await kernel.close()
        assert after == before
        assert after[2] is True and after[7] is True  # view still aliases a
    finally:
        if node:
            kubectl("uncordon", node, check=False)
        await http_json("DELETE", hub.api + f"users/{user}/server", token=hub.token, check=False)
        await http_json("DELETE", hub.api + f"users/{user}", token=hub.token, check=False)
