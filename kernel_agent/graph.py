"""The Application History Graph (AHG): which cell executions produced which variable snapshots.

Runs inside the user's kernel process (built cell by cell by `kernel_agent.monitor`) and, as
plain data, inside the checkpoint manifest (`to_dict`/`from_dict`). It is deliberately nothing
but dataclasses of ints, strings and lists, so a checkpoint can be read back by a different
version of the agent, and so 2,000 cells stay a few megabytes of JSON.

Vocabulary (ElasticNotebook's, with Kishu's co-variables):

* a *cell execution* is one recorded run of a cell, identified by its position `index`;
* a *variable snapshot* is one version of a *co-variable*: the set of names whose values share
  mutable objects, which therefore must be shipped or recomputed together;
* `active` maps each live name to the snapshot holding its current value;
* `requirements(s)` is the set of cells whose re-run (in order) recreates snapshot `s`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1


class GraphSchemaError(ValueError):
    """A serialized history graph this version of the agent cannot read."""


#: the code of a recorded change no cell made (a comment: re-running it does nothing)
OUTSIDE_CHANGE_CODE = "# (no cell: changes found at a checkpoint, made outside recorded cells)"


@dataclass
class CellExecution:
    """One recorded execution of a cell (failed ones included: they may have changed state)."""

    index: int
    code: str
    runtime_s: float = 0.0
    execution_count: int | None = None
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # created or rebound
    mutated: list[str] = field(default_factory=list)  # same object, contents changed
    deletes: list[str] = field(default_factory=list)
    failed: bool = False
    error: str | None = None  # "ExcType: message"
    input_snapshots: list[int] = field(default_factory=list)
    output_snapshots: list[int] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)  # non-empty => not safely re-runnable
    rng_state: str | None = None  # key into HistoryGraph.rng_states
    # files the cell read (absolute paths; `files_relative`: opened by a relative path) and
    # changed: a later change to a file it read makes it unsafe to re-run (see record())
    files_read: list[str] = field(default_factory=list)
    files_relative: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    # it changed nothing in the namespace but used a module (`os.environ[k] = v`,
    # `sys.path.append(p)`, `pd.set_option(...)`, `%env`, `%cd`): it may have changed process
    # state later cells depend on, so re-running a later cell re-runs it first (requirements())
    context: bool = False
    # it changed process state (environment, sys.path, warning filters, library options) and
    # may also have bound variables (`import os; os.environ["K"] = "1"; DATA = "/data"`): a
    # restore re-runs it whatever the plan when that is cheap (checkpointing.process_state_cells)
    process_state: bool = False
    # it changed process state whatever else it did: with `process_state` False (it also
    # changed variables in place, or failed) a restore does not re-run it, so what it set is
    # not brought back, and the restore says so (restoring._unrestored_process_state)
    process_changed: bool = False
    # why re-running it may make other values although it is safe to re-run (library code it
    # called read the clock: scikit-learn's fit and score times): what it made is shipped
    # when it can be (checkpointing._cell_costs)
    varies: list[str] = field(default_factory=list)
    # its code (or a notebook function it calls) calls ``id()``: what it computes may hold this
    # process's object addresses (`identity_cells`)
    uses_id: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "code": self.code,
            "runtime_s": self.runtime_s,
            "execution_count": self.execution_count,
            "reads": list(self.reads),
            "writes": list(self.writes),
            "mutated": list(self.mutated),
            "deletes": list(self.deletes),
            "failed": self.failed,
            "error": self.error,
            "input_snapshots": list(self.input_snapshots),
            "output_snapshots": list(self.output_snapshots),
            "effects": list(self.effects),
            "rng_state": self.rng_state,
            "files_read": list(self.files_read),
            "files_relative": list(self.files_relative),
            "files_changed": list(self.files_changed),
            "context": self.context,
            "process_state": self.process_state,
            "process_changed": self.process_changed,
            "varies": list(self.varies),
            "uses_id": self.uses_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellExecution:
        return cls(
            index=int(d["index"]),
            code=str(d.get("code", "")),
            runtime_s=float(d.get("runtime_s", 0.0)),
            execution_count=d.get("execution_count"),
            reads=list(d.get("reads", [])),
            writes=list(d.get("writes", [])),
            mutated=list(d.get("mutated", [])),
            deletes=list(d.get("deletes", [])),
            failed=bool(d.get("failed", False)),
            error=d.get("error"),
            input_snapshots=[int(x) for x in d.get("input_snapshots", [])],
            output_snapshots=[int(x) for x in d.get("output_snapshots", [])],
            effects=list(d.get("effects", [])),
            rng_state=d.get("rng_state"),
            files_read=[str(p) for p in d.get("files_read", [])],
            files_relative=[str(p) for p in d.get("files_relative", [])],
            files_changed=[str(p) for p in d.get("files_changed", [])],
            context=bool(d.get("context", False)),
            process_state=bool(d.get("process_state", False)),
            process_changed=bool(d.get("process_changed", False)),
            varies=[str(v) for v in d.get("varies", [])],
            uses_id=bool(d.get("uses_id", False)),
        )

    def rerun_blockers(self) -> list[str]:
        """Why this cell may not be re-run at restore time (empty: it may).

        The one rule the planner, the restore's fallbacks and `requirements` share: it failed,
        it had side effects, or it read IPython's output history (``prev = _``) or replays its
        input history (``%rerun``, ``%macro``), which a re-run cannot see as it was.
        """
        from kernel_agent.analysis import reads_input_history, reads_output_history

        reasons = list(self.effects)
        if self.failed:
            reasons.insert(0, f"it failed ({self.error})" if self.error else "it failed")
        if reads_output_history(self.code):
            reasons.append("it reads IPython's output history (_, Out, In, _exit_code), which a re-run cannot reproduce")
        history = reads_input_history(self.code)
        if history:
            reasons.append(f"it replays or reads IPython's input history ({history}), whose numbers "
                           "name other cells in the restoring kernel")
        return reasons

    @property
    def outside(self) -> bool:
        """This is no cell but changes found at a checkpoint that no recorded cell made
        (`Monitor.record_outside_changes`): re-running it does nothing, so a value whose
        history holds it is shipped when it can be (`checkpointing._covar_cost`)."""
        return self.code == OUTSIDE_CHANGE_CODE

    @property
    def rerunnable(self) -> bool:
        """Safe to re-run at restore time (`rerun_blockers` is empty)."""
        return not self.rerun_blockers()


@dataclass(slots=True)
class VariableSnapshot:
    """One version of a co-variable.

    `producers` are the cells whose re-run recreates this version: normally the single cell that
    wrote or mutated it; a snapshot split off a larger co-variable without being written inherits
    the producers of the snapshot it came from; a snapshot of values that existed before
    monitoring started has no producers (it can only be shipped).
    """

    id: int
    names: list[str]
    producers: list[int] = field(default_factory=list)
    deleted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "names": list(self.names),
            "producers": list(self.producers),
            "deleted": self.deleted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariableSnapshot:
        return cls(
            id=int(d["id"]),
            names=sorted(d["names"]),
            producers=sorted(int(p) for p in d.get("producers", [])),
            deleted=bool(d.get("deleted", False)),
        )


@dataclass
class HistoryGraph:
    """Cells, snapshots and the name -> active snapshot map; see the module docstring."""

    schema_version: int = SCHEMA_VERSION
    cells: list[CellExecution] = field(default_factory=list)
    snapshots: list[VariableSnapshot] = field(default_factory=list)  # position == id
    active: dict[str, int] = field(default_factory=dict)
    rng_states: dict[str, dict] = field(default_factory=dict)
    _context: tuple[int, list[CellExecution]] | None = field(
        default=None, init=False, repr=False, compare=False)
    _identity: tuple[int, int, set[int]] | None = field(
        default=None, init=False, repr=False, compare=False)

    # -- building ---------------------------------------------------------------------------

    def new_snapshot(
        self, names: Iterable[str], producers: Iterable[int], *, deleted: bool = False
    ) -> VariableSnapshot:
        """Append a snapshot; the caller decides whether it becomes active."""
        snap = VariableSnapshot(
            id=len(self.snapshots),
            names=sorted(names if isinstance(names, set | frozenset) else set(names)),
            producers=sorted(producers if isinstance(producers, set | frozenset) else set(producers)),
            deleted=deleted,
        )
        self.snapshots.append(snap)
        return snap

    def activate(self, snap: VariableSnapshot) -> None:
        """Make `snap` the current value of each of its names (or drop them if it is deleted)."""
        for n in snap.names:
            if snap.deleted:
                self.active.pop(n, None)
            else:
                self.active[n] = snap.id

    def record(
        self,
        cell: CellExecution,
        covariable_of: Callable[[str], Collection[str]],
        live: Collection[str],
    ) -> CellExecution:
        """Append a cell execution and its snapshots, given the co-variable partition after it.

        `cell` carries reads/writes/mutated/deletes; `covariable_of(name)` is the partition after
        the cell (the tracker's) and `live` the user names that exist after it. Only co-variables
        that contain a name the cell touched, or that shared a snapshot with one, are examined,
        so the cost follows the cell, not the namespace.

        * read edges: the active snapshot of every name read or mutated (mutation reads the
          old value);
        * a new snapshot (producers = [this cell]) per co-variable containing a written or
          mutated name;
        * a co-variable whose membership changed although none of its names was written (a
          split: `{a, b}` then `b = 1` leaves `{a}`) gets a snapshot inheriting the producers of
          the snapshot(s) it came from; names with no history (created before monitoring or in
          silent executions) stay out of `active`, so the engine ships them;
        * deleted names get a deleted snapshot and leave `active`.
        """
        idx = len(self.cells)
        cell.index = idx
        live_set = live if isinstance(live, set | frozenset) else set(live)
        active = self.active
        reads, mutated = set(cell.reads), set(cell.mutated)
        changed = set(cell.writes) | mutated
        deleted = set(cell.deletes)
        cell.input_snapshots = sorted({self.active[n] for n in reads | mutated if n in self.active})

        candidates = changed | reads
        sids = {self.active.get(n) for n in candidates | deleted}  # (each snapshot once)
        sids.discard(None)
        for sid in sids:
            candidates.update(self.snapshots[sid].names)
        groups: set[frozenset[str]] = set()
        # names already in a group taken this call: `covariable_of` is a partition, so theirs
        # is that group (computed per name, a cell touching one of 20k names bound to the same
        # list intersected 20k names 20k times: a minute per cell)
        grouped: set[str] = set()
        multi = False  # a group of more than one name (else they sort by their one name)
        for n in candidates:
            if n in live_set and n not in deleted and n not in grouped:
                g = covariable_of(n)
                if type(g) is frozenset and len(g) == 1 and n in g:
                    groups.add(g)  # (most names: a co-variable of one)
                else:
                    group = (frozenset(g) & live_set) | {n}
                    groups.add(group)
                    grouped |= group
                    multi = multi or len(group) > 1

        outputs: list[VariableSnapshot] = []
        writes = set(cell.writes)
        inputs = set(cell.input_snapshots)
        # (sorted by their sorted names; groups of one name by it, without a list per group)
        for g in sorted(groups, key=sorted if multi else min):
            if not g.isdisjoint(changed):
                # names this cell merged in without reading or writing them (two dataclasses
                # share dataclasses.MISSING): the new snapshot holds their values as they
                # were, so re-creating it needs their snapshots too, not this cell alone
                if not g <= writes:
                    carried = {active[n] for n in g - writes if n in active}
                    if not carried <= inputs:
                        inputs |= carried
                        cell.input_snapshots = sorted(inputs)
                # (new_snapshot's work, without its call and copies: one per name written)
                snap = VariableSnapshot(len(self.snapshots), sorted(g) if len(g) > 1 else list(g),
                                        [idx])
                self.snapshots.append(snap)
                outputs.append(snap)
                continue
            sources = {self.active.get(n) for n in g}
            if len(sources) == 1 and None not in sources:
                (sid,) = sources
                if set(self.snapshots[sid].names) == g:
                    continue  # unchanged
            known = [n for n in g if n in self.active]
            if not known:
                continue
            producers: set[int] = set()
            for sid in sources:
                if sid is not None:
                    producers.update(self.snapshots[sid].producers)
            outputs.append(self.new_snapshot(known, producers))
        for n in sorted(deleted):
            outputs.append(self.new_snapshot([n], [idx], deleted=True))
        cell.output_snapshots = [s.id for s in outputs]
        self.cells.append(cell)
        for s in outputs:  # (`activate`, inline: one snapshot per name written)
            if s.deleted:
                for n in s.names:
                    active.pop(n, None)
            else:
                sid = s.id
                for n in s.names:
                    active[n] = sid
        for path in cell.files_changed:
            self.file_changed(path, f"cell {idx} later changed it", before=idx)
        return cell

    def file_changed(self, path: str, why: str, *, before: int | None = None) -> list[int]:
        """Mark the cells (before index `before`) that read `path` as not safely re-runnable.

        Re-running them at restore time would read the file as it is then, not as they read
        it: `content = open('tmp.txt').read()` followed by `os.remove('tmp.txt')` replays into
        a FileNotFoundError, `import mymod` followed by a rewrite of mymod.py replays into the
        new code. Their outputs must be shipped instead. Returns the cells marked.
        """
        marked = []
        end = len(self.cells) if before is None else before
        for c in self.cells[:end]:
            if path in c.files_read and path not in c.files_changed:
                note = f"read file {path}, and {why}"
                if note not in c.effects:
                    c.effects.append(note)
                    marked.append(c.index)
        return marked

    # -- queries ----------------------------------------------------------------------------

    def snapshot(self, snapshot_id: int) -> VariableSnapshot:
        """The snapshot with this id (ids are positions in `snapshots`)."""
        if not 0 <= snapshot_id < len(self.snapshots):
            raise KeyError(f"no variable snapshot {snapshot_id} (graph has {len(self.snapshots)})")
        return self.snapshots[snapshot_id]

    def active_snapshots(self) -> list[VariableSnapshot]:
        """The snapshots holding the current values, each once, in id order."""
        return [self.snapshots[i] for i in sorted(set(self.active.values()))]

    def requirements(self, snapshot_id: int, active_ids: set[int] | None = None) -> set[int]:
        """Cells to re-run (in index order) to recreate `snapshot_id`: ElasticNotebook's req().

        The producers of the snapshot, plus recursively the producers of every snapshot those
        cells read that is *not* active: active snapshots are available at restore time (shipped,
        or recomputed in their own right), older versions are not.

        `active_ids` is ``set(self.active.values())`` when the caller, asking for many snapshots
        of an unchanged graph, has it already (it takes time in the number of names).
        """
        if active_ids is None:
            active_ids = set(self.active.values())
        cells: set[int] = set()
        seen = {snapshot_id}
        stack = [snapshot_id]

        def add(c: int) -> None:
            cells.add(c)
            for s in self.cells[c].input_snapshots:
                if s not in active_ids and s not in seen:
                    seen.add(s)
                    stack.append(s)

        while stack:
            while stack:
                snap = self.snapshot(stack.pop())
                for c in snap.producers:
                    if c not in cells:
                        add(c)
            # Context cells (process state: environment, sys.path, options, working directory):
            # the re-run cells may depend on what they set, and re-running all of them, in
            # order, leaves the process as the last one left it (re-running only those before
            # the last recomputed cell could leave it in an intermediate state: `os.chdir`
            # without the later `os.chdir('..')`). Only the re-runnable ones: one that is not
            # could not be redone anyway, and the restore verifies what depends on it.
            for c in self._context_cells():
                if c.index not in cells and c.rerunnable:
                    add(c.index)
        return cells

    def _context_cells(self) -> list[CellExecution]:
        """The context cells, cached per history length (requirements() runs per snapshot)."""
        cached = self._context
        if cached is None or cached[0] != len(self.cells):
            cached = (len(self.cells), [c for c in self.cells if c.context])
            self._context = cached
        return cached[1]

    def identity_cells(self) -> set[int]:
        """Cells whose results may hold ``id()`` values: those that call ``id()``
        (`CellExecution.uses_id`) and, in order, every cell that read a snapshot one of them
        produced (``keys = sorted(ids)``). Cached per history length.

        An id is an address in this process: ``index = {id(o): o for o in objs}`` loaded in
        another process keeps keys that no longer name its objects, and verifies (they are
        ints, equal to the ints checkpointed). Over-approximate by design: a cell that only
        compared ids marks its outputs too, which costs a re-run instead of a copy.
        """
        cached = self._identity
        if cached is None or cached[:2] != (len(self.cells), len(self.snapshots)):
            cells: set[int] = set()
            for c in self.cells:
                if c.uses_id or any(
                        cells.intersection(self.snapshots[s].producers)
                        for s in c.input_snapshots if 0 <= s < len(self.snapshots)):
                    cells.add(c.index)
            cached = (len(self.cells), len(self.snapshots), cells)
            self._identity = cached
        return cached[2]

    def identity_producers(self, names: Iterable[str]) -> list[int]:
        """The `identity_cells` among the producers of the active snapshots of `names`."""
        cells = self.identity_cells()
        if not cells:
            return []
        out: set[int] = set()
        for n in names:
            sid = self.active.get(n)
            if sid is not None and 0 <= sid < len(self.snapshots):
                out.update(cells.intersection(self.snapshots[sid].producers))
        return sorted(out)

    # -- (de)serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data (only dicts, lists, str, int, float, bool, None)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "cells": [c.to_dict() for c in self.cells],
            "snapshots": [s.to_dict() for s in self.snapshots],
            "active": dict(sorted(self.active.items())),
            "rng_states": dict(self.rng_states),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistoryGraph:
        """Inverse of `to_dict`; refuses graphs written with another schema version."""
        if not isinstance(d, dict):
            raise GraphSchemaError(f"history graph must be a dict, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GraphSchemaError(
                f"history graph schema_version {version!r} is not supported by this kernel_agent "
                f"(it reads version {SCHEMA_VERSION}); upgrade kernel_agent to read this checkpoint"
            )
        g = cls(
            cells=[CellExecution.from_dict(c) for c in d.get("cells", [])],
            snapshots=[VariableSnapshot.from_dict(s) for s in d.get("snapshots", [])],
            active={str(k): int(v) for k, v in d.get("active", {}).items()},
            rng_states=dict(d.get("rng_states", {})),
        )
        for i, c in enumerate(g.cells):
            if c.index != i:
                raise GraphSchemaError(f"history graph cell at position {i} has index {c.index}")
        for i, s in enumerate(g.snapshots):
            if s.id != i:
                raise GraphSchemaError(f"history graph snapshot at position {i} has id {s.id}")
        return g
