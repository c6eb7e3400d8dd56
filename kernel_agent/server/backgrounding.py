"""Turn on background checkpoints in every IPython kernel of this server (server side).

Runs in the single-user Jupyter server process, on its event loop. A kernel checkpoints into
``<store>/kernels/<notebook key>``, the same store the server's planned checkpoints use for that
notebook, so a planned checkpoint reuses what background rounds already shipped. The notebook
path (hence the key) is known only once a session names the kernel, and a restarted kernel
forgets everything, so a periodic sync (every `poll` seconds; no kernel is called when nothing
changed) asks each new, restarted or re-pathed kernel to start its background checkpoints
(``kernel_agent.background(url, interval)``, a silent agent call that queues behind a running
cell). Kernels are skipped while a server restore runs (they are about to adopt a history).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kernel_agent.server.coordinator import store_keys
from kernel_agent.server.kernels import call_agent, get_kernel_spec, is_ipython_spec
from kernel_agent.server.pointer import kernel_store_url

log = logging.getLogger(__name__)


class BackgroundEnabler:
    """Keeps `kernel_agent.background(<kernel store>, interval)` on in every IPython kernel."""

    def __init__(self, coordinator: Any, store_url: str, interval: float, *, poll: float = 5.0,
                 retry: float = 300.0,
                 logger: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        self.coordinator = coordinator
        self.store_url = store_url
        self.interval = interval
        self.poll = poll
        self.log = logger or log
        self._enabled: dict[str, tuple[str, Any]] = {}  # kernel id -> (url, process id)
        # a kernel whose call failed (no kernel_agent in its Python, agent not loaded) is asked
        # again after `retry` seconds, or at once when restarted: it was asked, and a warning
        # logged, at every poll (every 5 s) for as long as it ran
        self.retry = retry
        self._failed: dict[str, tuple[tuple[str, Any], float]] = {}  # kernel id -> (token, failed at)
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sync now rather than at the next poll (a notebook moved: its kernel's store changed)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failed sync is retried at the next poll
                self.log.exception("kernel_agent: enabling background checkpoints failed")
            try:  # a periodic schedule, or sooner when woken
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def sync(self) -> list[str]:
        """One pass: enable background checkpoints where missing; returns the kernel ids done."""
        c = self.coordinator
        if c.restore_job.state == "running":
            return []
        sessions = await c._sessions_by_kernel()
        ids = list(c.kernel_manager.list_kernel_ids())
        keys = store_keys(sessions, ids)
        for gone in set(self._enabled) - set(ids):
            del self._enabled[gone]
        for gone in set(self._failed) - set(ids):
            del self._failed[gone]
        done = []
        for kid in ids:
            km = c._kernel(kid)
            if km is None:
                continue
            url = kernel_store_url(self.store_url, keys[kid])
            token = (url, getattr(getattr(km, "provisioner", None), "pid", None))
            if self._enabled.get(kid) == token or getattr(km, "execution_state", "") == "busy":
                continue
            failed = self._failed.get(kid)
            if failed is not None and failed[0] == token and time.monotonic() - failed[1] < self.retry:
                continue
            spec = await get_kernel_spec(c.kernel_spec_manager, km.kernel_name)
            if spec is None or not is_ipython_spec(spec):
                self._enabled[kid] = token  # never carries the agent: do not ask again
                continue
            result = await call_agent(km, "background", {"url": url, "interval": self.interval},
                                      timeout=30)
            if result.error is not None:
                again = failed is not None and failed[0] == token
                self.log.log(logging.DEBUG if again else logging.WARNING,
                             "kernel_agent: background checkpoints for kernel %s not enabled: %s "
                             "(asked again in %.0fs, or when it restarts)", kid, result.error, self.retry)
                self._failed[kid] = (token, time.monotonic())
                continue
            self._failed.pop(kid, None)
            self._enabled[kid] = token
            done.append(kid)
            self.log.info("kernel_agent: background checkpoints of kernel %s to %s every %gs idle",
                          kid, url, self.interval)
        return done
