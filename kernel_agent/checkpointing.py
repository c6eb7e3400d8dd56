"""Checkpoint a monitored kernel: trial-serialize, plan ship vs recompute, upload, commit manifest.

Runs in the kernel process, between cells (or from a cell). The namespace is only read, never
changed. The manifest is written last, so a checkpoint interrupted at any point (kill -9, store
down, disk full) is invisible and the previous one stays the latest.

Incremental checkpoints
-----------------------
Serializing and digesting every co-variable at every checkpoint is the bulk of a checkpoint's
time, and uploading it the bulk of its bytes. ``ReuseCache`` remembers, per co-variable, what a
previous checkpoint (planned or background, see ``kernel_agent.background``) learnt about it:
size, serialization error, digest, libraries, and the blob it stored in each store. An entry is
reused only while the co-variable is provably the same value:

* same names and the same *active snapshot ids* in the history graph (the monitor gives a
  co-variable a new snapshot whenever a cell writes or mutates it, or re-partitions it), in the
  same graph object (a restore adopts a new graph whose ids mean something else);
* not dirty: not touched by the cell that is running now (``collect_units`` gives such units no
  ``requires``);
* its blob is complete and consistent: the upload finished before any execution started, or no
  recorded cell has touched (read, written, mutated, deleted) any of its names since it was
  serialized. A background upload reads live buffers from a worker thread; a cell that mutated
  an array while it was being read and then put it back would leave a torn blob behind an
  unchanged snapshot id -- the second condition rules that out.

This trusts the monitor's change detection exactly as much as the recompute plan already does
(a value changed behind the monitor's back -- by a user thread, say -- is recreated from the wrong
history too); ``checkpoint(..., reuse=False)`` serializes everything afresh.

Fault-injection hook (tests only)
---------------------------------
``ELASTIC_FAULT_PAUSE_BEFORE_COMMIT=<path>``: after every blob is uploaded and before the manifest
is committed, create ``<path>.reached`` and wait until ``<path>.release`` exists (bounded by
``ELASTIC_FAULT_PAUSE_TIMEOUT`` seconds, default 300). Lets a test kill the kernel, stop the store
or start a second checkpoint at exactly that point. Once ``<path>.release`` exists the hook is a
no-op, so later checkpoints pass through.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Collection, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from kernel_agent import carried, effects, environment, libobjects, rng
from kernel_agent.changes import digest_report, id_tokens, module_state
from kernel_agent.manifest import CovariableEntry, Manifest, signing_key
from kernel_agent.planner import CellCost, CovarCost, Plan, PlanProblem, StoreSpeed, plan
from kernel_agent.serialize import dumps
from kernel_agent.store import Bandwidth, BlobRef, Store, StoreError, open_store

log = logging.getLogger("kernel_agent")

# One checkpoint of a kernel at a time: a background checkpoint and a requested one must not
# interleave their commits and both claim to be the latest. Held by `checkpoint()` for its whole
# run and by a background round only around its commit (kernel_agent.background).
_lock = threading.Lock()
_last_checkpoint: dict[str, str] = {}  # store url -> id of the last checkpoint this kernel wrote
# Bumped (under _lock) by every committed checkpoint: a background round planned before a newer
# checkpoint was committed must not commit after it (it would become "the latest" with older state).
_generation = 0
# Executions started in this kernel, counted by the background checkpointer's pre_execute hook
# (0 forever when background checkpoints are off, which is fine: then every upload is synchronous).
_executions = 0
# store url -> (id(graph), len(graph.cells)) of the state its last checkpoint captured: a
# background round with nothing new since then has nothing to do
_committed_state: dict[str, tuple[int, int]] = {}

FAULT_PAUSE_ENV = "ELASTIC_FAULT_PAUSE_BEFORE_COMMIT"
FAULT_PAUSE_TIMEOUT_ENV = "ELASTIC_FAULT_PAUSE_TIMEOUT"
BACKGROUND_SUFFIX = ".bg"  # checkpoint ids of background rounds end with it (retention)


class AgentNotLoaded(RuntimeError):
    """Checkpointing needs the monitor's history: `%load_ext kernel_agent` first."""


def unit_key(names: list[str]) -> str:
    """A co-variable's key in the plan and the manifest: the hash of its names. Names are any
    strings (``globals()['a,b'] = 1``, ``globals()['\\udcff'] = 1``): a name holding a comma
    is hashed with the names quoted, so that ``['a,b']`` is not the key of ``['a', 'b']``,
    and lone surrogates are hashed as they are, where encoding them failed the checkpoint."""
    # (the joined names of plain identifiers as before; quoted, they hold '"', joined never)
    text = json.dumps(names) if any("," in n or '"' in n for n in names) else ",".join(names)
    return "u" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass
