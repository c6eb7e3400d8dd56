"""A user's whole server survives stop and start through the hub: every notebook's kernel is back.

Real JupyterHub, real single-user servers on two local nodes, real kernels; stop and start go
through the hub REST API exactly as the user's browser, an admin or the idle culler would.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

ALPHA = "work/alpha.ipynb"
BETA = "beta.ipynb"
EMPTY_NB = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


async def run_two_notebooks(server: ServerClient) -> None:
    await server.api("PUT", "api/contents/work", {"type": "directory"})
    for path in (ALPHA, BETA):
        await server.put_notebook(path, EMPTY_NB)
    alpha = await server.open_notebook(ALPHA)
    await alpha.ok("import numpy as np\na = list(range(10))\nb = a")
    await alpha.ok("arr = np.arange(1000) * 2\ndef total():\n    return sum(a) + int(arr.sum())")
    await alpha.ok("t = total()\na.append(10)")
    beta = await server.open_notebook(BETA)
    await beta.ok("msg = 'hello'\nd = {'k': [1, 2]}")
    await beta.ok("d['k'].append(3)")
    await alpha.close()
    await beta.close()


async def assert_both_notebooks_back(server: ServerClient) -> None:
    status = (await server.api("GET", "api/elastic/status"))[1]
    assert status["restore"]["state"] == "done", status
    sessions = {s["path"]: s["kernel"]["id"] for s in await server.sessions()}
    assert set(sessions) == {ALPHA, BETA}, sessions
    alpha = await server.attach(sessions[ALPHA])
    assert await alpha.eval_json("[a, a is b, int(arr.sum()), t, total()]") == [
        list(range(11)), True, 999000, 999045, 999055]
    beta = await server.attach(sessions[BETA])
    assert await beta.eval_json("[msg, d]") == ["hello", {"k": [1, 2, 3]}]
    await alpha.close()
    await beta.close()


async def test_two_notebooks_come_back_after_stop_and_start_on_another_node(make_hub) -> None:
    hub: LocalHub = await make_hub()
    server = await user_server(hub, "alice", options={"node": "node-a"})
    await run_two_notebooks(server)
    before = await hub.spawner_state("alice")
    assert before["node"] == "node-a"
    environ = Path(f"/proc/{before['pid']}/environ").read_bytes().split(b"\0")
    assert any(v.startswith(b"ELASTIC_CHECKPOINT_KEY=") for v in environ)  # checkpoints are signed
    assert b"ELASTIC_NODE_NAME=node-a" in environ

    await hub.stop_server("alice")
    state = await hub.spawner_state("alice")
    pointer = state["elastic"]["checkpoint"]
    assert pointer.startswith(f"file://{hub.workdir}/store/alice/default#")
    entry = state["elastic"]["history"][0]
    assert entry["complete"] and {k["path"] for k in entry["kernels"]} == {ALPHA, BETA}

    events: list[dict] = []
    start = asyncio.ensure_future(hub.start_server("alice", options={"node": "node-b"}))
    await asyncio.gather(start, hub.follow_progress("alice", start, events.append))
    messages = [e.get("message", "") for e in events]
    assert "Starting your server on node-b" in messages, messages  # the spawn page shows it
    assert any(m.startswith("Restoring your session from checkpoint") for m in messages), messages
    after = await hub.spawner_state("alice")
    assert after["node"] == "node-b" and after["pid"] != before["pid"]
    assert after["elastic"]["restored_from"] == pointer
    await assert_both_notebooks_back(await reconnect(hub, "alice", server.token))


async def test_pointer_survives_hub_restart_between_stop_and_start(make_hub) -> None:
    hub: LocalHub = await make_hub()
    server = await user_server(hub, "alice")
    await run_two_notebooks(server)
    await hub.stop_server("alice")
    pointer = (await hub.spawner_state("alice"))["elastic"]["checkpoint"]

    await hub.restart()
    assert (await hub.spawner_state("alice"))["elastic"]["checkpoint"] == pointer  # from the hub DB

    await hub.start_server("alice")
    assert (await hub.spawner_state("alice"))["node"] == "node-b"  # default: the next node
    await assert_both_notebooks_back(await reconnect(hub, "alice", server.token))


async def test_stop_after_hub_restart_checkpoints_with_a_short_lived_token(make_hub) -> None:
    """After a hub restart Spawner.api_token is empty; the checkpoint still happens."""
    hub: LocalHub = await make_hub(cleanup_servers=False)
    server = await user_server(hub, "alice")
    await run_two_notebooks(server)
    pid = (await hub.spawner_state("alice"))["pid"]

    await hub.restart()
    model = await hub.server_model("alice")
    assert model["ready"] and model["state"]["pid"] == pid  # the server kept running
    os.kill(pid, 0)

    await hub.stop_server("alice")
    assert "using a short-lived token scoped to this server" in hub.log_tail(400)
    assert (await hub.spawner_state("alice"))["elastic"]["history"][0]["complete"]
    _, tokens = await hub.api("GET", "users/alice/tokens")
    assert not [t for t in tokens["api_tokens"] if t["note"].startswith("elastic-spawner: checkpoint")]

    await hub.start_server("alice")
    await assert_both_notebooks_back(await reconnect(hub, "alice", server.token))
