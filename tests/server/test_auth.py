"""The elastic endpoints are authenticated like the rest of the server: no or wrong token -> 403."""

from __future__ import annotations

import pytest

from tests.server.conftest import Server

ENDPOINTS = [("POST", "api/elastic/checkpoint"), ("POST", "api/elastic/restore"), ("GET", "api/elastic/status")]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_request_without_a_valid_token_is_forbidden(api_server: Server, method: str, path: str, token) -> None:
    r = api_server.request(method, path, token=token, json={})
    assert r.status_code == 403, r.text
    assert "traceback" not in r.text


def test_status_with_the_token_reports_idle_and_the_configured_store(server: Server, store_url: str) -> None:
    assert server.status() == {
        "restore": {"state": "idle", "checkpoint": None, "progress": [], "kernels": [], "error": None},
        "last_checkpoint": None,
        "last_checkpoint_complete": None,
        "checkpoints_in_progress": 0,
        "store": store_url,
    }
