"""A drain the watcher cannot finish in time: past the hold limit the PDB is released and reported.

In-process emulated cluster, no hub: the "server" is a process that accepts connections and never
answers, so the watcher's checkpoint hangs. The rig's `kubectl drain` is refused (429) until the
hold limit, then evicts.
"""

from __future__ import annotations

import asyncio
import sys

from elastic_spawner.drain import DrainSettings, DrainWatcher
from elastic_spawner.k8s import make_pdb
from tests.k8s.rig import Cluster, free_port, wait_until

BLACK_HOLE = ("import socket, sys, time\n"
              "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)\n"
              "time.sleep(3600)")


def hung_server_pod(user: str, port: int) -> dict:
    name = f"jupyter-{user}"
    return {
        "metadata": {
            "name": name,
            "labels": {"component": "singleuser-server", "elastic-spawner/managed": "true",
                       "hub.jupyter.org/username": user, "hub.jupyter.org/servername": ""},
            "annotations": {"hub.jupyter.org/username": user, "elastic-spawner/pdb": f"elastic-{name}"},
        },
        "spec": {
            "nodeName": "node-a",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "notebook", "image": "rig/none",
                "command": [sys.executable, "-c", BLACK_HOLE, str(port)],
                "ports": [{"containerPort": port, "name": "notebook-port"}],
                "env": [{"name": "JUPYTERHUB_SERVICE_PREFIX", "value": f"/user/{user}/"}],
            }],
        },
    }


async def test_hold_limit_releases_the_pdb_and_reports_it(k8s_cluster: Cluster, kube_client) -> None:
    pod = hung_server_pod("carol", free_port())
    name = pod["metadata"]["name"]
    await k8s_cluster.rest.post("/api/v1/namespaces/default/pods", pod)
    pdb = make_pdb(f"elastic-{name}", {"component": "singleuser-server",
                                      "hub.jupyter.org/username": "carol",
                                      "hub.jupyter.org/servername": ""})
    await k8s_cluster.rest.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb)
    await wait_until(lambda: _ready(k8s_cluster, name), what="the pod to be ready")

    reports = []
    watcher = DrainWatcher(f"http://127.0.0.1:{free_port()}/hub/api", "unused-token",
                           kube_client=kube_client, namespace="default", on_report=reports.append,
                           settings=DrainSettings(hold_limit=2, checkpoint_timeout=60, busy_timeout=1))
    await watcher.start()
    try:
        await asyncio.wait_for(watcher.synced.wait(), 10)
        # refused (429) until the hold limit releases the PDB, then the eviction goes through
        await k8s_cluster.drain("node-a", timeout=30)
        [report] = await watcher.drained("node-a")
    finally:
        await watcher.stop()

    assert report.outcome == "released" and report.pdb_released, report
    assert report.user == "carol" and report.pod == name
    assert [r.outcome for r in reports] == ["released"]
    listing = await k8s_cluster.rest.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets")
    assert listing["items"] == []
    events = {e["reason"]: e for e in await k8s_cluster.events_for(name)}
    assert events["ElasticHoldLimit"]["type"] == "Warning"
    assert "hold limit (2s)" in events["ElasticHoldLimit"]["message"]
    assert await k8s_cluster.pod(name) is None


async def _ready(cluster: Cluster, name: str) -> bool:
    pod = await cluster.pod(name)
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)
