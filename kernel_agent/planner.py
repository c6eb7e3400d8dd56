"""The replication plan: for every co-variable, ship it (serialize + store + load) or recompute it
(re-run the cells that produce it) on the target.

Pure functions over plain data: no IPython, no I/O, so the planner can be tested exhaustively and
benchmarked on synthetic histories. `checkpoint` builds a `PlanProblem` from the history graph and
the trial serialization, calls `plan()`, and executes the returned `Plan`.

Model (see docs/planner.md for the long version):

* ship(x)      = nbytes/write_Bps + per_object_s   (checkpoint side)
                 + nbytes/read_Bps                  (restore side)
* recompute(X) = sum of runtime_s over the UNION of requires(x) for x in X (a cell shared by several
                 recomputed co-variables is re-run, and paid, once).
* Forced decisions are taken before any solver runs: not serializable -> must recompute; some
  required cell not re-runnable (or no producing cell at all) -> must ship; both -> `lost`, with a
  reason naming the variables, the serialization error, the cell and why it cannot be re-run.
  Pre-assigning them is what keeps infinite capacities out of the flow network (ElasticNotebook's
  `NetworkXUnbounded` pitfall).
* Basic model (no deadline, no memory cap): minimum s-t cut = project selection, exact.
* Deadline and/or memory cap: the min-cut plan is tried first (if it already satisfies the
  constraints it is optimal for them too); otherwise OR-Tools CP-SAT over integer-scaled costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CellCost",
    "CovarCost",
    "StoreSpeed",
    "PlanProblem",
    "Plan",
    "plan",
    "plan_cost",
    "DEFAULT_TIME_LIMIT_S",
]

#: CP-SAT wall-clock limit. A checkpoint racing an eviction cannot afford a long optimization; the
#: min-cut hint plus a couple of seconds is near-optimal in practice and `optimal` says if it is.
DEFAULT_TIME_LIMIT_S = 2.0

_OBJECTIVES = ("migration", "restore")
_NS = 1_000_000_000  # min-cut capacities: integer nanoseconds (exact arithmetic in the flow code)
_US = 1_000_000  # CP-SAT coefficients: integer microseconds (keeps sums well inside int64)


# --------------------------------------------------------------------------------------------
# Input / output data
# --------------------------------------------------------------------------------------------


@dataclass
class CellCost:
    """One cell execution of the history, as the planner sees it."""

    index: int
    runtime_s: float
    rerunnable: bool = True  # False when the cell has side effects / non-determinism / failed
    reason: str | None = None  # why not rerunnable, e.g. "writes file /tmp/x"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellCost:
        return cls(
            index=int(d["index"]),
            runtime_s=float(d["runtime_s"]),
            rerunnable=bool(d.get("rerunnable", True)),
            reason=d.get("reason"),
        )


@dataclass
class CovarCost:
    """One active co-variable (names that share objects travel together)."""

    key: str  # co-variable id (e.g. snapshot id as str)
    names: list[str]
    nbytes: int  # exact serialized size
    serializable: bool = True
    error: str | None = None  # serialization error when not serializable
    # Cell indices to re-run to recompute it (req(), already transitively closed). Empty means no
    # recorded cell re-creates it, so it can only be shipped.
    requires: list[int] = field(default_factory=list)
    # Memory that recomputation needs on the target beyond the result (for the memory cap).
    transient_nbytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CovarCost:
        return cls(
            key=str(d["key"]),
            names=[str(n) for n in d.get("names", [])],
            nbytes=int(d["nbytes"]),
            serializable=bool(d.get("serializable", True)),
            error=d.get("error"),
            requires=[int(c) for c in d.get("requires", [])],
            transient_nbytes=int(d.get("transient_nbytes", 0)),
        )


@dataclass
class StoreSpeed:
    """Measured store throughput; `per_object_s` is the fixed overhead of shipping one object."""

    write_Bps: float
    read_Bps: float
    per_object_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreSpeed:
        return cls(
            write_Bps=float(d["write_Bps"]),
            read_Bps=float(d["read_Bps"]),
            per_object_s=float(d.get("per_object_s", 0.0)),
        )


@dataclass
class PlanProblem:
    """Everything the planner needs; JSON-able so a checkpoint can record what it planned from."""

    cells: dict[int, CellCost]
    covars: list[CovarCost]
    speed: StoreSpeed
    deadline_s: float | None = None  # checkpoint (ship) time must be <= this (grace period)
    memory_cap_bytes: int | None = None  # peak memory on the target during restore <= this
    objective: str = "migration"  # "migration": checkpoint+restore; "restore": restore time only

    def to_dict(self) -> dict[str, Any]:
        # Cells as a list: JSON object keys are strings, and the index is in each cell anyway.
        return {
            "cells": [self.cells[i].to_dict() for i in sorted(self.cells)],
            "covars": [c.to_dict() for c in self.covars],
            "speed": self.speed.to_dict(),
            "deadline_s": self.deadline_s,
            "memory_cap_bytes": self.memory_cap_bytes,
            "objective": self.objective,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanProblem:
        raw = d.get("cells", [])
        items = list(raw.values()) if isinstance(raw, dict) else list(raw)
        cells = {cell.index: cell for cell in (CellCost.from_dict(c) for c in items)}
        deadline = d.get("deadline_s")
        cap = d.get("memory_cap_bytes")
        return cls(
            cells=cells,
            covars=[CovarCost.from_dict(c) for c in d.get("covars", [])],
            speed=StoreSpeed.from_dict(d["speed"]),
            deadline_s=None if deadline is None else float(deadline),
            memory_cap_bytes=None if cap is None else int(cap),
            objective=str(d.get("objective", "migration")),
        )


@dataclass
class Plan:
    """What to ship, what to recompute, what cannot be restored (and why), and what it costs."""

    ship: list[str]  # covar keys to serialize and store
    recompute: list[str]  # covar keys recomputed by re-running cells
    rerun: list[int]  # sorted cell indices to re-run (union of requires of recomputed covars)
    lost: dict[str, str]  # covar key -> precise reason it can be neither shipped nor recomputed
    est_checkpoint_s: float
    est_restore_s: float
    est_total_s: float
    solver: str  # "mincut" | "cpsat" | "trivial"
    optimal: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(
            ship=[str(k) for k in d.get("ship", [])],
            recompute=[str(k) for k in d.get("recompute", [])],
            rerun=sorted(int(c) for c in d.get("rerun", [])),
            lost={str(k): str(v) for k, v in d.get("lost", {}).items()},
            est_checkpoint_s=float(d.get("est_checkpoint_s", 0.0)),
            est_restore_s=float(d.get("est_restore_s", 0.0)),
            est_total_s=float(d.get("est_total_s", 0.0)),
            solver=str(d.get("solver", "trivial")),
            optimal=bool(d.get("optimal", False)),
            notes=[str(n) for n in d.get("notes", [])],
        )


# --------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------


def write_s(covar: CovarCost, speed: StoreSpeed) -> float:
    """Checkpoint-side time of shipping `covar`.

    The per-object overhead is charged here (once per shipped object, as in the migration cost
    ship(x) = w + r + per_object_s): it is the side bounded by a hard deadline, so erring towards
    it keeps deadline plans safe.
    """
    return covar.nbytes / speed.write_Bps + speed.per_object_s


def read_s(covar: CovarCost, speed: StoreSpeed) -> float:
    """Restore-side time of loading a shipped `covar`."""
    return covar.nbytes / speed.read_Bps


def _ship_objective_s(covar: CovarCost, problem: PlanProblem) -> float:
    """What shipping costs in the objective being minimized."""
    if problem.objective == "restore":
        return read_s(covar, problem.speed)
    return write_s(covar, problem.speed) + read_s(covar, problem.speed)


def plan_cost(problem: PlanProblem, ship: Iterable[str], recompute: Iterable[str]) -> dict:
    """Estimated times and memory of an assignment (used by `plan` and by the tests' brute force).

    Returns checkpoint_s, restore_s, total_s, objective_s (the minimized quantity), rerun (sorted
    cells) and memory_bytes (the memory-cap model: every restored co-variable's nbytes plus the
    transient memory of each recomputed one).
    """
    by_key = {c.key: c for c in problem.covars}
    ship_c = [by_key[k] for k in ship]
    rec_c = [by_key[k] for k in recompute]
    rerun = sorted(set().union(*(c.requires for c in rec_c)))
    ckpt = sum(write_s(c, problem.speed) for c in ship_c)
    runtime = sum(problem.cells[i].runtime_s for i in rerun)
    restore = sum(read_s(c, problem.speed) for c in ship_c) + runtime
    objective = restore if problem.objective == "restore" else ckpt + restore
    memory = sum(c.nbytes for c in ship_c) + sum(c.nbytes + c.transient_nbytes for c in rec_c)
    return {
        "checkpoint_s": ckpt,
        "restore_s": restore,
        "total_s": ckpt + restore,
        "objective_s": objective,
        "rerun": rerun,
        "memory_bytes": memory,
    }


# --------------------------------------------------------------------------------------------
# Validation and forced decisions
# --------------------------------------------------------------------------------------------


def _check_number(what: str, value: float, *, positive: bool = False) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"planner: {what} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"planner: {what} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def _validate(problem: PlanProblem) -> None:
    """Reject malformed problems with a clear message (a NaN cost would silently skew solvers)."""
    if problem.objective not in _OBJECTIVES:
        raise ValueError(
            f"planner: objective must be one of {_OBJECTIVES}, got {problem.objective!r}"
        )
    _check_number("speed.write_Bps", problem.speed.write_Bps, positive=True)
    _check_number("speed.read_Bps", problem.speed.read_Bps, positive=True)
    _check_number("speed.per_object_s", problem.speed.per_object_s)
    if problem.deadline_s is not None:
        _check_number("deadline_s", problem.deadline_s)
    if problem.memory_cap_bytes is not None:
        _check_number("memory_cap_bytes", problem.memory_cap_bytes)
    for idx, cell in problem.cells.items():
        if idx != cell.index:
            raise ValueError(f"planner: cells[{idx}] has index {cell.index}")
        _check_number(f"cell {idx} runtime_s", cell.runtime_s)
    seen: set[str] = set()
    for c in problem.covars:
        if c.key in seen:
            raise ValueError(f"planner: duplicate co-variable key {c.key!r}")
        seen.add(c.key)
        _check_number(f"co-variable {c.key!r} nbytes", c.nbytes)
        _check_number(f"co-variable {c.key!r} transient_nbytes", c.transient_nbytes)


def _label(c: CovarCost) -> str:
    return ", ".join(c.names) if c.names else f"co-variable {c.key}"


def _why_not_recomputable(
    c: CovarCost, cells: dict[int, CellCost], runnable: set[int]
) -> str | None:
    """None when every required cell can be re-run, else a sentence saying which cannot and why.

    `runnable` (the re-runnable cell indices) makes the common case one C-level subset test:
    requires sets are transitively closed and reach thousands of cells on long histories.
    """
    if not c.requires:
        return "no recorded cell re-creates it"
    if runnable.issuperset(c.requires):
        return None
    missing = set(c.requires).difference(runnable)
    blocked: list[tuple[int, str | None]] = []
    for i in sorted(missing):
        cell = cells.get(i)
        blocked.append((i, "not in the recorded history" if cell is None else cell.reason))
    if len(blocked) == 1:
        i, why = blocked[0]
        return f"cell {i} cannot be re-run ({why})" if why else f"cell {i} cannot be re-run"
    blocked_s = [f"{i} ({why})" if why else str(i) for i, why in blocked]
    return f"cells {', '.join(blocked_s[:-1])} and {blocked_s[-1]} cannot be re-run"


def _why_not_serializable(c: CovarCost) -> str:
    return f"cannot be serialized ({c.error})" if c.error else "cannot be serialized"


@dataclass
class _Split:
    """The problem after forced decisions: only `free` co-variables are left to optimize."""

    free: list[CovarCost] = field(default_factory=list)
    must_ship: list[CovarCost] = field(default_factory=list)
    must_recompute: list[CovarCost] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)
    no_recompute_reason: dict[str, str] = field(default_factory=dict)

    @property
    def forced_cells(self) -> set[int]:
        """Cells re-run anyway: free for every other co-variable that needs them."""
        return set().union(*(c.requires for c in self.must_recompute))


def _split(problem: PlanProblem) -> _Split:
    s = _Split()
    runnable = {i for i, cell in problem.cells.items() if cell.rerunnable}
    for c in problem.covars:
        blocked = _why_not_recomputable(c, problem.cells, runnable)
        if c.serializable and blocked is None:
            s.free.append(c)
        elif c.serializable:
            s.must_ship.append(c)
            s.no_recompute_reason[c.key] = blocked or ""
        elif blocked is None:
            s.must_recompute.append(c)
        else:
            s.lost[c.key] = f"{_label(c)}: {_why_not_serializable(c)} and {blocked}"
    return s


# --------------------------------------------------------------------------------------------
# Basic model: minimum cut
# --------------------------------------------------------------------------------------------


def _cell_groups(
    covars: list[CovarCost], skip: set[int], cells: dict[int, CellCost]
) -> tuple[list[float], list[list[int]]]:
    """Merge cells required by exactly the same co-variables into one node.

    Such cells are always re-run together, so merging (summing runtimes) is exact; on real
    histories (long in-place mutation chains) it shrinks the network by an order of magnitude.
    Returns the runtime of each group and, for each co-variable, the groups it requires.
    """
    users: dict[int, list[int]] = {}
    for n, c in enumerate(covars):
        for i in set(c.requires).difference(skip):
            users.setdefault(i, []).append(n)
    group_of_sig: dict[tuple[int, ...], int] = {}
    runtime: list[float] = []
    needs: list[list[int]] = [[] for _ in covars]
    for i, us in users.items():
        sig = tuple(us)
        g = group_of_sig.get(sig)
        if g is None:
            g = group_of_sig[sig] = len(runtime)
            runtime.append(0.0)
            for n in sig:
                needs[n].append(g)
        runtime[g] += cells[i].runtime_s
    return runtime, needs


def _mincut(problem: PlanProblem, free: list[CovarCost], forced_cells: set[int]) -> set[str]:
    """Keys of the free co-variables to recompute in the exact basic-model optimum.

    Project selection: source -> covar (capacity ship cost), covar -> cell group (a large finite
    capacity, never infinite), group -> sink (capacity runtime). The source side of a minimum cut
    is the set of recomputed co-variables plus the groups they need, and the cut value is exactly
    ship(sink-side covars) + runtime(source-side groups). Capacities are integer nanoseconds so the
    flow arithmetic is exact.
    """
    if not free:
        return set()
    runtime, needs = _cell_groups(free, forced_cells, problem.cells)
    run_ns = [round(r * _NS) for r in runtime]
    ship_ns = [round(_ship_objective_s(c, problem) * _NS) for c in free]

    recompute: set[str] = set()
    # Connected components over shared groups: singletons (the common case) are decided locally.
    parent = list(range(len(free)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first_user: dict[int, int] = {}
    for n, gs in enumerate(needs):
        for g in gs:
            m = first_user.setdefault(g, n)
            if m != n:
                parent[find(n)] = find(m)
    comps: dict[int, list[int]] = {}
    for n in range(len(free)):
        comps.setdefault(find(n), []).append(n)

    flow_members: list[int] = []
    for members in comps.values():
        if len(members) == 1:
            n = members[0]
            if sum(run_ns[g] for g in needs[n]) < ship_ns[n]:
                recompute.add(free[n].key)
        else:
            flow_members.extend(members)
    if not flow_members:
        return recompute

    import networkx as nx
    from networkx.algorithms.flow import boykov_kolmogorov

    groups = sorted({g for n in flow_members for g in needs[n]})
    big = sum(ship_ns[n] for n in flow_members) + sum(run_ns[g] for g in groups) + 1
    G = nx.DiGraph()
    src, sink = ("s",), ("t",)
    G.add_edges_from((src, ("x", n), {"capacity": ship_ns[n]}) for n in flow_members)
    G.add_edges_from(
        (("x", n), ("g", g), {"capacity": big}) for n in flow_members for g in needs[n]
    )
    G.add_edges_from((("g", g), sink, {"capacity": run_ns[g]}) for g in groups)
    _, (source_side, _) = nx.minimum_cut(G, src, sink, flow_func=boykov_kolmogorov)
    for n in flow_members:
        if ("x", n) in source_side:
            recompute.add(free[n].key)
    return recompute


# --------------------------------------------------------------------------------------------
# Constrained model: CP-SAT
# --------------------------------------------------------------------------------------------


def _ticks_up(seconds: float) -> int:
    """Seconds -> integer µs, rounded up (with a tolerance for float noise): deadline-side costs."""
    return max(0, math.ceil(seconds * _US - 1e-6))


def _ticks(seconds: float) -> int:
    return round(seconds * _US)


def _solver(time_limit_s: float) -> Any:
    """A CP-SAT solver configured for these models.

    One worker with linearization level 2 (the LP relaxation of the covering constraints in every
    node) measured fastest by far on the benchmark histories and on shared-cell problems (0.2 s
    optimal where the default 2- or 8-worker portfolio hit a 5 s limit); it is also deterministic
    (the same problem gives the same plan) and takes a single core of the user's kernel container.
    """
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, float(time_limit_s))
    solver.parameters.num_workers = 1
    solver.parameters.linearization_level = 2
    return solver


@dataclass
class _SatResult:
    status: str  # "optimal" | "feasible" | "infeasible" | "unknown" | "fallback"
    recompute: set[str]
    memory: int = 0  # recompute-side transient bytes of the solution
    gap: float = 0.0  # relative gap to the best bound when stopped by the time limit


def _cpsat(
    problem: PlanProblem,
    free: list[CovarCost],
    forced_cells: set[int],
    *,
    ship_budget_us: int | None,
    transient_budget: int | None,
    minimize_memory: bool,
    hint: set[str],
    time_limit_s: float,
) -> _SatResult:
    """Optimize the free co-variables under a checkpoint-time budget and a transient-memory budget.

    Booleans ship[x] (recompute = not ship) and run[g] per cell group; recompute[x] implies run[g]
    for every group x requires. Checkpoint: sum of ship write times (µs, rounded up) <= budget.
    Memory: sum of transient bytes of recomputed co-variables <= budget (the rest of the memory
    model is plan-independent, see `plan`). With `minimize_memory` the objective is that transient
    sum instead of time (used to find the least-bad plan when the cap cannot be met).
    """
    from ortools.sat.python import cp_model

    runtime, needs = _cell_groups(free, forced_cells, problem.cells)
    m = cp_model.CpModel()
    ship = [m.new_bool_var(f"ship_{n}") for n in range(len(free))]
    run = [m.new_bool_var(f"run_{g}") for g in range(len(runtime))]
    for n, gs in enumerate(needs):
        for g in gs:
            m.add_bool_or([ship[n], run[g]])
    if ship_budget_us is not None:
        m.add(
            sum(_ticks_up(write_s(c, problem.speed)) * ship[n] for n, c in enumerate(free))
            <= ship_budget_us
        )
    transient = sum(c.transient_nbytes * (1 - ship[n]) for n, c in enumerate(free))
    if transient_budget is not None:
        m.add(transient <= transient_budget)
    if minimize_memory:
        m.minimize(transient)
    else:
        m.minimize(
            sum(_ticks(_ship_objective_s(c, problem)) * ship[n] for n, c in enumerate(free))
            + sum(_ticks(r) * run[g] for g, r in enumerate(runtime))
        )
    for n, c in enumerate(free):
        m.add_hint(ship[n], c.key not in hint)

    solver = _solver(time_limit_s)
    status = solver.solve(m)
    if status == cp_model.INFEASIBLE:
        return _SatResult("infeasible", set())
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return _SatResult("unknown", set())
    rec = {c.key for n, c in enumerate(free) if not solver.boolean_value(ship[n])}
    mem = sum(c.transient_nbytes for c in free if c.key in rec)
    value, bound = solver.objective_value, solver.best_objective_bound
    gap = 0.0 if status == cp_model.OPTIMAL or value <= 0 else max(0.0, (value - bound) / value)
    return _SatResult("optimal" if status == cp_model.OPTIMAL else "feasible", rec, mem, gap)


def _keep_within_deadline(
    must_ship: list[CovarCost], speed: StoreSpeed, budget_us: int, time_limit_s: float
) -> tuple[list[CovarCost], bool]:
    """Best effort when the forced ships alone overrun the deadline: a 0/1 knapsack.

    Keeps the subset of must-ship co-variables that fits and saves the most variable names
    (a user loses as few names as possible), then, among those, uses the least checkpoint time
    (leaving room for optional ships). Returns (kept, proven optimal).
    """
    from ortools.sat.python import cp_model

    w = [_ticks_up(write_s(c, speed)) for c in must_ship]
    value = [max(1, len(c.names)) for c in must_ship]
    m = cp_model.CpModel()
    keep = [m.new_bool_var(f"keep_{n}") for n in range(len(must_ship))]
    m.add(sum(wi * k for wi, k in zip(w, keep, strict=True)) <= budget_us)
    scale = sum(w) + 1
    if scale * sum(value) < 2**62:
        m.maximize(
            sum(scale * v * k for v, k in zip(value, keep, strict=True))
            - sum(wi * k for wi, k in zip(w, keep, strict=True))
        )
    else:
        m.maximize(sum(v * k for v, k in zip(value, keep, strict=True)))
    solver = _solver(time_limit_s)
    status = solver.solve(m)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        kept = [c for n, c in enumerate(must_ship) if solver.boolean_value(keep[n])]
        return kept, status == cp_model.OPTIMAL
    # Greedy fallback (never reached in practice: the empty set is always feasible).
    kept, used = [], 0
    for n in sorted(range(len(must_ship)), key=lambda n: (-value[n] / (w[n] + 1), w[n])):
        if used + w[n] <= budget_us:
            kept.append(must_ship[n])
            used += w[n]
    return kept, False


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


def _assemble(
    problem: PlanProblem,
    ship: set[str],
    recompute: set[str],
    lost: dict[str, str],
    solver: str,
    optimal: bool,
    notes: list[str],
) -> Plan:
    order = [c.key for c in problem.covars]
    ship_l = [k for k in order if k in ship]
    rec_l = [k for k in order if k in recompute]
    cost = plan_cost(problem, ship_l, rec_l)
    return Plan(
        ship=ship_l,
        recompute=rec_l,
        rerun=cost["rerun"],
        lost={k: lost[k] for k in order if k in lost},
        est_checkpoint_s=cost["checkpoint_s"],
        est_restore_s=cost["restore_s"],
        est_total_s=cost["total_s"],
        solver=solver,
        optimal=optimal,
        notes=notes,
    )


def plan(problem: PlanProblem, *, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> Plan:
    """Decide, for every co-variable, ship / recompute / lost.

    Never raises for a hard problem: an infeasible deadline yields a best-effort plan (what does
    not fit goes to `lost` with a "deadline" reason), an unmeetable memory cap yields the plan with
    the least memory, each with a note. Raises ValueError only for malformed input (duplicate keys,
    negative or non-finite numbers, unknown objective).
    """
    _validate(problem)
    # One budget for all solver calls: under an eviction deadline, planning time is lost time.
    t_end = time.monotonic() + time_limit_s

    def remaining() -> float:
        return max(0.05, t_end - time.monotonic())

    split = _split(problem)
    lost = dict(split.lost)
    notes: list[str] = []
    forced_cells = split.forced_cells
    must_ship = list(split.must_ship)

    # Deadline feasibility of the forced ships alone: optional ships can always be recomputed
    # instead, so this is the only way a deadline can be infeasible.
    ship_budget_us: int | None = None
    knapsack_optimal = True
    if problem.deadline_s is not None:
        budget = max(0, math.floor(problem.deadline_s * _US + 1e-6))
        forced_us = sum(_ticks_up(write_s(c, problem.speed)) for c in must_ship)
        if forced_us > budget:
            kept, knapsack_optimal = _keep_within_deadline(
                must_ship, problem.speed, budget, remaining()
            )
            kept_keys = {c.key for c in kept}
            dropped = [c for c in must_ship if c.key not in kept_keys]
            for c in dropped:
                lost[c.key] = (
                    f"{_label(c)}: deadline: shipping it ({_fmt_bytes(c.nbytes)}, "
                    f"{write_s(c, problem.speed):.3g} s) does not fit in the "
                    f"{problem.deadline_s:g} s checkpoint deadline and "
                    f"{split.no_recompute_reason[c.key]}"
                )
            notes.append(
                f"deadline {problem.deadline_s:g} s is too short to ship every co-variable that "
                f"cannot be recomputed ({forced_us / _US:.3g} s needed); best effort: shipped "
                f"{len(kept)} of {len(must_ship)}, lost {', '.join(_label(c) for c in dropped)}"
            )
            must_ship = kept
            forced_us = sum(_ticks_up(write_s(c, problem.speed)) for c in kept)
        ship_budget_us = budget - forced_us

    restored = split.free + must_ship + split.must_recompute
    forced_ship_keys = {c.key for c in must_ship}
    forced_rec_keys = {c.key for c in split.must_recompute}

    # Memory model: every restored co-variable ends up resident whatever the plan, so the only
    # plan-dependent part is the transient memory of the recomputed ones.
    transient_budget: int | None = None
    if problem.memory_cap_bytes is not None:
        base = sum(c.nbytes for c in restored) + sum(
            c.transient_nbytes for c in split.must_recompute
        )
        transient_budget = problem.memory_cap_bytes - base

    if not split.free:
        if transient_budget is not None and transient_budget < 0:
            notes.append(
                f"memory cap {_fmt_bytes(problem.memory_cap_bytes or 0)} cannot be met: the "
                f"restored state needs {_fmt_bytes(problem.memory_cap_bytes - transient_budget)}"
            )
        return _assemble(
            problem, forced_ship_keys, forced_rec_keys, lost, "trivial", knapsack_optimal, notes
        )

    rec = _mincut(problem, split.free, forced_cells)
    if ship_budget_us is None and transient_budget is None:
        return _assemble(
            problem,
            forced_ship_keys | {c.key for c in split.free if c.key not in rec},
            forced_rec_keys | rec,
            lost,
            "mincut",
            knapsack_optimal,
            notes,
        )

    # The min-cut plan is optimal for the relaxation; if it meets the constraints, it is optimal.
    ship_us = sum(_ticks_up(write_s(c, problem.speed)) for c in split.free if c.key not in rec)
    trans = sum(c.transient_nbytes for c in split.free if c.key in rec)
    if (ship_budget_us is None or ship_us <= ship_budget_us) and (
        transient_budget is None or trans <= transient_budget
    ):
        notes.append("the unconstrained optimum (min-cut) already meets the deadline/memory cap")
        return _assemble(
            problem,
            forced_ship_keys | {c.key for c in split.free if c.key not in rec},
            forced_rec_keys | rec,
            lost,
            "mincut",
            knapsack_optimal,
            notes,
        )

    res = _cpsat(
        problem,
        split.free,
        forced_cells,
        ship_budget_us=ship_budget_us,
        transient_budget=transient_budget,
        minimize_memory=False,
        hint=rec,
        time_limit_s=remaining(),
    )
    optimal = knapsack_optimal
    if res.status == "infeasible":
        # Only the memory cap can make this infeasible (recomputing every free co-variable always
        # meets the ship budget). Find the least transient memory, then the fastest plan with it.
        least = _cpsat(
            problem,
            split.free,
            forced_cells,
            ship_budget_us=ship_budget_us,
            transient_budget=None,
            minimize_memory=True,
            hint=rec,
            time_limit_s=remaining(),
        )
        cap = problem.memory_cap_bytes or 0
        need = cap - (transient_budget or 0) + (least.memory if least.status != "unknown" else 0)
        within = " within the deadline" if problem.deadline_s is not None else ""
        notes.append(
            f"memory cap {_fmt_bytes(cap)} cannot be met{within}: the least-memory plan needs "
            f"{_fmt_bytes(need)} on the target; chose the fastest plan with that memory"
        )
        optimal = optimal and least.status == "optimal"
        if least.status == "unknown":
            res = least
        else:
            res = _cpsat(
                problem,
                split.free,
                forced_cells,
                ship_budget_us=ship_budget_us,
                transient_budget=least.memory,
                minimize_memory=False,
                hint=least.recompute,
                time_limit_s=remaining(),
            )
    if res.status in ("unknown", "infeasible"):
        # Always deadline-feasible: nothing optional is shipped.
        notes.append(
            f"CP-SAT found no solution within {time_limit_s:g} s; fell back to recomputing every "
            "co-variable that can be recomputed"
        )
        res = _SatResult("fallback", {c.key for c in split.free})
    if res.status == "feasible":
        notes.append(
            f"CP-SAT stopped at the {time_limit_s:g} s time limit without proving optimality "
            f"(within {res.gap:.1%} of the best bound)"
        )
    return _assemble(
        problem,
        forced_ship_keys | {c.key for c in split.free if c.key not in res.recompute},
        forced_rec_keys | res.recompute,
        lost,
        "cpsat",
        optimal and res.status == "optimal",
        notes,
    )
