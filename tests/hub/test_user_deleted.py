"""A user deleted and created again (same name) never gets the old user's sessions.

Usernames are reused (recycled accounts, an admin who deletes and re-creates a user). The
store prefix is per name, so the new user's server can name the old user's checkpoints (listed in
the store, or by the service's `checkpoints` API) and ask for them. Keys were per name too, so
the restore verified and loaded the old user's variables into the new user's kernel.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from elastic_spawner.localhub import LocalHub
from tests.hub.conftest import reconnect, restore_outcome, user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "notes.ipynb"


async def test_a_recreated_user_cannot_restore_the_deleted_users_checkpoint(make_hub) -> None:
    hub: LocalHub = await make_hub()
    server = await user_server(hub, "bob")
    k = await server.open_notebook(NB)
    await k.ok("secret = 'the old bob'")
    await k.close()
    await hub.stop_server("bob")
    pointer = (await hub.spawner_state("bob"))["elastic"]["checkpoint"]
    code, _ = await hub.api("DELETE", f"users/{quote('bob')}", check=False)
    assert code == 204

    new = await user_server(hub, "bob")  # a new person with the same name
    new = await reconnect(hub, "bob", await hub.user_token("bob"))
    code, _ = await new.api("POST", "api/elastic/restore", {"checkpoint": pointer})
    assert code == 202
    restore = await restore_outcome(new)
    assert restore["state"] == "failed", restore
    assert "authentication" in restore["error"] or "signed" in restore["error"], restore
    assert await new.sessions() == []  # nothing of the old bob was loaded
