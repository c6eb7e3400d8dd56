"""The drain watcher: move elastic servers off nodes that are about to go away.

Runs in the migrator service (a hub-managed service, or any process with a hub token and
Kubernetes credentials); never in the hub. It watches Nodes; when one is cordoned
(`spec.unschedulable`) or gets a disruption taint (cluster-autoscaler, Karpenter, spot
termination handlers; `DrainSettings.disruption_taints`), every elastic server on it is migrated:

1. checkpoint through the server's own API (`POST <pod>/api/elastic/checkpoint`, hub token with
   `access:servers`) -- the watcher learns whether every kernel was saved;
2. stop through the hub (`DELETE /hub/api/users/<u>/servers/<name>`): the spawner checkpoints
   (again: incremental, so cheap) and deletes the pod and its PodDisruptionBudget;
3. start through the hub (`POST ...`, no body: the hub reuses the last `user_options`): the pod
   is scheduled on another node (the old one is unschedulable) with `ELASTIC_RESTORE_FROM`.

Meanwhile the server's PDB refuses the drain's evictions (429), so nothing is lost to a race.
A PDB never holds a drain forever: servers not migrated within `hold_limit` seconds of the node
being seen draining (or whose migration failed for good) get their PDB deleted, a Warning
Event on the pod and a log line; the eviction then proceeds and the pod's preStop hook
checkpoints within its grace period (the next start restores that checkpoint).

Watch structure after kopf's `watching.py`, one job per layer: `_watch_forever` reconnects with
backoff, `_list_then_watch` lists then watches from the list's resourceVersion and returns on
410 Gone (relist), `_stream` owns one HTTP stream and its timeouts. `CancelledError` is always
re-raised; `stop()` waits for the tasks with a timeout.

    watcher = DrainWatcher("http://hub:8081/hub/api", token, namespace="jhub",
                           settings=DrainSettings(hold_limit=600))
    await watcher.start()
    ...
    await watcher.stop()
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.rest import ApiException

from elastic_spawner.hubapi import HubAPIError, HubClient
from elastic_spawner.k8s.labels import MANAGED_LABEL
from elastic_spawner.k8s.objects import make_event
from elastic_spawner.k8s.pods import ServerPod, server_pod
from elastic_spawner.serverapi import ElasticAPIError, ElasticServerClient

log = logging.getLogger(__name__)

DISRUPTION_TAINTS = (
    "node.kubernetes.io/unschedulable",  # kubectl cordon / drain
    "ToBeDeletedByClusterAutoscaler",  # cluster-autoscaler scale-down
    "karpenter.sh/disrupted",  # Karpenter v1 consolidation, expiry, drift
    "karpenter.sh/disruption",  # Karpenter v0.3x
    "aws-node-termination-handler/spot-itn",  # AWS spot interruption notice
    "aws-node-termination-handler/asg-lifecycle-termination",
    "aws-node-termination-handler/scheduled-maintenance",
    "aws-node-termination-handler/rebalance-recommendation",
    "cloud.google.com/impending-node-termination",  # GKE spot/preemptible
)


def disruption_reason(node: Mapping[str, Any], taints: Sequence[str] = DISRUPTION_TAINTS) -> str | None:
    """Why `node` (a raw Node) is about to be drained, or None when it is not."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return "cordoned (spec.unschedulable)"
    for taint in spec.get("taints") or []:
        if taint.get("key") in taints:
            return f"taint {taint['key']}:{taint.get('effect', '')}"
    return None


@dataclass
class DrainSettings:
    """How the watcher behaves; every field has a safe default."""

    disruption_taints: tuple[str, ...] = DISRUPTION_TAINTS
    """Taint keys that mean "this node is going away" (any effect)."""
    pod_selector: str = f"component=singleuser-server,{MANAGED_LABEL}=true"
    """Label selector of the pods to migrate (ElasticKubeSpawner labels its pods)."""
    max_concurrent: int = 4
    """Migrations running at once, over all nodes (each one checkpoints and restarts a server)."""
    hold_limit: float = 600.0
    """Seconds after a node is seen draining past which unfinished servers' PDBs are released."""
    attempts: int = 5
    """Tries per step (checkpoint, stop, start) for retriable errors (unreachable, 5xx, 429)."""
    backoff: float = 1.0
    """First retry delay in seconds; doubles per try, with jitter, up to `backoff_max`."""
    backoff_max: float = 30.0
    busy_timeout: float = 10.0
    """Seconds the checkpoint waits for a busy kernel."""
    checkpoint_timeout: float = 120.0
    """The checkpoint's deadline in seconds (the planner recomputes more to meet it)."""
    start_timeout: float = 300.0
    """Seconds to wait for the hub to stop, then to start, the server."""
    restart: bool = True
    """Start the server again after stopping it (False: leave it stopped, restorable)."""
    watch_timeout: int = 300
    """Server-side `timeoutSeconds` of one watch request (a fresh watch follows)."""
    reconnect_max: float = 30.0
    """Longest pause between reconnections after watch errors."""
    request_timeout: float = 30.0
    """Client timeout of one Kubernetes or hub request (a watch gets watch_timeout + this)."""


