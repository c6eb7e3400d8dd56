"""Malformed or impossible requests get a 4xx JSON error whose message says what to fix."""

from __future__ import annotations

import pytest

from tests.server.conftest import Server


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"store": "file:///tmp/x", "kernel": ["k"]}', "unknown field(s) 'kernel'; allowed: store, kernels"),
        (b'{"busy_timeout": -1}', '"busy_timeout" must be a number of seconds >= 0'),
        (b'{"deadline": "soon"}', '"deadline" must be a number of seconds > 0'),
        (b'{"kernels": "abc"}', '"kernels" must be a list of kernel id strings'),
        (b'{"store": "ftp://host/x"}', "unsupported store URL 'ftp://host/x': use file:///absolute/dir or s3://bucket/prefix"),
        (b'{"kernels": ["no-such-kernel"]}', "unknown kernel id(s) no-such-kernel"),
        # the store ignores a query string: the checkpoint went to ELASTIC_S3_ENDPOINT (or AWS)
        (b'{"store": "s3://bucket/p?endpoint=http://127.0.0.1:9000"}',
         "has a query string, which the store does not read: drop '?endpoint=http://127.0.0.1:9000'"),
    ],
)
def test_malformed_checkpoint_request_is_400_with_a_message(api_server: Server, body: bytes, expected: str) -> None:
    r = api_server.post("api/elastic/checkpoint", data=body)
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]
    assert "traceback" not in r.json()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", '"checkpoint" is required'),
        (b'{"checkpoint": "file:///tmp/store"}', "expected '<store-url>#<checkpoint-id>'"),
        (b'{"checkpoint": "x", "force": true}', "unknown field(s) 'force'"),
    ],
)
def test_malformed_restore_request_is_400_with_a_message(api_server: Server, body: bytes, expected: str) -> None:
    r = api_server.post("api/elastic/restore", data=body)
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]


def test_checkpoint_without_any_store_says_how_to_configure_one(start_server) -> None:
    server = start_server()
    r = server.post("api/elastic/checkpoint", json={})
    assert r.status_code == 400
    assert "c.KernelAgentApp.store_url" in r.json()["message"]
    assert "ELASTIC_STORE_URL" in r.json()["message"]


def test_restore_of_a_missing_checkpoint_fails_in_status_and_server_stays_up(server: Server, store_url: str) -> None:
    pointer = f"{store_url}#20250101T000000000000Z-abcdef"
    r = server.post("api/elastic/restore", json={"checkpoint": pointer})
    assert r.status_code == 202, r.text
    st = server.wait_restore(timeout=30)["restore"]
    assert st["state"] == "failed"
    assert "no readable server checkpoint 20250101T000000000000Z-abcdef" in st["error"]
    assert server.get("api/status").status_code == 200


def test_bad_startup_pointer_is_reported_in_status_and_server_serves(start_server) -> None:
    server = start_server(env={"ELASTIC_RESTORE_FROM": "s3://bucket/alice"})
    st = server.wait_restore(timeout=30)["restore"]
    assert st["state"] == "failed"
    assert "expected '<store-url>#<checkpoint-id>'" in st["error"]
    assert "ELASTIC_RESTORE_FROM" in st["error"]
    assert server.get("api/sessions").status_code == 200
