"""Checkpoint every kernel of this server, restore them, and keep the status the API reports.

Runs in the single-user Jupyter server process, on its event loop. The kernels do the real work
(`kernel_agent.checkpoint` / `kernel_agent.restore`, through `kernels.call_agent`); this module
decides which kernels, waits for busy ones, names each kernel's store after its notebook path,
commits the server manifest last, and recreates kernels and sessions on restore. A failure of one
kernel is reported for that kernel and never stops the others, nor the server.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import posixpath
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kernel_agent.server.kernels import (
    call_agent,
    get_kernel_spec,
    is_ipython_spec,
    wait_until_idle,
)
from kernel_agent.server.manifest import (
    KernelEntry,
    ServerManifest,
    ServerManifestError,
    lost_variables,
    read_manifest,
    write_manifest,
)
from kernel_agent.server.moves import record_move, resolve
from kernel_agent.server.pointer import (
    PointerError,
    check_store_url,
    format_pointer,
    kernel_key,
    kernel_store_url,
    new_checkpoint_id,
    parse_pointer,
)

log = logging.getLogger(__name__)

# set in the restore's task (and the tasks it starts): its own session requests are never held
_RESTORING: contextvars.ContextVar[bool] = contextvars.ContextVar("kernel_agent_restoring", default=False)


class Conflict(Exception):
    """Another operation is running; the message says what to wait for."""


class BadRequest(ValueError):
    """The request cannot be served as asked; the message says what to change."""


class StoreWriteError(Exception):
    """The server manifest could not be committed; the kernels' checkpoints are not referenced."""


class RestoreSessionError(Exception):
    """A session request for a notebook being restored: the restore gave it no kernel in time."""


@dataclass
class KernelReport:
    """The outcome for one kernel, as the REST API shows it."""

    kernel_id: str
    path: str | None
    kernel_name: str
    status: str
    summary: dict | None = None
    error: str | None = None
    other_paths: list[str] = field(default_factory=list)  # the kernel's other sessions (consoles)
    warnings: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # checkpoint: variables it cannot restore

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kernel_id": self.kernel_id,
            "path": self.path,
            "kernel_name": self.kernel_name,
            "status": self.status,
        }
        if self.other_paths:
            d["other_paths"] = list(self.other_paths)
        if self.summary is not None:
            d["summary"] = self.summary
        if self.error is not None:
            d["error"] = self.error
        if self.warnings:
            d["warnings"] = list(self.warnings)
        if self.lost:
            d["lost"] = dict(self.lost)
        return d


@dataclass
class RestoreJob:
    """State of the current (or last) restore; idle until one is asked for."""

    state: str = "idle"  # "idle" | "running" | "done" | "failed"
    checkpoint: str | None = None
    progress: list[dict[str, Any]] = field(default_factory=list)
    kernels: list[KernelReport] = field(default_factory=list)
    error: str | None = None
    # sessions this restore created: a second kernel of the same notebook (the checkpointed
    # server had two) is not refused as "a session already exists"
    created_sessions: set[str] = field(default_factory=set)
    path_locks: dict[str, asyncio.Lock] = field(default_factory=dict)  # check-then-create per path
    # the session model each path gets from this restore, known once the manifest is read: a
    # session request from a browser tab for such a path waits for it (`restored_session`)
    sessions: dict[str, asyncio.Future] = field(default_factory=dict)
    manifest_read: asyncio.Event = field(default_factory=asyncio.Event)
    # kernels of the checkpoint this restore did not bring back (no kernel was started for
    # them): later checkpoints of the server carry them over unchanged (`Coordinator._carried`)
    not_restored: list[KernelEntry] = field(default_factory=list)
    manifest_unread: bool = False  # the manifest could not be read: none of its kernels came back

    def session_ready(self, path: str, model: dict[str, Any]) -> None:
        fut = self.sessions.get(path)
        if fut is not None and not fut.done():
            fut.set_result(model)

    def session_failed(self, path: str, why: str) -> None:
        """Waiting requests for `path` get `why`; later ones start a kernel of their own."""
        fut = self.sessions.pop(path, None)
        if fut is not None and not fut.done():
            fut.set_exception(RestoreSessionError(why))
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waited

    def path_lock(self, path: str) -> asyncio.Lock:
        return self.path_locks.setdefault(path, asyncio.Lock())

    def note(self, message: str, progress: float) -> None:
        self.progress.append({"message": message, "progress": round(max(0.0, min(100.0, progress)))})

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "checkpoint": self.checkpoint,
            "progress": list(self.progress),
            "kernels": [k.to_dict() for k in self.kernels],
            "error": self.error,
        }