@dataclass
class MigrationReport:
    """What happened to one server of a draining node (plain data for logs, APIs and tests)."""

    node: str
    reason: str
    user: str
    server: str
    pod: str
    namespace: str
    outcome: str = "pending"  # pending | migrated | stopped | failed | released | gone
    checkpoint: str | None = None
    complete: bool | None = None
    new_node: str | None = None
    pdb_released: bool = False
    error: str | None = None
    started: str = field(default_factory=lambda: _utcnow())
    finished: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OnReport = Callable[[MigrationReport], Awaitable[None] | None]


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class WatchGone(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


async def _raw(call: Awaitable[Any]) -> Any:
    """JSON of a kubernetes_asyncio call made with `_preload_content=False` (dicts, not models)."""
    resp = await call
    try:
        return json.loads(await resp.read())
    finally:
        resp.release()


async def list_server_pods(core: Any, namespace: str, selector: str,
                           node: str | None = None, timeout: float = 30) -> list[dict[str, Any]]:
    """Raw pods matching `selector` (on `node` if given), via `spec.nodeName` field selector."""
    kw: dict[str, Any] = {"label_selector": selector, "_preload_content": False,
                          "_request_timeout": timeout}
    if node:
        kw["field_selector"] = f"spec.nodeName={node}"
    listing = await _raw(core.list_namespaced_pod(namespace, **kw))
    return listing.get("items") or []


async def find_server_pod(core: Any, namespace: str, user: str, server: str = "",
                          selector: str = DrainSettings.pod_selector) -> ServerPod | None:
    """The live (not terminating) pod of `user`'s server `server`, or None."""
    for raw in await list_server_pods(core, namespace, selector):
        sp = server_pod(raw)
        if sp and sp.user == user and sp.server == server and not raw["metadata"].get("deletionTimestamp"):
            return sp
    return None


class DrainWatcher:
    """Watches Nodes and migrates elastic servers off draining ones (see module docstring).

    `kube_client` is a kubernetes_asyncio `ApiClient` (the caller owns it); without one the
    watcher loads the in-cluster config, else the kubeconfig, and closes its client at stop.
    `on_report` (sync or async) gets every report when it reaches an outcome; `reports` keeps
    them all.
    """

    def __init__(
        self,
        hub_api_url: str,
        hub_token: str,
        *,
        kube_client: k8s_client.ApiClient | None = None,
        namespace: str = "default",
        settings: DrainSettings | None = None,
        on_report: OnReport | None = None,
    ) -> None:
        self.hub = HubClient(hub_api_url, hub_token)
        self.hub_token = hub_token
        self.namespace = namespace
        self.settings = settings or DrainSettings()
        self.on_report = on_report
        self.reports: list[MigrationReport] = []
        self._kube_client = kube_client
        self._own_client = kube_client is None
        self._core: Any = None
        self._policy: Any = None
        self._task: asyncio.Task[None] | None = None
        self._nodes: dict[str, asyncio.Task[None]] = {}
        self._migrations: set[asyncio.Task[Any]] = set()
        self._semaphore = asyncio.Semaphore(self.settings.max_concurrent)
        self.synced = asyncio.Event()  # set after the first successful list of Nodes

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching (returns at once; the first list happens in the background)."""
        if self._task is not None:
            return
        if self._kube_client is None:
            self._kube_client = await _load_client()
        self._core = k8s_client.CoreV1Api(self._kube_client)
        self._policy = k8s_client.PolicyV1Api(self._kube_client)
        self._task = asyncio.create_task(self._watch_forever(), name="elastic-drain-watch")

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel the watch and every migration in flight; wait up to `timeout` seconds."""
        tasks = [t for t in (self._task, *self._nodes.values(), *self._migrations) if t]
        for t in tasks:
            t.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("Drain watcher: %d task(s) did not stop within %.0fs", len(pending), timeout)
        self._task = None
        self._nodes.clear()
        if self._own_client and self._kube_client is not None:
            await self._kube_client.close()
            self._kube_client = None

    async def drained(self, node: str) -> list[MigrationReport]:
        """Wait for the current handling of `node` to end; its reports (for callers and tests)."""
        task = self._nodes.get(node)
        if task is not None:
            await asyncio.shield(task)
        return [r for r in self.reports if r.node == node]

    # ---- layer 1: reconnect forever --------------------------------------------------------

    async def _watch_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._list_then_watch()
                delay = 1.0  # a clean end (410 or server timeout): relist at once
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("Drain watcher: watching nodes failed (%s); reconnecting in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max)

    # ---- layer 2: list, then watch from the list's resourceVersion ------------------------

    async def _list_then_watch(self) -> None:
        listing = await _raw(self._core.list_node(
            _preload_content=False, _request_timeout=self.settings.request_timeout))
        for node in listing.get("items") or []:
            self._on_node("LISTED", node)
        self.synced.set()
        rv = listing["metadata"]["resourceVersion"]
        try:
            async for etype, node in self._stream(rv):
                rv = node.get("metadata", {}).get("resourceVersion") or rv
                if etype != "BOOKMARK":
                    self._on_node(etype, node)
        except WatchGone:
            log.info("Drain watcher: node watch expired at resourceVersion %s; relisting", rv)

    # ---- layer 3: one HTTP stream ----------------------------------------------------------

    async def _stream(self, rv: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        resp = await self._core.list_node(
            watch=True, resource_version=rv, allow_watch_bookmarks=True,
            timeout_seconds=self.settings.watch_timeout, _preload_content=False,
            _request_timeout=self.settings.watch_timeout + self.settings.request_timeout,
        )
        try:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchGone(obj.get("message"))
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                yield etype, obj
        finally:
            resp.release()

    # ---- nodes -----------------------------------------------------------------------------

    def _on_node(self, etype: str, node: dict[str, Any]) -> None:
        name = node.get("metadata", {}).get("name")
        if not name:
            return
        reason = None if etype == "DELETED" else disruption_reason(node, self.settings.disruption_taints)
        task = self._nodes.get(name)
        if reason is None:
            if task is not None and task.done():
                del self._nodes[name]  # recovered (uncordoned): a later drain is handled afresh
            return
        if task is None:
            log.info("Drain watcher: node %s is draining: %s", name, reason)
            self._nodes[name] = asyncio.create_task(self._drain_node(name, reason),
                                                    name=f"elastic-drain-{name}")

    async def _drain_node(self, node: str, reason: str) -> None:
        try:
            raws = await self._retry(f"listing pods on {node}", lambda: list_server_pods(
                self._core, self.namespace, self.settings.pod_selector, node,
                self.settings.request_timeout))
        except Exception as e:
            log.error("Drain watcher: cannot list the servers on node %s: %s", node, e)
            return
        servers = [sp for sp in map(server_pod, raws)
                   if sp is not None and not sp.raw["metadata"].get("deletionTimestamp")]
        if not servers:
            log.info("Drain watcher: no elastic servers on node %s", node)
            return
        log.info("Drain watcher: migrating %d server(s) off node %s: %s", len(servers), node,
                 ", ".join(sp.key for sp in servers))
        work = {}
        for sp in servers:
            report = MigrationReport(node=node, reason=reason, user=sp.user, server=sp.server,
                                     pod=sp.pod_name, namespace=sp.namespace)
            self.reports.append(report)
            task = asyncio.create_task(self._migrate(sp, report), name=f"elastic-migrate-{sp.key}")
            self._migrations.add(task)
            task.add_done_callback(self._migrations.discard)
            work[task] = (sp, report)
        _, pending = await asyncio.wait(work, timeout=self.settings.hold_limit)
        for task in pending:
            sp, report = work[task]
            await self._release(sp, report, "ElasticHoldLimit",
                                f"not migrated within the hold limit ({self.settings.hold_limit:.0f}s) "
                                f"of the drain of {node}; releasing its PodDisruptionBudget so the "
                                "drain can proceed (the preStop hook checkpoints on eviction)")
            report.outcome = "released"
            await self._emit_report(report)
        # Unfinished migrations go on (they may still finish and update their report); the
        # drain no longer waits for them.

    # ---- one server ------------------------------------------------------------------------

    async def _migrate(self, sp: ServerPod, report: MigrationReport) -> None:
        t0 = time.monotonic()
        name = sp.key
        try:
            async with self._semaphore:
                await self._checkpoint(sp, report)
                await self._retry(f"stopping {name}", lambda: self.hub.stop_server(
                    sp.user, sp.server, timeout=self.settings.start_timeout))
                report.outcome = "stopped"
                if self.settings.restart:
                    await self._retry(f"starting {name}", lambda: self.hub.start_server(
                        sp.user, sp.server, timeout=self.settings.start_timeout))
                    new = await find_server_pod(self._core, self.namespace, sp.user, sp.server,
                                                self.settings.pod_selector)
                    report.new_node = new.node if new else None
                    report.outcome = "migrated"
            log.info("Drain watcher: %s %s off node %s (now on %s, checkpoint %s) in %.1fs", name,
                     report.outcome, sp.node, report.new_node or "-", report.checkpoint,
                     time.monotonic() - t0)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            report.error = str(e)
            if report.outcome == "pending":
                # Nothing will move this server: do not hold the drain any longer.
                await self._release(sp, report, "ElasticMigrationFailed",
                                    f"migration off node {sp.node} failed ({e}); releasing the "
                                    "PodDisruptionBudget (the preStop hook checkpoints on eviction)")
            if report.outcome != "released":  # released at the hold limit already: keep that
                report.outcome = "failed"
            log.error("Drain watcher: migrating %s off node %s failed: %s", name, sp.node, e)
        finally:
            report.seconds = round(time.monotonic() - t0, 2)
            report.finished = _utcnow()
        await self._emit_report(report)

    async def _checkpoint(self, sp: ServerPod, report: MigrationReport) -> None:
        if not sp.url:
            raise ElasticAPIError(f"pod {sp.pod_name} has no IP/port yet", reason="unreachable")
        client = ElasticServerClient(sp.url, self.hub_token)
        result = await self._retry(f"checkpointing {sp.key}", lambda: client.checkpoint(
            busy_timeout=self.settings.busy_timeout, deadline=self.settings.checkpoint_timeout))
        report.checkpoint, report.complete = result.checkpoint, result.complete
        if not result.complete:
            lost = result.shortfall()
            report.error = f"checkpoint incomplete: {lost}"
            log.warning("Drain watcher: checkpoint of %s is incomplete (%s); migrating anyway: the "
                        "node is going away", sp.key, lost)
            await self._event(sp.raw, "ElasticCheckpointIncomplete",
                              f"checkpoint before migration incomplete: {lost}", "Warning")

    async def _retry(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` with up to `attempts` tries on retriable errors, exponential backoff + jitter."""
        s = self.settings
        for attempt in range(1, s.attempts + 1):
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if attempt == s.attempts or not _retriable(e):
                    raise
                delay = min(s.backoff * 2 ** (attempt - 1), s.backoff_max) * random.uniform(0.8, 1.2)
                log.warning("Drain watcher: %s failed (%s); try %d/%d in %.1fs", what, e,
                            attempt + 1, s.attempts, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # ---- PDB release and reporting ---------------------------------------------------------

    async def _release(self, sp: ServerPod, report: MigrationReport, reason: str, message: str) -> None:
        """Delete the server's PDB -- only the one guarding *this* pod, never its successor's."""
        log.warning("Drain watcher: %s (pod %s/%s): %s", sp.key, sp.namespace, sp.pod_name, message)
        if sp.pdb:
            try:
                pdb = await _raw(self._policy.read_namespaced_pod_disruption_budget(
                    sp.pdb, sp.namespace, _preload_content=False,
                    _request_timeout=self.settings.request_timeout))
                created = pdb["metadata"].get("creationTimestamp") or ""
                if created <= (sp.raw["metadata"].get("creationTimestamp") or created):
                    await self._policy.delete_namespaced_pod_disruption_budget(
                        sp.pdb, sp.namespace, _request_timeout=self.settings.request_timeout,
                        body=k8s_client.V1DeleteOptions(
                            preconditions=k8s_client.V1Preconditions(uid=pdb["metadata"]["uid"])))
                    report.pdb_released = True
                else:
                    log.info("Drain watcher: PDB %s belongs to a newer pod of %s; kept", sp.pdb, sp.key)
            except ApiException as e:
                if e.status != 404:
                    log.error("Drain watcher: releasing PDB %s/%s failed: %s", sp.namespace, sp.pdb, e)
                    message += f" (releasing the PDB failed: {e.status} {e.reason})"
        await self._event(sp.raw, reason, message, "Warning")

    async def _event(self, involved: Mapping[str, Any], reason: str, message: str,
                     event_type: str = "Normal") -> None:
        body = make_event({"apiVersion": "v1", "kind": "Pod", **involved}, reason, message,
                          event_type=event_type)
        try:
            await self._core.create_namespaced_event(body["metadata"]["namespace"], body,
                                                     _request_timeout=self.settings.request_timeout)
        except Exception as e:  # reporting must never break a migration
            log.warning("Drain watcher: could not record event %s: %s", reason, e)

    async def _emit_report(self, report: MigrationReport) -> None:
        if self.on_report is None:
            return
        try:
            result = self.on_report(report)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("Drain watcher: on_report callback failed for %s/%s", report.user, report.server)


def _retriable(e: BaseException) -> bool:
    if isinstance(e, HubAPIError):
        return e.retriable
    if isinstance(e, ElasticAPIError):
        return e.reason in ("unreachable", "timeout") or e.status >= 500 or e.status in (409, 429)
    if isinstance(e, ApiException):
        return e.status in (0, 429) or (e.status or 0) >= 500
    return isinstance(e, (OSError, asyncio.TimeoutError))


async def _load_client() -> k8s_client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (as kubespawner does)."""
    from kubernetes_asyncio import config

    configuration = k8s_client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    return k8s_client.ApiClient(configuration)

