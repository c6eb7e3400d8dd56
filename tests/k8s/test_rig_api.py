"""API semantics the rig adds to kmock: selectors, watch resume/expiry, patch flavours,
immutability, resize, secrets in env -- checked through the real kubernetes_asyncio client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import watch as k8s_watch

from tests.k8s.kubelet import RestError
from tests.k8s.rig import Cluster, wait_until
from tests.k8s.selectors import parse_label_selector, strategic_merge_patch

PODS = "/api/v1/namespaces/default/pods"


def sleeper(name: str, labels: dict[str, str] | None = None, scheduled: bool = True) -> dict[str, object]:
    """A pod; ``scheduled=False`` names a scheduler nobody runs, so the kubelet never touches it."""
    spec: dict[str, object] = {"containers": [{"name": "c", "image": "none", "command": ["sleep", "60"]}]}
    if not scheduled:
        spec["schedulerName"] = "nobody"
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def test_label_selector_grammar() -> None:
    labels = {"app": "jupyter", "tier": "user", "hub.jupyter.org/username": "alice"}
    assert parse_label_selector("app=jupyter,tier!=hub")(labels)
    assert parse_label_selector("app in (jupyter, lab),hub.jupyter.org/username")(labels)
    assert not parse_label_selector("app notin (jupyter)")(labels)
    assert not parse_label_selector("!tier")(labels)
    assert parse_label_selector("")(labels)


def test_strategic_merge_keys() -> None:
    old = {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]},
           "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
                    "taints": [{"key": "k1"}]}}
    new = strategic_merge_patch(old, {"status": {"conditions": [{"type": "Ready", "status": "True"}]},
                                      "spec": {"containers": [{"name": "b", "image": "z"}],
                                               "taints": [{"key": "k2"}]}})
    assert new["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
    assert [c["image"] for c in new["spec"]["containers"]] == ["x", "z"]
    assert new["spec"]["taints"] == [{"key": "k2"}]  # no merge key: replaced


async def test_list_and_watch_filter_by_label_and_field(kube_client: k8s_client.ApiClient,
                                                        k8s_cluster: Cluster) -> None:
    core = k8s_client.CoreV1Api(kube_client)
    await core.create_namespaced_pod("default", sleeper("one", {"app": "a"}, scheduled=False))
    await core.create_namespaced_pod("default", sleeper("two", {"app": "b"}, scheduled=False))
    only_a = await core.list_namespaced_pod("default", label_selector="app=a")
    assert [p.metadata.name for p in only_a.items] == ["one"]
    by_name = await core.list_namespaced_pod("default", field_selector="metadata.name=two")
    assert [p.metadata.name for p in by_name.items] == ["two"]
    with pytest.raises(k8s_client.ApiException) as bad:
        await core.list_namespaced_pod("default", field_selector="spec.containers=x")
    assert bad.value.status == 400
    assert json.loads(bad.value.body)["message"] == "field label not supported: spec.containers"

    # watch resumes from a list's resourceVersion: no replay of old objects, only what follows
    listing = await core.list_namespaced_pod("default", label_selector="app=a")
    await core.patch_namespaced_pod("two", "default", {"metadata": {"labels": {"extra": "1"}}})
    await core.patch_namespaced_pod("one", "default", {"metadata": {"labels": {"extra": "1"}}})
    seen = []
    async with k8s_watch.Watch().stream(core.list_namespaced_pod, "default", label_selector="app=a",
                                        resource_version=listing.metadata.resource_version,
                                        timeout_seconds=1) as stream:
        async for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("MODIFIED", "one")]


async def test_watch_from_expired_resource_version_gets_410(k8s_cluster: Cluster) -> None:
    k8s_cluster.api.event_log_size = 3
    for i in range(6):
        await k8s_cluster.rest.post(PODS, sleeper(f"p{i}", scheduled=False))
    events = [e async for e in k8s_cluster.rest.watch(PODS, {"resourceVersion": "1", "timeoutSeconds": "1"})]
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_pod_spec_is_immutable_but_resize_subresource_changes_resources(k8s_cluster: Cluster) -> None:
    pod = sleeper("sized")
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    await k8s_cluster.rest.post(PODS, pod)
    await wait_until(lambda: _running(k8s_cluster, "sized"), what="Running")
    new_resources = {"requests": {"cpu": "2", "memory": "1Gi"}}
    with pytest.raises(RestError) as forbidden:
        await k8s_cluster.rest.patch(f"{PODS}/sized", {"spec": {"containers": [
            {"name": "c", "resources": new_resources}]}})
    assert forbidden.value.status == 422 and forbidden.value.body["reason"] == "Invalid"
    with pytest.raises(RestError) as node_change:
        await k8s_cluster.rest.patch(f"{PODS}/sized", {"spec": {"nodeName": "elsewhere"}})
    assert node_change.value.status == 422

    resized = await k8s_cluster.rest.patch(f"{PODS}/sized/resize", {"spec": {"containers": [
        {"name": "c", "resources": new_resources}]}})
    assert resized["spec"]["containers"][0]["resources"] == new_resources
    assert resized["metadata"]["generation"] == 2

    async def mirrored() -> bool:
        p = await k8s_cluster.pod("sized")
        return p["status"]["containerStatuses"][0].get("resources") == new_resources

    await wait_until(mirrored, what="the kubelet to report the new resources")


async def test_resource_version_precondition_conflicts(k8s_cluster: Cluster) -> None:
    created = await k8s_cluster.rest.post("/api/v1/namespaces/default/configmaps",
                                          {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale = created["metadata"]["resourceVersion"]
    await k8s_cluster.rest.patch("/api/v1/namespaces/default/configmaps/cm", {"data": {"a": "2"}},
                                 content_type="application/merge-patch+json")
    with pytest.raises(RestError) as conflict:
        await k8s_cluster.rest.request("PUT", "/api/v1/namespaces/default/configmaps/cm", body={
            "metadata": {"name": "cm", "resourceVersion": stale}, "data": {"a": "3"}})
    assert conflict.value.status == 409 and conflict.value.body["reason"] == "Conflict"


async def test_env_from_secret_and_working_dir(k8s_cluster: Cluster, tmp_path: Path) -> None:
    await k8s_cluster.rest.post("/api/v1/namespaces/default/secrets", {
        "metadata": {"name": "store"}, "stringData": {"endpoint": "http://s3.local", "key": "s3cr3t"}})
    secret = await k8s_cluster.rest.get("/api/v1/namespaces/default/secrets/store")
    assert "stringData" not in secret and secret["data"]["key"] == "czNjcjN0"  # folded into base64 data
    out = tmp_path / "env.json"
    script = ("import json, os, sys; json.dump({k: os.environ.get(k) for k in "
              "['STORE_KEY', 'STORE_ENDPOINT', 'POD', 'NODE', 'URL']} | {'cwd': os.getcwd()}, "
              "open(sys.argv[1], 'w'))")
    await k8s_cluster.rest.post(PODS, {"metadata": {"name": "envy"}, "spec": {"containers": [{
        "name": "c", "image": "none", "command": [sys.executable, "-c", script], "args": [str(out)],
        "workingDir": "/home/jovyan",
        "env": [
            {"name": "STORE_KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "key"}}},
            {"name": "STORE_ENDPOINT", "valueFrom": {"secretKeyRef": {"name": "store", "key": "endpoint"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "URL", "value": "$(STORE_ENDPOINT)/bucket"},
        ]}]}})

    async def succeeded() -> bool:
        p = await k8s_cluster.pod("envy")
        return p is not None and p["status"]["phase"] == "Succeeded"

    await wait_until(succeeded, what="the pod to complete")
    env = json.loads(out.read_text())
    node = (await k8s_cluster.pod("envy"))["spec"]["nodeName"]
    assert env == {"STORE_KEY": "s3cr3t", "STORE_ENDPOINT": "http://s3.local", "POD": "envy", "NODE": node,
                   "URL": "http://s3.local/bucket",
                   "cwd": str(k8s_cluster.pod_dir("envy") / "home" / "jovyan")}


async def _running(cluster: Cluster, name: str) -> bool:
    pod = await cluster.pod(name)
    return bool(pod and pod["status"].get("phase") == "Running")


async def test_kmock_reactions_still_override_the_emulation(k8s_cluster: Cluster) -> None:
    """Fault injection stays kmock's DSL: a test's reaction wins over the emulated behaviour."""
    import kmock

    await k8s_cluster.rest.post(PODS, sleeper("target", scheduled=False))
    k8s_cluster.api["post", kmock.resource("v1/pods"), kmock.subresource("eviction")] << 503
    with pytest.raises(RestError) as injected:
        await k8s_cluster.evict("target")
    assert injected.value.status == 503
    assert await k8s_cluster.pod("target") is not None  # the emulation never saw the request
