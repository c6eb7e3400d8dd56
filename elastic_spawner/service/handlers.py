"""REST handlers of the migrator service, authenticated through JupyterHub.

Runs in the service process. Every handler mixes in `HubOAuthenticated`: a browser gets the
hub's OAuth login (cookie), a script sends `Authorization: token <token>`. Authorization is per
request and per server, with the service's custom scopes, so a role can be limited to some
users: `custom:elastic:migrate!user=alice` lets its holder migrate alice's servers only
(`!server=alice/name` one server; `!group=` filters are not resolved by the service, as in
JupyterHub's own `check_scopes`). `custom:elastic:migrate` includes `custom:elastic:read`.

Errors are JSON `{"message": "<what is wrong and what to do>", "reason": "<short word>"}`,
never a traceback (as Jupyter Server's `APIHandler.write_error`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import HubOAuthenticated, check_scopes
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import web

from elastic_spawner.service.checkpoints import delete_checkpoint, list_checkpoints
from elastic_spawner.service.migrator import PROGRESS
from elastic_spawner.service.model import MigrationRequest, RequestError

if TYPE_CHECKING:
    from elastic_spawner.service.app import ElasticService

log = logging.getLogger(__name__)

SCOPE_PREFIX = "custom:elastic"
READ_SCOPE = f"{SCOPE_PREFIX}:read"
MIGRATE_SCOPE = f"{SCOPE_PREFIX}:migrate"
CUSTOM_SCOPES = {
    READ_SCOPE: {
        "description": "Read users' server checkpoints and migration history "
                       "(elastic-spawner service).",
    },
    MIGRATE_SCOPE: {
        "description": "Migrate and resize users' servers and delete their checkpoints "
                       "(elastic-spawner service).",
        "subscopes": [READ_SCOPE],
    },
}


class APIError(web.HTTPError):
    """An error answer: `message` says what is wrong and what to do, `api_reason` is a short word.

    Kept apart from `log_message` so user-supplied text is never %-formatted.
    """

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(status)
        self.message = message
        self.api_reason = reason


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """JSON errors, the service app, and per-server scope checks."""

    # Any hub identity is let in; each method checks the scope it needs for the server it
    # touches (hub_scopes cannot express "read!user=<the user in the URL>").
    hub_scopes = None

    @property
    def service(self) -> ElasticService:
        return self.settings["elastic_service"]

    def get_login_url(self) -> str:
        # Browsers get the hub's OAuth login; API calls (JSON) get a 403 with a message instead.
        if "text/html" in self.request.headers.get("Accept", ""):
            return super().get_login_url()
        raise APIError(403, "", "not-authenticated")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, APIError):
            message, reason = exc.message, exc.api_reason
        elif isinstance(exc, web.HTTPError):
            message, reason = exc.log_message or self._reason, exc.reason or self._reason
        else:
            message, reason = str(exc or self._reason), self._reason
        if status_code == 403 and reason == "not-authenticated":
            message = ("no valid login or token: send 'Authorization: token <token>' with a "
                       "JupyterHub token (JUPYTERHUB_API_TOKEN), or open this URL in a browser to "
                       "log in")
        if status_code >= 500 and not isinstance(exc, web.HTTPError):
            message = f"internal error in the elastic service ({type(exc).__name__}); see its log"
            reason = "internal-error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": reason, "status": status_code}))

    def fail(self, status: int, message: str, reason: str) -> APIError:
        return APIError(status, message, reason)

    def identity(self) -> dict[str, Any]:
        model = self.current_user
        if not model:
            raise self.fail(403, "", "not-authenticated")
        return model

    def who(self) -> str:
        model = self.identity()
        kind = model.get("kind", "user")
        return f"{kind}:{model.get('name')}"

    def allowed(self, scope: str, user: str, server: str | None = None) -> bool:
        """True if the caller holds `scope` for this user (and server)."""
        model = self.identity()
        required = f"{scope}!server={user}/{server}" if server is not None else f"{scope}!user={user}"
        return bool(check_scopes({required}, set(model.get("scopes") or [])))

    def require(self, scope: str, user: str, server: str | None = None) -> None:
        if not self.allowed(scope, user, server):
            target = f"{user}/{server}" if server is not None else user
            raise self.fail(
                403, f"{self.who()} may not do this for {target}: it needs the scope {scope} "
                "(granted by a role in c.JupyterHub.load_roles; see docs/service.md)",
                "missing-scope")

    def json_body(self) -> Any:
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError as e:
            raise self.fail(400, f"the request body is not valid JSON ({e}): send an object, e.g. "
                            "{\"node\": \"node-b\"} or {\"cpu\": 2, \"memory\": \"4G\"}",
                            "malformed-json") from e

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def request_error(self, e: RequestError) -> web.HTTPError:
        return self.fail(e.status, str(e), e.reason)


def _split(server: str | None) -> str:
    """The server name from the route (tornado has already %-decoded it); "" is the default."""
    return server or ""


def migration_view(rec: Any) -> dict[str, Any]:
    d = rec.to_dict()
    d["progress"] = PROGRESS.get(rec.phase, 0)
    return d


class MigrateHandler(BaseHandler):
    """POST api/users/<user>/server[s/<name>]/(migrate|resize)."""

    async def post(self, user: str, server: str | None, action: str) -> None:
        server = _split(server)
        self.require(MIGRATE_SCOPE, user, server)
        body = self.json_body()
        try:
            req = MigrationRequest.from_body(user, server, body, resize=action == "resize",
                                             max_cpu=self.service.max_cpu,
                                             max_memory=self.service.max_memory_bytes)
            if action == "resize" and not req.reason:
                req.reason = "resize"
            rec = await self.service.migrator.submit(req, requested_by=self.who())
        except RequestError as e:
            raise self.request_error(e) from e
        self.set_header("Location", f"{self.service.service_prefix}api/migrations/{rec.id}")
        self.write_json({"migration": migration_view(rec)}, 202)


class MigrationListHandler(BaseHandler):
    """GET api/migrations[?user=<name>&active=1]: the records the caller may read, newest first."""

    async def get(self) -> None:
        self.identity()
        user = self.get_argument("user", None)
        active = self.get_argument("active", "") in ("1", "true", "yes")
        try:
            limit = max(1, int(self.get_argument("limit", "100") or 100))
        except ValueError as e:
            raise self.fail(400, "limit must be a whole number, e.g. ?limit=20",
                            "bad-argument") from e
        out = []
        for rec in reversed(self.service.records.all()):
            if user and rec.request.user != user:
                continue
            if active and rec.finished:
                continue
            if not self.allowed(READ_SCOPE, rec.request.user, rec.request.server):
                continue
            out.append(migration_view(rec))
            if len(out) >= limit:
                break
        if user and not out and not self.allowed(READ_SCOPE, user):
            self.require(READ_SCOPE, user)
        self.write_json({"migrations": out})


class MigrationHandler(BaseHandler):
    """GET api/migrations/<id>."""

    async def get(self, migration_id: str) -> None:
        rec = self.service.records.get(migration_id)
        if rec is None or not self.allowed(READ_SCOPE, rec.request.user, rec.request.server):
            # the same answer for "no such id" and "not yours": ids of others are not disclosed
            raise self.fail(404, f"no migration {migration_id!r} visible to {self.who()}: list "
                            "them with GET api/migrations", "unknown-migration")
        self.write_json({"migration": migration_view(rec)})


class CheckpointsHandler(BaseHandler):
    """GET api/users/<user>/checkpoints[?server=<name>]; DELETE .../checkpoints/<id>."""

    async def _server_store(self, user: str, server: str) -> tuple[str, dict[str, Any]]:
        try:
            model = await self.service.hub.user(user)
        except Exception as e:  # noqa: BLE001 - hub down after retries
            raise self.fail(503, f"the hub did not answer: {e}", "hub-unavailable") from e
        if model is None:
            raise self.fail(404, f"no user {user!r} on this hub: check the name",
                            "unknown-user")
        servers = model.get("servers") or {}
        if server not in servers:
            raise self.fail(404, f"{user} has no {'server ' + repr(server) if server else 'default server'}"
                            f" (servers: {', '.join(repr(s) for s in servers) or 'none'})",
                            "unknown-server")
        return self.service.store_url_for(user, server), servers[server]

    async def get(self, user: str, checkpoint_id: str | None = None) -> None:
        server = self.get_argument("server", "")
        self.require(READ_SCOPE, user, server)
        base, model = await self._server_store(user, server)
        loop = asyncio.get_running_loop()
        try:
            items = await loop.run_in_executor(None, list_checkpoints, base)
        except Exception as e:  # noqa: BLE001 - StoreError and friends: the message names the fix
            raise self.fail(502, f"cannot read the checkpoint store {base}: {e}",
                            "store-error") from e
        current = ((model.get("state") or {}).get("elastic") or {}).get("checkpoint")
        out = []
        for c in items:
            d = c.to_dict()
            d["restores_next"] = c.pointer == current
            out.append(d)
        if checkpoint_id:
            out = [d for d in out if d["id"] == checkpoint_id]
            if not out:
                raise self.fail(404, f"no checkpoint {checkpoint_id!r} for {user}/{server}",
                                "unknown-checkpoint")
            self.write_json({"checkpoint": out[0]})
            return
        self.write_json({"user": user, "server": server, "store": base, "checkpoints": out})

    async def delete(self, user: str, checkpoint_id: str | None = None) -> None:
        server = self.get_argument("server", "")
        self.require(MIGRATE_SCOPE, user, server)
        if not checkpoint_id:
            raise self.fail(400, "name the checkpoint to delete: DELETE "
                            "api/users/<user>/checkpoints/<id>", "no-checkpoint-id")
        base, model = await self._server_store(user, server)
        current = ((model.get("state") or {}).get("elastic") or {}).get("checkpoint") or ""
        force = self.get_argument("force", "") in ("1", "true", "yes")
        if current.endswith("#" + checkpoint_id) and not force:
            raise self.fail(409, f"checkpoint {checkpoint_id} is the one {user}/{server} restores "
                            "at its next start: deleting it loses that session. Add ?force=1 to "
                            "delete it anyway", "restores-next")
        loop = asyncio.get_running_loop()
        try:
            kernels = await loop.run_in_executor(None, delete_checkpoint, base, checkpoint_id)
        except KeyError as e:
            raise self.fail(404, f"no checkpoint {checkpoint_id!r} for {user}/{server}: list them "
                            "with GET api/users/<user>/checkpoints", "unknown-checkpoint") from e
        except Exception as e:  # noqa: BLE001
            raise self.fail(502, f"cannot delete from the checkpoint store {base}: {e}",
                            "store-error") from e
        log.info("Checkpoint %s of %s/%s deleted by %s (%d kernel checkpoint(s))", checkpoint_id,
                 user, server, self.who(), len(kernels))
        self.write_json({"deleted": checkpoint_id, "kernel_checkpoints": kernels})


class RetentionHandler(BaseHandler):
    """POST api/retention[?user=&server=]: run a retention pass now (all servers, or some)."""

    async def post(self) -> None:
        user = self.get_argument("user", None)
        server = self.get_argument("server", None)
        if user is None:
            model = self.identity()
            if not check_scopes({MIGRATE_SCOPE}, set(model.get("scopes") or [])):
                raise self.fail(403, f"{self.who()} needs the unfiltered scope {MIGRATE_SCOPE} to "
                                "prune every server (or name one: ?user=<name>)", "missing-scope")
        else:
            self.require(MIGRATE_SCOPE, user, server)
        if not self.service.keep_checkpoints:
            raise self.fail(409, "retention is off (ElasticService.keep_checkpoints = 0)",
                            "retention-off")
        results = await self.service.run_retention(user, server)
        self.write_json({"keep_checkpoints": self.service.keep_checkpoints, "results": [
            {"store": r.store_url, "deleted_checkpoints": r.deleted_servers,
             "deleted_kernel_checkpoints": len(r.deleted_kernels),
             "deleted_blobs": r.deleted_blobs, "error": r.error} for r in results]})


class DrainsHandler(BaseHandler):
    """GET api/drains: the drain watcher's reports (servers of draining nodes), newest first."""

    async def get(self) -> None:
        self.identity()
        out = [d for d in reversed(self.service.drain_reports)
               if self.allowed(READ_SCOPE, str(d.get("user")), str(d.get("server") or ""))]
        self.write_json({"drain_watcher": self.service.drain_watcher, "reports": out})


