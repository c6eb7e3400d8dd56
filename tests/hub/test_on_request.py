"""`checkpoint_on_stop = "on_request"`: the hub does not checkpoint; a requested checkpoint is restored.

The request is a `POST api/elastic/checkpoint` on the server while it runs (the user, an admin,
`elastic-spawner migrate`); the stop then adopts the server's `last_checkpoint`.
"""

from __future__ import annotations

import pytest

from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

CONFIG = "c.ElasticSpawnerMixin.checkpoint_on_stop = 'on_request'\n"


async def test_stop_without_a_request_starts_fresh_and_a_requested_checkpoint_is_restored(make_hub) -> None:
    hub: LocalHub = await make_hub(CONFIG)
    server = await user_server(hub, "alice")
    k = await server.open_notebook("a.ipynb")
    await k.ok("x = 1")
    await k.close()
    await hub.stop_server("alice")  # nothing requested
    assert "no checkpoint requested for alice/" in hub.log_tail(300)
    await hub.start_server("alice")
    server = await reconnect(hub, "alice", server.token)
    assert await server.sessions() == []

    k = await server.open_notebook("a.ipynb")
    await k.ok("x = 2")
    await k.close()
    _, answer = await server.api("POST", "api/elastic/checkpoint", {})
    await hub.stop_server("alice")
    assert (await hub.spawner_state("alice"))["elastic"]["checkpoint"] == answer["checkpoint"]
    await hub.start_server("alice")
    server = await reconnect(hub, "alice", server.token)
    k = await server.attach(await server.kernel_for("a.ipynb"))
    assert await k.eval_json("x") == 2
    await k.close()
