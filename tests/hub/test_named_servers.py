"""A user's named servers keep their own checkpoints: never another server's, never lost to it.

JupyterHub accepts "default" as the name of a named server, and all of a user's servers share
the user's home, so a notebook has the same path (and the same kernel store key) in each. These
tests run real servers of one user through the hub, as the user's browser would.
"""

from __future__ import annotations

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import LocalHub
from elastic_spawner.service.checkpoints import server_store_url
from elastic_spawner.service.retention import prune_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "analysis.ipynb"
EMPTY_NB = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
NAMED = "c.JupyterHub.allow_named_servers = True\n"


async def run(hub: LocalHub, token: str, server: str, value: str) -> None:
    """Start `server` of alice, set `x = value` in the notebook NB, stop it (checkpointed)."""
    model = await hub.start_server("alice", server=server)
    client = ServerClient(hub.url + model["url"], token)
    await client.put_notebook(NB, EMPTY_NB)
    nb = await client.open_notebook(NB)
    await nb.ok(f"x = {value!r}")
    await nb.close()
    await hub.stop_server("alice", server=server)


async def test_a_named_server_called_default_does_not_share_the_default_servers_store(make_hub) -> None:
    """Retention of the named server "default" must not delete the default server's checkpoints.

    Both servers' stores were `<store>/alice/default`: retention of one (keep the newest, plus
    the one it restores next) counted the other's checkpoints as its own and deleted them, so
    the default server's next start restored nothing.
    """
    hub: LocalHub = await make_hub(extra_config=NAMED)
    await hub.create_user("alice")
    token = await hub.user_token("alice")
    await run(hub, token, "", "from the default server")
    await run(hub, token, "default", "from the named server")
    own = (await hub.spawner_state("alice"))["elastic"]["checkpoint"]
    named = (await hub.spawner_state("alice", "default"))["elastic"]["checkpoint"]
    assert own.rpartition("#")[0] != named.rpartition("#")[0], (own, named)

    # what the migrator service's retention pass does for the named server
    result = prune_server(server_store_url(hub.store_url(), "alice", "default"), 1,
                          protected={named.rpartition("#")[2]})
    assert result.error is None and not result.deleted_servers, result

    model = await hub.start_server("alice")
    client = ServerClient(hub.url + model["url"], token)
    status = (await client.api("GET", "api/elastic/status"))[1]
    assert status["restore"]["state"] == "done", status
    sessions = {s["path"]: s["kernel"]["id"] for s in await client.sessions()}
    nb = await client.attach(sessions[NB])
    assert await nb.eval_json("x") == "from the default server"
    await nb.close()
