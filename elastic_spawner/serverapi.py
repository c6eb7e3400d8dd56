"""Client for the single-user server's `api/elastic/*` endpoints (`kernel_agent.server`).

Runs in the hub process (called by `ElasticSpawnerMixin`) and in the `elastic-spawner` CLI.
Plain data at the boundary: the REST bodies are dataclasses with explicit to/from-dict, so the
hub never passes raw JSON around and a malformed answer fails here, with the server's URL in the
message, rather than deep inside a spawner.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from kernel_agent.server.manifest import lost_variables


def error_message(e: HTTPClientError) -> str:
    """The JSON `message` of a Jupyter/JupyterHub error response, else its body as text."""
    if e.response is None or not e.response.body:
        return ""
    text = e.response.body.decode("utf-8", "replace")
    try:
        return json.loads(text).get("message") or text
    except (ValueError, AttributeError):
        return text


class ElasticAPIError(Exception):
    """A call to a server's elastic API failed: unreachable, refused, or an unexpected answer.

    `status` is the HTTP status (0 when the server could not be reached at all), `reason` a
    short machine-readable word for logs and tests.
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class KernelReport:
    """One kernel's outcome in a checkpoint or restore, as the server extension reports it."""

    kernel_id: str
    path: str = ""
    kernel_name: str = ""
    status: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def lost(self) -> dict[str, str]:
        """Variables its checkpoint cannot restore (name -> reason), read from its summary."""
        return lost_variables(self.summary) if self.status == "ok" else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelReport:
        return cls(
            kernel_id=str(d.get("kernel_id", "")),
            path=str(d.get("path") or ""),
            kernel_name=str(d.get("kernel_name") or ""),
            status=str(d.get("status") or ""),
            summary=dict(d.get("summary") or {}),
            error=str(d.get("error") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckpointResult:
    """Answer of `POST api/elastic/checkpoint`: a pointer to the server-level manifest."""

    checkpoint: str
    complete: bool  # every variable of every kernel restorable (saved, nothing lost)
    kernels: list[KernelReport] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointResult:
        if not isinstance(d, dict) or not isinstance(d.get("checkpoint"), str):
            raise ValueError(f"checkpoint answer without a 'checkpoint' pointer: {str(d)[:200]}")
        kernels = [KernelReport.from_dict(k) for k in d.get("kernels") or []]
        return cls(
            checkpoint=d["checkpoint"],
            # a server from before `complete` covered lost variables still names them in each
            # kernel's summary: never take its word that a checkpoint losing one is complete
            complete=bool(d.get("complete")) and not any(k.lost for k in kernels),
            kernels=kernels,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "complete": self.complete,
            "kernels": [k.to_dict() for k in self.kernels],
        }

    @property
    def not_saved(self) -> list[KernelReport]:
        """Kernels whose state is not in this checkpoint (busy past the timeout, or failed)."""
        return [k for k in self.kernels if k.status != "ok"]

    @property
    def lost(self) -> list[KernelReport]:
        """Kernels checkpointed without some variables (`KernelReport.lost` names them)."""
        return [k for k in self.kernels if k.lost]

    def shortfall(self) -> str:
        """Why it is not complete, for logs and events: kernels not saved, then variables lost."""
        parts = [f"{k.path or k.kernel_id} ({k.status}: {k.error or '-'})" for k in self.not_saved]
        parts += [f"{k.path or k.kernel_id} lost " + ", ".join(f"{n} ({why})" for n, why in k.lost.items())
                  for k in self.lost]
        return "; ".join(parts)


@dataclass
class RestoreStatus:
    """The `restore` part of `GET api/elastic/status`."""

    state: str = "idle"  # idle | running | done | failed
    progress: list[dict[str, Any]] = field(default_factory=list)
    kernels: list[KernelReport] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestoreStatus:
        d = d or {}
        return cls(
            state=str(d.get("state") or "idle"),
            progress=[p for p in d.get("progress") or [] if isinstance(p, dict)],
            kernels=[KernelReport.from_dict(k) for k in d.get("kernels") or []],
        )

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


@dataclass
class ServerStatus:
    """Answer of `GET api/elastic/status`."""

    restore: RestoreStatus
    last_checkpoint: str | None = None
    # whether that checkpoint restores every variable of every kernel; None: a server too old to say
    last_checkpoint_complete: bool | None = None
    store: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServerStatus:
        if not isinstance(d, dict):
            raise ValueError(f"status answer is not an object: {str(d)[:200]}")
        return cls(
            restore=RestoreStatus.from_dict(d.get("restore") or {}),
            last_checkpoint=d.get("last_checkpoint") or None,
            last_checkpoint_complete=(None if d.get("last_checkpoint_complete") is None
                                      else bool(d["last_checkpoint_complete"])),
            store=d.get("store") or None,
        )


class ElasticServerClient:
    """Talks to one single-user server's elastic API with one token.

    `server_url` is the server's own URL including its base path, e.g.
    `http://127.0.0.1:41234/user/alice/` (the hub reaches servers directly, not via the proxy,
    which has already dropped the route when `Spawner.stop` runs).
    """

    def __init__(self, server_url: str, token: str, *, connect_timeout: float = 5) -> None:
        self.base = server_url if server_url.endswith("/") else server_url + "/"
        self.token = token
        self.connect_timeout = connect_timeout

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 30
    ) -> tuple[int, Any]:
        url = self.base + path
        req = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            connect_timeout=self.connect_timeout,
            request_timeout=timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req)
        except HTTPClientError as e:
            text = error_message(e)
            reason = "timeout" if e.code == 599 else "http"
            raise ElasticAPIError(
                f"{method} {url} failed: {e.code} {text[:300]}".rstrip(), status=e.code, reason=reason
            ) from e
        except OSError as e:
            raise ElasticAPIError(f"{method} {url}: server unreachable ({e})", reason="unreachable") from e
        try:
            data = json.loads(resp.body) if resp.body else None
        except ValueError as e:
            raise ElasticAPIError(f"{method} {url}: answer is not JSON", status=resp.code) from e
        return resp.code, data

    async def status(self, *, timeout: float = 10) -> ServerStatus:
        _, data = await self._call("GET", "api/elastic/status", timeout=timeout)
        return ServerStatus.from_dict(data)

    async def checkpoint(
        self,
        *,
        store: str | None = None,
        kernels: list[str] | None = None,
        busy_timeout: float = 10,
        deadline: float = 120,
    ) -> CheckpointResult:
        """Checkpoint the server's kernels; waits for the answer (busy wait + deadline + margin)."""
        body: dict[str, Any] = {"busy_timeout": busy_timeout, "deadline": deadline}
        if store:
            body["store"] = store
        if kernels is not None:
            body["kernels"] = kernels
        _, data = await self._call(
            "POST", "api/elastic/checkpoint", body, timeout=busy_timeout + deadline + 30
        )
        try:
            return CheckpointResult.from_dict(data)
        except ValueError as e:
            raise ElasticAPIError(f"{self.base}api/elastic/checkpoint: {e}", reason="malformed") from e

    async def restore(self, checkpoint: str, *, timeout: float = 30) -> None:
        await self._call("POST", "api/elastic/restore", {"checkpoint": checkpoint}, timeout=timeout)
