"""Eviction API with PodDisruptionBudgets, cordon and drain, on real KubeSpawner pods."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client as k8s_client

from tests.k8s.kubelet import RestError
from tests.k8s.rig import Cluster, DrainTimeout, wait_until
from tests.k8s.spawners import make_spawner

PDB_PATH = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


def per_server_pdb(name: str, username: str, **budget: object) -> dict[str, object]:
    """The per-server PDB the design calls for, on labels KubeSpawner already sets."""
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {**budget, "selector": {"matchLabels": {
            "component": "singleuser-server", "hub.jupyter.org/username": username}}},
    }


async def test_pdb_max_unavailable_zero_blocks_eviction_with_429(
        k8s_cluster: Cluster, kube_client: k8s_client.ApiClient) -> None:
    spawner = make_spawner("alice")
    await spawner.start()
    policy = k8s_client.PolicyV1Api(kube_client)
    core = k8s_client.CoreV1Api(kube_client)
    await policy.create_namespaced_pod_disruption_budget("default", per_server_pdb(
        "alice-pdb", "alice", maxUnavailable=0))
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": spawner.pod_name, "namespace": "default"}}

    with pytest.raises(k8s_client.ApiException) as refused:
        await core.create_namespaced_pod_eviction(spawner.pod_name, "default", eviction)
    assert refused.value.status == 429
    body = json.loads(refused.value.body)
    # the exact shape kube-apiserver sends (errors.NewTooManyRequests + a DisruptionBudget cause)
    assert body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests", "code": 429,
        "details": {"causes": [{"reason": "DisruptionBudget",
                                "message": "The disruption budget alice-pdb needs 0 healthy pods "
                                           "and has 1 currently"}]},
    }
    pod = await k8s_cluster.pod(spawner.pod_name)
    assert pod is not None and not pod["metadata"].get("deletionTimestamp")
    assert await spawner.poll() is None

    # without the PDB the same eviction is a graceful delete with the pod's grace period
    await policy.delete_namespaced_pod_disruption_budget("alice-pdb", "default")
    await core.create_namespaced_pod_eviction(spawner.pod_name, "default", eviction)
    terminating = await k8s_cluster.pod(spawner.pod_name)
    if terminating is not None:  # http.server dies fast on SIGTERM; we may already be too late
        assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
        assert {"type": "DisruptionTarget", "reason": "EvictionByEvictionAPI"}.items() <= next(
            c for c in terminating["status"]["conditions"] if c["type"] == "DisruptionTarget").items()
    await wait_until(lambda: spawner.poll(), what="poll() to report the evicted pod")
    assert await k8s_cluster.pod(spawner.pod_name) is None
    await spawner.stop()


async def test_pdb_min_available_counts_healthy_pods(k8s_cluster: Cluster) -> None:
    """minAvailable: 1 over two ready pods allows one eviction, then refuses the second."""
    spawners = [make_spawner(name) for name in ("carol", "dave")]
    for s in spawners:
        await s.start()
    await k8s_cluster.rest.post(PDB_PATH, {
        "metadata": {"name": "two-servers"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"component": "singleuser-server"}}}})
    pdb = await k8s_cluster.rest.get(f"{PDB_PATH}/two-servers")
    assert pdb["status"]["disruptionsAllowed"] == 1
    assert pdb["status"]["currentHealthy"] == 2
    await k8s_cluster.evict(spawners[0].pod_name)
    with pytest.raises(RestError) as refused:
        await k8s_cluster.evict(spawners[1].pod_name)
    assert refused.value.status == 429
    for s in spawners:
        await s.stop()


async def test_cordoned_node_gets_no_new_pods(k8s_cluster: Cluster, cordon) -> None:
    await cordon("node-a")
    node = await k8s_cluster.rest.get("/api/v1/nodes/node-a")
    assert node["spec"]["unschedulable"] is True
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}.items() <= node["spec"]["taints"][0].items()

    spawners = [make_spawner(f"user{i}") for i in range(3)]
    for s in spawners:
        await s.start()
    placed = [(await k8s_cluster.pod(s.pod_name))["spec"]["nodeName"] for s in spawners]
    assert placed == ["node-b", "node-b", "node-b"]

    # with both nodes cordoned a pod stays Pending and says why, then lands when one reopens
    await cordon("node-b")
    await k8s_cluster.rest.post("/api/v1/namespaces/default/pods", {
        "metadata": {"name": "waiting"},
        "spec": {"containers": [{"name": "c", "image": "none", "command": ["sleep", "30"]}]}})

    async def unschedulable() -> bool:
        pod = await k8s_cluster.pod("waiting")
        return any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                   for c in pod["status"].get("conditions", []))

    await wait_until(unschedulable, what="PodScheduled=False")
    events = await k8s_cluster.events_for("waiting")
    assert any(e["reason"] == "FailedScheduling" and "2 node(s) were unschedulable" in e["message"]
               for e in events)
    await k8s_cluster.uncordon("node-a")

    async def landed() -> str | None:
        pod = await k8s_cluster.pod("waiting")
        return pod["spec"].get("nodeName")

    assert await wait_until(landed, what="the pending pod to be scheduled") == "node-a"
    for s in spawners:
        await s.stop()


async def test_taints_and_node_selector(k8s_cluster: Cluster) -> None:
    await k8s_cluster.rest.patch("/api/v1/nodes/node-a", {"spec": {"taints": [
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}})
    plain = make_spawner("erin")
    pinned = make_spawner("frank", node_selector={"kubernetes.io/hostname": "node-a"},
                          tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                        "effect": "NoSchedule"}])
    await plain.start()
    await pinned.start()
    assert (await k8s_cluster.pod(plain.pod_name))["spec"]["nodeName"] == "node-b"
    assert (await k8s_cluster.pod(pinned.pod_name))["spec"]["nodeName"] == "node-a"
    await plain.stop()
    await pinned.stop()


async def test_drain_retries_429_is_bounded_and_completes_without_pdb(k8s_cluster: Cluster, drain) -> None:
    guarded = make_spawner("gina", node_selector={"kubernetes.io/hostname": "node-a"})
    free = make_spawner("hank", node_selector={"kubernetes.io/hostname": "node-a"})
    await guarded.start()
    await free.start()
    await k8s_cluster.rest.post(PDB_PATH, per_server_pdb("gina-pdb", "gina", maxUnavailable=0))

    with pytest.raises(DrainTimeout) as timed_out:
        await drain("node-a", timeout=1.0)
    assert timed_out.value.pods == [f"default/{guarded.pod_name}"]
    assert timed_out.value.last_error["reason"] == "TooManyRequests"
    await wait_until(lambda: free.poll(), what="the unguarded pod to be evicted")
    assert await guarded.poll() is None

    await k8s_cluster.rest.delete(f"{PDB_PATH}/gina-pdb")
    await drain("node-a", timeout=15.0)
    assert await k8s_cluster.pods_on("node-a") == []
    await wait_until(lambda: guarded.poll(), what="the guarded pod to be gone")
    await guarded.stop()
    await free.stop()
