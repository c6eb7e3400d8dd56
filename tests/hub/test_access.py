"""The checkpoint endpoint of a hub-spawned server obeys hub scopes, and says what is wrong.

Only tokens with `access:servers` on this server may checkpoint it: a checkpoint reads every
variable of every kernel, so another user's token, or the owner's token without that scope, gets
403. A malformed request gets a 4xx with a message.
"""

from __future__ import annotations

import pytest

from elastic_spawner.localhub import LocalHub, http_json
from tests.hub.conftest import user_server

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def test_checkpoint_needs_access_to_that_server(make_hub) -> None:
    hub: LocalHub = await make_hub()
    server = await user_server(hub, "alice")
    await hub.create_user("bob")
    url = server.base + "api/elastic/checkpoint"

    bob = await hub.user_token("bob")
    code, _ = await http_json("POST", url, {}, token=bob, check=False)
    assert code == 403
    narrow = await hub.user_token("alice", scopes=["read:users!user"])  # alice, but no access:servers
    code, _ = await http_json("POST", url, {}, token=narrow, check=False)
    assert code == 403
    code, _ = await http_json("GET", server.base + "api/elastic/status", token=bob, check=False)
    assert code == 403

    scoped = await hub.user_token("alice", scopes=["access:servers!server=alice/"])
    code, body = await http_json("POST", url, {}, token=scoped, check=False)
    assert code == 200 and body["complete"] is True, body


async def test_malformed_checkpoint_request_is_a_4xx_with_a_message(make_hub) -> None:
    hub: LocalHub = await make_hub()
    server = await user_server(hub, "alice")
    url = server.base + "api/elastic/checkpoint"
    code, body = await http_json("POST", url, {"busy_timeout": "soon"}, token=server.token, check=False)
    assert code == 400 and "busy_timeout" in body["message"], body
    code, body = await http_json("POST", url, {"store": "ftp://x"}, token=server.token, check=False)
    assert 400 <= code < 500 and "ftp://x" in body["message"], body
    code, body = await http_json("POST", server.base + "api/elastic/restore", {}, token=server.token,
                                 check=False)
    assert code == 400 and "checkpoint" in body["message"], body


async def test_unknown_node_in_user_options_is_a_400_naming_the_nodes(make_hub) -> None:
    hub: LocalHub = await make_hub()
    await hub.create_user("alice")
    code, body = await hub.api("POST", "users/alice/server", {"user_options": {"node": "node-z"}},
                               check=False)
    assert code == 400 and "node-z" in body["message"] and "node-a" in body["message"], body
    assert not (await hub.server_model("alice") or {}).get("ready")
