"""Checkpoint a monitored kernel: trial-serialize, plan ship vs recompute, upload, commit manifest.

Runs in the kernel process, between cells (or from a cell). The namespace is only read, never
changed. The manifest is written last, so a checkpoint interrupted at any point (kill -9, store
down, disk full) is invisible and the previous one stays the latest.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kernel_agent import environment, rng
from kernel_agent.changes import digest_report
from kernel_agent.manifest import CovariableEntry, Manifest, signing_key
from kernel_agent.planner import CellCost, CovarCost, PlanProblem, StoreSpeed, plan
from kernel_agent.serialize import Serialized, dumps
from kernel_agent.store import Store, open_store

log = logging.getLogger("kernel_agent")

# One checkpoint of a kernel at a time: a background checkpoint and a requested one must not
# interleave their uploads and both claim to be the latest.
_lock = threading.Lock()
_last_checkpoint: dict[str, str] = {}  # store url -> id of the last checkpoint this kernel wrote


class AgentNotLoaded(RuntimeError):
    """Checkpointing needs the monitor's history: `%load_ext kernel_agent` first."""


@dataclass
class Unit:
    """A co-variable at checkpoint time, with how it could be recreated."""

    names: list[str]
    requires: list[int] | None  # None: no recorded cell can recreate it
    position: int
    key: str = ""
    serialized: Serialized | None = None
    digest: str = ""
    opaque: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.key:
            self.key = "u" + hashlib.sha1(",".join(self.names).encode()).hexdigest()[:12]


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
    graph = mon.graph
    tracked = set(mon.tracker_names()) if hasattr(mon, "tracker_names") else None
    untracked = [n for n in names if n not in graph.active or (tracked is not None and n not in tracked)]
    if untracked:
        # Created before monitoring started or in silent executions: link them like any other.
        try:
            mon.tracker.update(ns, touched=untracked, removed=[])
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not track %s; each is checkpointed on its own", untracked)
    dirty = _changed_by_running_cell(mon, ns, names)
    name_set = set(names)
    seen: set[str] = set()
    units: list[Unit] = []
    for n in names:
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
        for m in group:
            sid = graph.active.get(m)
            if sid is None or m in dirty:
                requires = None
                continue
            snap = graph.snapshot(sid)
            position = max(position, max(snap.producers, default=-1))
            if requires is not None:
                requires |= set(graph.requirements(sid))
        units.append(Unit(group, sorted(requires) if requires is not None else None, position))
    return units


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


def _cell_costs(graph: Any) -> dict[int, CellCost]:
    costs = {}
    for c in graph.cells:
        reasons = list(c.effects or [])
        if c.failed:
            reasons.insert(0, f"it failed ({c.error})" if c.error else "it failed")
        costs[c.index] = CellCost(
            index=c.index,
            runtime_s=float(c.runtime_s),
            rerunnable=not reasons,
            reason="; ".join(reasons) or None,
        )
    return costs


