"""Retention through the running service: old checkpoints go, the session stays restorable.

Real hub and server: three migrations leave three checkpoints; a retention pass (keep 1, no
grace period) deletes the two older ones and their garbage; the next migration, which reuses the
kept checkpoint's blobs (incremental), still restores every value.
"""

from __future__ import annotations

import pytest

from tests.service.conftest import ElasticHub, token_for
from tests.service.test_migrate import expected, run_tiny_notebook, session_values

pytestmark = [pytest.mark.hub, pytest.mark.slow]


@pytest.mark.timeout(900)
async def test_retention_keeps_what_the_next_migration_needs(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub(args=["--keep-checkpoints=1",
                                                  "--gc-grace-period=0"])
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    ops = await token_for(eh, "ops")

    async def migrate() -> dict:
        code, body = await eh.call("POST", "api/users/alice/server/migrate", {}, token=ops)
        assert code == 202, body
        rec = await eh.wait_migration(body["migration"]["id"], ops)
        assert rec["outcome"] == "verified", rec
        return rec

    for _ in range(3):
        last = await migrate()
    code, listing = await eh.call("GET", "api/users/alice/checkpoints", token=ops)
    assert code == 200 and len(listing["checkpoints"]) == 3, listing

    carol = await token_for(eh, "carol")  # alice's helper: may prune alice's servers, not all
    code, body = await eh.call("POST", "api/retention", token=carol)
    assert code == 403, body
    code, body = await eh.call("POST", "api/retention?user=alice", token=carol)
    assert code == 200, body
    [res] = body["results"]
    assert res["error"] is None and len(res["deleted_checkpoints"]) == 2, res
    assert res["deleted_kernel_checkpoints"] == 2 and res["deleted_blobs"] >= 0, res

    code, listing = await eh.call("GET", "api/users/alice/checkpoints", token=ops)
    [kept] = listing["checkpoints"]
    assert kept["pointer"] == last["checkpoint"] and kept["restores_next"], listing

    await migrate()
    assert await session_values(eh, "alice", "", server.token) == expected("alice")
