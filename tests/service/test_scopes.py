"""The service's API obeys the custom scopes: 403 without them, 200 with them, per user.

`custom:elastic:read` reads checkpoints and migrations; `custom:elastic:migrate` (which includes
read) migrates, resizes and deletes. A role can limit them to some users
(`custom:elastic:migrate!user=alice`). All of it through hub tokens, as a script would call it.
"""

from __future__ import annotations

import pytest

from tests.service.conftest import ElasticHub, token_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def test_no_token_is_403_with_a_message(shared_hub: ElasticHub) -> None:
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints")
    assert code == 403, body
    assert "Authorization: token" in body["message"], body


async def test_user_without_the_scope_gets_403_naming_it(shared_hub: ElasticHub) -> None:
    bob = await token_for(shared_hub, "bob")
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=bob)
    assert code == 403 and "custom:elastic:read" in body["message"], body
    code, body = await shared_hub.call("POST", "api/users/alice/server/migrate", {}, token=bob)
    assert code == 403 and "custom:elastic:migrate" in body["message"], body
    code, body = await shared_hub.call("GET", "metrics", token=bob)
    assert code == 403, body


async def test_read_scope_reads_but_does_not_migrate(shared_hub: ElasticHub) -> None:
    reader = await token_for(shared_hub, "reader")
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=reader)
    assert code == 200 and body["checkpoints"] == [], body
    code, body = await shared_hub.call("GET", "api/migrations", token=reader)
    assert code == 200, body
    code, body = await shared_hub.call("POST", "api/users/alice/server/resize", {"cpu": 2},
                                       token=reader)
    assert code == 403 and "custom:elastic:migrate" in body["message"], body


async def test_migrate_scope_reaches_the_request_checks(shared_hub: ElasticHub) -> None:
    ops = await token_for(shared_hub, "ops")
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=ops)
    assert code == 200, body  # migrate includes read
    # allowed: the answer is about the request (not running), not about permission
    code, body = await shared_hub.call("POST", "api/users/dora/server/migrate", {}, token=ops)
    assert code == 409 and body["reason"] == "server-not-running", body


async def test_scope_filtered_to_one_user(shared_hub: ElasticHub) -> None:
    carol = await token_for(shared_hub, "carol")
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=carol)
    assert code == 200, body
    code, body = await shared_hub.call("GET", "api/users/dora/checkpoints", token=carol)
    assert code == 403 and "dora" in body["message"], body


async def test_token_without_the_scope_is_403_even_for_a_user_who_has_it(
        shared_hub: ElasticHub) -> None:
    narrow = await token_for(shared_hub, "ops", scopes=["read:users!user"])
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=narrow)
    assert code == 403, body
    scoped = await token_for(shared_hub, "ops", scopes=["custom:elastic:read"])
    code, body = await shared_hub.call("GET", "api/users/alice/checkpoints", token=scoped)
    assert code == 200, body
