"""Bad requests get a 4xx JSON error whose message says what to fix, and change nothing.

Unknown user or server, a server that is not running, invalid sizes or selectors, malformed
JSON, unknown fields: each is refused before anything happens to the server (it keeps running,
no migration is recorded).
"""

from __future__ import annotations

import pytest

from tests.service.conftest import ElasticHub, token_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

CASES = [
    # (path, raw body, status, reason, words the message must contain)
    ("api/users/nobody/server/migrate", b"{}", 404, "unknown-user",
     ["no user 'nobody'", "check the name"]),
    ("api/users/alice/servers/nope/migrate", b"{}", 404, "unknown-server",
     ["alice has no server 'nope'"]),
    ("api/users/dora/server/migrate", b"{}", 409, "server-not-running",
     ["not running", "start it"]),
    ("api/users/alice/server/resize", b'{"cpu": -1}', 400, "invalid-size",
     ["cpu = -1", "more than 0"]),
    ("api/users/alice/server/resize", b'{"memory": "lots"}', 400, "invalid-size",
     ["memory = 'lots' is not a size", "\"4G\""]),
    ("api/users/alice/server/resize", b'{"memory": 512}', 400, "invalid-size",
     ["less than 1Mi", "unit"]),
    ("api/users/alice/server/resize", b'{"cpu": "two"}', 400, "invalid-size",
     ["cpu = 'two'", "millicores"]),
    ("api/users/alice/server/resize", b"{}", 400, "invalid-size",
     ["needs \"cpu\" and/or \"memory\""]),
    ("api/users/alice/server/migrate", b'{"node_selector": ["zone"]}', 400, "invalid-selector",
     ["KEY=VALUE"]),
    ("api/users/alice/server/migrate", b"{not json", 400, "malformed-json",
     ["not valid JSON", "send an object"]),
    ("api/users/alice/server/migrate", b"[1, 2]", 400, "malformed-json",
     ["must be a JSON object"]),
    ("api/users/alice/server/migrate", b'{"nodes": "b"}', 400, "unknown-field",
     ["unknown field(s) nodes", "known are node"]),
]


@pytest.mark.parametrize(("path", "raw", "status", "reason", "words"), CASES,
                         ids=[f"{c[3]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_request_is_4xx_with_a_message(shared_hub: ElasticHub, path: str, raw: bytes,
                                                 status: int, reason: str,
                                                 words: list[str]) -> None:
    ops = await token_for(shared_hub, "ops")
    code, body = await shared_hub.call("POST", path, raw=raw, token=ops)
    assert code == status, body
    assert body["reason"] == reason, body
    for w in words:
        assert w in body["message"], body
    assert "Traceback" not in body["message"]
    model = await shared_hub.hub.server_model("alice")
    assert model["ready"], "a refused request must leave the server running"
    code, body = await shared_hub.call("GET", "api/migrations?user=alice", token=ops)
    assert body["migrations"] == [], body


async def test_unknown_migration_and_checkpoint_are_404(shared_hub: ElasticHub) -> None:
    ops = await token_for(shared_hub, "ops")
    code, body = await shared_hub.call("GET", "api/migrations/nope", token=ops)
    assert code == 404 and "GET api/migrations" in body["message"], body
    code, body = await shared_hub.call("DELETE", "api/users/alice/checkpoints/nope", token=ops)
    assert code == 404 and "list them" in body["message"], body
    code, body = await shared_hub.call("GET", "api/users/nobody/checkpoints", token=ops)
    assert code == 404 and body["reason"] == "unknown-user", body