class Unit:
    """A co-variable at checkpoint time, with how it could be recreated."""

    names: list[str]
    requires: list[int] | None  # None: no recorded cell can recreate it (or it is dirty)
    position: int
    key: str = ""
    parts: list[Any] | None = None  # serialized blob parts (live memory), until uploaded
    nbytes: int = 0
    error: str | None = None  # serialization error
    digest: str = ""
    opaque: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    digest_loaded: str | None = None  # digest of the value as its pickle rebuilds it, if different
    loads_into_live: bool = False  # notebook classes or modules: never load it back in this process
    lossy: str | None = None  # ships, but comes back different (a non-empty lru_cache)
    digest_ids: str | None = None  # recomputed values holding ids: `identity_digest`
    links: tuple[int, int] = (0, 0)  # identity relations and objects its digest records
    reuse_key: tuple | None = None  # (names, active snapshot ids) when it may be reused
    reused: CachedUnit | None = None  # what a previous checkpoint stored for it
    # names no recorded cell recreates (no snapshot, or changed by the running cell), for
    # `salvage_lost`
    unrecorded: set[str] = field(default_factory=set)
    lost_reason: str | None = None  # why it is lost, when `salvage_lost` split it off
    # name -> module name when every name is bound to an installed library's module: the
    # manifest then names the modules and the restore imports them (action "import")
    modules: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.key:
            self.key = unit_key(self.names)

    @property
    def serializable(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------- reuse cache


@dataclass
class CachedUnit:
    """What a checkpoint learnt about one co-variable value (see the module doc)."""

    names: tuple[str, ...]
    mark: int  # len(graph.cells) when it was serialized
    executions: int  # _executions when it was serialized
    nbytes: int
    error: str | None
    digest: str
    opaque: list[str]
    packages: list[str]
    digest_loaded: str | None = None
    lossy: str | None = None
    loaded_checked: bool = False
    blobs: dict[str, BlobRef] = field(default_factory=dict)  # store url -> stored blob
    consistent: dict[str, bool] = field(default_factory=dict)  # store url -> upload raced no cell
    pending: dict[str, Future] = field(default_factory=dict)  # store url -> upload in flight


class ReuseCache:
    """Per-kernel memory of serialized co-variables and their stored blobs; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graph: Any = None
        self._entries: dict[tuple, CachedUnit] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._graph = None

    def __len__(self) -> int:
        return len(self._entries)

    def key_for(self, graph: Any, u: Unit) -> tuple | None:
        if u.requires is None:
            return None
        try:
            return (tuple(u.names), tuple(graph.active[n] for n in u.names))
        except KeyError:
            return None

    def lookup(self, graph: Any, u: Unit) -> CachedUnit | None:
        """The entry for `u`'s current value, if one is known and still valid."""
        key = u.reuse_key
        if key is None:
            return None
        with self._lock:
            if self._graph is not graph:
                return None
            return self._entries.get(key)

    def blob_for(self, graph: Any, entry: CachedUnit, url: str) -> BlobRef | Future | None:
        """The stored blob (or the upload in flight) usable for `entry` in store `url`."""
        with self._lock:
            fut = entry.pending.get(url)
            ref = entry.blobs.get(url)
            consistent = entry.consistent.get(url, False)
        if fut is not None:
            # still being written while executions run: only a value no cell touched is whole
            return fut if _untouched_since(graph, entry.names, entry.mark) else None
        if ref is None:
            return None
        if consistent or _untouched_since(graph, entry.names, entry.mark):
            return ref
        return None

    def put(self, graph: Any, u: Unit, *, mark: int, executions: int) -> CachedUnit | None:
        """Remember `u`'s serialization facts (its blob comes later, through `stored`)."""
        if u.reuse_key is None:
            return None
        entry = CachedUnit(
            names=tuple(u.names), mark=mark, executions=executions, nbytes=u.nbytes,
            error=u.error, digest=u.digest, opaque=list(u.opaque), packages=list(u.packages),
            digest_loaded=u.digest_loaded, lossy=u.lossy,
        )
        with self._lock:
            if self._graph is not graph:
                self._entries.clear()
                self._graph = graph
            old = self._entries.get(u.reuse_key)
            if old is not None:  # keep what is already stored for the same value
                entry.blobs.update(old.blobs)
                entry.consistent.update(old.consistent)
                entry.pending.update(old.pending)
            self._entries[u.reuse_key] = entry
        return entry

    def pending(self, entry: CachedUnit, url: str, fut: Future) -> None:
        with self._lock:
            entry.pending[url] = fut

    def stored(self, entry: CachedUnit, url: str, ref: BlobRef | None, *, consistent: bool) -> None:
        """Record the outcome of an upload (None: it failed; forget any stale ref)."""
        with self._lock:
            entry.pending.pop(url, None)
            if ref is None:
                entry.blobs.pop(url, None)
                entry.consistent.pop(url, None)
            else:
                entry.blobs[url] = ref
                entry.consistent[url] = consistent or entry.consistent.get(url, False)

    def forget_blob(self, entry: CachedUnit, url: str) -> None:
        self.stored(entry, url, None, consistent=False)

    def retain(self, graph: Any, keys: Iterable[tuple | None]) -> None:
        """Drop entries of values that no longer exist (bounded memory)."""
        keep = {k for k in keys if k is not None}
        with self._lock:
            if self._graph is not graph:
                self._entries.clear()
                self._graph = graph
                return
            for k in [k for k, e in self._entries.items() if k not in keep and not e.pending]:
                del self._entries[k]


_reuse = ReuseCache()


def reuse_cache() -> ReuseCache:
    """The kernel's reuse cache (shared by planned and background checkpoints)."""
    return _reuse


def _untouched_since(graph: Any, names: Iterable[str], mark: int) -> bool:
    """No recorded cell from index `mark` on read, wrote, mutated or deleted any of `names`."""
    ns = set(names)
    for c in graph.cells[mark:]:
        if ns & set(c.reads) or ns & set(c.writes) or ns & set(c.mutated) or ns & set(c.deletes):
            return False
    return True


# ----------------------------------------------------------------------------- building blocks


def get_shell_and_monitor(shell: Any = None) -> tuple[Any, Any]:
    from kernel_agent.extension import get_monitor

    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        raise AgentNotLoaded("kernel_agent.checkpoint() must run inside an IPython kernel")
    mon = get_monitor(shell)
    if mon is None:
        raise AgentNotLoaded(
            "the kernel agent is not monitoring this kernel: run `%load_ext kernel_agent` "
            "before the cells whose state you want to checkpoint"
        )
    return shell, mon


def collect_units(mon: Any, ns: dict, names: list[str]) -> list[Unit]:
    """Group the user's variables into co-variables and find the cells that recreate each."""
    gen = iter_collect_units(mon, ns, names)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def iter_collect_units(
    mon: Any, ns: dict, names: list[str], chunk: int = 0
) -> Generator[None, None, list[Unit]]:
    """`collect_units` as a generator that yields every `chunk` names (0: never), so a
    background round can spread it over event-loop steps; the units are its return value."""
    graph = mon.graph
    dirty = _changed_by_running_cell(mon, ns, names)
    _record_outside_changes(mon, ns, [n for n in names if n not in dirty])
    try:
        # co-variables the monitor only marked as touched (too big to re-walk per cell) are
        # walked now: a link made inside them since must join their co-variables
        mon.tracker.refresh(ns)
    except Exception:  # noqa: BLE001
        log.exception("kernel_agent: could not refresh deferred co-variables")
    tracked = set(mon.tracker_names()) if hasattr(mon, "tracker_names") else None
    untracked = [n for n in names if n not in graph.active or (tracked is not None and n not in tracked)]
    if untracked:
        # Created before monitoring started or in silent executions: link them like any other.
        try:
            mon.tracker.update(ns, touched=untracked, removed=[])
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not track %s; each is checkpointed on its own", untracked)
    name_set = set(names)
    seen: set[str] = set()
    units: list[Unit] = []
    # once, not per name: computed by each `requirements` call it made a namespace of 10k
    # names take seconds to checkpoint (quadratic); afresh after a yield (cells may have run)
    active_ids = set(graph.active.values())
    for i, n in enumerate(names):
        if chunk and i and i % chunk == 0:
            yield
            active_ids = set(graph.active.values())
        if n in seen:
            continue
        try:
            group = sorted(set(mon.tracker.covariable_of(n)) & name_set) or [n]
        except Exception:  # noqa: BLE001
            group = [n]
        if n not in group:
            group = sorted({*group, n})
        seen.update(group)
        requires: set[int] | None = set()
        position = -1
        unrecorded: set[str] = set()
        for m in group:
            sid = graph.active.get(m)
            if sid is None or m in dirty:
                requires = None
                unrecorded.add(m)
                continue
            snap = graph.snapshot(sid)
            position = max(position, max(snap.producers, default=-1))
            if requires is not None:
                requires |= set(graph.requirements(sid, active_ids))
        u = Unit(group, sorted(requires) if requires is not None else None, position)
        u.unrecorded = unrecorded
        u.modules = library_modules(ns, group)
        u.reuse_key = _reuse.key_for(graph, u)
        units.append(u)
    return units


def library_modules(ns: dict, names: Iterable[str]) -> dict[str, str] | None:
    """{name: module name} when every name is bound to an installed library's module, which
    any kernel with the same image imports by name; else None.

    Such a co-variable needs neither a blob nor a cell: the manifest names the modules and the
    restore imports them. Shipped, a handful of bytes each still cost a blob and a round trip
    to the store, and under an eviction deadline with no time left they were dropped with
    everything else, so the re-run of every cell using `np` failed when the cell importing it
    also made a directory (not re-runnable). Not the notebook's own modules, nor modules it
    made or registered itself: their state is data (`changes.module_state`), shipped as such.
    """
    out: dict[str, str] = {}
    for n in names:
        v = ns.get(n)
        if type(v) is not ModuleType:
            return None
        modname = getattr(v, "__name__", None)
        if (type(modname) is not str or modname in ("__main__", "builtins")
                or sys.modules.get(modname) is not v or getattr(v, "__spec__", None) is None
                or module_state(v) is not None):
            return None
        out[n] = modname
    return out or None


def _record_outside_changes(mon: Any, ns: dict, names: list[str]) -> None:
    """Values changed since the last recorded cell that touched them, by no recorded cell (a
    widget callback, a thread, an asyncio task, a silent execution; `Tracker.drifted`):
    re-running their cells would recreate them as they were before, and what an earlier
    checkpoint stored of them is stale. The monitor records the change in the history
    (`CellExecution.outside`), for this checkpoint and every later one: they are shipped
    when they can be (`_covar_cost`), and a reused blob's key no longer matches. Checked
    before `refresh`, which would take their current state as the tracker's."""
    tracker = getattr(mon, "tracker", None)
    if tracker is None or not hasattr(mon, "record_outside_changes"):
        return
    try:
        found = tracker.drifted(ns, names)
        stale = getattr(mon, "outside_stale", None)
        if stale is not None:
            # what notebook code running outside the cells (a task, a thread, an event
            # callback) may have changed since a cell last touched it, in a way no walk shows:
            # an iterator a task advanced is recomputed at its first position, checked by type
            found |= tracker.unprovable(stale(names))
        if found:
            mon.record_outside_changes(found)
    except Exception:  # noqa: BLE001 - a check: a failure only leaves it undone
        log.exception("kernel_agent: could not check for changes made outside recorded cells")


def _changed_by_running_cell(mon: Any, ns: dict, names: list[str]) -> set[str]:
    """Names the cell now executing may have changed: the history does not cover them yet.

    A checkpoint called from a cell (`x = 5; kernel_agent.checkpoint(url)`) sees values that no
    recorded cell produced; re-running history would recreate the old `x`. Such names must be
    shipped as they are.
    """
    pending = getattr(mon, "_pending", None)
    if pending is None:
        return set()
    ana = getattr(pending, "analysis", None)
    if ana is None or ana.dynamic:
        return set(names)
    ids = pending.ids
    touched = set(ana.reads) | set(ana.stores) | set(ana.maybe_written)
    return {n for n in names if n in touched or ids.get(n) != id(ns[n])}


def serialize_unit(u: Unit, ns: dict) -> None:
    """Trial-serialize and digest one co-variable (main thread: reads live objects)."""
    values = {n: ns[n] for n in u.names}
    s = dumps(values)
    u.parts, u.nbytes, u.error = (s.parts if s.error is None else None), s.nbytes, s.error
    u.loads_into_live = bool(getattr(s, "loads_into_live", False))
    u.lossy = getattr(s, "lossy", None)
    try:
        report = digest_report(values)
        u.digest, u.opaque = report.digest, sorted(report.opaque)
        u.links = (report.links, report.objects)
    except Exception as e:  # noqa: BLE001 - verification then reports it, not the checkpoint
        log.exception("kernel_agent: digest of %s failed", u.names)
        u.digest = f"error:{type(e).__name__}"
    u.packages = sorted({p for v in values.values() for p in environment.top_modules(v)})


LOADED_DIGEST_MAX_BYTES = 64 << 20
FALLBACK_SPEED = Bandwidth(write_Bps=50e6, read_Bps=100e6, latency_s=0.05)


def check_loaded_digest(u: Unit) -> None:
    """Record the digest of the value *as its pickle rebuilds it*, when that differs.

    Some library objects fill in lazily computed state when unpickled (numpy's masked arrays
    compute a fill value), so the loaded value digests differently from the live one although
    it is the same value; the restore accepts either (``CovariableEntry.digest_loaded``). Done
    for shipped units only (only they are loaded from a pickle), up to a size cap (it loads a
    copy), never for blobs holding notebook classes or the notebook's own modules (loading them
    again in this process would re-apply their state to the live class or module: the trial
    load of a `utils.py` module replaced its globals with copies, breaking the aliases cells
    had made of them).

    A load that comes back with fewer identity relations or more objects than the live value
    (`v = vars(ns)` no longer the instance's dict, a memoryview no longer over its bytearray, a
    list no longer the module's global) is not "the same value, with state filled in": it is
    not recorded, so the restore does not take that copy for the value (it recomputes it, or
    reports it).
    """
    if (u.parts is None or u.error is not None or u.loads_into_live or u.lossy is not None
            or u.nbytes > LOADED_DIGEST_MAX_BYTES):
        return  # (lossy: its pickle is known not to rebuild it; what it loads is not it)
    from kernel_agent.buffers import BlobBuffer
    from kernel_agent.changes import digest_report
    from kernel_agent.serialize import loads

    try:
        blob = BlobBuffer(u.nbytes)
        view, off = memoryview(blob), 0
        for p in u.parts:
            mv = memoryview(p).cast("B")
            view[off : off + mv.nbytes] = mv
            off += mv.nbytes
        view.release()
        got = digest_report(loads(blob, namespace={"__name__": "__main__"}))
    except Exception:  # noqa: BLE001 - the restore then verifies against the live digest only
        log.debug("kernel_agent: could not digest %s as loaded", u.names, exc_info=True)
        return
    if got.digest == u.digest:
        return
    links, objects = u.links
    if got.links < links or got.objects > objects:
        log.info("kernel_agent: %s loses identity relations when loaded from its pickle (%d "
                 "links and %d objects, was %d and %d)", u.names, got.links, got.objects, links,
                 objects)
        return
    u.digest_loaded = got.digest


def environment_of(units: list[Unit], mon: Any = None, graph: Any = None,
                   ns: dict | None = None) -> dict:
    """`environment.capture` from the units' recorded libraries (no walk over the values), and
    the process state the session changed (`carried`)."""
    env = environment.capture(())
    packages = sorted({p for u in units for p in u.packages})
    env["packages"] = {p: environment._version(p) for p in packages}
    env["process"] = carried.capture(getattr(mon, "baseline", None))
    if graph is not None and ns is not None:
        env["attachments"] = carried.attachments(graph.cells, ns)
    return env


def apply_cached(u: Unit, entry: CachedUnit) -> None:
    """Take a unit's facts from the cache instead of serializing it again."""
    u.reused = entry
    u.nbytes, u.error, u.digest = entry.nbytes, entry.error, entry.digest
    u.opaque, u.packages = list(entry.opaque), list(entry.packages)
    u.digest_loaded, u.lossy = entry.digest_loaded, entry.lossy


#: what re-running a cell whose results vary (`CellExecution.varies`) costs the planner on top
#: of its runtime: more than shipping anything, so that it is re-run only where shipping is
#: not possible (no pickle, or a deadline); taken out of the plan's estimates again
VARIES_PENALTY_S = 10_000.0


#: why re-running a cell that reads a set of objects hashed by address may make other values
ADDRESS_ORDER = ("it reads {name}, a set of objects hashed by their address: it iterates in "
                 "another order in another process")


def _address_ordered(value: Any) -> bool:
    """A set or frozenset (or one held directly by a dict, a list or an instance's dict) whose
    iteration order follows the addresses of its elements: two or more, one at least hashed by
    ``object.__hash__`` (first 1000 looked at)."""
    def ordered_by_address(s: Any) -> bool:
        return (isinstance(s, (set, frozenset)) and len(s) > 1 and any(
            type(e).__hash__ is object.__hash__ for e in itertools.islice(s, 1000)))

    if ordered_by_address(value):
        return True
    held = getattr(value, "__dict__", None) if not isinstance(value, (dict, list, tuple)) else value
    if isinstance(held, dict):
        held = held.values()
    if not isinstance(held, (list, tuple, type({}.values()))):
        return False
    return any(ordered_by_address(v) for v in itertools.islice(held, 100))


def note_address_order(graph: Any, ns: dict | None) -> None:
    """Mark the cells that read a set ordered by address (`_address_ordered`) as cells whose
    results vary when re-run (`CellExecution.varies`), so what they made is shipped.

    ``order = [o.n for o in s]`` over a set of notebook objects (hashed by address) lists them
    in their addresses' order: the optimal plan re-ran that cheap cell against the loaded ``s``,
    whose objects sit elsewhere, and ``order`` came back in another order (not verified) while
    its copy would have been right. Checkpoint time only: the names cells read, as they are now.
    """
    if not ns:
        return
    verdict: dict[str, bool] = {}
    for c in graph.cells:
        for name in c.reads:
            hit = verdict.get(name)
            if hit is None:
                try:
                    hit = verdict[name] = name in ns and _address_ordered(ns[name])
                except Exception:  # noqa: BLE001 - a hostile __getattr__ or __len__: not it
                    hit = verdict[name] = False
            if hit:
                reason = ADDRESS_ORDER.format(name=name)
                if reason not in c.varies:
                    c.varies.append(reason)
                break


def _cell_costs(graph: Any) -> dict[int, CellCost]:
    costs = {}
    for c in graph.cells:
        reasons = c.rerun_blockers()
        costs[c.index] = CellCost(
            index=c.index,
            runtime_s=float(c.runtime_s) + (VARIES_PENALTY_S if c.varies else 0.0),
            rerunnable=not reasons,
            reason="; ".join(reasons) or None,
        )
    return costs


STRATEGIES = ("optimal", "ship-all", "recompute-all")


def _covar_cost(u: Unit, graph: Any, strategy: str) -> CovarCost:
    requires = u.requires or []  # none: no recorded cell recreates it, so it must be shipped
    serializable, error = u.error is None, u.error
    if any(graph.cells[i].outside for i in requires):
        # changed outside recorded cells since: re-running its cells recreates it as it was
        # before that (for a value that cannot be shipped that is still what there is, and
        # the restore's verification reports the difference)
        if serializable:
            requires = []
        elif u.opaque:
            # ... unless what differs is checked by type only: a generator a task or an
            # event callback advanced verified at its first position, re-made by its cells
            requires = []
            error = (f"{error}; changed outside recorded cells, which re-running its cells "
                     f"does not redo, and {', '.join(u.opaque)} can only be checked by type")
    lossy = u.lossy or identity_note(graph, u.names)
    if serializable and lossy and requires and all(cells_ok(graph, requires)):
        # its pickle loads but is not the same value (a cache that comes back empty, ids of
        # this process's objects): re-run its cells, under every strategy; when they cannot
        # be, it is shipped and the restore reports it not verified
        serializable, error = False, lossy
    if strategy == "ship-all" and serializable:
        requires = []
    elif strategy == "recompute-all" and serializable and requires and all(cells_ok(graph, requires)):
        serializable, error = False, "strategy recompute-all"
    return CovarCost(
        key=u.key, names=u.names, nbytes=u.nbytes, serializable=serializable, error=error,
        requires=requires,
    )


#: why a namespace key that is not a string is in no checkpoint (`Monitor.keys_not_names`)
KEY_NOTE = ("not checkpointed: a namespace key that is not a string (`globals()[1] = ...`) is "
            "no variable and is not kept; bind the value to a name")

#: why a `_`-prefixed name is in no checkpoint (`Monitor.private_names`)
PRIVATE_NOTE = ("not checkpointed: names starting with '_' are taken for IPython's and the "
                "kernel's own and are not kept; bind the value to a name without it")


def identity_note(graph: Any, names: list[str]) -> str | None:
    """Why a copy of these values is not them, when cells that call ``id()`` produced them
    (`HistoryGraph.identity_cells`), else None."""
    cells = graph.identity_producers(names) if hasattr(graph, "identity_producers") else []
    if not cells:
        return None
    which = ", ".join(map(str, cells[:5])) + (" ..." if len(cells) > 5 else "")
    return (f"it may hold id() values (cell {which} calls id() or reads what one made): ids are "
            "this process's addresses, a copy loaded elsewhere would keep them while its objects "
            "live at others; only re-running its cells makes them again")


def identity_digest(graph: Any, ns: Mapping[str, Any], names: list[str],
                    present: Collection[str]) -> str | None:
    """For values cells calling ``id()`` produced (`identity_note`): their digest with every
    id of an object reached from the names those cells used (and from `names`) taken as that
    object's place (`changes.id_tokens`), else None. Re-run at a restore, ``{id(o): o for o
    in objs}`` holds the ids of the restored objects, so its plain digest cannot match; this
    one does when each key is the id of the object at the same place. `present`: the names
    the checkpoint holds (the restore maps the same ones)."""
    if not (hasattr(graph, "identity_producers") and graph.identity_producers(names)):
        return None
    try:
        anchors = id_anchor_names(graph, names, present)
        tokens = id_tokens({n: ns[n] for n in anchors})
        return digest_report({n: ns[n] for n in names}, ids=tokens).digest
    except Exception:  # noqa: BLE001 - the restore then reports it not verified, as before
        log.exception("kernel_agent: id digest of %s failed", names)
        return None


def id_anchor_names(graph: Any, names: Collection[str], present: Collection[str]) -> list[str]:
    """`names` and every name a cell that calls ``id()`` read, wrote or changed, among
    `present`: where the objects whose ids such values hold are reached from."""
    used = {n for c in graph.cells if c.uses_id for n in (*c.reads, *c.writes, *c.mutated)}
    return sorted((set(names) | used) & set(present))


def cells_ok(graph: Any, cells: list[int]) -> list[bool]:
    """Whether each cell may be re-run (`CellExecution.rerun_blockers`)."""
    return [graph.cells[i].rerunnable for i in cells]


PROCESS_STATE_MAX_S = 1.0
#: the same for a cell with import statements: importing takes what it takes (pandas over a
#: second on a busy machine, torch several), and the restore imports those modules anyway to
#: load the values that use them
PROCESS_STATE_IMPORT_MAX_S = 60.0


def process_state_cells(graph: Any, ns: dict) -> list[int]:
    """Cells to replay whatever the plan: they set process state.

    ``pd.set_option(...)``, ``sys.setrecursionlimit(...)``, ``os.environ[...] = ...``,
    ``%matplotlib inline``: the monitor marks them as context cells (they read a module or use
    the shell and change no user name) or as cells that changed the environment, paths or
    library options (an import cell that also sets options binds names too). Shipping every
    variable does not bring that state back, so a restore re-runs them in order. Only those
    that read nothing but modules (a cell that printed a variable may need a value the replay
    has not loaded yet at its position, and it set no state anyway), read no file but
    Python sources unless they did change process state (``pd.read_csv(p).head()`` displays,
    it sets nothing; ``%load_ext autoreload`` reads the source of every module the notebook
    imported; ``load_dotenv()`` reads ``.env`` and sets the environment from it: a file read
    that changed since makes the cell not re-runnable anyway) and are quick (a ``time.sleep`` or a
    long display is no setting; a cell that imports is given the time imports take: the usual
    first cell imports pandas and sets its options, and on a busy machine it took more than a
    second, so its options were not restored).

    A library's configuration object read through a variable (``from matplotlib import
    rcParams``, then ``rcParams['figure.figsize'] = (10, 6)``) counts as a module: it comes back
    as the restoring process's own (`libobjects`), so what the cell set is set by its re-run
    only; else the restored plots silently lost the notebook's settings.

    A cell that sets an attribute of a module or of what a module holds (``pd.DataFrame.
    summary = summary``, ``builtins.helper = helper``, ``np.scale = lambda a: a * k``) with
    the notebook's own values is one too, when every value it reads was last changed at or
    before it (the replay has then put it in place by the cell's position): shipping the
    function did not patch the library again, and ``df.summary()`` raised after the restore.
    """
    out = []
    library = libobjects.by_id()
    last_change: dict[str, int] | None = None
    for c in graph.cells:
        if not (c.context or c.process_state) or not c.rerunnable:
            continue
        if not c.process_state and any(not f.endswith(".py") for f in c.files_read):
            continue
        if c.runtime_s > (PROCESS_STATE_IMPORT_MAX_S if _has_import(c.code) else PROCESS_STATE_MAX_S):
            continue
        plain = [n for n in c.reads
                 if not isinstance(v := ns.get(n), ModuleType) and id(v) not in library]
        if plain:
            words = _setting_magic_words(c.code) if "%" in c.code else None
            if words is not None:
                # (`%pdb on` after the first variables: a magic the analysis takes for one
                # reading the whole namespace, which reads only what its arguments name)
                plain = [n for n in plain if n in words]
            elif not any(isinstance(ns.get(r), ModuleType) for r in _attribute_roots(c.code)):
                continue
        if plain:
            if last_change is None:
                last_change = _last_changes(graph)
            if not all(n in ns and last_change.get(n, -1) <= c.index for n in plain):
                continue
        out.append(c.index)
    return out


#: line magics that set the shell up (`%pdb on`, `%precision 3`, `%config X.y = 5`,
#: `%autoreload 2`): some are among the magics the analysis takes for reading the whole
#: namespace (`analysis.DYNAMIC_MAGICS`), which they read no further than their arguments
#: (`%config` executes its assignment in the namespace)
SETTING_MAGICS = frozenset({"pdb", "precision", "config", "xmode", "automagic", "autocall",
                            "colors", "autoawait", "autoreload", "aimport", "matplotlib",
                            "doctest_mode", "alias", "unalias"})


@functools.lru_cache(maxsize=1024)
def _setting_magic_words(code: str) -> frozenset[str] | None:
    """The identifiers in the arguments of a cell made of nothing but `SETTING_MAGICS` lines
    (None: it is not)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        body = ast.parse(TransformerManager().transform_cell(code)).body
    except Exception:  # noqa: BLE001 - not IPython's syntax either: no such cell
        return None
    words: set[str] = set()
    for node in body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                and call.func.attr == "run_line_magic" and len(call.args) == 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
                and call.args[0].value in SETTING_MAGICS):
            return None
        words |= set(_IDENTIFIER.findall(call.args[1].value))
    return frozenset(words) if body else None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _attribute_roots(code: str) -> set[str]:
    """Names at the root of the attributes a cell assigns (``a.b.c = v``, ``a.b += v``:
    ``a``); none when it does not parse (IPython syntax)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Attribute):
                root: ast.expr = t
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name):
                    roots.add(root.id)
    return roots


