"""A server stopped while it is still restoring keeps the checkpoint it was restoring.

A restore can outlast the spawn (`restore_wait_timeout`, capped by `start_timeout`: the spawn
completes and the restore goes on in the server). A user, admin or culler who stops the server
meanwhile must not throw the session away: the server refuses a checkpoint while it restores
(409), and the spawner took that as a failed checkpoint, so the next start was fresh.
"""

from __future__ import annotations

import pytest

from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, restore_outcome, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "slow.ipynb"
# An object no pickler takes is recomputed at restore: re-running its cell makes the restore slow.
SLOW_CELL = """\
import time
class Unpicklable:
    def __reduce__(self):
        raise TypeError("not picklable")
time.sleep(12)
slow = Unpicklable()
answer = 42
"""


async def test_stop_during_a_restore_keeps_the_checkpoint_for_the_next_start(make_hub) -> None:
    hub: LocalHub = await make_hub(
        "c.ElasticSpawnerMixin.restore_wait_timeout = 0\n"  # the spawn does not follow the restore
        "c.ElasticSpawnerMixin.busy_timeout = 1\n")
    server = await user_server(hub, "alice")
    k = await server.open_notebook(NB)
    await k.ok(SLOW_CELL, timeout=60)
    await k.close()
    await hub.stop_server("alice")
    pointer = (await hub.spawner_state("alice"))["elastic"]["checkpoint"]
    assert pointer

    await hub.start_server("alice")
    restarted = await reconnect(hub, "alice", server.token)
    status = (await restarted.api("GET", "api/elastic/status"))[1]
    assert status["restore"]["state"] == "running", status  # the re-run cell takes 12 s
    await hub.stop_server("alice")
    assert (await hub.spawner_state("alice"))["elastic"]["checkpoint"] == pointer
    assert "still restoring" in hub.log_tail(400)  # the hub log says why it kept the pointer

    await hub.start_server("alice")
    again = await reconnect(hub, "alice", server.token)
    assert (await restore_outcome(again))["state"] == "done"
    kid = await again.kernel_for(NB)
    assert kid, await again.sessions()
    k = await again.attach(kid)
    assert await k.eval_json("[answer, type(slow).__name__]") == [42, "Unpicklable"]
    await k.close()
