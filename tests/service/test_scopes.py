"""The service's API obeys the custom scopes: 403 without them, 200 with them, per user.

`custom:elastic:read` reads checkpoints and migrations; `custom:elastic:migrate` (which includes
read) migrates, resizes and deletes. A role can limit them to some users
(`custom:elastic:migrate!user=alice`). All of it through hub tokens, as a script would call it.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

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


async def test_a_browser_is_sent_to_the_hub_oauth_login(shared_hub: ElasticHub) -> None:
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(shared_hub.service_url, follow_redirects=False,
                                         raise_error=False, headers={"Accept": "text/html"})
    assert resp.code == 302, resp.body
    location = resp.headers["Location"]
    assert "/hub/api/oauth2/authorize" in location and "client_id=service-elastic" in location


def _browser_login_and_call(hub_url: str, service_url: str, user: str) -> list[tuple[int, Any]]:
    """A browser: hub login form, the service's OAuth redirect, the hub's authorize page."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.open(hub_url + "/hub/login").read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    form = {"username": user, "password": "any", "_xsrf": xsrf}
    browser.open(hub_url + "/hub/login?next=/hub/home", urlencode(form).encode()).read()
    page = browser.open(urllib.request.Request(service_url, headers={"Accept": "text/html"}))
    html = page.read().decode()
    assert "/hub/api/oauth2/authorize" in page.geturl()  # the hub asks the user to authorize
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html)
    done = browser.open(page.geturl(), urlencode(fields).encode())  # "Authorize"
    assert done.geturl().rstrip("/") == service_url.rstrip("/"), done.geturl()
    out = [(done.status, json.loads(done.read()))]
    for path in ("api/users/alice/checkpoints", "api/users/dora/checkpoints"):
        try:
            with browser.open(service_url + path) as r:  # the cookie from the OAuth callback
                out.append((r.status, json.loads(r.read())))
        except urllib.error.HTTPError as e:
            out.append((e.code, json.loads(e.read())))
    return out


async def test_a_browser_logs_in_with_oauth_and_its_scopes_apply(shared_hub: ElasticHub) -> None:
    whoami, alice, dora = await asyncio.to_thread(
        _browser_login_and_call, shared_hub.hub.url, shared_hub.service_url, "carol")
    assert whoami[0] == 200 and whoami[1]["you"]["name"] == "carol", whoami
    assert "custom:elastic:migrate!user=alice" in whoami[1]["you"]["scopes"], whoami
    assert alice[0] == 200 and alice[1]["user"] == "alice", alice
    assert dora[0] == 403 and dora[1]["reason"] == "missing-scope", dora