def _last_changes(graph: Any) -> dict[str, int]:
    """Name -> index of the last cell that bound, changed or deleted it."""
    last: dict[str, int] = {}
    for c in graph.cells:
        for n in (*c.writes, *c.mutated, *c.deletes):
            last[n] = c.index
    return last


def _has_import(code: str) -> bool:
    """Whether a cell's source has an import statement (IPython syntax: a line at a time)."""
    return any(line.lstrip().startswith(("import ", "from ")) for line in code.splitlines())


def make_plan(
    graph: Any,
    units: list[Unit],
    store: Store,
    *,
    deadline_s: float | None = None,
    memory_cap_bytes: int | None = None,
    objective: str = "migration",
    started: float | None = None,
    strategy: str = "optimal",
    ns: dict | None = None,
) -> Plan:
    """Ship or recompute each unit.

    `deadline_s` is the whole checkpoint's budget from `started` (perf_counter): what
    serializing and measuring already took, and a margin for committing the manifest, is not
    available to the planner, whose deadline covers shipping only. `strategy` "ship-all" or
    "recompute-all" overrides the optimization (for comparisons and for operators who know
    better): each unit is then forced one way wherever it can go that way at all.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    try:
        speed = store.measure()
    except StoreError as e:
        # the probe writes 8 MiB: on a nearly full volume it fails where a small checkpoint
        # would still fit; plan with conservative figures and let the real writes decide
        log.warning("kernel_agent: could not measure %s (%s); planning with defaults", store.url, e)
        speed = FALLBACK_SPEED
    if deadline_s is not None and started is not None:
        deadline_s -= time.perf_counter() - started
    note_address_order(graph, ns)
    problem = PlanProblem(
        cells=_cell_costs(graph),
        covars=[_covar_cost(u, graph, strategy) for u in units if not u.modules],
        speed=StoreSpeed(write_Bps=speed.write_Bps, read_Bps=speed.read_Bps, per_object_s=speed.latency_s),
        deadline_s=(
            max(0.0, deadline_s - 0.5 - speed.latency_s) if deadline_s is not None else None
        ),
        memory_cap_bytes=memory_cap_bytes,
        objective=objective,
    )
    result = plan(problem)
    varying = [i for i in result.rerun if graph.cells[i].varies]
    if varying:
        result.est_restore_s -= VARIES_PENALTY_S * len(varying)
        result.est_total_s -= VARIES_PENALTY_S * len(varying)
        result.notes.append(
            f"re-runs cell(s) {', '.join(map(str, varying))} although re-run they may make other "
            f"values ({graph.cells[varying[0]].varies[0]}): what they made could not be shipped")
    extra = sorted(set(process_state_cells(graph, ns or {})) - set(result.rerun))
    if extra:
        cost = sum(problem.cells[i].runtime_s for i in extra)
        result.rerun = sorted(set(result.rerun) | set(extra))
        result.est_restore_s += cost
        result.est_total_s += cost
        result.notes.append(
            f"re-runs cell(s) {', '.join(map(str, extra))}: they set process state (options, "
            "environment, paths, magics) that shipped variables do not carry")
    return result


def _last_own_snapshot(graph: Any, name: str) -> int | None:
    """The snapshot `name` got from the last cell that wrote or changed it (None: none did).

    Its active snapshot may be younger: a later cell that bound another name to objects it
    shares (`found = [.., m]`) made one snapshot of both, produced by that cell, although m's
    value did not change. Change detection marks every name whose reachable objects changed,
    so the last cell that wrote or mutated `name` is where its value is as it is now.
    """
    for c in reversed(graph.cells):
        if name in c.writes or name in c.mutated:
            for sid in c.output_snapshots:
                if name in graph.snapshots[sid].names:
                    return sid
            return None
        if name in c.deletes:
            return None
    return None


def salvage_lost(graph: Any, units: list[Unit], the_plan: Plan, ns: dict) -> list[Unit] | None:
    """The units again, with each lost co-variable split into the names their own cells
    recreate and the rest (still lost); None when no lost co-variable has such names.

    A co-variable is one because its names share objects, and it is lost as a whole when it can
    be neither shipped nor recomputed. `m = pat.match(s)` (cell 0), then `found = [pat.search(t),
    m]` in a cell that also writes a file: a match object has no pickle and cell 1 cannot be
    re-run, so {found, m} was lost, and m with it, although re-running cell 0 recreates m. What
    m shares with found no longer matters once found is gone, so m is recomputed alone, against
    a digest of its own, and only found is lost. The rest is never shipped apart from them (its
    copy of what they share would verify while the sharing was gone): it keeps the reason the
    whole was lost.
    """
    out: list[Unit] = []
    changed = False
    for u in units:
        if u.key not in the_plan.lost or len(u.names) < 2:
            out.append(u)
            continue
        keep: list[str] = []
        requires: set[int] = set()
        position = -1
        for n in u.names:
            sid = None if n in u.unrecorded else _last_own_snapshot(graph, n)
            if sid is None:
                continue
            own = sorted(graph.requirements(sid))
            if not own or not all(cells_ok(graph, own)) or any(graph.cells[i].outside for i in own):
                continue
            keep.append(n)
            requires.update(own)
            position = max(position, max(graph.snapshot(sid).producers, default=-1))
        if not keep or len(keep) == len(u.names):
            graph_split = _without_autograd_graphs(graph, u, the_plan, ns)
            if graph_split is None:
                out.append(u)
            else:
                changed = True
                out += graph_split
            continue
        changed = True
        alone = Unit(keep, sorted(requires), position)
        serialize_unit(alone, ns)
        rest_names = [n for n in u.names if n not in keep]
        rest = Unit(rest_names, _requirements_of(graph, u, rest_names), u.position,
                    digest=u.digest, opaque=[o for o in u.opaque if o in rest_names],
                    packages=list(u.packages), unrecorded=u.unrecorded & set(rest_names))
        # (never shipped apart: not serializable to the planner, and lost for the reason
        # the whole was, `plan_salvaging`)
        rest.error = u.error or "shares objects with names recomputed apart from it"
        rest.lost_reason = _part_lost_reason(u, the_plan, rest_names, keep, "objects",
                                             "recomputed apart")
        out += [alone, rest]
        log.info("kernel_agent: %s lost, %s recreated by their own cells", rest_names, keep)
    return out if changed else None


def _part_lost_reason(u: Unit, the_plan: Plan, lost: list[str], others: list[str],
                      shared: str, fate: str) -> str:
    """Why the names `lost` of the lost co-variable `u` stay lost when `others` of it are
    split off: the whole's reason, and what became of the others."""
    why = the_plan.lost[u.key]
    label = ", ".join(u.names) + ": "
    why = why[len(label):] if why.startswith(label) else why
    return (f"{', '.join(lost)}: {why} ({', '.join(others)}, sharing {shared} with "
            f"{'it' if len(lost) == 1 else 'them'}, {'is' if len(others) == 1 else 'are'} "
            f"{fate})")


