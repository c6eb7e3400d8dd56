"""Runs migrations: checkpoint -> stop -> start (new options) -> wait for the verified restore.

Runs in the service process, on its event loop. Every step goes through public APIs only: the
server's elastic API (through the proxy, with the service token, which needs `access:servers`)
and the hub REST API (stop and start, `admin:servers`). The spawner (`ElasticSpawnerMixin`) does
the rest: it passes the newest checkpoint to the new server, which restores by itself.

Each step is idempotent given the server's current state, and the record is saved *before* a
step starts. So when the service dies mid-migration (a managed service is stopped with the hub)
the next service start resumes the record where it stood: a server already stopped is not
stopped again, a server already starting is waited for. Nothing is ever stopped without a
complete checkpoint, and a start the spawner refuses (e.g. an unknown node) is retried with the
server's previous options, so a failed migration leaves the server running, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from elastic_spawner.serverapi import CheckpointResult
from elastic_spawner.service.hubapi import Answer, HubClient, HubUnavailable
from elastic_spawner.service.metrics import ServiceMetrics
from elastic_spawner.service.model import (
    Migration,
    MigrationRequest,
    RequestError,
    new_migration_id,
)
from elastic_spawner.service.records import RecordStore

log = logging.getLogger(__name__)

POLL_S = 0.5  # interval of the bounded polls of the hub and server APIs
ROUTE_WAIT_S = 60.0  # how long a 404/503 from the proxy may mean "route not added yet"
IDLE_GRACE_S = 5.0  # a restore status still "idle" this long after the start: nothing to restore
# the same when the migration checkpointed kernels, so a restore is due: on a loaded node the
# new server's start-up restore can begin well after the hub reports it ready (one of twenty
# concurrent migrations on two cores was called "restored nothing" after 5 s)
IDLE_GRACE_EXPECTED_S = 60.0
PROGRESS = {"queued": 0, "checkpointing": 10, "stopping": 40, "starting": 60, "restoring": 85,
            "done": 100}


class MigrationFailed(Exception):
    """Ends a migration as failed; `reason` is the short word for metrics and scripts."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Migrator:
    """Starts, runs, resumes and records migrations; one at a time per server."""

    def __init__(self, hub: HubClient, records: RecordStore, metrics: ServiceMetrics, *,
                 concurrency: int = 10, busy_timeout: float = 30, checkpoint_timeout: float = 300,
                 stop_timeout: float = 300, start_timeout: float = 600,
                 restore_timeout: float = 900) -> None:
        self.hub = hub
        self.records = records
        self.metrics = metrics
        self.busy_timeout = busy_timeout
        self.checkpoint_timeout = checkpoint_timeout
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.restore_timeout = restore_timeout
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.listeners: list[Callable[[Migration], Awaitable[None] | None]] = []

    # ---- API -------------------------------------------------------------------------------

    async def submit(self, request: MigrationRequest, requested_by: str = "") -> Migration:
        """Check that the server can be migrated now, record the migration and start it.

        Raises RequestError (404 unknown user/server, 409 not running or already migrating).
        """
        label = f"{request.user}/{request.server}"
        self._check_not_migrating(request)
        user = await self.hub.user(request.user)
        if user is None:
            raise RequestError(
                f"no user {request.user!r} on this hub: check the name (GET /hub/api/users)",
                status=404, reason="unknown-user")
        model = (user.get("servers") or {}).get(request.server)
        what = f"server {request.server!r}" if request.server else "default server"
        if model is None:
            raise RequestError(
                f"{request.user} has no {what}: check the name (named servers are "
                "USER/SERVER; the default server has no name)",
                status=404, reason="unknown-server")
        if model.get("pending"):
            raise RequestError(
                f"{request.user}'s {what} is busy ({model['pending']} pending): retry when it is "
                "ready", status=409, reason="server-pending")
        if not model.get("ready"):
            raise RequestError(
                f"{request.user}'s {what} is not running, so there is no session to migrate: "
                "start it (it restores its last checkpoint by itself), then migrate it",
                status=409, reason="server-not-running")
        self._check_not_migrating(request)  # again: another request may have won meanwhile
        rec = Migration(id=new_migration_id(), request=request, requested_by=requested_by)
        rec.node_before = _node_of(model)
        rec.note(f"requested by {requested_by or 'the service'}"
                 + (f" ({request.reason})" if request.reason else ""))
        self.records.add(rec)
        log.info("Migration %s of %s requested by %s: %s", rec.id, label, requested_by or "-",
                 _describe(request))
        self._spawn(rec)
        return rec

    def _check_not_migrating(self, request: MigrationRequest) -> None:
        for rec in self.records.active():
            if rec.request.user == request.user and rec.request.server == request.server:
                raise RequestError(
                    f"{rec.server_label} is already being migrated (migration {rec.id}, "
                    f"{rec.phase}): wait for it to finish (GET api/migrations/{rec.id})",
                    status=409, reason="already-migrating")

    def resume(self) -> list[Migration]:
        """Restart the unfinished migrations found in the records (after a service restart)."""
        resumed = []
        for rec in list(self.records.active()):
            if rec.id in self._tasks:
                continue
            rec.note(f"resumed after a service restart, in phase {rec.phase}")
            log.info("Resuming migration %s of %s in phase %s", rec.id, rec.server_label, rec.phase)
            self._spawn(rec)
            resumed.append(rec)
        if resumed:
            self.records.save()
        return resumed

    async def wait(self, migration_id: str) -> Migration:
        """Wait for a migration to end (tests and the drain watcher)."""
        task = self._tasks.get(migration_id)
        if task is not None:
            await asyncio.shield(task)
        rec = self.records.get(migration_id)
        assert rec is not None
        return rec

    async def shutdown(self) -> None:
        """Stop running migrations; their records stay unfinished and resume at the next start."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.records.save()

    # ---- running ---------------------------------------------------------------------------

    def _spawn(self, rec: Migration) -> None:
        task = asyncio.ensure_future(self._run(rec))
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _t, i=rec.id: self._tasks.pop(i, None))

    async def _set_phase(self, rec: Migration, phase: str, message: str) -> None:
        rec.phase = phase
        rec.note(message)
        self.records.save()
        for listener in self.listeners:
            result = listener(rec)
            if asyncio.iscoroutine(result):
                await result

    async def _run(self, rec: Migration) -> None:
        rec.attempts += 1
        async with self._slots:
            self.metrics.in_progress.inc()
            t0 = time.monotonic()
            try:
                outcome, error = await self._steps(rec)
                await self._finish(rec, outcome, error, None, t0)
            except asyncio.CancelledError:
                rec.note("interrupted (service stopping); resumes at the next service start")
                self.records.save()
                raise
            except MigrationFailed as e:
                await self._finish(rec, "failed", str(e), e.reason, t0)
            except HubUnavailable as e:
                await self._finish(rec, "failed", f"{e}. Check the server's state in the hub",
                                   "hub-unavailable", t0)
            except Exception as e:  # noqa: BLE001 - a bug must end the record, not hide it
                log.exception("Migration %s of %s: unexpected error", rec.id, rec.server_label)
                await self._finish(rec, "failed", f"internal error: {e!r}", "internal-error", t0)
            finally:
                self.metrics.in_progress.dec()

    async def _finish(self, rec: Migration, outcome: str, error: str | None, reason: str | None,
                      t0: float) -> None:
        rec.outcome = outcome
        rec.error = error
        rec.reason = reason
        total = time.monotonic() - t0
        rec.durations["total_s"] = round(rec.durations.get("total_s", 0) + total, 3)
        self.metrics.observe_outcome(outcome, reason, total if outcome != "failed" else None)
        level = logging.INFO if outcome == "verified" else logging.WARNING
        log.log(level, "Migration %s of %s ended %s%s", rec.id, rec.server_label, outcome,
                f" ({reason}): {error}" if error else "")
        await self._set_phase(rec, "done", f"{outcome}" + (f": {error}" if error else ""))

    async def _steps(self, rec: Migration) -> tuple[str, str | None]:
        """Run the remaining steps; returns the outcome (verified/unverified) and why not."""
        if rec.phase in ("queued", "checkpointing"):
            await self._checkpoint(rec)
        if rec.phase == "stopping":
            await self._stop(rec)
        if rec.phase == "starting":
            await self._start(rec)
        return await self._verify(rec)

    async def _model(self, rec: Migration) -> dict[str, Any] | None:
        return await self.hub.server(rec.request.user, rec.request.server)

    async def _checkpoint(self, rec: Migration) -> None:
        await self._set_phase(rec, "checkpointing", "checkpointing every kernel of the server")
        model = await self._model(rec)
        if model is None:
            raise MigrationFailed(f"{rec.server_label} no longer exists", "server-gone")
        if not model.get("ready") and not model.get("pending"):
            # Stopped meanwhile (user, culler, hub shutdown): the spawner checkpointed it as it
            # stopped, so what is left is to start it with the requested options.
            await self._set_phase(rec, "starting", "the server was stopped meanwhile (the "
                                  "spawner checkpointed it); starting it with the new options")
            return
        t = time.monotonic()
        ans = await self._server_call(
            rec, model, "POST", "api/elastic/checkpoint",
            {"busy_timeout": self.busy_timeout, "deadline": self.checkpoint_timeout},
            timeout=self.busy_timeout + self.checkpoint_timeout + 60)
        seconds = time.monotonic() - t
        if ans.code == 404:
            raise MigrationFailed(
                f"{rec.server_label} has no elastic API (404 on api/elastic/checkpoint): enable "
                "the kernel_agent.server extension in the user image", "no-elastic-api")
        if ans.code == 403:
            raise MigrationFailed(
                "the service may not call the server's elastic API (403): give the service's "
                "role the access:servers scope", "forbidden")
        if ans.code != 200 or not isinstance(ans.data, dict) or "checkpoint" not in ans.data:
            raise MigrationFailed(f"checkpoint of {rec.server_label} failed: HTTP {ans.code} "
                                  f"{ans.message}", "checkpoint-failed")
        kernels = list(ans.data.get("kernels") or [])
        rec.checkpoint = ans.data["checkpoint"]
        rec.durations["checkpoint_s"] = round(seconds, 3)
        rec.stats.update(self.metrics.observe_checkpoint(seconds, kernels))
        rec.stats["kernels"] = len(kernels)
        result = CheckpointResult.from_dict(ans.data)
        rec.kernels = [{"path": k.get("path"), "checkpoint": k.get("status"),
                        **({"checkpoint_error": k["error"]} if k.get("error") else {}),
                        **({"lost": r.lost} if r.lost else {})}
                       for k, r in zip(kernels, result.kernels, strict=True)]
        if result.not_saved or (not result.complete and not result.lost):
            missing = ", ".join(f"{k.path or k.kernel_id} ({k.status}: {k.error or '-'})"
                                for k in result.not_saved)
            raise MigrationFailed(
                f"the checkpoint is incomplete, so the server was not stopped (it keeps running, "
                f"nothing is lost): {missing}. Wait for busy cells to finish and retry",
                "checkpoint-incomplete")
        if not result.complete:
            # every kernel saved, but some variables cannot be restored: a retry loses them
            # again; the user must drop or rebuild them, or the caller accept the loss
            lost = "; ".join(f"{k.path or k.kernel_id}: " + ", ".join(
                f"{n} ({why})" for n, why in k.lost.items()) for k in result.lost)
            if not rec.request.accept_lost:
                raise MigrationFailed(
                    f"the checkpoint cannot restore some variables, so the server was not stopped "
                    f"(it keeps running, nothing is lost): {lost}. Retrying does not help: delete "
                    "or re-create them in a form that can be saved, or migrate with "
                    "\"accept_lost\": true to move without them",
                    "variables-lost")
            await self._set_phase(rec, "checkpointing",
                                  f"accepted as asked (accept_lost): the restore will lack {lost}")
        await self._set_phase(rec, "stopping", f"checkpointed {len(kernels)} kernel(s) in "
                              f"{seconds:.1f}s: {rec.checkpoint}")

    async def _server_call(self, rec: Migration, model: dict[str, Any], method: str, path: str,
                           body: Any = None, *, timeout: float) -> Answer:
        """Call the server's elastic API through the proxy, waiting for its route.

        Right after a hub restart the proxy may not have the server's route yet (the hub adds
        routes of running servers while it starts up): the hub answers 404/503 for a server
        that is in fact running. Such answers are retried for `ROUTE_WAIT_S` while the hub
        still reports the server ready; after that, the answer stands.
        """
        deadline = time.monotonic() + ROUTE_WAIT_S
        while True:
            ans = await self.hub.server_call(model["url"], method, path, body, timeout=timeout)
            if ans.code not in (404, 503) or time.monotonic() > deadline:
                return ans
            current = await self._model(rec)
            if current is None or not current.get("ready"):
                return ans
            rec.note(f"{path}: HTTP {ans.code}; waiting for the proxy route to the server")
            await asyncio.sleep(1.0)  # bounded by ROUTE_WAIT_S

    async def _stop(self, rec: Migration) -> None:
        t = time.monotonic()
        ans = await self.hub.stop(rec.request.user, rec.request.server)
        if ans.code not in (202, 204, 400, 404):
            raise MigrationFailed(f"the hub refused to stop {rec.server_label}: HTTP {ans.code} "
                                  f"{ans.message}", "stop-refused")
        deadline = time.monotonic() + self.stop_timeout
        while True:
            model = await self._model(rec)
            if model is None or (not model.get("ready") and not model.get("pending")):
                break
            if time.monotonic() > deadline:
                raise MigrationFailed(f"{rec.server_label} did not stop within "
                                      f"{self.stop_timeout:.0f}s", "stop-timeout")
            await asyncio.sleep(POLL_S)  # bounded poll of the hub API
        rec.durations["stop_s"] = round(time.monotonic() - t, 3)
        await self._set_phase(rec, "starting", "stopped; starting it again")

    async def _start(self, rec: Migration) -> None:
        model = await self._model(rec)
        if model is None:
            raise MigrationFailed(f"{rec.server_label} no longer exists", "server-gone")
        t = time.monotonic()
        if not model.get("ready") and not model.get("pending"):
            previous = dict(model.get("user_options") or {})
            options = rec.request.user_options(previous)
            rec.user_options = options
            rec.note(f"starting with user_options {options}")
            ans = await self.hub.start(rec.request.user, rec.request.server, options)
            if ans.code == 400 and "already running" not in ans.message:
                await self._restart_as_before(rec, previous, ans)
            elif ans.code not in (201, 202, 400):
                raise MigrationFailed(f"the hub could not start {rec.server_label}: HTTP "
                                      f"{ans.code} {ans.message}", "start-failed")
        model = await self._wait_ready(rec)
        rec.node_after = _node_of(model)
        rec.durations["start_s"] = round(time.monotonic() - t, 3)
        await self._set_phase(rec, "restoring", "running again"
                              + (f" on {rec.node_after}" if rec.node_after else "")
                              + "; waiting for the restore")

    async def _restart_as_before(self, rec: Migration, previous: dict[str, Any],
                                 refused: Answer) -> None:
        """The spawner refused the new options: bring the server back as it was, then fail."""
        rec.note(f"the hub refused the new options ({refused.message}); starting the server "
                 "with its previous options so the session comes back")
        ans = await self.hub.start(rec.request.user, rec.request.server, previous)
        if ans.code in (201, 202):
            await self._wait_ready(rec)
        raise MigrationFailed(
            f"the spawner refused user_options {rec.user_options}: {refused.message}. The server "
            "was started again with its previous options", "start-rejected")

    async def _wait_ready(self, rec: Migration) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        while True:
            model = await self._model(rec)
            if model is not None and model.get("ready"):
                return model
            if model is None or not model.get("pending"):
                raise MigrationFailed(
                    f"{rec.server_label} failed to start: see the hub log, or the spawn page, "
                    "for the spawner's message; its last checkpoint is kept and restores at the "
                    "next start", "start-failed")
            if time.monotonic() > deadline:
                raise MigrationFailed(f"{rec.server_label} not ready after "
                                      f"{self.start_timeout:.0f}s", "start-timeout")
            await asyncio.sleep(POLL_S)  # bounded poll of the hub API

    async def _verify(self, rec: Migration) -> tuple[str, str | None]:
        model = await self._wait_ready(rec)
        deadline = time.monotonic() + self.restore_timeout
        idle_since: float | None = None
        grace = IDLE_GRACE_EXPECTED_S if rec.stats.get("kernels") else IDLE_GRACE_S
        while True:
            ans = await self._server_call(rec, model, "GET", "api/elastic/status", timeout=30)
            restore = (ans.data or {}).get("restore") if isinstance(ans.data, dict) else None
            state = (restore or {}).get("state") if ans.code == 200 else None
            if state in ("done", "failed"):
                break
            if state == "idle":  # nothing to restore, or the start-up restore not begun yet
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > grace:
                    break
            if ans.code in (403, 404):
                raise MigrationFailed(f"cannot read the restore status of {rec.server_label}: "
                                      f"HTTP {ans.code} {ans.message}", "no-restore-status")
            if time.monotonic() > deadline:
                raise MigrationFailed(f"the restore of {rec.server_label} did not finish within "
                                      f"{self.restore_timeout:.0f}s", "restore-timeout")
            await asyncio.sleep(POLL_S)  # bounded poll of the server's status
        rec.restored_from = restore.get("checkpoint")
        kernels = restore.get("kernels") or []
        rec.kernels = [_kernel_outcome(k) for k in kernels]
        slowest = max((float(((k.get("summary") or {}).get("timings") or {}).get("total_s") or 0)
                       for k in kernels), default=0.0)
        rec.durations["restore_s"] = round(slowest, 3)
        if kernels:
            self.metrics.restore_seconds.observe(slowest)
        rec.stats["loaded"] = sum(len((k.get("summary") or {}).get("loaded") or []) for k in kernels)
        rec.stats["recomputed_at_restore"] = sum(
            len((k.get("summary") or {}).get("recomputed") or []) for k in kernels)
        bad = [k for k in rec.kernels if k["status"] != "ok"]
        expected = rec.stats.get("kernels")
        if restore.get("state") == "idle" or not rec.restored_from:
            return "unverified", ("the new server restored nothing (is "
                                  "ElasticSpawnerMixin.checkpoint_on_stop 'never'?)")
        if restore.get("state") != "done" or bad:
            detail = "; ".join(f"{k['path']}: {k.get('error') or k['status']}" for k in bad)
            return "unverified", restore.get("error") or detail or "restore failed"
        if expected is not None and len(kernels) < expected:
            return "unverified", f"{expected} kernel(s) checkpointed, {len(kernels)} restored"
        return "verified", None


def _kernel_outcome(k: dict[str, Any]) -> dict[str, Any]:
    s = k.get("summary") or {}
    out: dict[str, Any] = {"path": k.get("path"), "status": k.get("status"),
                           "verified": bool(s.get("verified")),
                           "loaded": len(s.get("loaded") or []),
                           "recomputed": len(s.get("recomputed") or [])}
    if k.get("error"):
        out["error"] = str(k["error"])[:500]
    return out


def _node_of(model: dict[str, Any]) -> str | None:
    """Where a server runs: the spawner state's node (admin:server_state), else its options."""
    state = model.get("state") or {}
    node = state.get("node") or (model.get("user_options") or {}).get("node")
    return str(node) if node else None


def _describe(req: MigrationRequest) -> str:
    parts = [f"{k}={v}" for k, v in req.to_dict().items()
             if k not in ("user", "server", "reason") and v not in (None, {}, "")]
    return ", ".join(parts) or "move to another node"
