"""Planning time of `kernel_agent.planner.plan` on synthetic histories of realistic shape.

Run:  .venv/bin/python benchmarks/planner_speed.py [--sizes 100 500 2000 5000] [--repeat 5]

Prints a table (not a timed test). Histories are simulated notebooks: data-loading cells, derived
variables (fan-out from the data), long in-place mutation chains (`df[...] = ...` cell after cell),
fan-in cells (a model trained from many features), name overwrites, a few cells with side effects
and a few unserializable values. `requires` is ElasticNotebook's req(): the producing cell plus,
recursively, the producers of every non-active snapshot it read, so mutation chains and overwritten
intermediates produce large, heavily shared requirement sets, as on real notebooks.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_agent.planner import (  # noqa: E402
    DEFAULT_TIME_LIMIT_S,
    CellCost,
    CovarCost,
    Plan,
    PlanProblem,
    StoreSpeed,
    _split,
    plan,
    plan_cost,
    write_s,
)

KB, MB = 1_000, 1_000_000


def synthetic_history(n_cells: int, seed: int = 0) -> PlanProblem:
    """A notebook-shaped history with `n_cells` cell executions."""
    rng = random.Random(seed)
    active: dict[str, int] = {}  # name -> active snapshot id
    snap_producer: list[int] = []  # snapshot id -> producing cell
    snap_size: list[int] = []
    cell_inputs: list[list[int]] = []  # cell -> snapshot ids it read
    cells: dict[int, CellCost] = {}
    next_name = 0

    def new_snapshot(cell: int, size: int) -> int:
        snap_producer.append(cell)
        snap_size.append(size)
        return len(snap_producer) - 1

    def pick(k: int) -> list[str]:
        names = list(active)
        if not names:
            return []
        # Recent variables are read far more often than old ones.
        weights = [1.0 / (1 + (len(names) - i) ** 0.7) for i in range(len(names))]
        return list(dict.fromkeys(rng.choices(names, weights=weights, k=k)))

    for i in range(n_cells):
        r = rng.random()
        effects = rng.random() < 0.03
        if r < 0.06 or not active:  # load data
            reads, runtime = [], rng.uniform(1, 30)
            writes = [(f"v{next_name}", int(MB * 10 ** rng.uniform(0, 2.7)))]
            next_name += 1
        elif r < 0.40:  # derive a variable from 1-3 others
            reads, runtime = pick(rng.randint(1, 3)), 10 ** rng.uniform(-2, 0.7)
            if rng.random() < 0.5 or not active:
                name = f"v{next_name}"
                next_name += 1
            else:
                name = rng.choice(list(active))  # overwrite (old snapshot becomes inactive)
            writes = [(name, int(KB * 10 ** rng.uniform(0, 5.5)))]
        elif r < 0.70:  # in-place mutation of one variable (reads it): chains
            target = pick(1)
            reads = target + pick(rng.randint(0, 1))
            runtime = 10 ** rng.uniform(-2, 0.5)
            writes = [(target[0], snap_size[active[target[0]]])]
        elif r < 0.80:  # fan-in: train a model from many variables
            reads, runtime = pick(rng.randint(4, 10)), rng.uniform(5, 60)
            writes = [(f"v{next_name}", int(KB * 10 ** rng.uniform(0, 3)))]
            next_name += 1
        else:  # inspect / plot: reads, writes nothing
            reads, runtime, writes = pick(rng.randint(1, 2)), 10 ** rng.uniform(-2, 0), []
        cell_inputs.append([active[n] for n in reads])
        for name, size in writes:
            active[name] = new_snapshot(i, size)
        cells[i] = CellCost(
            i,
            round(runtime, 4),
            rerunnable=not effects,
            reason="writes file /tmp/out.csv" if effects else None,
        )

    # req() per cell in index order (inputs always come from earlier cells), as int bitsets.
    active_ids = set(active.values())
    req: list[int] = []
    for c in range(n_cells):
        bits = 1 << c
        for s in cell_inputs[c]:
            if s not in active_ids:
                bits |= req[snap_producer[s]]
        req.append(bits)

    def req_cell(c: int) -> list[int]:
        bits, out = req[c], []
        while bits:
            low = bits & -bits
            out.append(low.bit_length() - 1)
            bits ^= low
        return out

    covars = []
    for name, sid in active.items():
        unserializable = rng.random() < 0.03
        covars.append(
            CovarCost(
                key=str(sid),
                names=[name],
                nbytes=snap_size[sid],
                serializable=not unserializable,
                error="TypeError: cannot pickle 'generator' object" if unserializable else None,
                requires=req_cell(snap_producer[sid]),
                transient_nbytes=snap_size[sid] // 2,
            )
        )
    return PlanProblem(
        cells=cells,
        covars=covars,
        speed=StoreSpeed(write_Bps=200 * MB, read_Bps=400 * MB, per_object_s=0.005),
    )


def timed(problem: PlanProblem, repeat: int) -> tuple[float, Plan]:
    """Median wall time of `plan` in ms, after one untimed warm-up (imports, CP-SAT start-up)."""
    result = plan(problem)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = plan(problem)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, result


def baselines(problem: PlanProblem, basic: Plan) -> tuple[float, float]:
    """Total time of "ship everything shippable" and "recompute everything recomputable"."""
    split = _split(problem)
    free = [c.key for c in split.free]
    ship = [c.key for c in split.must_ship]
    rec = [c.key for c in split.must_recompute]
    ship_all = plan_cost(problem, ship + free, rec)["total_s"]
    rec_all = plan_cost(problem, ship, rec + free)["total_s"]
    return ship_all, rec_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000, 5000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    t = time.perf_counter()
    import networkx  # noqa: F401

    t_nx = time.perf_counter() - t
    t = time.perf_counter()
    from ortools.sat.python import cp_model  # noqa: F401

    t_or = time.perf_counter() - t
    print(f"one-off import: networkx {t_nx * 1000:.0f} ms, ortools.sat {t_or * 1000:.0f} ms")
    print(f"CP-SAT time limit {DEFAULT_TIME_LIMIT_S:g} s, {os.cpu_count()} CPUs\n")

    header = (
        f"{'cells':>6} {'covars':>6} {'sum|req|':>9} {'mincut ms':>10} {'deadline ms':>12} "
        f"{'opt':>4} {'memcap ms':>10} {'opt':>4} {'plan s':>8} {'ship-all s':>10} "
        f"{'recomp-all s':>12} {'lost':>5}"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        problem = synthetic_history(n, seed=n)
        edges = sum(len(c.requires) for c in problem.covars)
        t_basic, basic = timed(problem, args.repeat)
        ship_all, rec_all = baselines(problem, basic)

        # Deadline halfway between the forced ships and the min-cut plan's checkpoint time:
        # feasible, but binding, so CP-SAT runs.
        split = _split(problem)
        forced = sum(write_s(c, problem.speed) for c in split.must_ship)
        dl = replace(problem, deadline_s=(forced + basic.est_checkpoint_s) / 2)
        t_dl, p_dl = timed(dl, max(1, args.repeat // 2))
        # Memory cap: the restored state plus a quarter of the min-cut plan's transient memory.
        restored = [c for c in problem.covars if c.key not in basic.lost]
        base = sum(c.nbytes for c in restored)
        trans = sum(c.transient_nbytes for c in problem.covars if c.key in basic.recompute)
        mc = replace(problem, memory_cap_bytes=base + trans // 4)
        t_mc, p_mc = timed(mc, max(1, args.repeat // 2))
        print(
            f"{n:>6} {len(problem.covars):>6} {edges:>9} {t_basic:>10.1f} {t_dl:>12.1f} "
            f"{'yes' if p_dl.optimal else 'no':>4} {t_mc:>10.1f} "
            f"{'yes' if p_mc.optimal else 'no':>4} {basic.est_total_s:>8.1f} {ship_all:>10.1f} "
            f"{rec_all:>12.1f} {len(basic.lost):>5}"
        )
        assert p_dl.solver == "cpsat" and p_dl.est_checkpoint_s <= dl.deadline_s + 1e-6


if __name__ == "__main__":
    main()