def _requirements_of(graph: Any, u: Unit, names: list[str]) -> list[int] | None:
    """The cells `names` of the co-variable `u` need, as a unit of their own; None when one
    of them has no recorded producer (it cannot be recomputed)."""
    requires: set[int] = set()
    for n in names:
        sid = graph.active.get(n)
        if sid is None or n in u.unrecorded:
            return None
        requires.update(graph.requirements(sid))
    return sorted(requires)


def _holds_autograd_graph(v: Any) -> bool:
    """`v` is a tensor computed with autograd (it has a graph, which does not pickle), or a
    list, tuple or dict holding one directly (``losses.append(loss)`` without ``.item()``)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    items = (v.values() if type(v) is dict else v if type(v) in (list, tuple) else (v,))
    try:
        return any(isinstance(x, torch.Tensor) and x.requires_grad and not x.is_leaf
                   for x in itertools.islice(items, 100_000))
    except Exception:  # noqa: BLE001 - an odd tensor: not split off
        return False


def _without_autograd_graphs(graph: Any, u: Unit, the_plan: Plan, ns: dict) -> list[Unit] | None:
    """A lost co-variable split into the names holding a tensor with an autograd graph (still
    lost) and the rest, serialized on its own; None when it is not lost for such a graph or the
    rest does not pickle either.

    A tensor computed with autograd is one co-variable with the parameters its graph reaches
    (`changes._graph_leaves`): ``loss`` left over from a training loop ties itself to ``model``
    and its optimizer. Its graph does not pickle, so when the training cells cannot be re-run
    (they saved a checkpoint file) the whole was lost, the trained model with it. What the rest
    shares with ``loss`` no longer matters once ``loss`` is gone (`salvage_lost`): the rest is
    shipped against a digest of its own, and only ``loss`` is lost."""
    if not u.error or "autograd" not in u.error:
        return None
    held = [n for n in u.names if n in ns and _holds_autograd_graph(ns[n])]
    rest_names = [n for n in u.names if n not in held]
    if not held or not rest_names:
        return None
    rest = Unit(rest_names, _requirements_of(graph, u, rest_names), u.position,
                unrecorded=u.unrecorded & set(rest_names))
    serialize_unit(rest, ns)
    if rest.error is not None:
        return None
    lost = Unit(held, u.requires, u.position, digest=u.digest,
                opaque=[o for o in u.opaque if o in held], packages=list(u.packages),
                unrecorded=u.unrecorded & set(held))
    lost.error = u.error
    lost.lost_reason = _part_lost_reason(u, the_plan, held, rest_names, "tensors", "kept apart")
    log.info("kernel_agent: %s lost (autograd graphs), %s kept apart", held, rest_names)
    return [rest, lost]


def plan_salvaging(graph: Any, units: list[Unit], store: Store, ns: dict,
                   **kw: Any) -> tuple[list[Unit], Plan]:
    """`make_plan`, then again with the lost co-variables split (`salvage_lost`) if any
    can be: the units planned and their plan. What was split off stays lost for the reason
    the whole was (a deadline, a pickling error), not for the planner's reading of the split."""
    the_plan = make_plan(graph, units, store, ns=ns, **kw)
    salvaged = salvage_lost(graph, units, the_plan, ns)
    if salvaged is None:
        return units, the_plan
    the_plan = make_plan(graph, salvaged, store, ns=ns, **kw)
    for u in salvaged:
        if u.lost_reason and u.key in the_plan.lost:
            the_plan.lost[u.key] = u.lost_reason
    return salvaged, the_plan


