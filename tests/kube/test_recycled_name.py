"""A user deleted and created again (same name) on Kubernetes starts fresh, not as the old user.

`ElasticKubeSpawner.adopt_newer_checkpoints` makes a start restore the newest checkpoint in the
server's store prefix that is newer than any the hub knows (one the preStop hook took). The
prefix is per name, and a new user's hub state knows no checkpoint: the new user's first start
adopted the deleted user's last checkpoint and restored their session into the new user's pod.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.kube.conftest import KubeHub
from tests.kube.notebooks import run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def test_a_recreated_user_does_not_adopt_the_deleted_users_checkpoint(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub()
    server = await kh.server("bob")
    await run_session(server, "bob")
    await kh.hub.stop_server("bob")
    assert (await kh.hub.spawner_state("bob"))["elastic"]["checkpoint"]
    code, _ = await kh.hub.api("DELETE", f"users/{quote('bob')}", check=False)
    assert code == 204

    new = await kh.server("bob")  # another person, given the recycled name
    elastic = (await kh.hub.spawner_state("bob")).get("elastic") or {}
    assert not elastic.get("checkpoint") and not elastic.get("restored_from"), elastic
    status = (await new.api("GET", "api/elastic/status"))[1]
    assert status["restore"]["state"] == "idle", status
    assert await new.sessions() == []
    assert "predates this server" in kh.hub.log_tail(400)
    assert "bob/ is deleted; its checkpoints stay in the store" in kh.hub.log_tail(800)
