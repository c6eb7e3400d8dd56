"""The service's calls to the JupyterHub REST API and, through the proxy, to single-user servers.

Runs in the service process. The hub may be down for a while (upgrade, restart, crash loop):
every call retries connection failures and 502/503/504 answers with exponential backoff, up to
`retry_timeout` seconds, so a migration waits for the hub instead of failing halfway. Answers
that mean something (404 unknown user, 400 already running) are returned at once. The token goes
in the Authorization header only, never in a URL and never in a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger(__name__)

RETRY_STATUSES = (502, 503, 504)


class HubUnavailable(RuntimeError):
    """The hub (or the proxy in front of a server) did not answer within the retry budget."""


@dataclass
class Answer:
    """An HTTP answer: status and decoded JSON body (or text, or None)."""

    code: int
    data: Any

    @property
    def message(self) -> str:
        """The error message in a JupyterHub/Jupyter Server JSON error body, else the text."""
        if isinstance(self.data, dict):
            return str(self.data.get("message") or self.data)[:500]
        return str(self.data or "")[:500]


def server_path(user: str, server: str) -> str:
    """`users/<user>/server` or `users/<user>/servers/<name>` (hub API path, escaped)."""
    if server:
        return f"users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
    return f"users/{quote(user, safe='')}/server"


class HubClient:
    """One token, one hub; `proxy_url` reaches single-user servers by their hub URL path."""

    def __init__(self, api_url: str, token: str, *, proxy_url: str = "",
                 retry_timeout: float = 300, request_timeout: float = 60) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self.proxy_url = proxy_url.rstrip("/")
        self._token = token
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout

    def __repr__(self) -> str:  # never show the token
        return f"<HubClient {self.api_url}>"

    async def call(self, method: str, url: str, body: Any = None, *, timeout: float | None = None,
                   retry: bool = True) -> Answer:
        """One JSON call with the service token; retries while the other side is unreachable."""
        headers = {"Authorization": f"token {self._token}", "Accept": "application/json"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = b""
        deadline = time.monotonic() + (self.retry_timeout if retry else 0)
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            req = HTTPRequest(url, method=method, headers=headers, body=payload,
                              request_timeout=timeout or self.request_timeout,
                              connect_timeout=10, allow_nonstandard_methods=True)
            problem: str
            try:
                resp = await AsyncHTTPClient().fetch(req, raise_error=False)
            except OSError as e:  # refused, reset, DNS: the other side is down
                problem = f"unreachable ({e.__class__.__name__}: {e})"
            except HTTPClientError as e:  # 599: timeouts (tornado raises them in any case)
                text = str(e)
                never_sent = "request queue" in text or "connecting" in text
                if not (never_sent or method in ("GET", "DELETE")):
                    # a POST that timed out may have been carried out: do not repeat it blindly
                    raise HubUnavailable(f"{method} {_redact(url)}: {text}") from e
                problem = f"no answer ({text})"
            else:
                if resp.code == 599:
                    problem = f"no answer ({resp.error})"
                elif resp.code in RETRY_STATUSES:
                    problem = f"HTTP {resp.code}"
                else:
                    return Answer(resp.code, _decode(resp.body))
            if time.monotonic() + delay > deadline:
                raise HubUnavailable(f"{method} {_redact(url)}: {problem}; gave up after "
                                     f"{attempt} attempt(s)")
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s %s: %s; retrying (the hub may be restarting)", method,
                            _redact(url), problem)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))  # backoff with jitter
            delay = min(delay * 2, 10.0)

    # ---- hub API -------------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        return await self.call(method, self.api_url + path, body, **kw)

    async def user(self, name: str) -> dict[str, Any] | None:
        """The user model with all servers (stopped ones too), or None if there is no such user."""
        ans = await self.api("GET", f"users/{quote(name, safe='')}?include_stopped_servers=1")
        if ans.code == 404:
            return None
        _check(ans, f"reading user {name}")
        return ans.data

    async def server(self, user: str, server: str) -> dict[str, Any] | None:
        """The server model (None: the user has no such server), from the user model."""
        model = await self.user(user)
        if model is None:
            return None
        return (model.get("servers") or {}).get(server)

    async def users(self, page_size: int = 200) -> list[dict[str, Any]]:
        """Every user with their servers (paginated, JupyterHub >= 2)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            q = urlencode({"include_stopped_servers": 1, "offset": offset, "limit": page_size})
            ans = await self.call("GET", f"{self.api_url}users?{q}")
            _check(ans, "listing users")
            data = ans.data
            items = data.get("items", []) if isinstance(data, dict) else list(data or [])
            out.extend(items)
            nxt = (data.get("_pagination") or {}).get("next") if isinstance(data, dict) else None
            if not nxt or not items:
                return out
            offset = int(nxt.get("offset", offset + len(items)))

    async def stop(self, user: str, server: str) -> Answer:
        return await self.api("DELETE", server_path(user, server), timeout=self.request_timeout)

    async def start(self, user: str, server: str, user_options: dict[str, Any]) -> Answer:
        return await self.api("POST", server_path(user, server), {"user_options": user_options})

    # ---- single-user servers, through the proxy --------------------------------------------

    async def server_call(self, server_url: str, method: str, path: str, body: Any = None,
                          **kw: Any) -> Answer:
        """Call `<proxy><server url><path>`; `server_url` is the model's "url" (`/user/a/`)."""
        if not self.proxy_url:
            raise HubUnavailable("no proxy URL: set ElasticService.proxy_url (the hub's public "
                                 "URL, e.g. http://proxy-public) to reach single-user servers")
        return await self.call(method, self.proxy_url + server_url.rstrip("/") + "/" + path,
                               body, **kw)


def _check(ans: Answer, what: str) -> None:
    if ans.code >= 400:
        raise RuntimeError(f"{what}: hub answered {ans.code} {ans.message}")


def _decode(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _redact(url: str) -> str:
    """A URL for logs: any query string dropped (it could carry a token)."""
    return url.split("?", 1)[0]