def new_checkpoint_id(background: bool = False) -> str:
    cid = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)
    return cid + BACKGROUND_SUFFIX if background else cid


_new_checkpoint_id = new_checkpoint_id  # older name, kept for callers


def build_manifest(
    *,
    cid: str,
    graph_dict: dict,
    the_plan: Plan,
    units: list[Unit],
    refs: dict[str, BlobRef],
    rng_final: dict,
    env: dict,
    stats: dict,
    execution_count: int,
    parent: str | None,
    background: bool,
) -> Manifest:
    entries = []
    for u in units:
        action = ("import" if u.modules else "ship" if u.key in refs
                  else "lost" if u.key in the_plan.lost else "recompute")
        entries.append(
            CovariableEntry(
                key=u.key,
                names=u.names,
                action=action,
                digest=u.digest,
                position=u.position,
                requires=u.requires,
                blob=refs[u.key].key if action == "ship" else None,
                nbytes=u.nbytes,
                opaque=u.opaque,
                error=u.error,
                reason=the_plan.lost.get(u.key),
                packages=u.packages,
                digest_loaded=u.digest_loaded if action == "ship" else None,
                modules=dict(u.modules) if u.modules else None,
                digest_ids=u.digest_ids if action == "recompute" else None,
            )
        )
    return Manifest(
        checkpoint_id=cid,
        created=datetime.now(timezone.utc).isoformat(),
        graph=graph_dict,
        plan=the_plan.to_dict(),
        covariables=entries,
        rng_final=rng_final,
        environment=env,
        stats=stats,
        execution_count=execution_count,
        parent=parent,
        background=background,
    )