def _new_checkpoint_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


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
) -> dict:
    """Write a checkpoint of this kernel's session to `url`; returns a JSON-able summary.

    `deadline_s` bounds the time spent shipping data (an eviction grace period): the planner
    then recomputes more at restore. Unserializable values are recomputed, values produced by
    cells that are unsafe to re-run are shipped, and values that are both are reported as lost.
    """
    shell, mon = get_shell_and_monitor(shell)
    with _lock:
        t0 = time.perf_counter()
        store = store or open_store(url, **(store_options or {}))
        ns = shell.user_ns
        names = sorted(mon.user_names(ns))
        units = collect_units(mon, ns, names)

        t_ser = time.perf_counter()
        for u in units:
            values = {n: ns[n] for n in u.names}
            u.serialized = dumps(values)
            try:
                report = digest_report(values)
                u.digest, u.opaque = report.digest, sorted(report.opaque)
            except Exception as e:  # noqa: BLE001 - verification then reports it, not the checkpoint
                log.exception("kernel_agent: digest of %s failed", u.names)
                u.digest = f"error:{type(e).__name__}"
            u.packages = sorted({p for v in values.values() for p in environment.top_modules(v)})
        serialize_s = time.perf_counter() - t_ser

        t_plan = time.perf_counter()
        speed = store.measure()
        graph = mon.graph
        problem = PlanProblem(
            cells=_cell_costs(graph),
            covars=[
                CovarCost(
                    key=u.key,
                    names=u.names,
                    nbytes=u.serialized.nbytes,
                    serializable=u.serialized.error is None,
                    error=u.serialized.error,
                    # no requires = no recorded cell recreates it: the planner must ship it
                    requires=u.requires or [],
                )
                for u in units
            ],
            speed=StoreSpeed(
                write_Bps=speed.write_Bps, read_Bps=speed.read_Bps, per_object_s=speed.latency_s
            ),
            # the planner's deadline covers shipping only: what serializing and measuring already
            # took, and a margin for committing the manifest, is not available to it
            deadline_s=(
                max(0.0, deadline_s - (time.perf_counter() - t0) - 0.5 - speed.latency_s)
                if deadline_s is not None
                else None
            ),
            memory_cap_bytes=memory_cap_bytes,
            objective=objective,
        )
        the_plan = plan(problem)
        plan_s = time.perf_counter() - t_plan

        t_up = time.perf_counter()
        by_key = {u.key: u for u in units}
        ship = [by_key[k] for k in the_plan.ship]
        refs: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="kernel-agent-upload") as pool:
            futures = {u.key: pool.submit(store.put_blob, u.serialized.parts) for u in ship}
            for k, f in futures.items():
                refs[k] = f.result()  # a failed upload aborts before the manifest: nothing visible
        upload_s = time.perf_counter() - t_up

        entries = []
        for u in units:
            action = (
                "ship" if u.key in refs
                else "lost" if u.key in the_plan.lost
                else "recompute"
            )
            entries.append(
                CovariableEntry(
                    key=u.key,
                    names=u.names,
                    action=action,
                    digest=u.digest,
                    position=u.position,
                    requires=u.requires,
                    blob=refs[u.key].key if action == "ship" else None,
                    nbytes=u.serialized.nbytes,
                    opaque=u.opaque,
                    error=u.serialized.error,
                    reason=the_plan.lost.get(u.key),
                    packages=u.packages,
                )
            )
        cid = _new_checkpoint_id()
        bytes_uploaded = sum(r.size for r in refs.values() if r.uploaded)
        stats = {
            "bytes_shipped": sum(r.size for r in refs.values()),
            "bytes_uploaded": bytes_uploaded,
            "blobs_uploaded": sum(1 for r in refs.values() if r.uploaded),
            "blobs_reused": sum(1 for r in refs.values() if not r.uploaded),
            "bytes_total_state": sum(u.serialized.nbytes for u in units),
            "serialize_s": serialize_s,
            "plan_s": plan_s,
            "upload_s": upload_s,
        }
        manifest = Manifest(
            checkpoint_id=cid,
            created=datetime.now(timezone.utc).isoformat(),
            graph=graph.to_dict(),
            plan=the_plan.to_dict(),
            covariables=entries,
            rng_final=rng.capture(),
            environment=environment.capture(ns[n] for n in names),
            stats=stats,
            execution_count=int(getattr(shell, "execution_count", 0) or 0),
            parent=_last_checkpoint.get(store.url),
        )
        t_commit = time.perf_counter()
        store.put_manifest(cid, manifest.to_bytes(signing_key()))
        _last_checkpoint[store.url] = cid
        if keep_last:
            try:
                store.prune(keep_last)
            except Exception:  # noqa: BLE001 - retention must never fail a checkpoint
                log.exception("kernel_agent: pruning %s to the last %d checkpoints failed", store.url, keep_last)
        stats["commit_s"] = time.perf_counter() - t_commit
        stats["total_s"] = time.perf_counter() - t0
        return _summary(store, manifest, the_plan)


def _summary(store: Store, manifest: Manifest, the_plan: Any) -> dict:
    variables = {}
    for c in manifest.covariables:
        for n in c.names:
            variables[n] = c.action
    return {
        "checkpoint_id": manifest.checkpoint_id,
        "url": store.url,
        "variables": dict(sorted(variables.items())),
        "shipped": sorted(n for n, a in variables.items() if a == "ship"),
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
    }
