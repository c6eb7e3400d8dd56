"""Real KubeSpawner 7.1 start()/poll()/stop() against the emulated cluster."""

from __future__ import annotations

import aiohttp

from tests.k8s.rig import Cluster, wait_until
from tests.k8s.spawners import make_spawner


async def test_start_poll_stop_removes_pod(k8s_cluster: Cluster) -> None:
    spawner = make_spawner("alice")
    url = await spawner.start()
    assert url == f"http://127.0.0.1:{spawner.port}"

    pod = await k8s_cluster.pod(spawner.pod_name)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] in {"node-a", "node-b"}
    assert pod["status"]["podIP"] == "127.0.0.1"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert await spawner.poll() is None

    async with aiohttp.ClientSession() as session, session.get(url + "/") as resp:
        assert resp.status == 200  # the "pod" really serves on its port

    reasons = {e["reason"] for e in await k8s_cluster.events_for(spawner.pod_name)}
    assert {"Scheduled", "Started"} <= reasons

    await spawner.stop()
    assert await k8s_cluster.pod(spawner.pod_name) is None
    assert await spawner.poll() == 1


async def test_pod_reflector_sees_only_its_label(k8s_cluster: Cluster) -> None:
    """KubeSpawner's reflector lists/watches with ``component=singleuser-server``; a pod with
    another component label must never show up in it (kmock alone would return it)."""
    other = {
        "metadata": {"name": "not-a-notebook", "labels": {"component": "something-else"}},
        "spec": {"containers": [{"name": "c", "image": "none", "command": ["sleep", "60"]}]},
    }
    await k8s_cluster.rest.post("/api/v1/namespaces/default/pods", other)
    spawner = make_spawner("bob")
    await spawner.start()
    try:
        pods = spawner.pod_reflector.pods
        assert set(pods) == {f"default/{spawner.pod_name}"}
        # a label change that takes the pod out of the selector reaches the watch as DELETED
        await k8s_cluster.rest.patch(f"/api/v1/namespaces/default/pods/{spawner.pod_name}",
                                     {"metadata": {"labels": {"component": "moved"}}})
        await wait_until(lambda: f"default/{spawner.pod_name}" not in spawner.pod_reflector.pods,
                         what="the relabelled pod to leave the reflector")
    finally:
        await k8s_cluster.rest.patch(f"/api/v1/namespaces/default/pods/{spawner.pod_name}",
                                     {"metadata": {"labels": {"component": "singleuser-server"}}})
        await spawner.stop()
