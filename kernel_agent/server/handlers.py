"""REST handlers of the server extension: ``api/elastic/{checkpoint,restore,status}``.

Runs in the single-user Jupyter server process. Authentication and authorization are the
server's own (`@web.authenticated` then `@authorized` on resource ``AUTH_RESOURCE``): in a
JupyterHub-spawned server, `JupyterHubAuthorizer` admits tokens with ``access:servers`` for this
server and answers 403 to others, so no token code lives here. Errors are JSON
(``{"message", "reason"}``, no traceback) with a message that says what to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from kernel_agent.server.coordinator import BadRequest, Conflict, Coordinator, StoreWriteError

AUTH_RESOURCE = "elastic"

CHECKPOINT_FIELDS = ("store", "kernels", "busy_timeout", "deadline")
RESTORE_FIELDS = ("checkpoint",)


@dataclass
class CheckpointRequest:
    """Body of ``POST api/elastic/checkpoint``; every field optional."""

    store: str | None = None
    kernels: list[str] | None = None
    busy_timeout: float | None = None
    deadline: float | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CheckpointRequest:
        _no_unknown_fields(body, CHECKPOINT_FIELDS)
        store = body.get("store")
        if store is not None and (not isinstance(store, str) or not store):
            raise BadRequest('"store" must be a store URL string, e.g. "s3://bucket/prefix"')
        kernels = body.get("kernels")
        if kernels is not None and (
            not isinstance(kernels, list) or not all(isinstance(k, str) for k in kernels)
        ):
            raise BadRequest('"kernels" must be a list of kernel id strings (see GET api/kernels)')
        return cls(
            store=store,
            kernels=kernels,
            busy_timeout=_seconds(body, "busy_timeout"),
            deadline=_seconds(body, "deadline", positive=True),
        )


@dataclass
class RestoreRequest:
    """Body of ``POST api/elastic/restore``."""

    checkpoint: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RestoreRequest:
        _no_unknown_fields(body, RESTORE_FIELDS)
        pointer = body.get("checkpoint")
        if not isinstance(pointer, str) or not pointer:
            raise BadRequest(
                '"checkpoint" is required: the pointer string returned by POST '
                "api/elastic/checkpoint ('<store-url>#<checkpoint-id>')"
            )
        return cls(checkpoint=pointer)


def _no_unknown_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )


def _seconds(body: dict[str, Any], name: str, positive: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise BadRequest(f'"{name}" must be a number of seconds {bound}, got {value!r}')
    return float(value)


class ElasticHandler(APIHandler):
    """Shared plumbing: the coordinator, JSON body parsing, errors as JSON messages."""

    auth_resource = AUTH_RESOURCE

    @property
    def coordinator(self) -> Coordinator:
        return self.settings["kernel_agent_coordinator"]

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; empty body means {} (all defaults)."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"the request body is not valid JSON ({e}); send a JSON object") from e
        if not isinstance(body, dict):
            raise BadRequest(f"the request body must be a JSON object, not {type(body).__name__}")
        return body

    def fail(self, e: Exception) -> None:
        """Turn our exceptions into JSON HTTP errors with their message."""
        if isinstance(e, BadRequest):
            raise web.HTTPError(400, str(e), reason="Bad Request")
        if isinstance(e, Conflict):
            raise web.HTTPError(409, str(e), reason="Conflict")
        if isinstance(e, StoreWriteError):
            raise web.HTTPError(502, str(e), reason="Store Error")
        self.log.exception("kernel_agent: unexpected error in %s", self.request.path)
        raise web.HTTPError(
            500, f"unexpected error: {type(e).__name__}: {e} (see the server log)", reason="Error"
        )


class CheckpointHandler(ElasticHandler):
    """Checkpoint the kernels of this server; blocks until the server manifest is committed."""

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        try:
            req = CheckpointRequest.from_json(self.json_body())
            result = await self.coordinator.checkpoint(
                store=req.store,
                kernel_ids=req.kernels,
                busy_timeout=req.busy_timeout,
                deadline=req.deadline,
            )
        except web.HTTPError:
            raise
        except Exception as e:  # noqa: BLE001 - mapped to a JSON error
            self.fail(e)
        self.finish(json.dumps(result))


class RestoreHandler(ElasticHandler):
    """Start restoring a server checkpoint in the background; 202, follow it with status."""

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        try:
            req = RestoreRequest.from_json(self.json_body())
            job = self.coordinator.start_restore(req.checkpoint)
        except web.HTTPError:
            raise
        except Exception as e:  # noqa: BLE001
            self.fail(e)
        self.set_status(202)
        self.finish(json.dumps({"restore": job.to_dict()}))


class StatusHandler(ElasticHandler):
    """Restore progress, last checkpoint pointer, configured store."""

    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        self.finish(json.dumps(self.coordinator.status()))


default_handlers = [
    (r"/api/elastic/checkpoint", CheckpointHandler),
    (r"/api/elastic/restore", RestoreHandler),
    (r"/api/elastic/status", StatusHandler),
]
