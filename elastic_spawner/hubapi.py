"""A small client of the JupyterHub REST API: stop, start and wait for one server.

Runs in the migrator service (the drain watcher, resize) and the CLI, never in the hub. The token
needs `admin:servers` (stop/start any server, read its model) and, for the in-pod checkpoint
calls the same callers make, `access:servers`.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from elastic_spawner.serverapi import error_message


class HubAPIError(Exception):
    """A hub API call failed; `status` is the HTTP status (0: the hub could not be reached)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retriable(self) -> bool:
        """Worth retrying: unreachable, timeouts, 5xx, 429. A 4xx is a caller's mistake."""
        return self.status in (0, 429, 599) or self.status >= 500


def server_path(user: str, server: str = "") -> str:
    """`users/<u>/server` for the default server, `users/<u>/servers/<name>` for a named one."""
    base = f"users/{quote(user, safe='')}"
    return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"


class HubClient:
    """Calls `<hub_api_url>/...` with one token. `hub_api_url` ends in `/hub/api`."""

    def __init__(self, hub_api_url: str, token: str, *, request_timeout: float = 30) -> None:
        self.api_url = hub_api_url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.api_url}/{path}"
        req = HTTPRequest(
            url, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else (b"" if method == "POST" else None),
            request_timeout=self.request_timeout, connect_timeout=min(self.request_timeout, 10),
            allow_nonstandard_methods=True,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            text = error_message(e)
            raise HubAPIError(f"{method} {url}: {e.code} {text[:300]}".rstrip(), status=e.code) from e
        except OSError as e:
            raise HubAPIError(f"{method} {url}: hub unreachable ({e})") from e
        return resp.code, json.loads(resp.body) if resp.body else None

    async def server_model(self, user: str, server: str = "") -> dict[str, Any] | None:
        """The server's model (`ready`, `pending`, `user_options`, ...), None if it is not running."""
        _, data = await self.call("GET", f"users/{quote(user, safe='')}")
        return ((data or {}).get("servers") or {}).get(server)

    async def stop_server(self, user: str, server: str = "", *, timeout: float = 300) -> None:
        """DELETE the server and wait until the hub has forgotten it (the spawner checkpoints)."""
        try:
            await self.call("DELETE", server_path(user, server))
        except HubAPIError as e:
            if e.status != 400 or "not running" not in str(e):
                raise
        await self._wait(user, server, lambda m: m is None, "to stop", timeout)

    async def start_server(self, user: str, server: str = "", *,
                           user_options: dict[str, Any] | None = None,
                           timeout: float = 300) -> dict[str, Any]:
        """POST the server (no options: the hub reuses the last ones) and wait until ready."""
        body = {"user_options": user_options} if user_options is not None else None
        await self.call("POST", server_path(user, server), body)
        model = await self._wait(user, server, lambda m: bool(m and m.get("ready")), "to be ready",
                                 timeout, fail_if_gone=True)
        assert model is not None
        return model

    async def _wait(self, user: str, server: str, done: Any, what: str, timeout: float,
                    fail_if_gone: bool = False) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        name = f"{user}/{server}"
        while True:
            model = await self.server_model(user, server)
            if done(model):
                return model
            if fail_if_gone and model is None:
                raise HubAPIError(f"server {name} failed to start (the hub forgot it; see the hub log)")
            if time.monotonic() > deadline:
                raise HubAPIError(f"server {name} did not get {what} within {timeout:.0f}s "
                                  f"(last: {model})", status=599)
            await asyncio.sleep(0.25)  # bounded poll of the hub API