class MetricsHandler(BaseHandler):
    """GET metrics: Prometheus text format; needs custom:elastic:read unless configured open."""

    async def get(self) -> None:
        if self.service.authenticate_metrics:
            model = self.identity()
            if not check_scopes({READ_SCOPE}, set(model.get("scopes") or [])):
                raise self.fail(403, f"{self.who()} needs the scope {READ_SCOPE} to read "
                                "metrics (or set ElasticService.authenticate_metrics = False)",
                                "missing-scope")
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.service.metrics.registry))


class InfoHandler(BaseHandler):
    """GET api/ (and the service's root): who you are, what you may do, the API's shape."""

    @web.authenticated
    async def get(self) -> None:
        model = self.identity()
        scopes = sorted(s for s in model.get("scopes") or [] if s.startswith(SCOPE_PREFIX))
        self.write_json({
            "service": "elastic-spawner",
            "you": {"name": model.get("name"), "kind": model.get("kind", "user"),
                    "scopes": scopes},
            "endpoints": {
                "migrate": "POST api/users/<user>/server[s/<name>]/migrate "
                           "{node?, node_selector?, cpu?, memory?}",
                "resize": "POST api/users/<user>/server[s/<name>]/resize {cpu?, memory?}",
                "migrations": "GET api/migrations[?user=&active=1], GET api/migrations/<id>",
                "checkpoints": "GET api/users/<user>/checkpoints[?server=], "
                               "DELETE api/users/<user>/checkpoints/<id>[?server=&force=1]",
                "drains": "GET api/drains",
                "retention": "POST api/retention[?user=&server=]",
                "metrics": "GET metrics",
            },
        })


class HealthHandler(web.RequestHandler):
    """GET health: unauthenticated liveness (no data), for probes."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ok": True}))


def handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """URL routes under the service prefix (`/services/<name>/`)."""
    from jupyterhub.services.auth import HubOAuthCallbackHandler

    user = r"(?P<user>[^/]+)"
    server = r"(?:/server|/servers/(?P<server>[^/]+))"
    return [
        (prefix + r"oauth_callback", HubOAuthCallbackHandler),
        (prefix + r"health", HealthHandler),
        (prefix + r"metrics", MetricsHandler),
        (prefix + rf"api/users/{user}{server}/(?P<action>migrate|resize)", MigrateHandler),
        (prefix + rf"api/users/{user}/checkpoints(?:/(?P<checkpoint_id>[^/]+))?",
         CheckpointsHandler),
        (prefix + r"api/migrations/?", MigrationListHandler),
        (prefix + r"api/drains/?", DrainsHandler),
        (prefix + r"api/retention/?", RetentionHandler),
        (prefix + r"api/migrations/(?P<migration_id>[^/]+)", MigrationHandler),
        (prefix + r"(?:api/?)?", InfoHandler),
    ]
