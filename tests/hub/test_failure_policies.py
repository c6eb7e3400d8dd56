"""What a failed checkpoint means, per `ElasticSpawnerMixin.on_checkpoint_failure`.

The store becomes unusable between start and stop (its root turns into a regular file: every
write fails, for root too), as when a bucket or volume goes away while the server runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "notes.ipynb"


def config(policy: str, store_root: Path) -> str:
    return (f"c.ElasticSpawnerMixin.on_checkpoint_failure = {policy!r}\n"
            f"c.ElasticSpawnerMixin.store_url = 'file://{store_root}/{{username}}/{{servername}}'\n")


def break_store(root: Path) -> None:
    """Make every write under `root` fail: replace the directory by a regular file."""
    if root.exists():
        os.rename(root, root.with_name(root.name + ".moved"))
    root.write_text("not a directory")


async def start_with_state(hub: LocalHub) -> tuple[ServerClient, int]:
    server = await user_server(hub, "alice")
    k = await server.open_notebook(NB)
    await k.ok("x = 40 + 2\nitems = [x, x]")
    await k.close()
    return server, (await hub.spawner_state("alice"))["pid"]


async def test_policy_stop_stops_and_warns_and_next_start_is_fresh(make_hub, tmp_path) -> None:
    store = tmp_path / "store-root"
    hub: LocalHub = await make_hub(config("stop", store))
    server, pid = await start_with_state(hub)
    break_store(store)

    await hub.stop_server("alice")
    assert not (await hub.server_model("alice"))["ready"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    log = hub.log_tail(400)
    assert "Elastic: stopping alice/ without a checkpoint" in log, log
    assert "on_checkpoint_failure=stop" in log
    assert not (await hub.spawner_state("alice")).get("elastic", {}).get("checkpoint")

    store.unlink()
    await hub.start_server("alice")
    server = await reconnect(hub, "alice", server.token)
    assert await server.sessions() == []  # fresh: nothing silently restored from elsewhere


async def test_policy_refuse_keeps_the_server_running_and_next_start_reattaches(make_hub, tmp_path) -> None:
    store = tmp_path / "store-root"
    hub: LocalHub = await make_hub(config("refuse", store))
    server, pid = await start_with_state(hub)
    break_store(store)

    await hub.stop_server("alice")  # the hub reports it stopped; the server must still run
    assert "Elastic: refusing to stop alice/" in hub.log_tail(400)
    os.kill(pid, 0)
    detached = (await hub.spawner_state("alice"))["elastic"]["detached"]
    assert detached["state"]["pid"] == pid
    direct = ServerClient(f"http://{detached['ip']}:{detached['port']}/user/alice/", server.token)
    kid = await direct.kernel_for(NB)
    k = await direct.attach(kid)
    assert await k.eval_json("[x, items]") == [42, [42, 42]]  # kernel untouched
    await k.close()

    store.unlink()
    await hub.start_server("alice")
    assert (await hub.spawner_state("alice"))["pid"] == pid  # re-attached, not a new process
    assert "re-attaching alice/" in hub.log_tail(400)
    server = await reconnect(hub, "alice", server.token)  # through the proxy again
    k = await server.attach(await server.kernel_for(NB))
    assert await k.eval_json("x") == 42
    await k.close()

    await hub.stop_server("alice")  # the store works again: a normal checkpointed stop
    assert (await hub.spawner_state("alice"))["elastic"]["history"][0]["complete"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
