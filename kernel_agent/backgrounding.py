"""Background incremental checkpoints: ship what changed while the kernel is idle.

Runs in the kernel process. Evictions with notice are half the story: an OOM kill, a node crash or
a spot reclaim gives none. With background checkpoints on, an unplanned loss costs at most the
cells run since the last background round, and a planned checkpoint (`kernel_agent.checkpoint`,
the server's `POST api/elastic/checkpoint`) only serializes and uploads the remainder.

    kernel_agent.background("s3://bucket/prefix", interval=30)   # or %checkpoint_background URL
    kernel_agent.background(interval=0)                         # off
    ELASTIC_BACKGROUND_INTERVAL=30 ELASTIC_BACKGROUND_URL=...    # at `%load_ext kernel_agent`

How a round runs, and why
-------------------------
* Debounced: every execution (pre_execute) cancels the pending round and every end of an
  execution (post_execute) re-arms it `interval` seconds later, so rounds start only after the
  user paused. A round starts only if the history changed since the last committed checkpoint.
* Serialization happens on the kernel's main thread, between cells, *one co-variable per event
  loop step* (``io_loop.call_later``): pickling or digesting live objects while a cell mutates them
  would give an inconsistent snapshot, and the kernel's main thread is the only place where no
  cell can run concurrently. Between steps the loop dispatches pending messages, so a cell that
  arrives waits at most for one co-variable's serialization; a started execution (pre_execute,
  silent ones included; an ``await``-ing async cell too) abandons the round. What was already
  serialized stays in the reuse cache (``checkpointing.ReuseCache``), so the next round resumes.
* Collecting the co-variables is spread over steps too (200 names per step), and an *overhead
  budget* (``budget``, default ``ELASTIC_BACKGROUND_BUDGET`` or 1 %) spaces rounds: a round that
  spent ``t`` seconds on the main thread delays the next one by ``t / budget``, so rounds take at
  most about that share of the kernel's time whatever the notebook's size (a notebook with
  thousands of variables gets fewer rounds, not slower cells).
* Co-variables unchanged since a previous checkpoint (same names, same active snapshot ids, not
  dirty) are not serialized again; only the planner's decision is recomputed (one main-thread
  step), with the same planner and cost model as a planned checkpoint.
* Hashing and uploading (``Store.put_blob``, which releases the GIL while hashing and writing)
  run in one worker thread, blob by blob, each blob started only while no execution runs.
  Uploads registered in the reuse cache as "in flight", so a planned checkpoint that starts
  meanwhile waits for them instead of shipping the same bytes again.
* The manifest is committed last (``"background": true``, id suffix ``.bg``), under the engine's
  checkpoint lock, and only if no execution started since the round began and no other checkpoint
  was committed meanwhile: a round never publishes a state older than the latest checkpoint, and
  never a state some cell changed while its blobs were being read. Interrupted at any point (kill
  -9, store down), it leaves nothing visible; the previous checkpoint stays the latest.
* Retention: the newest ``keep`` background checkpoints per store are kept; older *background*
  ones are deleted (planned checkpoints never are: a server manifest may point at them), and
  unreferenced blobs are collected with the store's grace period.

Failures never reach the user's cells: they are logged on the ``kernel_agent`` logger, shown by
``kernel_agent.background_status()``, and retried with exponential backoff (up to 5 minutes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kernel_agent import checkpointing as ck
from kernel_agent import rng
from kernel_agent.store import BlobRef, Store, open_store

log = logging.getLogger("kernel_agent")

INTERVAL_ENV = "ELASTIC_BACKGROUND_INTERVAL"
URL_ENV = "ELASTIC_BACKGROUND_URL"
KEEP_DEFAULT = 2
MAX_BACKOFF_S = 300.0
GC_EVERY = 10  # collect unreferenced blobs every N committed rounds
BUDGET_ENV = "ELASTIC_BACKGROUND_BUDGET"
BUDGET_DEFAULT = 0.01  # main-thread time of rounds, as a share of wall time
COLLECT_CHUNK = 200  # names grouped per event-loop step

_instances: weakref.WeakKeyDictionary[Any, BackgroundCheckpointer] = weakref.WeakKeyDictionary()


class BackgroundError(RuntimeError):
    """Background checkpoints cannot run here; the message says why."""


@dataclass
class _Round:
    """One background round, from its first step to its commit (or abandonment)."""

    executions: int  # ck._executions when it began: any change abandons it
    generation: int  # ck._generation when it began: a newer checkpoint makes it obsolete
    graph: Any
    mark: int  # len(graph.cells) when it began
    units: list[ck.Unit]
    todo: list[ck.Unit]
    phase: str = "collect"  # collect -> serialize -> reserialize -> ship
    collector: Any = None  # the iter_collect_units generator, while collecting
    started: float = field(default_factory=time.perf_counter)
    serialized: int = 0
    step_s: float = 0.0
    ship: list[ck.Unit] = field(default_factory=list)
    prev: dict[str, BlobRef | Future] = field(default_factory=dict)
    futures: dict[str, Future] = field(default_factory=dict)
    manifest_args: dict[str, Any] = field(default_factory=dict)
    plan: Any = None


class BackgroundCheckpointer:
    """Background checkpoints of one kernel (one shell) to one store URL."""

    def __init__(
        self,
        shell: Any,
        url: str,
        interval: float,
        *,
        store_options: dict | None = None,
        keep: int = KEEP_DEFAULT,
        budget: float | None = None,
    ) -> None:
        kernel = getattr(shell, "kernel", None)
        io_loop = getattr(kernel, "io_loop", None)
        if io_loop is None:
            raise BackgroundError(
                "background checkpoints need an ipykernel kernel (they run on its event loop "
                "between cells); in this shell call kernel_agent.checkpoint() yourself"
            )
        if interval <= 0:
            raise BackgroundError(f"interval must be > 0 seconds, not {interval}")
        self.shell = shell
        self.io_loop = io_loop
        self.url = url
        self.interval = float(interval)
        self.keep = max(1, int(keep))
        self.store_options = dict(store_options or {})
        self._store: Store | None = None
        self._store_future: Future | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-agent-background")
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = threading.Event()
        self._running = False
        self._timer: Any = None
        self._round: _Round | None = None
        self._shipping = False
        self._failures = 0
        self._done_state: tuple[int, int] | None = None  # (id(graph), len(cells)) last committed
        if budget is None:
            try:
                budget = float(os.environ.get(BUDGET_ENV) or BUDGET_DEFAULT)
            except ValueError:
                budget = BUDGET_DEFAULT
        self.budget = max(0.0, budget)
        self._not_before = 0.0  # monotonic time before which no round may start
        self.stats: dict[str, Any] = {
            "rounds_started": 0,
            "rounds_committed": 0,
            "rounds_abandoned": 0,
            "rounds_failed": 0,
            "units_serialized": 0,
            "steps": 0,
            "step_max_s": 0.0,
            "step_max_phase": None,
            "step_total_s": 0.0,
            "bytes_uploaded": 0,
            "bytes_reused": 0,
            "last_checkpoint": None,
            "last_commit_time": None,
            "last_error": None,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        ev = self.shell.events
        ev.register("pre_execute", self._pre_execute)
        ev.register("pre_run_cell", self._pre_run_cell)
        ev.register("post_execute", self._post_execute)
        self._store_future = self._worker.submit(self._open_store)
        self._arm()

    def stop(self) -> None:
        """Stop scheduling rounds; an upload in flight finishes but commits nothing."""
        self._stopped.set()
        self._cancel_timer()
        self._round = None
        for event, cb in (
            ("pre_execute", self._pre_execute),
            ("pre_run_cell", self._pre_run_cell),
            ("post_execute", self._post_execute),
        ):
            with contextlib.suppress(ValueError):
                self.shell.events.unregister(event, cb)
        self._idle.set()  # wake the worker so it can see the stop
        self._worker.shutdown(wait=False)

    def wait_idle(self, timeout: float) -> bool:
        """Wait (bounded) until no round is in progress; for tests and orderly shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._round is None and not self._shipping:
                return True
            time.sleep(0.01)
        return False

    def status(self) -> dict[str, Any]:
        return {
            "enabled": not self._stopped.is_set(),
            "url": self.url,
            "interval_s": self.interval,
            "keep": self.keep,
            "in_progress": self._round is not None or self._shipping,
            "budget": self.budget,
            "next_round_in_s": max(0.0, self._not_before - time.monotonic()),
            **self.stats,
        }

    # -- hooks (main thread) -------------------------------------------------------------------

    def _pre_execute(self) -> None:
        """Any execution (silent ones too): steps and uploads wait until it ends."""
        self._running = True
        self._idle.clear()

    def _pre_run_cell(self, info: Any) -> None:
        """A recorded cell: it may change state, so a round in progress is abandoned (see
        `_abandon`) and the debounce restarts. Silent executions (a frontend's variable
        inspector, the server's own agent calls) neither postpone nor abandon rounds: they are
        invisible to the history, like everywhere else in the engine."""
        ck._executions += 1
        self._cancel_timer()

    def _post_execute(self) -> None:
        self._running = False
        self._idle.set()
        if not self._stopped.is_set() and self._timer is None and self._round is None:
            self._arm()

    # -- scheduling (main thread) --------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            with contextlib.suppress(Exception):
                self.io_loop.remove_timeout(self._timer)
            self._timer = None

    def _arm(self, delay: float | None = None) -> None:
        self._cancel_timer()
        if self._stopped.is_set():
            return
        if delay is None:
            delay = self.interval * (2 ** min(self._failures, 8)) if self._failures else self.interval
            delay = min(delay, max(self.interval, MAX_BACKOFF_S))
        self._timer = self.io_loop.call_later(delay, self._guard(self._tick))

    def _later(self, fn: Any, *args: Any) -> None:
        """Next event-loop step: pending messages (a new cell) are dispatched in between."""
        self.io_loop.call_later(0, self._guard(fn), *args)

    def _guard(self, fn: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - never break the kernel's event loop
                log.exception("kernel_agent: background checkpoint step failed")
                self.stats["last_error"] = f"{type(e).__name__}: {e}"
                self.stats["rounds_failed"] += 1
                self._failures += 1
                self._round = None
                self._arm()

        return run

    def _busy(self) -> bool:
        mon = self._monitor()
        return (
            self._running
            or mon is None
            or getattr(mon, "_pending", None) is not None
            or ck._lock.locked()
        )

    def _monitor(self) -> Any:
        from kernel_agent.extension import get_monitor

        return get_monitor(self.shell)

    def _charge(self, spent: float) -> None:
        """Keep rounds' main-thread time under `budget` of the wall time: a round that cost
        `spent` seconds pushes the earliest start of the next one `spent / budget` later. Cells
        can then be slowed by at most about `budget` on average (plus one step's wait for a cell
        that arrives during a step), whatever the notebook's size."""
        if self.budget > 0:
            self._not_before = max(self._not_before, time.monotonic()) + spent / self.budget

    def _tick(self) -> None:
        self._timer = None
        if self._stopped.is_set() or self._round is not None:
            return
        if self._busy() or self._shipping or self._store is None:
            if self._store_future is not None and self._store_future.done() and self._store is None:
                self._store_future = self._worker.submit(self._open_store)  # retry opening
            self._arm(min(self.interval, 1.0))
            return
        mon = self._monitor()
        graph = mon.graph
        state = (id(graph), len(graph.cells))
        if not graph.cells:
            return  # nothing recorded yet (a fresh kernel, or one about to be restored)
        if state == self._done_state or ck._committed_state.get(self._store.url) == state:
            return  # nothing new since the last checkpoint of this store
        now = time.monotonic()
        if now < self._not_before:  # the overhead budget: rounds may not run more often
            self._arm(self._not_before - now)
            return
        ns = self.shell.user_ns
        names = sorted(mon.user_names(ns))
        self._round = _Round(
            executions=ck._executions,
            generation=ck._generation,
            graph=graph,
            mark=len(graph.cells),
            units=[],
            todo=[],
            phase="collect",
            collector=ck.iter_collect_units(mon, ns, names, chunk=COLLECT_CHUNK),
        )
        self.stats["rounds_started"] += 1
        self._later(self._step, self._round)

    def _abandon(self, rnd: _Round) -> bool:
        """True (and the round dropped) when a cell started since the round began."""
        if rnd is not self._round:
            return True
        mon = self._monitor()
        if (
            self._stopped.is_set()
            or ck._executions != rnd.executions
            or mon is None
            or mon.graph is not rnd.graph  # a restore adopted another history meanwhile
        ):
            self._round = None
            self.stats["rounds_abandoned"] += 1
            return True
        return False

    def _step(self, rnd: _Round) -> None:
        """Serialize one co-variable, or plan, then yield back to the event loop."""
        if self._abandon(rnd):
            return
        if self._busy():  # an execution is running (an awaiting async cell, a silent call)
            self.io_loop.call_later(0.05, self._guard(self._step), rnd)
            return
        t0 = time.perf_counter()
        phase = rnd.phase
        ns = self.shell.user_ns
        if rnd.phase == "collect":
            try:
                next(rnd.collector)
            except StopIteration as done:
                rnd.units, rnd.collector = done.value, None
                ck._reuse.retain(rnd.graph, [u.reuse_key for u in rnd.units])
                for u in rnd.units:
                    entry = ck._reuse.lookup(rnd.graph, u)
                    if entry is not None:
                        ck.apply_cached(u, entry)
                    else:
                        rnd.todo.append(u)
                rnd.phase = "serialize"
        elif rnd.todo:
            u = rnd.todo.pop(0)
            if rnd.phase == "serialize":
                ck.serialize_unit(u, ns)
                entry = ck._reuse.put(rnd.graph, u, mark=rnd.mark, executions=rnd.executions)
                if entry is not None:
                    u.reused = None
            else:  # reserialize: a shipped unit needs its blob (and its loaded digest)
                if u.parts is None:
                    digest = u.digest
                    ck.serialize_unit(u, ns)
                    if u.digest != digest:
                        log.warning("kernel_agent: %s changed without the monitor noticing", u.names)
                ck.loaded_digest_once(rnd.graph, u)
            rnd.serialized += 1
            self.stats["units_serialized"] += 1
        elif rnd.phase == "serialize":
            self._plan(rnd)
        else:
            self._submit(rnd)
        spent = time.perf_counter() - t0
        rnd.step_s += spent
        self._charge(spent)
        self.stats["steps"] += 1
        self.stats["step_total_s"] += spent
        if spent > self.stats["step_max_s"]:
            self.stats["step_max_s"], self.stats["step_max_phase"] = spent, phase
        if self._round is rnd and rnd.phase != "ship":
            self._later(self._step, rnd)

    def _plan(self, rnd: _Round) -> None:
        assert self._store is not None
        store = self._store
        rnd.units, rnd.plan = ck.plan_salvaging(rnd.graph, rnd.units, store, self.shell.user_ns)
        by_key = {u.key: u for u in rnd.units}
        rnd.ship = [by_key[k] for k in rnd.plan.ship]
        redo = []
        for u in rnd.ship:
            entry = u.reused
            prev = ck._reuse.blob_for(rnd.graph, entry, store.url) if entry is not None else None
            if prev is not None:
                rnd.prev[u.key] = prev
            else:
                redo.append(u)
        rnd.manifest_args = {
            "graph_dict": rnd.graph.to_dict(),
            "rng_final": rng.capture(),
            "env": ck.environment_of(rnd.units, self._monitor(), rnd.graph, self.shell.user_ns),
            "execution_count": int(getattr(self.shell, "execution_count", 0) or 0),
        }
        rnd.phase = "reserialize"
        rnd.todo = redo

    def _submit(self, rnd: _Round) -> None:
        """Hand the uploads and the commit to the worker (in-flight uploads become reusable)."""
        assert self._store is not None
        url = self._store.url
        for u in rnd.ship:
            if u.key in rnd.prev:
                continue
            # pending until the worker starts this blob: a planned checkpoint that needs it
            # before then cancels it and uploads the unit itself (the worker would wait for the
            # kernel to be idle, and the kernel waits for that checkpoint)
            fut: Future = Future()
            rnd.futures[u.key] = fut
            entry = ck._reuse.lookup(rnd.graph, u)
            if entry is not None:
                ck._reuse.pending(entry, url, fut)
        rnd.phase = "ship"
        self._round = None
        self._shipping = True
        self._worker.submit(self._ship, rnd)

    # -- worker thread ---------------------------------------------------------------------------

    def _open_store(self) -> None:
        try:
            store = open_store(self.url, **self.store_options)
            store.measure()  # the planner's bandwidth probe: never on the main thread
            import kernel_agent.planner  # noqa: F401 - its imports are not a round's cost
        except Exception as e:  # noqa: BLE001 - reported in status, retried
            log.warning("kernel_agent: background checkpoints cannot open %s: %s", self.url, e)
            self.stats["last_error"] = f"{type(e).__name__}: {e}"
            self._failures += 1
            return
        self._store = store

    def _wait_idle(self) -> bool:
        while not self._idle.wait(0.5):
            if self._stopped.is_set():
                return False
        return not self._stopped.is_set()

    def _ship(self, rnd: _Round) -> None:
        store = self._store
        assert store is not None
        refs: dict[str, BlobRef] = {}
        error: BaseException | None = None
        try:
            for u in rnd.ship:
                prev = rnd.prev.get(u.key)
                if prev is not None:
                    ref = prev.result() if isinstance(prev, Future) else prev
                    if not store.has_blob(ref.key):
                        raise ck.StoreError(f"reused blob {ref.key} is no longer in {store.url}")
                    refs[u.key] = BlobRef(ref.key, ref.size, False)
                    continue
                if not self._wait_idle():  # never compete with a running cell for the CPU
                    raise _Stopped()
                fut = rnd.futures[u.key]
                if not fut.set_running_or_notify_cancel():
                    raise _Stopped()  # taken over by a planned checkpoint: this round is stale
                try:
                    before = ck._executions
                    ref = store.put_blob(u.parts)
                    consistent = ck._executions == before == rnd.executions
                except BaseException as e:
                    fut.set_exception(e)
                    entry = ck._reuse.lookup(rnd.graph, u)
                    if entry is not None:
                        ck._reuse.stored(entry, store.url, None, consistent=False)
                    raise
                finally:
                    u.parts = None
                entry = ck._reuse.lookup(rnd.graph, u)
                if entry is not None:
                    ck._reuse.stored(entry, store.url, ref, consistent=consistent)
                fut.set_result(ref)
                refs[u.key] = ref
            self._commit(rnd, store, refs)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - a background failure is reported, never raised
            error = e
        finally:
            for u in rnd.ship:
                u.parts = None
                f = rnd.futures.get(u.key)
                if f is not None and not f.done():
                    f.set_exception(error or RuntimeError("background round stopped"))
                    entry = ck._reuse.lookup(rnd.graph, u)
                    if entry is not None:
                        ck._reuse.stored(entry, store.url, None, consistent=False)
            self._shipping = False
        if error is not None:
            log.warning("kernel_agent: background checkpoint to %s failed: %s", store.url, error)
            self.stats["last_error"] = f"{type(error).__name__}: {error}"
            self.stats["rounds_failed"] += 1
            self._failures += 1
        if not self._stopped.is_set():
            # back to the main thread: re-arm (the debounce decides when the next round runs)
            self.io_loop.add_callback(self._guard(self._after_ship))

    def _after_ship(self) -> None:
        if not self._running and self._timer is None:
            self._arm()

    def _commit(self, rnd: _Round, store: Store, refs: dict[str, BlobRef]) -> None:
        uploaded = [r for r in refs.values() if r.uploaded]
        stats = {
            "bytes_shipped": sum(r.size for r in refs.values()),
            "bytes_uploaded": sum(r.size for r in uploaded),
            "bytes_reused": sum(r.size for r in refs.values() if not r.uploaded),
            "blobs_uploaded": len(uploaded),
            "blobs_reused": len(refs) - len(uploaded),
            "units_serialized": rnd.serialized,
            "units_reused": len(rnd.units) - rnd.serialized,
            "bytes_total_state": sum(u.nbytes for u in rnd.units),
            "main_thread_s": rnd.step_s,
            "total_s": time.perf_counter() - rnd.started,
        }
        with ck._lock:
            mon = self._monitor()
            if (
                self._stopped.is_set()
                or ck._executions != rnd.executions
                or ck._generation != rnd.generation
                or mon is None
                or mon.graph is not rnd.graph
            ):
                self.stats["rounds_abandoned"] += 1
                return
            ck.fault_pause("background-commit")
            manifest = ck.build_manifest(
                cid=ck.new_checkpoint_id(background=True),
                the_plan=rnd.plan,
                units=rnd.units,
                refs=refs,
                stats=stats,
                parent=ck._last_checkpoint.get(store.url),
                background=True,
                **rnd.manifest_args,
            )
            ck.commit(store, manifest)
            state = (id(rnd.graph), rnd.mark)
            ck._committed_state[store.url] = state
            self._done_state = state
        self._failures = 0
        self.stats["rounds_committed"] += 1
        self.stats["bytes_uploaded"] += stats["bytes_uploaded"]
        self.stats["bytes_reused"] += stats["bytes_reused"]
        self.stats["last_checkpoint"] = manifest.checkpoint_id
        self.stats["last_commit_time"] = time.time()
        self.stats["last_error"] = None
        self._retention(store)

    def _retention(self, store: Store) -> None:
        """Keep the newest `keep` background checkpoints; planned ones are never deleted here."""
        try:
            ids = [c for c, _, _ in sorted(store._manifests(), key=lambda e: (e[1], e[0]))]
            bg = [c for c in ids if c.endswith(ck.BACKGROUND_SUFFIX)]
            for cid in bg[: max(0, len(bg) - self.keep)]:
                store.delete_checkpoint(cid)
            if self.stats["rounds_committed"] % GC_EVERY == 0:
                store.collect_garbage()
        except Exception:  # noqa: BLE001 - retention never fails a round
            log.exception("kernel_agent: background retention at %s failed", store.url)


class _Stopped(Exception):
    pass


# ----------------------------------------------------------------------------- public API


def background(
    url: str | None = None,
    interval: float | None = None,
    *,
    keep: int = KEEP_DEFAULT,
    budget: float | None = None,
    store_options: dict | None = None,
    shell: Any = None,
) -> dict:
    """Turn background checkpoints of this kernel on (to `url`, every `interval` s idle) or off.

    `interval=0` turns them off; no arguments report the status. `budget`: the share of wall
    time rounds may spend on the kernel's main thread (default ``ELASTIC_BACKGROUND_BUDGET`` or
    0.01; 0: unlimited): a costly round delays the next one accordingly. `keep`: background
    checkpoints kept per store. Returns the status dict.
    """
    shell, _ = ck.get_shell_and_monitor(shell)
    current = _instances.get(shell)
    if url is None and interval is None:
        return current.status() if current is not None else {"enabled": False}
    if interval is None:
        interval = float(os.environ.get(INTERVAL_ENV) or 30.0)
    if current is not None:
        current.stop()
        _instances.pop(shell, None)
    if not interval or interval <= 0:
        return {"enabled": False}
    url = url or (current.url if current is not None else os.environ.get(URL_ENV))
    if not url:
        raise BackgroundError(f"no store URL: pass one, or set {URL_ENV}")
    bg = BackgroundCheckpointer(shell, url, float(interval), store_options=store_options, keep=keep,
                                budget=budget)
    bg.start()
    _instances[shell] = bg
    return bg.status()


def status(shell: Any = None) -> dict:
    """The background checkpointer's status (``{"enabled": False}`` when off)."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    current = _instances.get(shell) if shell is not None else None
    return current.status() if current is not None else {"enabled": False}


def stop(shell: Any) -> None:
    """Stop background checkpoints of `shell`, if any (extension unload)."""
    current = _instances.pop(shell, None)
    if current is not None:
        current.stop()


def get(shell: Any) -> BackgroundCheckpointer | None:
    return _instances.get(shell)


def autostart(shell: Any) -> None:
    """At extension load: start when ELASTIC_BACKGROUND_INTERVAL > 0 and ELASTIC_BACKGROUND_URL."""
    raw = os.environ.get(INTERVAL_ENV)
    url = os.environ.get(URL_ENV)
    if not raw or not url or shell in _instances:
        return
    try:
        interval = float(raw)
    except ValueError:
        log.warning("kernel_agent: %s=%r is not a number of seconds; background off", INTERVAL_ENV, raw)
        return
    if interval <= 0:
        return
    try:
        background(url, interval, shell=shell)
    except Exception:  # noqa: BLE001 - the kernel must start anyway
        log.exception("kernel_agent: could not start background checkpoints to %s", url)