def fault_pause(stage: str = "commit") -> None:
    """The documented test hook (module doc): pause before committing when asked to."""
    base = os.environ.get(FAULT_PAUSE_ENV)
    if not base:
        return
    release = Path(base + ".release")
    if release.exists():
        return
    Path(base + ".reached").write_text(f"{os.getpid()} {stage}\n")
    timeout = float(os.environ.get(FAULT_PAUSE_TIMEOUT_ENV, "300"))
    deadline = time.monotonic() + timeout
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # a test hook's bounded poll, never used in production


def commit(store: Store, manifest: Manifest, *, keep_last: int | None = None) -> None:
    """Write the manifest (the checkpoint now exists) and apply retention; caller holds _lock."""
    global _generation
    store.put_manifest(manifest.checkpoint_id, manifest.to_bytes(signing_key()))
    _last_checkpoint[store.url] = manifest.checkpoint_id
    _generation += 1
    if keep_last:
        try:
            store.prune(keep_last)
        except Exception:  # noqa: BLE001 - retention must never fail a checkpoint
            log.exception("kernel_agent: pruning %s to the last %d checkpoints failed", store.url, keep_last)


# ----------------------------------------------------------------------------- checkpoint


def checkpoint(
    url: str,
    *,
    deadline_s: float | None = None,
    memory_cap_bytes: int | None = None,
    objective: str = "migration",
    keep_last: int | None = None,
    store_options: dict | None = None,
    shell: Any = None,
    store: Store | None = None,
    reuse: bool = True,
    strategy: str = "optimal",
) -> dict:
    """Write a checkpoint of this kernel's session to `url`; returns a JSON-able summary.

    `deadline_s` bounds the time spent shipping data (an eviction grace period): the planner
    then recomputes more at restore. Unserializable values are recomputed, values produced by
    cells that are unsafe to re-run are shipped, and values that are both are reported as lost.
    With `reuse` (default), co-variables unchanged since a previous checkpoint of this kernel
    (planned or background) are neither serialized nor uploaded again (module doc);
    ``stats`` reports ``bytes_uploaded`` vs ``bytes_reused``.
    """
    from kernel_agent import restoring

    if restoring.replaying():
        # a recorded cell that called checkpoint() is being re-run by a restore
        return {"skipped": "a restore is re-running recorded cells; no checkpoint taken"}
    effects.note_agent_call("checkpoint", effect=False)
    shell, mon = get_shell_and_monitor(shell)
    if getattr(mon, "_pending", None) is None and hasattr(mon, "check_files"):
        # called between cells (server extension, preStop): files changed outside the notebook
        # since the last cell make the cells that read them unsafe to re-run
        mon.check_files()
    with _lock:
        t0 = time.perf_counter()
        store = store or open_store(url, **(store_options or {}))
        store.measure_soon()  # the bandwidth probe's I/O overlaps the serialization below
        ns = shell.user_ns
        names = sorted(mon.user_names(ns))
        units = collect_units(mon, ns, names)
        graph = mon.graph
        mark = len(graph.cells)
        _reuse.retain(graph, [u.reuse_key for u in units])

        t_ser = time.perf_counter()
        serialized = 0
        for u in units:
            entry = _reuse.lookup(graph, u) if reuse else None
            if entry is not None:
                apply_cached(u, entry)
            else:
                serialize_unit(u, ns)
                serialized += 1
                _reuse.put(graph, u, mark=mark, executions=_executions)
        serialize_s = time.perf_counter() - t_ser

        t_plan = time.perf_counter()
        units, the_plan = plan_salvaging(graph, units, store, ns, deadline_s=deadline_s,
                                         started=t0, memory_cap_bytes=memory_cap_bytes,
                                         objective=objective, strategy=strategy)
        plan_s = time.perf_counter() - t_plan

        t_up = time.perf_counter()
        by_key = {u.key: u for u in units}
        ship = [by_key[k] for k in the_plan.ship]
        refs = _upload(store, graph, ns, ship, mark)
        upload_s = time.perf_counter() - t_up

        for u in units:
            if u.key not in refs and u.key not in the_plan.lost:
                u.digest_ids = identity_digest(graph, ns, u.names, names)

        fault_pause("commit")
        cid = new_checkpoint_id()
        uploaded = [r for r in refs.values() if r.uploaded]
        stats = {
            "bytes_shipped": sum(r.size for r in refs.values()),
            "bytes_uploaded": sum(r.size for r in uploaded),
            "bytes_reused": sum(r.size for r in refs.values() if not r.uploaded),
            "blobs_uploaded": len(uploaded),
            "blobs_reused": len(refs) - len(uploaded),
            "units_serialized": serialized,
            "units_reused": len(units) - serialized,
            "bytes_total_state": sum(u.nbytes for u in units),
            "serialize_s": serialize_s,
            "plan_s": plan_s,
            "upload_s": upload_s,
        }
        private = mon.private_names(ns) if hasattr(mon, "private_names") else []
        if private:
            # not kept (see Monitor.private_names): said here and again by the restore
            stats["private_names"] = private
        odd_keys = mon.keys_not_names(ns) if hasattr(mon, "keys_not_names") else []
        if odd_keys:
            # (see Monitor.keys_not_names): said here and again by the restore
            stats["keys_not_names"] = odd_keys
        manifest = build_manifest(
            cid=cid,
            graph_dict=graph.to_dict(),
            the_plan=the_plan,
            units=units,
            refs=refs,
            rng_final=rng.capture(),
            env={**environment.capture(ns[n] for n in names),
                 "process": carried.capture(getattr(mon, "baseline", None)),
                 "attachments": carried.attachments(graph.cells, ns)},
            stats=stats,
            execution_count=int(getattr(shell, "execution_count", 0) or 0),
            parent=_last_checkpoint.get(store.url),
            background=False,
        )
        t_commit = time.perf_counter()
        commit(store, manifest, keep_last=keep_last)
        _committed_state[store.url] = (id(graph), mark)
        stats["commit_s"] = time.perf_counter() - t_commit
        stats["total_s"] = time.perf_counter() - t0
        return _summary(store, manifest, the_plan)


