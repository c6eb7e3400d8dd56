"""A restore that failed at start-up never costs the session at the next stop.

The store is unreachable while the server starts (its root turns into a regular file, as when
a bucket, its credentials or a volume are gone): the restore fails and the notebook has no
kernel. A user, admin or the idle culler then stops the server. Its checkpoint has nothing of
that notebook, or fails too; either way the spawner used to point the next start at it (or at
nothing), so the session was lost although its checkpoint was intact in the store.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, restore_outcome, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "notes.ipynb"


def config(store_root: Path) -> str:
    return f"c.ElasticSpawnerMixin.store_url = 'file://{store_root}/{{username}}/{{servername}}'\n"


def break_store(root: Path) -> None:
    """Every read and write under `root` fails: the directory is replaced by a regular file."""
    os.rename(root, root.with_name(root.name + ".moved"))
    root.write_text("not a directory")


def mend_store(root: Path) -> None:
    root.unlink()
    os.rename(root.with_name(root.name + ".moved"), root)


async def checkpointed_then_failed_restore(hub: LocalHub, store: Path) -> tuple[ServerClient, str]:
    """alice's notebook checkpointed at a stop, then a start whose restore cannot read the store."""
    server = await user_server(hub, "alice")
    k = await server.open_notebook(NB)
    await k.ok("x = 40 + 2\nitems = [x, x]")
    await k.close()
    await hub.stop_server("alice")
    pointer = (await hub.spawner_state("alice"))["elastic"]["checkpoint"]
    break_store(store)
    await hub.start_server("alice")
    server = await reconnect(hub, "alice", server.token)
    restore = await restore_outcome(server)
    assert restore["state"] == "failed" and "could not read the server checkpoint" in restore["error"]
    return server, pointer


async def assert_session_back(hub: LocalHub, token: str) -> None:
    server = await reconnect(hub, "alice", token)
    assert (await restore_outcome(server))["state"] == "done"
    kid = await server.kernel_for(NB)
    assert kid, await server.sessions()
    k = await server.attach(kid)
    assert await k.eval_json("[x, items]") == [42, [42, 42]]
    await k.close()


async def test_stop_after_a_failed_restore_with_the_store_back_carries_the_notebook_over(
        make_hub, tmp_path) -> None:
    """The store is back by the stop: the new checkpoint carries the unrestored kernel over."""
    store = tmp_path / "store-root"
    hub: LocalHub = await make_hub(config(store))
    server, pointer = await checkpointed_then_failed_restore(hub, store)
    mend_store(store)

    await hub.stop_server("alice")
    state = (await hub.spawner_state("alice"))["elastic"]
    assert state["checkpoint"] != pointer  # a new checkpoint was taken ...
    assert [k["path"] for k in state["history"][0]["kernels"]] == [NB]  # ... with the notebook
    await hub.start_server("alice")
    await assert_session_back(hub, server.token)


async def test_stop_after_a_failed_restore_with_the_store_still_down_keeps_the_pointer(
        make_hub, tmp_path) -> None:
    """The checkpoint at the stop fails too: the next start restores the old pointer again."""
    store = tmp_path / "store-root"
    hub: LocalHub = await make_hub(config(store))
    server, pointer = await checkpointed_then_failed_restore(hub, store)
    k = await server.open_notebook("scratch.ipynb")  # work since the start is not saved (store down)
    await k.ok("y = 1")
    await k.close()

    await hub.stop_server("alice")
    assert (await hub.spawner_state("alice"))["elastic"]["checkpoint"] == pointer
    assert "which the next start restores again" in hub.log_tail(400)
    mend_store(store)
    await hub.start_server("alice")
    await assert_session_back(hub, server.token)