class Coordinator:
    """Server-wide checkpoint and restore; one instance per server, shared by the handlers."""

    def __init__(
        self,
        *,
        kernel_manager: Any,
        session_manager: Any,
        kernel_spec_manager: Any,
        store_url: str | None,
        busy_timeout: float,
        checkpoint_timeout: float,
        restore_timeout: float,
        session_wait: float = 120.0,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.log = logger or log
        self.kernel_manager = kernel_manager
        self.session_manager = session_manager
        self.kernel_spec_manager = kernel_spec_manager
        self.store_url = store_url
        self.busy_timeout = busy_timeout
        self.checkpoint_timeout = checkpoint_timeout
        self.restore_timeout = restore_timeout
        self.session_wait = session_wait
        # kernel id -> its id and those of the kernels it was restored from (newest first)
        self.lineage: dict[str, list[str]] = {}
        self.on_move: list[Any] = []  # callables run after a notebook move is recorded
        self._rename_lock = asyncio.Lock()
        self.last_checkpoint: str | None = None
        self.last_checkpoint_complete: bool | None = None  # see `checkpoint`'s "complete"
        self.restore_job = RestoreJob()
        self._checkpoint_lock = asyncio.Lock()
        self.checkpoints_in_progress = 0  # requests running or waiting for the one running
        self._restore_task: asyncio.Task | None = None

    # ----------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return {
            "restore": self.restore_job.to_dict(),
            "last_checkpoint": self.last_checkpoint,
            "last_checkpoint_complete": self.last_checkpoint_complete,
            "checkpoints_in_progress": self.checkpoints_in_progress,
            "store": self.store_url,
        }

    # ------------------------------------------------------------- checkpoint

    async def checkpoint(
        self,
        *,
        store: str | None = None,
        kernel_ids: list[str] | None = None,
        busy_timeout: float | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Checkpoint the kernels, commit the server manifest, and return the API response."""
        started = time.monotonic()
        store_url = store or self.store_url
        if not store_url:
            raise BadRequest(
                'no store to checkpoint to: pass "store" in the request body, or set '
                "c.KernelAgentApp.store_url (environment: ELASTIC_STORE_URL)"
            )
        try:
            store_url = check_store_url(store_url)
        except PointerError as e:
            raise BadRequest(str(e)) from e
        if self.restore_job.state == "running":
            raise Conflict(
                "a restore is running in this server: wait until GET api/elastic/status reports "
                "it done or failed, then checkpoint"
            )
        known = list(self.kernel_manager.list_kernel_ids())
        if kernel_ids is not None:
            unknown = [k for k in kernel_ids if k not in known]
            if unknown:
                raise BadRequest(
                    f"unknown kernel id(s) {', '.join(unknown)}: GET api/kernels lists the "
                    "kernels of this server"
                )
            known = list(dict.fromkeys(kernel_ids))
        busy_timeout = self.busy_timeout if busy_timeout is None else busy_timeout
        deadline_at = None if deadline is None else started + deadline

        self.checkpoints_in_progress += 1
        try:
            return await self._checkpoint_locked(started, store_url, known, busy_timeout, deadline_at)
        finally:
            self.checkpoints_in_progress -= 1

    async def _checkpoint_locked(
        self, started: float, store_url: str, known: list[str], busy_timeout: float,
        deadline_at: float | None,
    ) -> dict[str, Any]:
        """The checkpoint proper, one request at a time (others wait for the lock)."""
        async with self._checkpoint_lock:
            if self.restore_job.state == "running":
                # a restore started while this request waited for an earlier checkpoint
                raise Conflict(
                    "a restore started in this server while this checkpoint waited for the "
                    "previous one: wait until GET api/elastic/status reports it done or failed, "
                    "then checkpoint"
                )
            sessions = await self._sessions_by_kernel()
            # `known` may name a kernel shut down while this request waited (reported below)
            keys = store_keys(sessions, dict.fromkeys([*self.kernel_manager.list_kernel_ids(), *known]))
            entries = await asyncio.gather(
                *(
                    self._checkpoint_one(kid, sessions.get(kid) or [], keys[kid], store_url,
                                         busy_timeout, deadline_at)
                    for kid in known
                )
            )
            carried = await self._carried(sessions)
            entries = [*entries, *carried]
            cid = new_checkpoint_id()
            manifest = ServerManifest(
                checkpoint_id=cid,
                store_url=store_url,
                created=datetime.now(timezone.utc).isoformat(),
                kernels=[e for e, _ in entries],
            )
            try:
                await asyncio.to_thread(write_manifest, manifest)
            except Exception as e:
                self.log.exception("kernel_agent: committing server manifest %s to %s failed", cid, store_url)
                raise StoreWriteError(
                    f"the kernels were checkpointed but the server manifest could not be written "
                    f"to {store_url}: {type(e).__name__}: {e}. Check the store is reachable and "
                    "writable, then checkpoint again"
                ) from e
            pointer = format_pointer(store_url, cid)
            self.last_checkpoint = pointer
            self.last_checkpoint_complete = manifest.complete
        reports = [r for _, r in entries]
        self.log.info(
            "kernel_agent: server checkpoint %s committed: %d kernel(s), %s, %d variable(s) lost, "
            "in %.1fs", pointer, len(reports),
            ", ".join(f"{r.kernel_id}={r.status}" for r in reports) or "none",
            manifest.lost_variables, time.monotonic() - started,
        )
        lost = [r for r in reports if r.lost]
        if lost:
            self.log.warning(
                "kernel_agent: server checkpoint %s is not complete: a restore cannot bring back %s",
                pointer, "; ".join(
                    f"{r.path or r.kernel_id}: " + ", ".join(f"{n} ({why})" for n, why in r.lost.items())
                    for r in lost),
            )
        return {
            "checkpoint": pointer,
            # every variable of every kernel restorable; `saved`: every kernel checkpointed
            "complete": manifest.complete,
            "saved": manifest.saved,
            "lost_variables": manifest.lost_variables,
            "lost": [{"kernel_id": r.kernel_id, "path": r.path, "variables": dict(r.lost)} for r in lost],
            "kernels": [r.to_dict() for r in reports],
        }

    async def _carried(self, sessions: dict[str, list[dict[str, Any]]]) -> list[tuple[KernelEntry, KernelReport]]:
        """Kernels of the checkpoint this server failed to restore, carried into its next one.

        A restore that could not read its manifest (store unreachable at start-up, wrong
        credentials) or could not start a kernel (kernel spec missing) left those notebooks
        without their state; a checkpoint of the server as it runs has no kernel for them, and
        made the next start lose them for good, silently. Their entries (pointing at their own,
        untouched kernel checkpoints) go into this checkpoint as they were, unless the notebook
        has a kernel again (the user reopened it: that kernel is its state now). A manifest that
        could not be read at start-up is read again now; if it still cannot be, nothing is carried.
        """
        job = self.restore_job
        if job.state != "failed" or not job.checkpoint:
            return []
        if job.manifest_unread:
            try:
                manifest = await asyncio.to_thread(read_manifest, parse_pointer(job.checkpoint))
                await asyncio.to_thread(self._follow_moves, manifest)
            except Exception as e:  # noqa: BLE001 - still unreadable: nothing to carry
                self.log.warning("kernel_agent: the checkpoint %s this server failed to restore is "
                                 "still unreadable (%s); its kernels are not in this checkpoint",
                                 job.checkpoint, e)
                return []
            job.not_restored = [e for e in manifest.kernels
                                if e.kernel_name and e.status == "ok" and e.checkpoint_id and e.store_url]
            job.manifest_unread = False
        live = {s.get("path") for ss in sessions.values() for s in ss if s.get("path")}
        out = []
        for e in job.not_restored:
            if e.path and e.path in live:
                continue
            report = self._report(e)
            report.warnings.append(f"not restored in this server: carried over unchanged from "
                                   f"checkpoint {job.checkpoint}")
            out.append((e, report))
        if out:
            self.log.warning("kernel_agent: carrying %d kernel(s) this server did not restore from %s "
                             "into its checkpoint: %s", len(out), job.checkpoint,
                             ", ".join(e.path or e.kernel_id for e, _ in out))
        return out

    async def _sessions_by_kernel(self) -> dict[str, list[dict[str, Any]]]:
        """Every session of each kernel, the one that names the kernel's notebook first.

        One kernel can have several sessions: JupyterLab's "New Console for Notebook" adds a
        ``console`` session (path ``console-1-<uuid>``) on the notebook's kernel. The notebook
        session must win (it keys the kernel's store and is what a browser tab reattaches to);
        keeping the last one listed recorded the console, and a restore recreated only the
        console, so the notebook tab got a fresh kernel.
        """
        sessions = await self.session_manager.list_sessions()  # in creation order
        by_kernel: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for i, s in enumerate(sessions):
            if s.get("kernel"):
                by_kernel.setdefault(s["kernel"]["id"], []).append((i, s))
        for ss in by_kernel.values():
            ss.sort(key=lambda e: (*_session_rank(e[1]), e[0]))
        # kernels in the creation order of their notebook sessions (see `store_keys`)
        return {kid: [s for _, s in ss] for kid, ss in sorted(by_kernel.items(), key=lambda e: e[1][0][0])}

    def _kernel(self, kernel_id: str) -> Any:
        """The kernel's manager, or None once it is shut down.

        jupyter_server's `get_kernel` raises a 404 `HTTPError` for an unknown id, not `KeyError`:
        uncaught, one kernel shut down during a checkpoint turned the whole request into a 404.
        """
        if kernel_id not in self.kernel_manager:
            return None
        try:
            return self.kernel_manager.get_kernel(kernel_id)
        except Exception:  # noqa: BLE001 - shut down between the two calls
            return None

    async def _checkpoint_one(
        self, kernel_id: str, sessions: list[dict[str, Any]], key: str, *args: Any
    ) -> tuple[KernelEntry, KernelReport]:
        """`_checkpoint_kernel`, with any error reported for this kernel only (never for all)."""
        try:
            return await self._checkpoint_kernel(kernel_id, sessions, key, *args)
        except Exception as e:  # noqa: BLE001
            self.log.exception("kernel_agent: checkpoint of kernel %s failed", kernel_id)
            session = sessions[0] if sessions else {}
            entry = KernelEntry(
                kernel_id=kernel_id, kernel_name="", status="failed", path=session.get("path"),
                session_name=session.get("name") or "", session_type=session.get("type") or "",
                error=f"{type(e).__name__}: {e}",
            )
            km = self._kernel(kernel_id)
            entry.kernel_name = getattr(km, "kernel_name", "") or ""
            return entry, self._report(entry)

    async def _checkpoint_kernel(
        self,
        kernel_id: str,
        sessions: list[dict[str, Any]],
        key: str,
        store_url: str,
        busy_timeout: float,
        deadline_at: float | None,
    ) -> tuple[KernelEntry, KernelReport]:
        session = sessions[0] if sessions else {}
        path = session.get("path")
        entry = KernelEntry(
            kernel_id=kernel_id,
            kernel_name="",
            status="failed",
            path=path,
            session_name=session.get("name") or "",
            session_type=session.get("type") or "",
            other_sessions=[
                {"path": s.get("path"), "name": s.get("name") or "", "type": s.get("type") or ""}
                for s in sessions[1:]
            ],
        )
        km = self._kernel(kernel_id)
        if km is None:
            entry.error = "the kernel was shut down during the checkpoint"
            return entry, self._report(entry)
        entry.kernel_name = km.kernel_name
        spec = await get_kernel_spec(self.kernel_spec_manager, km.kernel_name)
        if spec is not None and not is_ipython_spec(spec):
            entry.error = (
                f"kernel spec {km.kernel_name!r} is not an IPython kernel: only ipykernel kernels "
                "carry the agent and can be checkpointed"
            )
            return entry, self._report(entry)

        wait = busy_timeout if deadline_at is None else min(busy_timeout, deadline_at - time.monotonic())
        state = await wait_until_idle(km, max(0.0, wait))
        if state == "busy":
            entry.status = "busy"
            entry.error = (
                f"the kernel stayed busy for {max(0.0, wait):.0f}s (a cell is running); it was not "
                "checkpointed and not interrupted. Raise busy_timeout, or interrupt it yourself"
            )
            self.log.info("kernel_agent: not checkpointing kernel %s (%s): busy", kernel_id, path)
            return entry, self._report(entry)
        if state == "dead":
            entry.error = "the kernel is dead: restart it; its state is lost"
            return entry, self._report(entry)

        entry.store_url = kernel_store_url(store_url, key)
        kwargs: dict[str, Any] = {"url": entry.store_url}
        timeout = self.checkpoint_timeout
        if deadline_at is not None:
            remaining = deadline_at - time.monotonic()
            if remaining <= 0:
                entry.error = "the deadline passed before this kernel could be checkpointed"
                return entry, self._report(entry)
            # leave the planner some slack for the manifest commit
            kwargs["deadline_s"] = max(0.5, remaining * 0.9)
            timeout = min(timeout, remaining)
        result = await call_agent(km, "checkpoint", kwargs, timeout=timeout)
        if result.error is not None:
            entry.error = result.error
            self.log.warning("kernel_agent: checkpoint of kernel %s (%s) failed: %s", kernel_id, path, result.error)
            return entry, self._report(entry)
        summary = result.value or {}
        entry.checkpoint_id = summary.get("checkpoint_id")
        if not entry.checkpoint_id:
            entry.error = "kernel_agent.checkpoint returned no checkpoint_id"
            return entry, self._report(entry, summary)
        entry.status = "ok"
        entry.lost = lost_variables(summary)
        entry.lineage = self.lineage.get(kernel_id, [kernel_id])
        return entry, self._report(entry, summary)

    @staticmethod
    def _report(entry: KernelEntry, summary: dict | None = None) -> KernelReport:
        return KernelReport(
            kernel_id=entry.kernel_id,
            path=entry.path,
            kernel_name=entry.kernel_name,
            status=entry.status,
            summary=summary,
            error=entry.error,
            other_paths=[s["path"] for s in entry.other_sessions],
            lost=dict(entry.lost),
        )

    # ---------------------------------------------------------------- restore

    def start_restore(self, pointer: str) -> RestoreJob:
        """Start restoring `pointer` in the background; raises `BadRequest` / `Conflict` at once."""
        if self.restore_job.state == "running":
            raise Conflict(
                "a restore is already running: wait until GET api/elastic/status reports it "
                "done or failed"
            )
        if self._checkpoint_lock.locked():
            raise Conflict("a checkpoint is running in this server: retry when it has returned")
        try:
            parsed = parse_pointer(pointer)
        except PointerError as e:
            raise BadRequest(str(e)) from e
        job = RestoreJob(state="running", checkpoint=str(parsed))
        self._note(job, "Reading the server checkpoint", 0)
        self.restore_job = job
        self._restore_task = asyncio.ensure_future(self._restore(job))
        return job

    def fail_restore(self, pointer: str, message: str) -> None:
        """Record a restore that could not even start (bad start-up pointer): visible in status."""
        self.restore_job = RestoreJob(state="failed", checkpoint=pointer, error=message)
        self._note(self.restore_job, f"Restore failed: {message}", 100)

    def _note(self, job: RestoreJob, message: str, progress: float) -> None:
        """Progress for the status endpoint (and the spawn page), and the same line in the log."""
        job.note(message, progress)
        self.log.info("kernel_agent: restore of %s: %s", job.checkpoint, message)

    async def stop(self) -> None:
        """Cancel a running restore (server shutdown); kernels it started are the server's now."""
        task = self._restore_task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def restored_session(self, path: str) -> dict[str, Any] | None:
        """The session a running restore gives `path`, once it exists; None: no restore of `path`.

        For session requests from outside the restore (`install_session_guard`): a browser tab
        reopened while the restore reads the manifest or starts this notebook's kernel waits
        here (up to `session_wait` seconds) instead of starting a second kernel. Raises
        `RestoreSessionError` when the wait runs out or the restore could not create the session.
        """
        job = self.restore_job
        if job.state != "running" or _RESTORING.get():
            return None
        deadline = time.monotonic() + self.session_wait
        try:
            await asyncio.wait_for(job.manifest_read.wait(), self.session_wait)
            fut = job.sessions.get(path)
            if fut is None:
                return None
            self.log.info("kernel_agent: a session request for %s waits for its restore", path)
            model = await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RestoreSessionError(
                f"{path} is being restored and its kernel did not start within "
                f"{self.session_wait:.0f}s (KernelAgentApp.restore_session_wait): open it again "
                "once GET api/elastic/status reports its restore"
            ) from None
        try:
            return await self.session_manager.get_session(session_id=model["id"])
        except Exception:  # noqa: BLE001 - the restored session was deleted meanwhile
            return None

    async def _restore(self, job: RestoreJob) -> None:
        _RESTORING.set(True)  # this task and the ones it starts: see `restored_session`
        try:
            await self._restore_all(job)
        finally:
            job.manifest_read.set()
            for path in list(job.sessions):
                job.session_failed(path, f"the restore ended without a session for {path}")

    async def _restore_all(self, job: RestoreJob) -> None:
        try:
            manifest = await asyncio.to_thread(read_manifest, parse_pointer(job.checkpoint or ""))
        except (ServerManifestError, PointerError, OSError) as e:
            job.error = f"could not read the server checkpoint {job.checkpoint}: {e}"
            job.manifest_unread = True
            job.state = "failed"
            self._note(job, job.error, 100)
            return
        except Exception as e:  # noqa: BLE001 - a store error of any kind must land in status
            self.log.exception("kernel_agent: reading server checkpoint %s failed", job.checkpoint)
            job.error = f"could not read the server checkpoint {job.checkpoint}: {type(e).__name__}: {e}"
            job.manifest_unread = True
            job.state = "failed"
            self._note(job, job.error, 100)
            return
        notes = await asyncio.to_thread(self._follow_moves, manifest)
        # the kernel keyed by its notebook's path first: sessions of one path are created in
        # this order (per-path lock, FIFO), so it owns the path's store again afterwards and the
        # other kernels of that path keep theirs (see `store_keys`)
        manifest.kernels.sort(key=lambda e: not (
            e.path and e.store_url == kernel_store_url(manifest.store_url, kernel_key(e.path, ""))))
        total = len(manifest.kernels)
        job.kernels = [
            KernelReport(kernel_id="", path=e.path, kernel_name=e.kernel_name, status="pending",
                         other_paths=[s["path"] for s in e.other_sessions],
                         warnings=list(notes.get(id(e), [])))
            for e in manifest.kernels
        ]
        loop = asyncio.get_running_loop()
        for e in manifest.kernels:
            if e.kernel_name:  # recreated (an entry without kernel name is skipped)
                for path in [e.path, *(s.get("path") for s in e.other_sessions)]:
                    if path:
                        job.sessions.setdefault(path, loop.create_future())
        job.manifest_read.set()
        self._note(job, f"Restoring {total} kernel(s)", 5)
        done = 0

        async def one(i: int, entry: KernelEntry) -> None:
            nonlocal done
            report = job.kernels[i]
            try:
                await self._restore_kernel(entry, report, job)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported for this kernel only
                self.log.exception("kernel_agent: restoring %s failed", entry.path or entry.kernel_id)
                report.status = "failed"
                report.error = f"{type(e).__name__}: {e}"
                for path in [entry.path, *(s.get("path") for s in entry.other_sessions)]:
                    if path:
                        job.session_failed(path, f"the restore of {path} failed: {report.error}")
            done += 1
            self._note(job, _outcome(entry, report), 5 + 95 * done / max(1, total))

        await asyncio.gather(*(one(i, e) for i, e in enumerate(manifest.kernels)))
        # no kernel was started for these (a kernel that was started is the notebook's now)
        job.not_restored = [e for e, k in zip(manifest.kernels, job.kernels, strict=True)
                            if k.status == "failed" and not k.kernel_id and e.kernel_name
                            and e.status == "ok" and e.checkpoint_id and e.store_url]
        bad = [k for k in job.kernels if k.status != "ok"]
        if bad:
            job.state = "failed"
            job.error = f"{len(bad)} of {total} kernel(s) not fully restored: " + "; ".join(
                f"{k.path or k.kernel_id}: {k.error}" for k in bad
            )
            self._note(job, "Restore finished with failures", 100)
        else:
            job.state = "done"
            self._note(job, f"Restored {total} kernel(s)", 100)

    async def _restore_kernel(self, entry: KernelEntry, report: KernelReport, job: RestoreJob) -> None:
        """Recreate the kernel (and its sessions, so browser tabs reattach), then restore it.

        The sessions are created *before* the restore: a tab that reconnects meanwhile attaches
        to this kernel (its cells queue behind the restore) instead of starting another one.
        """
        if not entry.kernel_name:
            # shut down before its checkpoint could run: the user closed it, nothing to bring back
            report.status = "skipped"
            report.error = f"not recreated: at checkpoint time {entry.error or 'it had no kernel'}"
            return
        report.status = "running"
        if entry.path:
            async with job.path_lock(entry.path):
                existing = await self._session_for_path(entry.path, ignore=job.created_sessions)
                if existing is not None:
                    job.session_ready(entry.path, existing)  # a tab gets the kernel it has
                    report.status = "failed"
                    report.kernel_id = existing["kernel"]["id"]
                    report.error = (
                        f"a session for {entry.path} already exists (kernel {report.kernel_id}); "
                        "shut it down before restoring, or restore into a fresh server"
                    )
                    return
                model = await self.session_manager.create_session(
                    path=entry.path,
                    name=entry.session_name or posixpath.basename(entry.path),
                    type=entry.session_type or "notebook",
                    kernel_name=entry.kernel_name,
                )
                job.created_sessions.add(model["id"])
                job.session_ready(entry.path, model)
            report.kernel_id = model["kernel"]["id"]
        else:
            report.kernel_id = await self.kernel_manager.start_kernel(kernel_name=entry.kernel_name)
        for other in entry.other_sessions:
            # a console on the notebook's kernel: back on the same (new) kernel
            async with job.path_lock(other["path"]):
                taken = await self._session_for_path(other["path"], ignore=job.created_sessions)
                if taken is not None:
                    job.session_ready(other["path"], taken)
                    report.warnings.append(
                        f"session {other['path']} not recreated: it exists already (kernel "
                        f"{taken['kernel']['id']})")
                    continue
                model = await self.session_manager.create_session(
                    path=other["path"], name=other.get("name") or "",
                    type=other.get("type") or "console", kernel_id=report.kernel_id,
                )
                job.created_sessions.add(model["id"])
                job.session_ready(other["path"], model)
        if entry.status != "ok" or not entry.checkpoint_id or not entry.store_url:
            report.status = "skipped"
            report.error = (
                f"no state to restore: at checkpoint time this kernel was {entry.status}"
                f" ({entry.error or 'no checkpoint'}); it has a fresh kernel"
            )
            return
        km = self._kernel(report.kernel_id)
        if km is None:
            report.status = "failed"
            report.error = "the restored kernel was shut down before its state could be restored"
            return
        # `_follow_moves` set store and checkpoint: the kernel's newest state (a background round
        # newer than the pinned checkpoint, maybe in the store of the notebook's new path)
        result = await call_agent(
            km,
            "restore",
            {"url": entry.store_url, "checkpoint_id": entry.checkpoint_id},
            timeout=self.restore_timeout,
        )
        if result.error is not None:
            report.status = "failed"
            report.error = result.error
            return
        self.lineage[report.kernel_id] = [report.kernel_id, *(entry.lineage or [entry.kernel_id])][:32]
        report.summary = result.value
        v = result.value or {}
        if not v.get("verified") and _only_lost(v):
            # every variable is back and verified except the ones named lost, with their reason
            report.status = "partial"
            report.error = "restored, but lost " + "; ".join(
                f"{name} ({why})" for name, why in v["lost"].items())
            return
        if not v.get("verified"):
            report.status = "failed"
            report.error = (
                "restored but not verified: "
                f"mismatched {v.get('mismatched', [])}, lost {v.get('lost', {})}, "
                f"errors {v.get('errors', [])}"
            )
            return
        report.status = "ok"

    def _follow_moves(self, manifest: ServerManifest) -> dict[int, list[str]]:
        """Point each entry at its kernel's newest state and notebook path (blocking: a thread).

        The kernel may have run on after the server checkpoint (background rounds, then a crash),
        and its notebook may have been renamed meanwhile, its later checkpoints going to the new
        path's store (`moves.resolve`). Returns notes per entry (by `id`) for its report.
        """
        notes: dict[int, list[str]] = {}
        for e in manifest.kernels:
            if not (e.kernel_name and e.status == "ok" and e.checkpoint_id and e.store_url):
                continue
            try:
                r = resolve(manifest.store_url, kernel_ids=e.lineage or [e.kernel_id],
                            kernel_store_url=e.store_url, checkpoint_id=e.checkpoint_id, path=e.path)
            except Exception:  # noqa: BLE001 - the pinned checkpoint is still there to restore
                self.log.exception("kernel_agent: looking for newer checkpoints of %s failed; "
                                   "restoring the pinned one", e.path or e.kernel_id)
                continue
            for note in r.notes:
                self.log.info("kernel_agent: %s: %s", e.path or e.kernel_id, note)
            notes[id(e)] = r.notes
            e.store_url, e.checkpoint_id, e.path = r.store_url, r.checkpoint_id, r.path
        return notes

    async def track_renames(self, update: Any) -> Any:
        """Run `update()` (a session change); record each kernel whose store key it changed.

        A notebook renamed (session path changed) is keyed by its new path from then on: its
        next checkpoints go to the new path's store. The move is recorded (`moves.py`) so a
        restore of a server checkpoint taken before the rename finds the kernel's newer state
        and restores it under the new path. Recording failures are logged, never raised.
        """
        if not self.store_url:
            return await update()
        async with self._rename_lock:
            before = await self._sessions_by_kernel()
            result = await update()
            after = await self._sessions_by_kernel()
            ids = list(self.kernel_manager.list_kernel_ids())
            keys_before, keys_after = store_keys(before, ids), store_keys(after, ids)
            for kid in ids:
                if keys_before[kid] == keys_after[kid]:
                    continue
                old = (before.get(kid) or [{}])[0].get("path")
                new = (after.get(kid) or [{}])[0].get("path")
                try:
                    move = await asyncio.to_thread(
                        record_move, self.store_url, kernel_id=kid,
                        lineage=self.lineage.get(kid, [kid]), from_path=old,
                        from_store_url=kernel_store_url(self.store_url, keys_before[kid]),
                        to_path=new, to_store_url=kernel_store_url(self.store_url, keys_after[kid]))
                except Exception:  # noqa: BLE001
                    self.log.exception("kernel_agent: recording the move of kernel %s (%s -> %s) "
                                       "failed: a restore of an older checkpoint will not follow it",
                                       kid, old, new)
                    continue
                self.log.info("kernel_agent: kernel %s moved from %s to %s (move %s): its "
                              "checkpoints go to %s", kid, old, new, move.id, move.to_store_url)
                for callback in self.on_move:
                    callback()
        return result

    async def follow_contents_rename(self, source: str, target: str) -> None:
        """A file or directory renamed through the contents API: its sessions follow it.

        JupyterLab PATCHes the session itself after renaming an open notebook; another client
        renaming the file left the session (and the kernel's store key) on a path that no
        longer exists, so a restore brought the notebook back under its old name.
        """
        for s in await self.session_manager.list_sessions():
            path = str(s.get("path") or "")
            if path == source or path.startswith(source.rstrip("/") + "/"):
                await self.session_manager.update_session(s["id"], path=target + path[len(source):])

    async def _session_for_path(self, path: str, ignore: set[str] | frozenset[str] = frozenset()) -> dict[str, Any] | None:
        for s in await self.session_manager.list_sessions():
            if s.get("path") == path and s.get("id") not in ignore:
                return s
        return None


def install_session_guard(session_manager: Any, coordinator: Coordinator) -> None:
    """Hook the sessions: a notebook being restored gets the restored kernel; renames are recorded.

    Renames: `update_session` with a new path goes through `Coordinator.track_renames`.

    Restores: wraps the server's `SessionManager.create_session` (instance attribute, like the
    kernel manager's `start_kernel` in kernels.py). The sessions API asks "does a session exist for
    this path?" and, if not, creates one with a new kernel; during a restore, the answer was
    "no" from the moment the restore started until the restore's own session for that path was
    saved (the manifest read, then the kernel launch), so a tab reopened then got a second, empty
    kernel. Now such a request waits for the restore's session (`Coordinator.restored_session`)
    and returns it; the sessions API answers it like an existing session.
    """
    if getattr(session_manager, "_kernel_agent_guarded", False):
        return
    original = session_manager.create_session

    @functools.wraps(original)
    async def create_session(*args: Any, **kwargs: Any) -> dict[str, Any]:
        path = kwargs.get("path", args[0] if args else None)
        if path and kwargs.get("kernel_id") is None:
            model = await coordinator.restored_session(path)
            if model is not None:
                return model
        return await original(*args, **kwargs)

    session_manager.create_session = create_session
    session_manager._kernel_agent_guarded = True
    original_update = getattr(session_manager, "update_session", None)
    if original_update is None:
        return

    # a session's path changed (a notebook renamed): `Coordinator.track_renames` records it
    @functools.wraps(original_update)
    async def update_session(session_id: str, **kwargs: Any) -> Any:
        if "path" not in kwargs:
            return await original_update(session_id, **kwargs)
        return await coordinator.track_renames(lambda: original_update(session_id, **kwargs))

    session_manager.update_session = update_session


def _outcome(entry: KernelEntry, report: KernelReport) -> str:
    """One progress line per kernel, as a user on the spawn page should read it."""
    label = entry.path or f"kernel {entry.kernel_id} (no notebook)"
    if report.status == "ok":
        v = report.summary or {}
        return (
            f"{label}: restored ({len(v.get('loaded', []))} loaded, "
            f"{len(v.get('recomputed', []))} recomputed)"
        )
    if report.status == "skipped":
        return f"{label}: {report.error}"
    if report.status == "partial":
        v = report.summary or {}
        return (
            f"{label}: restored ({len(v.get('loaded', []))} loaded, "
            f"{len(v.get('recomputed', []))} recomputed), LOST: "
            + "; ".join(f"{name} ({why})" for name, why in (v.get("lost") or {}).items())
        )
    return f"{label}: not restored: {report.error}"


def _only_lost(result: dict[str, Any]) -> bool:
    """True when a restore's only shortfall is variables it names lost (each with a reason)."""
    variables = result.get("variables") or {}
    return bool(result.get("lost")) and not result.get("mismatched") and all(
        v.get("verified") or v.get("action") == "lost" for v in variables.values()
    )


def _session_rank(session: dict[str, Any]) -> tuple[bool, bool]:
    """Sort key putting the session that names a kernel's notebook first."""
    return (session.get("type") != "notebook", not str(session.get("path") or "").endswith(".ipynb"))


def store_keys(sessions: dict[str, list[dict[str, Any]]], kernel_ids: Any) -> dict[str, str]:
    """The store key (``<store>/kernels/<key>``) of every kernel of the server.

    A kernel is keyed by its notebook path (so its checkpoints stay incremental), or by its id
    when it has no session. Two kernels can claim one path (a session PATCHed to another's
    path, sessions created by other extensions): only the first session created keeps the path
    key, the others are keyed by kernel id. Sharing one store let a restore take the *other*
    kernel's newer background checkpoint as this kernel's state. The checkpoint and the
    background enabler both key kernels through this function, so they agree.
    """
    ids = list(kernel_ids)
    owner: dict[str, str] = {}
    for kid, ss in sessions.items():  # `Coordinator._sessions_by_kernel` order: oldest first
        if ss and ss[0].get("path") and kid in ids:
            owner.setdefault(ss[0]["path"], kid)
    keys = {}
    for kid in ids:
        ss = sessions.get(kid) or []
        path = ss[0].get("path") if ss else None
        keys[kid] = kernel_key(path if path and owner.get(path) == kid else None, kid)
    return keys
