"""A migration that cannot complete leaves the server running with its session: nothing is lost.

- The spawner refuses the new options (an unknown node): the server is started again with its
  previous options, the record says `start-rejected` and what the spawner said.
- A kernel stays busy past the busy timeout: the checkpoint is incomplete, so the server is not
  stopped at all; the record says `checkpoint-incomplete` and which notebook.
- With `checkpoint_on_stop = "always"` the hub checkpoints again at the stop; the service
  reports the restore of that newer checkpoint, still verified.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.service.conftest import ElasticHub, token_for
from tests.service.test_migrate import NB, expected, run_tiny_notebook, session_values

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def migrate(eh: ElasticHub, token: str, body: dict) -> dict:
    code, answer = await eh.call("POST", "api/users/alice/server/migrate", body, token=token)
    assert code == 202, answer
    return await eh.wait_migration(answer["migration"]["id"], token)


async def test_a_refused_start_brings_the_server_back_as_it_was(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub()
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    ops = await token_for(eh, "ops")
    rec = await migrate(eh, ops, {"node": "node-z"})
    assert rec["outcome"] == "failed" and rec["reason"] == "start-rejected", rec
    assert "Unknown node 'node-z'" in rec["error"] and "previous options" in rec["error"], rec
    model = await eh.hub.server_model("alice")
    assert model["ready"] and model["state"]["node"] == "node-a", model
    assert await session_values(eh, "alice", "", server.token) == expected("alice")
    code, text = await eh.call("GET", "metrics", token=ops)  # JSON decoding fails: text
    assert 'elastic_spawner_migration_failures_total{reason="start-rejected"} 1.0' in text


async def test_a_busy_kernel_stops_the_migration_before_the_server_stops(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub(args=["--ElasticService.busy_timeout=1"])
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    pid = (await eh.hub.spawner_state("alice"))["pid"]
    k = await server.open_notebook(NB)
    busy = asyncio.ensure_future(k.run("import time; time.sleep(6)", store_history=False))
    await asyncio.sleep(0.5)  # the cell is running (a duration, not a synchronisation)
    ops = await token_for(eh, "ops")
    rec = await migrate(eh, ops, {"node": "node-b"})
    assert rec["outcome"] == "failed" and rec["reason"] == "checkpoint-incomplete", rec
    assert NB in rec["error"] and "nothing is lost" in rec["error"], rec
    assert "stop_s" not in rec["durations"], rec  # never stopped
    await busy
    await k.close()
    state = await eh.hub.spawner_state("alice")
    assert state["pid"] == pid and state["node"] == "node-a"  # the same process, untouched
    assert await session_values(eh, "alice", "", server.token) == expected("alice")


async def test_with_checkpoint_on_stop_always_the_newer_checkpoint_is_verified(
        make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub(checkpoint_on_stop="always")
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    ops = await token_for(eh, "ops")
    rec = await migrate(eh, ops, {"node": "node-b"})
    assert rec["outcome"] == "verified", rec
    assert rec["restored_from"] and rec["restored_from"] != rec["checkpoint"], rec
    assert await session_values(eh, "alice", "", server.token) == expected("alice")