def _upload(store: Store, graph: Any, ns: dict, ship: list[Unit], mark: int) -> dict[str, BlobRef]:
    """Store the shipped units' blobs: reuse what is stored (or being stored), upload the rest.

    Reused blobs are checked to exist (a prune may have collected them); a unit whose stored
    blob is gone, or whose background upload failed, is serialized again here (main thread).
    A failed upload raises before the manifest: nothing becomes visible.
    """
    refs: dict[str, BlobRef] = {}
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="kernel-agent-upload") as pool:

        def check(prev: BlobRef | Future) -> BlobRef | None:
            if isinstance(prev, Future) and prev.cancel():
                return None  # a background upload not started yet: upload it here instead
            try:
                ref = prev.result() if isinstance(prev, Future) else prev
            except Exception:  # noqa: BLE001 - the background upload failed: upload it here
                return None
            if ref is None or not store.has_blob(ref.key):
                return None
            return BlobRef(ref.key, ref.size, False)

        checks: dict[str, Future] = {}
        for u in ship:
            prev = _reuse.blob_for(graph, u.reused, store.url) if u.reused is not None else None
            if prev is not None:
                checks[u.key] = pool.submit(check, prev)
        uploads: dict[str, Future] = {}
        for u in ship:
            if u.key in checks or u.parts is None:
                continue
            uploads[u.key] = pool.submit(store.put_blob, u.parts)
            loaded_digest_once(graph, u)
        redo: list[Unit] = []
        for u in ship:
            if u.key in checks:
                ref = checks[u.key].result()
                if ref is not None:
                    refs[u.key] = ref
                    continue
                redo.append(u)
            elif u.parts is None:
                redo.append(u)  # reused facts but no stored blob in this store
        for u in redo:  # main thread: serialize again (a cached entry for another store, say)
            digest = u.digest
            serialize_unit(u, ns)
            if u.error is not None:
                raise StoreError(f"{', '.join(u.names)} could not be serialized again: {u.error}")
            if u.digest != digest:
                log.warning("kernel_agent: %s changed without the monitor noticing", u.names)
            uploads[u.key] = pool.submit(store.put_blob, u.parts)
            loaded_digest_once(graph, u)
        try:
            for k, f in uploads.items():
                refs[k] = f.result()  # a failed upload aborts before the manifest
        finally:
            for u in ship:
                u.parts = None  # release the live buffers
    # on the main thread no cell can run while we upload, so what we wrote is consistent
    synchronous = threading.current_thread() is threading.main_thread()
    for u in ship:
        entry = _reuse.lookup(graph, u) if u.reuse_key is not None else None
        if entry is not None and u.key in refs:
            _reuse.stored(entry, store.url, refs[u.key], consistent=synchronous)
    return refs


