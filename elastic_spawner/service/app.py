"""`ElasticService`: the JupyterHub service that migrates, resizes and prunes users' servers.

Runs as its own process: started by the hub (a managed service, `command` in
`c.JupyterHub.services`) or on its own (an external service: a Deployment, a systemd unit), as
`python -m elastic_spawner.service` or `elastic-spawner service`. It talks to the hub only over
REST with its own token, so it keeps working while the hub restarts (calls retry with backoff),
and its migration records live in a file, so a migration interrupted by a restart of the
service itself resumes when it comes back. On Kubernetes it also hosts the drain watcher.

Configuration: traitlets, from `--ElasticService.<trait>=...`, the short flags below, or a
config file (`--config=elastic_service_config.py`, `c.ElasticService.<trait> = ...`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jupyterhub.services.auth import HubOAuth
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.web import Application as WebApplication
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Application

from elastic_spawner.service.checkpoints import server_store_url
from elastic_spawner.service.handlers import handlers
from elastic_spawner.service.hubapi import HubClient
from elastic_spawner.service.metrics import ServiceMetrics
from elastic_spawner.service.migrator import Migrator
from elastic_spawner.service.model import Migration, MigrationRequest, parse_memory
from elastic_spawner.service.records import RecordStore
from elastic_spawner.service.retention import RetentionResult, prune_server

_SCRUB_KEYS = ("token", "code", "state", "_xsrf")


def scrub_uri(uri: str) -> str:
    """A request URI for the access log, with credentials in the query string redacted."""
    if "?" not in uri:
        return uri
    path, _, query = uri.partition("?")
    parts = []
    for item in query.split("&"):
        key = item.split("=", 1)[0]
        parts.append(f"{key}=[secret]" if key.lower() in _SCRUB_KEYS else item)
    return path + "?" + "&".join(parts)


def _env_origin(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        return ""
    p = urlsplit(value)
    return urlunsplit((p.scheme, p.netloc, "", "", ""))


class ElasticService(Application):
    """The migrator service: REST API, metrics, retention, drain watcher."""

    name = "elastic-spawner-service"
    description = ("JupyterHub service of elastic-spawner: migrate and resize users' servers, list "
                   "and prune their checkpoints, export Prometheus metrics.")

    aliases = {
        "url": "ElasticService.service_url",
        "api-url": "ElasticService.hub_api_url",
        "proxy-url": "ElasticService.proxy_url",
        "store-url": "ElasticService.store_url",
        "state-file": "ElasticService.state_file",
        "concurrency": "ElasticService.concurrency",
        "keep-checkpoints": "ElasticService.keep_checkpoints",
        "retention-interval": "ElasticService.retention_interval",
        "gc-grace-period": "ElasticService.gc_grace_period",
        "config": "ElasticService.config_file",
        "log-level": "Application.log_level",
    }
    flags = {
        "drain": ({"ElasticService": {"drain_watcher": True}}, "host the Kubernetes drain watcher"),
        "no-drain": ({"ElasticService": {"drain_watcher": False}}, "do not host the drain watcher"),
        "no-metrics-auth": ({"ElasticService": {"authenticate_metrics": False}},
                            "serve /metrics without authentication"),
    }

    config_file = Unicode("", help="A Python config file (`c.ElasticService.x = ...`) to load.").tag(
        config=True)

    hub_api_url = Unicode(
        help="""The hub's REST API, e.g. `http://hub:8081/hub/api`.

        Default: `$JUPYTERHUB_API_URL` (set by the hub for a managed service), else
        `http://127.0.0.1:8081/hub/api`.
        """,
    ).tag(config=True)

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api"

    api_token = Unicode(
        help="""The service's own token (never logged). Default: `$JUPYTERHUB_API_TOKEN`.

        The hub generates it for a managed service; for an external service, set the same value
        as `api_token` of its `c.JupyterHub.services` entry. Its role needs the scopes listed in
        docs/service.md ("Permissions").
        """,
    ).tag(config=True)

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_url = Unicode(
        help="""Where this service listens, `http://ip:port`. Default: `$JUPYTERHUB_SERVICE_URL`
        (the `url` of the service entry), else `http://127.0.0.1:10101`.""",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL") or "http://127.0.0.1:10101"

    service_prefix = Unicode(
        help="""URL prefix of this service behind the proxy. Default:
        `$JUPYTERHUB_SERVICE_PREFIX`, else `/services/elastic/`.""",
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/services/elastic/"

    @validate("service_prefix")
    def _validate_prefix(self, proposal: dict[str, Any]) -> str:
        value = "/" + str(proposal["value"]).strip("/") + "/"
        return value.replace("//", "/")

    proxy_url = Unicode(
        help="""The proxy's URL, through which the service reaches single-user servers
        (`<proxy_url>/user/<name>/api/elastic/...`): on z2jh `http://proxy-public`.

        Default: `$ELASTIC_PROXY_URL`, else the origin of `$JUPYTERHUB_PUBLIC_HUB_URL` (set when
        `JupyterHub.public_url` is). Required for migrations.

            c.ElasticService.proxy_url = "http://proxy-public"
        """,
    ).tag(config=True)

    @default("proxy_url")
    def _default_proxy_url(self) -> str:
        return os.environ.get("ELASTIC_PROXY_URL") or _env_origin("JUPYTERHUB_PUBLIC_HUB_URL")

    store_url = Unicode(
        help="""The checkpoint store URL template: the same value as
        `ElasticSpawnerMixin.store_url` in the hub's config (`{username}`, `{servername}`).

        Default: `$ELASTIC_STORE_URL`, else the mixin's default
        `file:///srv/elastic/{username}/{servername}`. S3 credentials: the `ELASTIC_S3_*`
        variables, as for the single-user servers.
        """,
    ).tag(config=True)

    @default("store_url")
    def _default_store_url(self) -> str:
        return os.environ.get("ELASTIC_STORE_URL") or "file:///srv/elastic/{username}/{servername}"

    @validate("store_url")
    def _validate_store_url(self, proposal: dict[str, Any]) -> str:
        url = str(proposal["value"]).strip()
        if not url.startswith(("file:///", "s3://")) or "{username}" not in url:
            raise TraitError(
                f"ElasticService.store_url = {url!r}: must be the hub's ElasticSpawnerMixin."
                "store_url template, file:///abs/dir/... or s3://bucket/..., with {username}")
        return url

    state_file = Unicode(
        help="""JSON file holding the migration records (resumed after a restart).

        Default: `$ELASTIC_STATE_DIR/migrations.json`, else `elastic-migrations.json` in the
        working directory. Empty: records in memory only (lost at a restart).
        """,
    ).tag(config=True)

    @default("state_file")
    def _default_state_file(self) -> str:
        d = os.environ.get("ELASTIC_STATE_DIR")
        return os.path.join(d, "migrations.json") if d else os.path.abspath("elastic-migrations.json")

    concurrency = Integer(10, min=1, help="Migrations run at the same time; others queue.").tag(
        config=True)
    busy_timeout = Float(30.0, min=0, help="Seconds a checkpoint waits for busy kernels (cells "
                         "running) before the migration gives up, leaving the server running.").tag(
        config=True)
    checkpoint_timeout = Float(300.0, min=1, help="Checkpoint deadline in seconds (the planner "
                               "recomputes more at restore to meet it).").tag(config=True)
    stop_timeout = Float(300.0, min=1, help="Seconds to wait for the hub to stop a server.").tag(
        config=True)
    start_timeout = Float(900.0, min=1, help="Seconds to wait for a migrated server to be ready "
                          "(the spawner follows the restore while starting).").tag(config=True)
    restore_timeout = Float(900.0, min=1, help="Seconds to wait for the restore status of a "
                            "migrated server to end.").tag(config=True)
    hub_retry_timeout = Float(300.0, min=0, help="""Seconds a call retries while the hub (or the
        proxy) does not answer, e.g. during a hub restart, before the step fails.""").tag(config=True)

    keep_checkpoints = Integer(
        5, min=0,
        help="""Retention: checkpoints kept per server (newest first), plus the one its next start
        restores. Older server checkpoints, the kernel checkpoints only they used, and blobs no
        kept checkpoint references are deleted. 0 disables retention.

            c.ElasticService.keep_checkpoints = 10
        """,
    ).tag(config=True)
    retention_interval = Float(3600.0, min=0, help="Seconds between retention passes over every "
                               "server's store (0: only on request, never periodically).").tag(
        config=True)
    gc_grace_period = Float(
        3600.0, min=0,
        help="""Seconds an unreferenced blob or kernel checkpoint is kept before collection.

        It protects checkpoints being written: their blobs and kernel checkpoints exist before
        the manifest naming them is committed. Keep it well above the longest checkpoint.
        """,
    ).tag(config=True)
    history_limit = Integer(1000, min=1, help="Finished migration records kept.").tag(config=True)
    max_cpu = Float(0.0, min=0, help="Largest `cpu` a migrate/resize may ask for (0: no limit; the "
                    "spawner may have its own).").tag(config=True)
    max_memory = Unicode("", help="Largest `memory` a migrate/resize may ask for, e.g. \"64Gi\" "
                         "(empty: no limit; the spawner may have its own).").tag(config=True)

    @validate("max_memory")
    def _validate_max_memory(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        if value:
            try:
                parse_memory(value)
            except ValueError as e:
                raise TraitError(f"ElasticService.max_memory = {value!r}: {e}") from e
        return value

    authenticate_metrics = Bool(True, help="""Require a token or login with the
        `custom:elastic:read` scope for `/metrics` (Prometheus: `authorization` with a token of
        a service holding it). False serves metrics to anyone who reaches the service.""").tag(
        config=True)

    drain_watcher = Bool(
        help="""Host the node drain watcher (`elastic_spawner.drain.DrainWatcher`): it migrates
        the servers of cordoned/draining nodes before eviction. Default: on inside a Kubernetes
        pod (`$KUBERNETES_SERVICE_HOST` set), off elsewhere.""",
    ).tag(config=True)

    @default("drain_watcher")
    def _default_drain_watcher(self) -> bool:
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    drain_watcher_class = Unicode(
        "elastic_spawner.drain.DrainWatcher",
        help="""Import path of the drain watcher. It is built as
        `cls(hub_api_url, api_token, namespace=drain_namespace, on_report=<service callback>)`,
        then `await start()` / `await stop()`. It migrates the servers of a draining node itself
        (checkpoint, stop, start through the hub); the service records each report (GET
        api/drains) and counts them in its metrics.""",
    ).tag(config=True)

    drain_namespace = Unicode(
        help="""Namespace of the users' pods, for the drain watcher. Default: `$ELASTIC_NAMESPACE`
        (the Helm chart sets it), else `$POD_NAMESPACE`, else "default".""",
    ).tag(config=True)

    @default("drain_namespace")
    def _default_drain_namespace(self) -> str:
        return os.environ.get("ELASTIC_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "default"

    # ---- runtime objects (not config) ----------------------------------------------------
    hub: HubClient
    metrics: ServiceMetrics
    records: RecordStore
    migrator: Migrator

    @property
    def max_memory_bytes(self) -> int:
        return parse_memory(self.max_memory) if self.max_memory else 0

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        self.log.propagate = False
        for name in ("elastic_spawner", "kernel_agent"):  # our modules log like the app
            lg = logging.getLogger(name)
            lg.setLevel(self.log_level)
            for h in self.log.handlers:
                if h not in lg.handlers:
                    lg.addHandler(h)
            lg.propagate = False

    def store_url_for(self, user: str, server: str) -> str:
        return server_store_url(self.store_url, user, server)

    def setup(self) -> None:
        """Build the runtime objects (separate from `start` so tests can drive them)."""
        if not self.api_token:
            raise SystemExit("elastic-spawner service: no token: set JUPYTERHUB_API_TOKEN (the "
                             "service's api_token in c.JupyterHub.services)")
        # Each running migration holds a connection for its whole checkpoint call; polls and
        # API requests come on top. Tornado's default (10 connections) would queue them.
        AsyncHTTPClient.configure(None, max_clients=4 * self.concurrency + 20)
        self.hub = HubClient(self.hub_api_url, self.api_token, proxy_url=self.proxy_url,
                             retry_timeout=self.hub_retry_timeout)
        # The handlers' HubOAuth singleton gets this service's values (they may come from config
        # rather than from the JUPYTERHUB_* variables HubOAuth reads by itself).
        HubOAuth.instance(api_token=self.api_token, api_url=self.hub_api_url,
                          base_url=self.service_prefix)
        self.metrics = ServiceMetrics()
        self.drain_reports: list[dict[str, Any]] = []
        self._drained_nodes: set[str] = set()
        self.records = RecordStore(self.state_file or None, keep_finished=self.history_limit)
        loaded = self.records.load()
        self.migrator = Migrator(
            self.hub, self.records, self.metrics, concurrency=self.concurrency,
            busy_timeout=self.busy_timeout, checkpoint_timeout=self.checkpoint_timeout,
            stop_timeout=self.stop_timeout, start_timeout=self.start_timeout,
            restore_timeout=self.restore_timeout)
        if not self.proxy_url:
            self.log.warning("ElasticService.proxy_url is not set ($ELASTIC_PROXY_URL): migrations "
                             "cannot reach single-user servers until it is")
        self.log.info("Loaded %d migration record(s) from %s", len(loaded),
                      self.state_file or "(memory)")

    def make_web_app(self) -> WebApplication:
        def log_request(handler: Any) -> None:
            status = handler.get_status()
            level = logging.INFO if status < 400 else logging.WARNING
            self.log.log(level, "%d %s %s %.1fms", status, handler.request.method,
                         scrub_uri(handler.request.uri), 1000 * handler.request.request_time())

        return WebApplication(
            handlers(self.service_prefix),
            elastic_service=self,
            cookie_secret=secrets.token_bytes(32),  # browser sessions re-login after a restart
            log_function=log_request,
        )

    # ---- API for in-process callers (a custom drain watcher, scripts embedding the app) -------------------------------------------------------

    async def migrate_server(self, user: str, server: str = "", *, node: str | None = None,
                             node_selector: dict[str, str] | None = None,
                             reason: str = "drain") -> Migration:
        """Start a migration (as the REST API does); raises model.RequestError when refused."""
        req = MigrationRequest(user=user, server=server, node=node,
                               node_selector=dict(node_selector or {}), reason=reason)
        return await self.migrator.submit(req, requested_by=f"service:{reason}")

    def drain_handled(self, node: str) -> None:
        """Count one drained node (the first report of a node's drain)."""
        self.metrics.drains.inc()
        self.log.info("Drain of node %s handled", node)

    async def on_drain_report(self, report: Any) -> None:
        """The drain watcher's callback: one server of a draining node reached an outcome."""
        d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        node = str(d.get("node") or "?")
        if node not in self._drained_nodes:
            self._drained_nodes.add(node)
            self.drain_handled(node)
        self.metrics.drain_servers.labels(outcome=str(d.get("outcome") or "unknown")).inc()
        self.drain_reports.append(d)
        del self.drain_reports[: max(0, len(self.drain_reports) - self.history_limit)]
        self.log.info("Drain of %s: %s/%s %s%s", node, d.get("user"), d.get("server") or "",
                      d.get("outcome"), f" ({d['error']})" if d.get("error") else "")

    # ---- retention -----------------------------------------------------------------------

    async def run_retention(self, user: str | None = None,
                            server: str | None = None) -> list[RetentionResult]:
        """One retention pass over every server the hub knows (stopped ones included), or over
        one user's servers, or one server."""
        if not self.keep_checkpoints:
            return []
        if user is not None:
            model = await self.hub.user(user)
            users = [model] if model else []
        else:
            users = await self.hub.users()
        loop = asyncio.get_running_loop()
        results = []
        for u in users:
            servers = u.get("servers") or {}
            # every pointer of this user's servers: one may lie in another server's prefix (a
            # template without {servername}; a named server "default" checkpointed before it got
            # its own prefix), and that server's pass must not delete it
            pointers = {name: ((m.get("state") or {}).get("elastic") or {}).get("checkpoint") or ""
                        for name, m in servers.items()}
            for name in servers:
                if server is not None and name != server:
                    continue
                base = self.store_url_for(u["name"], name)
                protected = {p.rpartition("#")[2] for n, p in pointers.items() if "#" in p and (
                    n == name or p.rpartition("#")[0].rstrip("/") == base.rstrip("/"))}
                res = await loop.run_in_executor(
                    None, lambda b=base, p=protected: prune_server(
                        b, self.keep_checkpoints, grace_s=self.gc_grace_period, protected=p))
                self.metrics.retention_checkpoints.labels(level="server").inc(
                    len(res.deleted_servers))
                self.metrics.retention_checkpoints.labels(level="kernel").inc(
                    len(res.deleted_kernels))
                self.metrics.retention_blobs.inc(res.deleted_blobs)
                if res.error:
                    self.metrics.retention_errors.inc()
                results.append(res)
        return results

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_interval)
            try:
                await self.run_retention()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next pass tries again
                self.log.exception("Retention pass failed; retrying in %.0fs",
                                   self.retention_interval)

    # ---- drain watcher hook --------------------------------------------------------------

    def _make_drain_watcher(self) -> Any | None:
        from traitlets.utils.importstring import import_item

        try:
            cls = import_item(self.drain_watcher_class)
        except ImportError as e:
            self.log.error("ElasticService.drain_watcher is on but %s cannot be imported (%s): "
                           "running without a drain watcher", self.drain_watcher_class, e)
            return None
        return cls(self.hub_api_url, self.api_token, namespace=self.drain_namespace,
                   on_report=self.on_drain_report)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start_background(self) -> None:
        """Resume unfinished migrations, start the retention loop and the drain watcher."""
        self.migrator.resume()
        self._tasks: list[asyncio.Task[None]] = []
        if self.keep_checkpoints and self.retention_interval:
            self._tasks.append(asyncio.ensure_future(self._retention_loop()))
        self._watcher = self._make_drain_watcher() if self.drain_watcher else None
        if self._watcher is not None:
            await self._watcher.start()
            self.log.info("Drain watcher %s started", type(self._watcher).__name__)

    async def stop_background(self) -> None:
        """Stop the watcher and the loops; running migrations stay recorded, to resume later."""
        if getattr(self, "_watcher", None) is not None:
            await self._watcher.stop()
        for t in getattr(self, "_tasks", []):
            t.cancel()
        await self.migrator.shutdown()
        await asyncio.gather(*getattr(self, "_tasks", []), return_exceptions=True)

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT; then stop cleanly (records saved, resumed next time)."""
        self.setup()
        bind = urlsplit(self.service_url)
        server = HTTPServer(self.make_web_app(), xheaders=True)
        server.listen(bind.port or 80, bind.hostname or "127.0.0.1")
        self.log.info("elastic-spawner service on %s%s (hub API %s, proxy %s, store %s)",
                      self.service_url.rstrip("/"), self.service_prefix, self.hub_api_url,
                      self.proxy_url or "-", self.store_url)
        await self.start_background()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("Stopping: unfinished migrations resume at the next start")
        server.stop()
        await self.stop_background()

    def start(self) -> None:
        asyncio.run(self.serve())


def main(argv: list[str] | None = None) -> None:
    """`python -m elastic_spawner.service` / `elastic-spawner service`."""
    app = ElasticService.instance()
    app.initialize(argv)
    app.start()
