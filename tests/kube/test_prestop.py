"""The preStop-only path: the pod is deleted with a grace period and the hub is not involved.

The kubelet runs the preStop hook, which checkpoints through the in-pod API within the grace
period; the hub only notices the pod is gone. The next start finds that checkpoint in the
store (newer than anything the hub took) and restores it.
"""

from __future__ import annotations

import pytest

from elastic_spawner.kube import latest_server_checkpoint
from tests.k8s.rig import wait_until
from tests.kube.conftest import KubeHub
from tests.kube.notebooks import assert_session_back, run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def test_prestop_checkpoint_survives_a_pod_delete_the_hub_never_saw(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub()
    server = await kh.server("bob")
    await run_session(server, "bob")
    pod = await kh.user_pod("bob")
    assert pod is not None
    store = f"file://{kh.hub.workdir}/store/bob/default"
    assert latest_server_checkpoint(store) is None  # nothing checkpointed yet

    # like a graceful node shutdown or `kubectl delete pod`: the kubelet runs preStop first
    await kh.cluster.rest.delete(f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}",
                                 {"gracePeriodSeconds": 30})
    await wait_until(lambda: _gone(kh, "bob"), timeout=60, what="the pod to terminate")
    pointer = latest_server_checkpoint(store)
    assert pointer is not None, "the preStop hook left no checkpoint"
    prestop_log = kh.cluster.workdir / "nodes" / pod["spec"]["nodeName"] / "default"
    [log_file] = prestop_log.glob(f"{pod['metadata']['name']}-*/prestop.log")
    assert "complete=True" in log_file.read_text()

    # the hub sees the pod gone at its next poll, and forgets the server without stop()
    await wait_until(lambda: _hub_forgot(kh, "bob"), timeout=30, what="the hub to notice")
    assert "checkpoint" not in (await kh.hub.spawner_state("bob")).get("elastic", {})

    await kh.hub.start_server("bob")
    state = await kh.hub.spawner_state("bob")
    assert state["elastic"]["restored_from"] == pointer
    await assert_session_back(await kh.reconnect("bob", server.token), "bob")


async def _gone(kh: KubeHub, user: str) -> bool:
    listing = await kh.cluster.rest.get("/api/v1/namespaces/default/pods",
                                        labelSelector=f"hub.jupyter.org/username={user}")
    return not listing["items"]


async def _hub_forgot(kh: KubeHub, user: str) -> bool:
    model = await kh.hub.server_model(user)
    return not model or not (model.get("ready") or model.get("pending"))