def loaded_digest_once(graph: Any, u: Unit) -> None:
    """`check_loaded_digest` unless the cache already knows the answer for this value."""
    entry = _reuse.lookup(graph, u) if u.reuse_key is not None else None
    if entry is not None and entry.loaded_checked:
        u.digest_loaded = entry.digest_loaded
        return
    check_loaded_digest(u)
    if entry is not None:
        entry.digest_loaded, entry.loaded_checked = u.digest_loaded, True


def _summary(store: Store, manifest: Manifest, the_plan: Any) -> dict:
    variables = {}
    for c in manifest.covariables:
        for n in c.names:
            variables[n] = c.action
    return {
        "checkpoint_id": manifest.checkpoint_id,
        "url": store.url,
        "background": manifest.background,
        "variables": dict(sorted(variables.items())),
        "shipped": sorted(n for n, a in variables.items() if a == "ship"),
        "imported": sorted(n for n, a in variables.items() if a == "import"),
        "recomputed": sorted(n for n, a in variables.items() if a == "recompute"),
        "lost": {", ".join(c.names): c.reason for c in manifest.covariables if c.action == "lost"},
        "rerun_cells": list(the_plan.rerun),
        "cells": len(manifest.graph.get("cells", [])),
        "plan": {
            "solver": the_plan.solver,
            "optimal": the_plan.optimal,
            "est_checkpoint_s": the_plan.est_checkpoint_s,
            "est_restore_s": the_plan.est_restore_s,
            "notes": list(the_plan.notes),
        },
        "stats": manifest.stats,
        "not_checkpointed": {**{n: PRIVATE_NOTE for n in manifest.stats.get("private_names", [])},
                             **{k: KEY_NOTE for k in manifest.stats.get("keys_not_names", [])}},
    }
