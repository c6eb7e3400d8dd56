"""Draining a node moves its elastic servers to another node with every variable intact.

The rig's `drain` is `kubectl drain --force`: cordon, then evictions retried while a PDB
refuses them (429). The DrainWatcher (in this test process, as in the migrator service) sees the
cordon, checkpoints each server, stops it through the hub and starts it again; the new pod lands
on node-b (node-a is unschedulable) and restores.
"""

from __future__ import annotations

import asyncio

import pytest

from elastic_spawner.drain import DrainSettings, DrainWatcher, MigrationReport
from tests.kube.conftest import KubeHub, spawn_on
from tests.kube.notebooks import assert_session_back, run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]


def watcher_for(kh: KubeHub, **settings: object) -> DrainWatcher:
    seen: list[MigrationReport] = []
    w = DrainWatcher(f"{kh.hub.url}/hub/api", kh.hub.token, kube_client=kh.kube_client,
                     namespace="default", settings=DrainSettings(**settings),  # type: ignore[arg-type]
                     on_report=seen.append)
    w.seen = seen  # type: ignore[attr-defined]
    return w


async def test_drain_moves_the_server_to_another_node_with_its_state(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub()
    servers = await spawn_on(kh, "node-a", ["alice"])
    await run_session(servers["alice"], "alice")
    old_pod = await kh.user_pod("alice")

    watcher = watcher_for(kh, hold_limit=120)
    await watcher.start()
    try:
        await asyncio.wait_for(watcher.synced.wait(), 10)
        # the drain's evictions are refused until the watcher has moved the server
        await kh.cluster.drain("node-a", timeout=120)
        [report] = await watcher.drained("node-a")
    finally:
        await watcher.stop()

    assert report.outcome == "migrated", report
    assert report.new_node == "node-b" and report.complete and not report.pdb_released
    assert report.checkpoint and report.checkpoint.startswith(f"file://{kh.hub.workdir}/store/alice/")
    assert [r.outcome for r in watcher.seen] == ["migrated"]  # type: ignore[attr-defined]
    new_pod = await kh.user_pod("alice")
    assert new_pod["spec"]["nodeName"] == "node-b"
    assert new_pod["metadata"]["uid"] != old_pod["metadata"]["uid"]
    assert len(await kh.pdbs()) == 1  # the new pod is protected again
    await assert_session_back(await kh.reconnect("alice", servers["alice"].token), "alice")


async def test_drain_of_a_node_running_five_servers(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub()
    users = [f"user{i}" for i in range(5)]
    servers = await spawn_on(kh, "node-a", users)
    await asyncio.gather(*(_small_session(servers[u], u) for u in users))

    watcher = watcher_for(kh, hold_limit=240, max_concurrent=3)
    await watcher.start()
    try:
        await asyncio.wait_for(watcher.synced.wait(), 10)
        await kh.cluster.drain("node-a", timeout=240)
        reports = await watcher.drained("node-a")
    finally:
        await watcher.stop()

    assert sorted(r.user for r in reports) == users
    assert {(r.outcome, r.new_node, r.complete) for r in reports} == {("migrated", "node-b", True)}
    assert not await kh.cluster.pods_on("node-a")
    for u in users:
        client = await kh.reconnect(u, servers[u].token)
        sessions = {s["path"]: s["kernel"]["id"] for s in await client.sessions()}
        k = await client.attach(sessions[f"small-{u}.ipynb"])
        assert await k.eval_json("[who, data, data2 is data]") == [u, list(range(20)), True]
        await k.close()


async def _small_session(server, user: str) -> None:
    # one notebook per user: the emulated pods share one home directory, and five servers
    # saving the same file at once race on its temporary file
    await server.put_notebook(f"small-{user}.ipynb", {"cells": [], "metadata": {},
                                                     "nbformat": 4, "nbformat_minor": 5})
    k = await server.open_notebook(f"small-{user}.ipynb")
    await k.ok(f"who = {user!r}\ndata = list(range(20))\ndata2 = data")
    await k.close()
