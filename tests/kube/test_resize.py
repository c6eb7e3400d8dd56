"""Resizing a running server: in place where the change allows it, else by migration.

Real hub + ElasticKubeSpawner on the emulated cluster. The rig serves `pods/resize` (the change
shows up in `containerStatuses[].resources`), so a CPU change or memory increase is done in
place -- same pod, same kernel. Lowering memory needs a migration: checkpoint, stop, start with
the new `user_options`, restore.
"""

from __future__ import annotations

import pytest

from elastic_spawner.hubapi import HubClient
from elastic_spawner.resize import ResizeError, SizePolicy, resize_server
from tests.kube.conftest import KubeHub
from tests.kube.notebooks import assert_session_back, run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]

POLICY = SizePolicy.from_traits([0.5, 4], ["256M", "4G"], {})
CONFIG = "c.ElasticKubeSpawner.cpu_range = [0.5, 4]\nc.ElasticKubeSpawner.memory_range = ['256M', '4G']"


async def test_resize_in_place_then_by_migration_keeps_the_session(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub(extra_config=CONFIG)
    server = await kh.server("dana", options={"cpu": 1, "memory": "2G"})
    await run_session(server, "dana")
    pod = await kh.user_pod("dana")
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert float(limits["cpu"]) == 1.0 and int(limits["memory"]) == 2 * 1024**3
    hub = HubClient(f"{kh.hub.url}/hub/api", kh.hub.token)

    # more CPU and memory: in place, the pod and its kernels stay
    grown = await resize_server(hub, kh.core, "default", "dana", "", {"cpu": 2, "memory": "3G"}, POLICY)
    assert grown.mode == "in-place", grown
    same = await kh.user_pod("dana")
    assert same["metadata"]["uid"] == pod["metadata"]["uid"]
    assert same["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}

    # out of policy: refused before anything is stopped
    with pytest.raises(ResizeError, match="outside the allowed sizes"):
        await resize_server(hub, kh.core, "default", "dana", "", {"cpu": 16}, POLICY)
    assert (await kh.user_pod("dana"))["metadata"]["uid"] == pod["metadata"]["uid"]

    # less memory: a migration (lowering a memory limit in place would restart the container)
    shrunk = await resize_server(hub, kh.core, "default", "dana", "", {"memory": "1G"}, POLICY)
    assert shrunk.mode == "migrated" and shrunk.checkpoint, shrunk
    moved = await kh.user_pod("dana")
    assert moved["metadata"]["uid"] != pod["metadata"]["uid"]
    limits = moved["spec"]["containers"][0]["resources"]["limits"]
    assert float(limits["cpu"]) == 2.0 and int(limits["memory"]) == 1024**3
    model = await kh.hub.server_model("dana")
    assert model["user_options"] == {"cpu": 2.0, "memory": "1Gi"}  # the size the pod really had
    await assert_session_back(await kh.reconnect("dana", server.token), "dana")


async def test_invalid_size_at_spawn_is_a_clear_400(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub(extra_config=CONFIG)
    await kh.hub.create_user("erin")
    code, body = await kh.hub.api("POST", "users/erin/server",
                                  {"user_options": {"cpu": 64, "memory": "1G"}}, check=False)
    assert code == 400, body
    assert "outside the allowed sizes" in body["message"] and "cpu between 500m and 4" in body["message"]
