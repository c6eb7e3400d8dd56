"""A small synchronous client of the migrator service's REST API, for the `elastic-spawner` CLI.

Runs in the user's shell. The service URL and token come from the environment, so that nothing
secret is typed on a command line (where `ps` and shell history would keep it):
`ELASTIC_SERVICE_URL` (e.g. `https://hub.example.org/services/elastic/`) and `ELASTIC_TOKEN`,
else `JUPYTERHUB_API_TOKEN` (set inside single-user servers, so a terminal in JupyterLab works
as-is when `ELASTIC_SERVICE_URL` is set).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

ENV_URL = "ELASTIC_SERVICE_URL"
ENV_TOKENS = ("ELASTIC_TOKEN", "JUPYTERHUB_API_TOKEN")


class ServiceError(Exception):
    """The service refused or could not be reached; the message says what to do."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def split_target(target: str) -> tuple[str, str]:
    """`alice` -> (alice, ""); `alice/gpu` -> (alice, gpu)."""
    user, _, server = target.partition("/")
    if not user:
        raise ServiceError(f"{target!r}: give USER or USER/SERVER, e.g. alice or alice/gpu")
    return user, server


class ServiceClient:
    """Calls `<url>api/...` with `Authorization: token <token>`."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 60) -> None:
        url = url or os.environ.get(ENV_URL, "")
        if not url:
            raise ServiceError(
                f"no service URL: set {ENV_URL} to the service's address, e.g. "
                "https://hub.example.org/services/elastic/ (or pass --service-url)")
        token = token or next((os.environ[e] for e in ENV_TOKENS if os.environ.get(e)), "")
        if not token:
            raise ServiceError(
                "no token: set ELASTIC_TOKEN (or JUPYTERHUB_API_TOKEN) to a JupyterHub token "
                "with the custom:elastic:migrate scope (create one on the hub's Token page)")
        self.url = url.rstrip("/") + "/"
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<ServiceClient {self.url}>"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"token {self._token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                doc = json.loads(raw)
                message, reason = doc.get("message") or str(doc), doc.get("reason", "")
            except ValueError:
                message, reason = raw.decode("utf-8", "replace")[:300] or e.reason, ""
            if e.code == 404 and not reason:
                message = (f"{self.url}{path.split('?')[0]} not found: is {ENV_URL} the service's "
                           "URL (ending in /services/<name>/)?")
            raise ServiceError(message, status=e.code, reason=reason) from e
        except (urllib.error.URLError, OSError) as e:
            raise ServiceError(f"cannot reach the service at {self.url}: {getattr(e, 'reason', e)}"
                               f" (check {ENV_URL})") from e
        try:
            return json.loads(raw) if raw else None
        except ValueError as e:
            raise ServiceError(f"{self.url}{path}: the answer is not JSON; is {ENV_URL} the "
                               "service's URL?") from e

    @staticmethod
    def _server_path(user: str, server: str) -> str:
        u = quote(user, safe="")
        return f"api/users/{u}/servers/{quote(server, safe='')}" if server else f"api/users/{u}/server"

    def migrate(self, user: str, server: str, body: dict[str, Any], *, resize: bool = False) -> Any:
        action = "resize" if resize else "migrate"
        return self.call("POST", f"{self._server_path(user, server)}/{action}", body)["migration"]

    def migration(self, migration_id: str) -> dict[str, Any]:
        return self.call("GET", f"api/migrations/{quote(migration_id, safe='')}")["migration"]

    def checkpoints(self, user: str, server: str) -> dict[str, Any]:
        q = f"?{urlencode({'server': server})}" if server else ""
        return self.call("GET", f"api/users/{quote(user, safe='')}/checkpoints{q}")

    def delete_checkpoint(self, user: str, server: str, checkpoint_id: str, *,
                          force: bool = False) -> dict[str, Any]:
        params = {k: v for k, v in (("server", server), ("force", "1" if force else "")) if v}
        q = f"?{urlencode(params)}" if params else ""
        return self.call("DELETE", f"api/users/{quote(user, safe='')}/checkpoints/"
                                   f"{quote(checkpoint_id, safe='')}{q}")
